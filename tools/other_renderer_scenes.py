"""Tabletop RGB-D scenes of YCB objects from a *second* renderer (pyrender + OSMesa), as a bag.

The project's scenes (``vl-distill make-bag``, :mod:`vl_distill_ros.sim.scene`) come from
pybullet's TinyRenderer with the project's own shading, table textures, camera model and
placement. Everything the project tunes on comes from there, so a figure on those scenes
says little about another renderer's images. This tool draws scenes with nothing of that:
pyrender's physically based rasteriser (OpenGL through Mesa's OSMesa, metallic-roughness
materials, directional shadow maps, point and spot lights), its own table, floor and wall
textures, its own placement and camera sampling, and writes them as a camera bag in the
format of ``docs/bags.md`` (colour, registered depth in millimetres, camera info and one
ground-truth document per frame), so ``bench/proposals_recall.py`` and ``vl-distill
replay-eval --offline`` score them as any other bag.

It is a development tool: pyrender is not a dependency of the package. Two steps, each in
its own interpreter (pyrender wants PyOpenGL 3.1.7 and numpy < 2; the project numpy 2)::

    apt-get install -y libosmesa6                     # Mesa's off-screen renderer
    python3 -m venv /tmp/prv && /tmp/prv/bin/pip install pyrender "numpy<2" \\
        "PyOpenGL==3.1.7" opencv-python-headless pyyaml tqdm "scipy<1.14"
    # pip may settle on an old pyrender (its newest pins PyOpenGL 3.1.0) with networkx 2.2,
    # which Python 3.10+ cannot import: then also
    /tmp/prv/bin/pip install --no-deps "pyrender==0.1.45" && \\
        /tmp/prv/bin/pip install "networkx==3.1"
    PYOPENGL_PLATFORM=osmesa /tmp/prv/bin/python tools/other_renderer_scenes.py render \\
        --out /tmp/other/frames --frames 40 --seed 1 --objects all
    .venv/bin/python tools/other_renderer_scenes.py bag --frames-dir /tmp/other/frames \\
        --out /tmp/other/bag

Ground truth: each object's box is the box of its *visible* pixels (pyrender's segmentation
pass, occluders removed); objects with fewer than ``--min-visible-pixels`` visible pixels
or under a quarter of their unoccluded silhouette are left out of the ground truth (as
``make-bag`` does) and counted in the frame's ``hidden``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SPLIT = REPO / "config" / "splits" / "ycb_paper.yaml"


def object_pool(spec: str, split_path: str | Path = SPLIT) -> list[str]:
    """The model keys ``--objects`` names: ``id`` / ``ood`` / ``all`` halves of the split
    file, or comma-separated keys."""
    if spec in ("id", "ood", "all"):
        import yaml

        split = yaml.safe_load(Path(split_path).read_text(encoding="utf-8"))
        halves = {"id": ["in_distribution"], "ood": ["out_of_distribution"],
                  "all": ["in_distribution", "out_of_distribution"]}[spec]
        return [key for half in halves for key in split[half]]
    return [k.strip() for k in spec.split(",") if k.strip()]


# ---------------------------------------------------------------------------------------
# Textures (independent of vl_distill_ros.sim.backgrounds)
# ---------------------------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    import cv2

    small = rng.random((cells, cells), dtype=np.float32)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)


def table_texture(rng: np.random.Generator, size: int = 512) -> np.ndarray:
    """A uint8 RGB texture: oak/walnut-like boards, laminate, a linen weave or stone tiles."""
    kind = rng.choice(["boards", "laminate", "linen", "tiles"])
    base = rng.uniform(0.15, 0.9, 3)
    if kind == "boards":
        base = np.array([rng.uniform(0.35, 0.8), rng.uniform(0.2, 0.55), rng.uniform(0.1, 0.3)])
        y = np.linspace(0, 1, size)[:, None]
        warp = _smooth_noise(rng, size, 6) * rng.uniform(2, 6)
        grain = 0.5 + 0.5 * np.sin((y * rng.uniform(30, 80) + warp) * 2 * math.pi)
        boards = (np.floor(np.linspace(0, rng.integers(3, 7), size))[None, :] % 2) * 0.08
        v = 0.8 + 0.2 * grain - boards + 0.05 * _smooth_noise(rng, size, 64)
    elif kind == "laminate":
        v = 0.92 + 0.08 * _smooth_noise(rng, size, 4)
    elif kind == "linen":
        x = np.arange(size)
        weave = ((x[:, None] // 2 + x[None, :] // 2) % 2) * 0.06
        v = 0.85 + weave + 0.08 * _smooth_noise(rng, size, 16)
    else:
        n = int(rng.integers(2, 6))
        x = np.arange(size) % (size // n)
        grout = ((x[:, None] < 4) | (x[None, :] < 4)) * 0.35
        v = 0.9 + 0.1 * _smooth_noise(rng, size, 32) - grout
    grey = base.mean()
    base = grey + (base - grey) * rng.uniform(0.2, 0.8)   # tables are rarely vivid
    img = np.clip(v[..., None] * base[None, None], 0, 1)
    return (img * 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# Scene
# ---------------------------------------------------------------------------------------

def _textured_quad(texture: np.ndarray, half_x: float, half_y: float, z: float,
                   repeat: float = 1.0):
    import trimesh
    from PIL import Image

    v = np.array([[-half_x, -half_y, z], [half_x, -half_y, z], [half_x, half_y, z],
                  [-half_x, half_y, z]])
    f = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0, 0], [repeat, 0], [repeat, repeat], [0, repeat]])
    vis = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(texture))
    return trimesh.Trimesh(v, f, visual=vis, process=False)


def _load_object(models: Path, key: str, cache: dict):
    import trimesh

    if key not in cache:
        mesh = trimesh.load(models / key / "textured.obj", force="mesh")
        cache[key] = mesh
    return cache[key]


def _place(meshes: list, rng: np.random.Generator, spread: float,
           gap: tuple[float, float]) -> list[np.ndarray] | None:
    """Resting poses (upright, random yaw) at random spots whose bounding circles keep a
    gap drawn from ``gap`` (m; negative: the circles overlap, the objects may touch)."""
    poses, discs = [], []
    for mesh in meshes:
        lo, hi = mesh.bounds
        radius = 0.5 * math.hypot(hi[0] - lo[0], hi[1] - lo[1])
        for _ in range(200):
            xy = rng.uniform(-spread, spread, 2)
            if all(np.hypot(*(xy - c)) > radius + r + rng.uniform(*gap)
                   for c, r in discs):
                break
        else:
            return None
        yaw = rng.uniform(0, 2 * math.pi)
        pose = np.eye(4)
        pose[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
        centre = pose[:3, :3] @ ((lo + hi) / 2)
        pose[:3, 3] = [xy[0] - centre[0], xy[1] - centre[1], -lo[2]]
        poses.append(pose)
        discs.append((xy, radius))
    return poses


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenGL camera pose (looks down -z, y up) at ``eye`` aimed at ``target``."""
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, up, back, eye
    return pose


def render_frame(models: Path, pool: list[str], rng: np.random.Generator, args, cache: dict,
                 renderer) -> dict | None:
    """One scene: colour, depth (m), intrinsics and ground truth; ``None`` to redraw."""
    import pyrender

    count = int(rng.integers(args.min_objects, args.max_objects + 1))
    keys = list(rng.choice(pool, size=count, replace=False))
    meshes = [_load_object(models, k, cache) for k in keys]
    poses = _place(meshes, rng, rng.uniform(0.12, 0.3), args.gap)
    if poses is None:
        return None
    ambient = rng.uniform(0.15, 0.45)
    scene = pyrender.Scene(ambient_light=[ambient] * 3,
                           bg_color=list(rng.uniform(0.3, 0.9, 3)) + [1.0])
    half = rng.uniform(0.5, 1.0, 2)
    scene.add(pyrender.Mesh.from_trimesh(_textured_quad(table_texture(rng), *half, 0.0,
                                                        rng.uniform(1, 3))))
    scene.add(pyrender.Mesh.from_trimesh(_textured_quad(table_texture(rng), 4, 4, -0.74, 6)))
    nodes = []
    for mesh, pose in zip(meshes, poses):
        nodes.append(scene.add(pyrender.Mesh.from_trimesh(mesh), pose=pose))
    centre = np.mean([p[:3, 3] for p in poses], axis=0)
    dist = rng.uniform(*args.distance)
    elev = math.radians(rng.uniform(35, 75))
    azim = rng.uniform(0, 2 * math.pi)
    eye = centre + dist * np.array([math.cos(elev) * math.cos(azim),
                                    math.cos(elev) * math.sin(azim), math.sin(elev)])
    target = centre + np.append(rng.normal(0, 0.03, 2), 0.0)
    fov = math.radians(rng.uniform(42, 50))
    cam_pose = _look_at(eye, target)
    scene.add(pyrender.PerspectiveCamera(yfov=fov, aspectRatio=args.width / args.height,
                                         znear=0.05, zfar=10.0), pose=cam_pose)
    light_dir = _look_at(centre + np.array([*rng.normal(0, 1, 2), rng.uniform(1, 3)]), centre)
    colour = 1 - rng.uniform(0, 0.15, 3)
    scene.add(pyrender.DirectionalLight(color=colour, intensity=rng.uniform(2.5, 7)),
              pose=light_dir)
    if rng.random() < 0.6:
        spot = _look_at(centre + np.array([*rng.normal(0, 0.8, 2), rng.uniform(0.8, 2)]),
                        centre)
        scene.add(pyrender.SpotLight(color=colour, intensity=rng.uniform(3, 15),
                                     outerConeAngle=math.radians(rng.uniform(30, 60))),
                  pose=spot)
    flags = pyrender.RenderFlags.SHADOWS_DIRECTIONAL
    renderer.viewport_width, renderer.viewport_height = args.width, args.height
    colour_img, depth = renderer.render(scene, flags=flags)
    seg_map = {n: (i + 1, 0, 0) for i, n in enumerate(nodes)}
    seg, _ = renderer.render(scene, flags=pyrender.RenderFlags.SEG, seg_node_map=seg_map)
    labels = seg[..., 0]
    objects, hidden = [], 0
    for i, (key, node) in enumerate(zip(keys, nodes)):
        visible = labels == i + 1
        alone = _silhouette(scene, node, nodes, renderer)
        n_vis = int(visible.sum())
        if n_vis < args.min_visible_pixels or n_vis < 0.25 * max(alone, 1):
            hidden += 1
            continue
        ys, xs = np.nonzero(visible)
        x0, y0 = int(xs.min()), int(ys.min())
        objects.append({"key": key, "bbox": [x0, y0, int(xs.max()) - x0 + 1,
                                             int(ys.max()) - y0 + 1]})
    if not objects:
        return None
    fy = 0.5 * args.height / math.tan(fov / 2)
    return {"image": _camera_effects(colour_img, rng), "depth": depth.astype(np.float32),
            "intrinsics": [fy, fy, args.width / 2, args.height / 2], "objects": objects,
            "hidden": hidden}


def _silhouette(scene, node, nodes, renderer) -> int:
    """Pixels of ``node`` with every other object hidden (its unoccluded silhouette)."""
    import pyrender

    seg, _ = renderer.render(scene, flags=pyrender.RenderFlags.SEG,
                             seg_node_map={node: (255, 0, 0)})
    return int((seg[..., 0] == 255).sum())


def _camera_effects(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mild sensor noise and a slight blur (no JPEG, no vignetting)."""
    import cv2

    x = img.astype(np.float32)
    if rng.random() < 0.5:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, 0.8))
    x += rng.normal(0, rng.uniform(0.5, 3.0), x.shape).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def run_render(args) -> int:
    """``render``: write ``frame_XXXX.npz`` files (and ``frames.json``) to ``--out``."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")  # before PyOpenGL is imported
    import pyrender
    from tqdm import tqdm

    models = Path(args.models_dir)
    pool = object_pool(args.objects)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    renderer = pyrender.OffscreenRenderer(args.width, args.height)
    cache: dict = {}
    summary = []
    try:
        for i in tqdm(range(args.frames), unit="frame", desc="pyrender"):
            rng = np.random.default_rng([args.seed, i])
            frame = None
            while frame is None:
                frame = render_frame(models, pool, rng, args, cache, renderer)
            np.savez_compressed(out / f"frame_{i:04d}.npz", image=frame["image"],
                                depth=frame["depth"],
                                intrinsics=np.array(frame["intrinsics"]),
                                objects=json.dumps(frame["objects"]))
            summary.append({"frame": i, "objects": len(frame["objects"]),
                            "hidden": frame["hidden"]})
    finally:
        renderer.delete()
    (out / "frames.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


def run_bag(args) -> int:
    """``bag``: write the rendered frames as a camera bag (project interpreter)."""
    sys.path.insert(0, str(REPO))
    from vl_distill_ros.bags.bag_io import BagError, BagFrame, GroundTruthObject, write_camera_bag
    from vl_distill_ros.model.vocabulary import Vocabulary
    from vl_distill_ros.sim.depth_noise import NOISE_MODELS, apply_depth_noise

    vocab = Vocabulary.load(str(REPO / "config" / "ycb_vocabulary.yaml"))
    files = sorted(Path(args.frames_dir).glob("frame_*.npz"))
    if not files:
        raise SystemExit(f"no frame_*.npz in {args.frames_dir}")
    noise = NOISE_MODELS[args.depth_noise]

    def frames():
        for i, path in enumerate(files):
            with np.load(path) as z:
                objs = [GroundTruthObject(tuple(o["bbox"]),
                                          vocab.labels[vocab.index(o["key"])].name, o["key"])
                        for o in json.loads(str(z["objects"]))]
                depth = z["depth"] if not args.no_depth else None
                if depth is not None and noise is not None:
                    depth = apply_depth_noise(depth, np.random.default_rng([7, i]), noise)
                yield BagFrame(int(1.7e18) + i * 100_000_000, z["image"], objs, depth=depth,
                               intrinsics=tuple(float(v) for v in z["intrinsics"]))

    try:
        write_camera_bag(args.out, frames(), compression="zstd", overwrite=args.overwrite)
    except (BagError, KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        # an existing --out, a frame file cut short or of another layout, an unknown key
        print(f"other_renderer_scenes: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(files)} frames to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line: ``render`` (pyrender interpreter) or ``bag`` (project interpreter)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render", help="render scenes to .npz files (needs pyrender)")
    r.add_argument("--out", required=True)
    r.add_argument("--frames", type=int, default=40)
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--objects", default="all",
                   help="id, ood, all (halves of config/splits/ycb_paper.yaml) or "
                        "comma-separated keys")
    r.add_argument("--min-objects", type=int, default=3)
    r.add_argument("--max-objects", type=int, default=6)
    r.add_argument("--distance", type=float, nargs=2, default=(0.5, 1.2),
                   help="camera distance range to the objects' centre (m)")
    r.add_argument("--gap", type=float, nargs=2, default=(0.0, 0.03),
                   help="gap range between objects' bounding circles (m); negative values "
                        "let objects touch (denser scenes)")
    r.add_argument("--width", type=int, default=640)
    r.add_argument("--height", type=int, default=480)
    r.add_argument("--min-visible-pixels", type=int, default=64)
    r.add_argument("--models-dir", default=str(REPO.parent / "shared" / "ycb_models"))
    b = sub.add_parser("bag", help="write rendered frames as a camera bag")
    b.add_argument("--frames-dir", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--no-depth", action="store_true", help="colour only")
    b.add_argument("--depth-noise", default="sensor", choices=("none", "sensor", "coarse"),
                   help="the project's depth-sensor noise model on the exact depth "
                        "(default: %(default)s)")
    b.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    return run_render(args) if args.cmd == "render" else run_bag(args)


if __name__ == "__main__":
    sys.exit(main())

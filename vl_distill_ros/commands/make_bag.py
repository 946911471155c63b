"""``vl-distill make-bag``: render tabletop scenes into a rosbag2 camera bag with ground truth.

No ROS install needed: scenes are rendered on the CPU (pybullet TinyRenderer, see
:mod:`vl_distill_ros.sim.scene`) and written with ``rosbags``
(:mod:`vl_distill_ros.bags.bag_io`) in the format ``ros2 bag play`` reads.
"""
from __future__ import annotations

import argparse
import sys

from ..package_files import add_packaged_option

DEFAULT_START_TIME = 1_700_000_000.0


CONTACT_HELP = ("chance that each object after the first is placed touching one already "
                "placed (side by side; default 0: random free spots, and frames identical "
                "to earlier versions)")
FURNITURE_HELP = ("pieces of furniture (flat-coloured boxes, some taller than the table) "
                  "standing beyond the table's edges, as in a real room's background; not "
                  "ground truth (0-8; default 0: frames identical to earlier versions)")
CUT_BORDER_HELP = ("chance that a frame's edge cuts one of its objects (40-70%% of it left in "
                   "view; the image is then a crop of a larger frame, its principal point "
                   "moved, as in the CameraInfo), as real cameras see objects at the border; "
                   "the ground truth is the box of what is in view (0-1; default 0: frames "
                   "identical to earlier versions)")
KEEP_DISTANCE_HELP = ("keep each frame's camera at the drawn --camera-distance: without it the "
                      "camera is moved back until every object is in view, so a long lens "
                      "(--fov-y 25) stands far beyond the distance asked; with it objects may "
                      "leave the view (their ground truth is what is in view), as YCB-Video's "
                      "Xtion sees a crowded table from 0.6-1.2 m")
FOV_HELP = ("main camera vertical field of view range in degrees, 10-120: 42-50 is a "
            "RealSense D4xx colour camera at 4:3; about 25 the Xtion of YCB-Video (fy 1067 px "
            "at 640x480), to be seen from farther away (default: %(default)s)")
TABLE_KINDS_HELP = ("the table top's textures, one drawn per scene, comma-separated (default: "
                    "%(default)s); the busy cloths {busy} (a tartan, a printed cloth of small "
                    "motifs, large shapes) are drawn only when named")
TABLE_HELP = ("range of the table top's length and of its width, in metres (default: "
              "1.2-2.0 long, 0.8-1.2 wide); a small table, e.g. 0.4,0.6, leaves more floor "
              "than table in view")


def _add_storage_args(p: argparse.ArgumentParser) -> None:
    """How the bag is written: ``--storage``, ``--compression``, ``--image-format`` and
    ``--jpeg-quality``."""
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap",
                   help="rosbag2 storage plugin (default: %(default)s)")
    p.add_argument("--compression", choices=("none", "zstd"), default="zstd",
                   help="zstd: MCAP chunk compression (mcap) or per-message compression "
                        "(sqlite3); none: raw (default: %(default)s)")
    p.add_argument("--image-format", choices=("raw", "jpeg", "png"), default="raw",
                   help="raw: sensor_msgs/Image (rgb8 colour, 16UC1 depth); jpeg/png: "
                        "sensor_msgs/CompressedImage on image_transport's topics, as robots "
                        "record (colour on /camera/image_raw/compressed, depth as 16UC1 "
                        "compressedDepth PNG on /camera/depth/image_raw/compressedDepth) "
                        "(default: %(default)s)")
    p.add_argument("--jpeg-quality", type=int, default=90, metavar="Q",
                   help="JPEG quality 1..100 with --image-format jpeg (default: %(default)s)")


def _add_depth_args(p: argparse.ArgumentParser) -> None:
    """The depth options of ``make-bag``."""
    p.add_argument("--depth", action="store_true",
                   help="also write registered metric depth (16UC1, millimetres) on "
                        "/camera/depth/image_raw and the colour camera's "
                        "sensor_msgs/CameraInfo on /camera/camera_info, same stamps as the "
                        "colour images (and /hand_camera/... with --hand-camera)")
    p.add_argument("--depth-camera", action="store_true",
                   help="with --depth: see depth with a separate depth camera, written "
                        "unaligned as a RealSense records without align_depth (848x480, 58 "
                        "degrees vertical field of view, 15 mm beside the colour camera): its "
                        "own image on /camera/depth/image_raw in frame "
                        "camera_depth_optical_frame, its CameraInfo on "
                        "/camera/depth/camera_info and its pose on /tf_static")
    p.add_argument("--depth-noise", choices=("sensor", "coarse", "none"), default="sensor",
                   help="with --depth: 'sensor' adds a RealSense-like noise model (axial noise, "
                        "disparity quantisation, flying pixels at edges, holes and projector "
                        "shadows as zeros); 'coarse' an older, noisier camera (Kinect v1 / Xtion-"
                        "like: twice the axial noise, correlated over 4 px, coarser steps, "
                        "more holes); 'none' keeps the exact depth, rounded to mm "
                        "(default: %(default)s)")


def _add_views_args(p: argparse.ArgumentParser) -> None:
    """The camera-stream options of ``make-bag`` (``--views-per-scene``, ``--sweep``)."""
    p.add_argument("--views-per-scene", type=int, default=1, metavar="N",
                   help="consecutive frames of each scene, its camera turning along an arc "
                        "(--sweep), as a robot's camera streams one table: object tracking's "
                        "test (1-1000; default 1: a new scene every frame, frames identical "
                        "to earlier versions)")
    p.add_argument("--sweep", type=float, default=30.0, metavar="DEG",
                   help="with --views-per-scene: degrees the camera turns about the table's "
                        "vertical over one scene's frames (0-360; default: %(default)s)")


def _add_object_files_args(p: argparse.ArgumentParser) -> None:
    """The options naming the meshes, the vocabulary and the split."""
    p.add_argument("--models-dir", default=None,
                   help="folder with one <key>/textured.obj per YCB object (the google_16k "
                        "meshes from ycbbenchmarks.com) (default: $VL_DISTILL_YCB_MODELS, "
                        "else ../shared/ycb_models)")
    add_packaged_option(p, "--vocabulary", "config/ycb_vocabulary.yaml",
                        "vocabulary YAML mapping keys to the natural names written as "
                        "ground-truth labels")
    add_packaged_option(p, "--split", "config/splits/ycb_paper.yaml",
                        "ID/OOD split YAML for --objects id|ood|all")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``make-bag`` subcommand to ``subparsers`` (sets ``func=run``)."""
    from ..sim.scene_spec import BUSY_TABLE_KINDS, TABLE_KINDS

    p = subparsers.add_parser(
        "make-bag", help="render tabletop scenes into a rosbag2 camera bag with ground truth",
        description="Render tabletop scenes of YCB objects on the CPU and write them to a "
                    "rosbag2 bag (MCAP or sqlite3, readable by 'ros2 bag play'): "
                    "sensor_msgs/Image on /camera/image_raw (optionally "
                    "/hand_camera/image_raw; CompressedImage with --image-format) and "
                    "one std_msgs/String ground-truth JSON "
                    "document per image on /ground_truth, in the node's ~/labels schema. "
                    "Deterministic for a given seed.")
    p.add_argument("--out", required=True, metavar="BAG",
                   help="bag folder to create (refused if it exists, unless --overwrite)")
    p.add_argument("--frames", type=int, default=60,
                   help="number of frames, one new scene each (default: %(default)s)")
    _add_views_args(p)
    p.add_argument("--fps", type=float, default=10.0,
                   help="frame rate: stamps are start + i / fps (default: %(default)s)")
    p.add_argument("--objects", default="all",
                   help="object pool: 'id' or 'ood' (keys of --split), 'all' (both) or a "
                        "comma-separated list of keys (default: %(default)s)")
    p.add_argument("--objects-per-scene", default="2-4", metavar="N|LO-HI",
                   help="objects placed per scene, a number or an inclusive range "
                        "(default: %(default)s)")
    p.add_argument("--contact-prob", type=float, default=0.0, metavar="P", help=CONTACT_HELP)
    p.add_argument("--furniture", type=int, default=0, metavar="N", help=FURNITURE_HELP)
    p.add_argument("--cut-border", type=float, default=0.0, metavar="P", help=CUT_BORDER_HELP)
    p.add_argument("--keep-distance", action="store_true", help=KEEP_DISTANCE_HELP)
    _add_storage_args(p)
    p.add_argument("--hand-camera", action="store_true",
                   help="also write a close-up hand camera on /hand_camera/image_raw")
    _add_depth_args(p)
    p.add_argument("--seed", type=int, default=0,
                   help="random seed (non-negative; default: %(default)s)")
    _add_object_files_args(p)
    p.add_argument("--width", type=int, default=640,
                   help="main camera image width (default: %(default)s)")
    p.add_argument("--height", type=int, default=480,
                   help="main camera image height (default: %(default)s)")
    p.add_argument("--hand-width", type=int, default=320,
                   help="hand camera image width (default: %(default)s)")
    p.add_argument("--hand-height", type=int, default=240,
                   help="hand camera image height (default: %(default)s)")
    p.add_argument("--noise-sigma", default="0.5,2.5", metavar="LO,HI",
                   help="sensor noise standard deviation range in 8-bit levels; noise "
                        "limits compression, '0,0' gives the smallest bags "
                        "(default: %(default)s)")
    p.add_argument("--camera-distance", default="0.6,1.2", metavar="LO,HI",
                   help="main camera distance range to the aim point on the table, in metres "
                        "(default: %(default)s)")
    p.add_argument("--fov-y", default="42,50", metavar="LO,HI", help=FOV_HELP)
    p.add_argument("--elevation", default="35,70", metavar="LO,HI",
                   help="main camera elevation range above the table plane, in degrees, 5-89 "
                        "(a camera low over the table, e.g. a mobile robot's head: 12,25; "
                        "default: %(default)s)")
    p.add_argument("--roll", default="-4,4", metavar="LO,HI",
                   help="main camera roll range about its optical axis, in degrees, -180 to "
                        "180 (a hand-held camera or one on a robot's wrist: e.g. --roll=-30,30; "
                        "default: %(default)s)")
    p.add_argument("--table-size", default=None, metavar="LO,HI", help=TABLE_HELP)
    p.add_argument("--table-kinds", default=",".join(TABLE_KINDS), metavar="K1,K2,...",
                   help=TABLE_KINDS_HELP.format(busy=", ".join(BUSY_TABLE_KINDS)))
    p.add_argument("--start-time", type=float, default=DEFAULT_START_TIME,
                   help="stamp of the first frame in seconds since the epoch "
                        "(default: %(default)s)")
    p.add_argument("--sidecar", default=None, metavar="JSONL",
                   help="also write the ground truth to this JSON Lines sidecar file")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing bag at --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


class _UsageError(ValueError):
    pass


def _parse_range(text: str, what: str, cast: type = int, sep: str = "-") -> tuple:
    """``"N"`` or ``"LO<sep>HI"`` as a ``(low, high)`` tuple of ``cast`` values."""
    parts = [t.strip() for t in str(text).split(sep)]
    try:
        values = [cast(t) for t in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or values[0] > values[1]:
        raise _UsageError(f"{what} must be a number or a range LO{sep}HI with LO <= HI, "
                          f"got {text!r}")
    return tuple(values)


def _table_kinds(text: str | None) -> tuple[str, ...]:
    """``--table-kinds``: the comma-separated table textures, checked (default: the plain
    ones, :data:`~vl_distill_ros.sim.scene_spec.TABLE_KINDS`)."""
    from ..sim.scene_spec import BUSY_TABLE_KINDS, TABLE_KINDS

    if text is None:
        return TABLE_KINDS
    kinds = tuple(dict.fromkeys(k.strip() for k in str(text).split(",") if k.strip()))
    unknown = [k for k in kinds if k not in TABLE_KINDS + BUSY_TABLE_KINDS]
    if not kinds or unknown:
        raise _UsageError(f"--table-kinds must name one or more of "
                          f"{', '.join(TABLE_KINDS + BUSY_TABLE_KINDS)}, got {text!r}")
    return kinds


def _object_pool(spec: str, split_path: str) -> list[str]:
    from ..model.vocabulary import Split

    word = spec.strip()
    if word in ("id", "ood", "all"):
        split = Split.load(split_path)
        return list({"id": split.in_distribution, "ood": split.out_of_distribution,
                     "all": split.all_keys}[word])
    keys = list(dict.fromkeys(k.strip() for k in word.split(",") if k.strip()))
    if not keys:
        raise _UsageError("--objects must be 'id', 'ood', 'all' or a list of object keys")
    return keys


def _setup(args: argparse.Namespace):
    """Validated ``(SceneSpec, pool, {key: label name}, open SceneRenderer)``.

    Raises:
        _UsageError, RenderError, VocabularyError: bad options, models or vocabulary.
    """
    from pathlib import Path

    from ..model.vocabulary import Vocabulary
    from ..sim.meshes import RenderError, default_models_dir, find_models
    from ..sim.scene import SceneRenderer, SceneSpec

    if args.frames < 1:
        raise _UsageError(f"--frames must be >= 1, got {args.frames}")
    if not 1 <= getattr(args, "views_per_scene", 1) <= 1000:
        raise _UsageError(f"--views-per-scene must be in 1..1000, got {args.views_per_scene}")
    if not 0.0 <= getattr(args, "sweep", 0.0) <= 360.0:
        raise _UsageError(f"--sweep must be in 0..360 degrees, got {args.sweep}")
    _check_stamps(args)
    if args.seed < 0:
        raise _UsageError(f"--seed must be non-negative, got {args.seed}")
    if Path(args.out).expanduser().exists() and not args.overwrite:
        raise _UsageError(f"{args.out} exists already; choose another --out or pass "
                          "--overwrite to replace the bag there")
    _check_sidecar(args)
    if getattr(args, "depth_camera", False) and not getattr(args, "depth", False):
        raise _UsageError("--depth-camera needs --depth")
    per_scene = _parse_range(args.objects_per_scene, "--objects-per-scene")
    noise = _parse_range(args.noise_sigma, "--noise-sigma", cast=float, sep=",")
    if noise[0] < 0:
        raise _UsageError(f"--noise-sigma must be >= 0, got {args.noise_sigma!r}")
    distance = _parse_range(args.camera_distance, "--camera-distance", cast=float, sep=",")
    fov = _parse_range(getattr(args, "fov_y", "42,50"), "--fov-y", cast=float, sep=",")
    elevation = _parse_range(getattr(args, "elevation", "35,70"), "--elevation", cast=float,
                             sep=",")
    roll = _parse_range(getattr(args, "roll", "-4,4"), "--roll", cast=float, sep=",")
    table: dict = {"table_kinds": _table_kinds(getattr(args, "table_kinds", None))}
    if getattr(args, "table_size", None) is not None:
        size = _parse_range(args.table_size, "--table-size", cast=float, sep=",")
        table.update(table_length_m=size, table_width_m=size)
    spec = SceneSpec(width=args.width, height=args.height, objects_per_scene=per_scene,
                     hand_camera=bool(args.hand_camera), hand_width=args.hand_width,
                     hand_height=args.hand_height, noise_sigma=noise, distance_m=distance,
                     fov_y_deg=fov, elevation_deg=elevation, roll_deg=roll,
                     depth=bool(getattr(args, "depth", False)),
                     depth_camera=bool(getattr(args, "depth_camera", False)),
                     contact_prob=float(getattr(args, "contact_prob", 0.0)),
                     furniture=int(getattr(args, "furniture", 0)),
                     border_cut_prob=float(getattr(args, "cut_border", 0.0)),
                     fit_view=not getattr(args, "keep_distance", False), **table)
    spec.validate()
    models_dir = args.models_dir or default_models_dir()
    find_models(models_dir)  # before the vocabulary: without models nothing works
    pool = _object_pool(args.objects, args.split)
    vocab = Vocabulary.load(args.vocabulary)
    names = {}
    for key in pool:
        try:
            names[key] = vocab.labels[vocab.index(key)].name
        except KeyError:
            raise _UsageError(f"object {key!r} is not in the vocabulary {args.vocabulary}; "
                              "every object needs a label name") from None
    renderer = SceneRenderer(models_dir)
    try:
        renderer.check_keys(pool)
    except RenderError:
        renderer.close()
        raise
    return spec, pool, names, renderer


def _check_stamps(args: argparse.Namespace) -> None:
    """Raise :class:`_UsageError` unless ``--fps`` and ``--start-time`` give every frame its
    own stamp (at least 1 ns apart) that a ROS ``builtin_interfaces/Time`` holds (seconds
    below 2^31)."""
    import math

    if not (math.isfinite(args.fps) and 0 < args.fps <= 1e9):
        raise _UsageError(f"--fps must be a number in (0, 1e9] (frames at least 1 ns apart), "
                          f"got {args.fps}")
    if not (math.isfinite(args.start_time) and args.start_time >= 0):
        raise _UsageError(f"--start-time must be a finite number >= 0, got {args.start_time}")
    last = args.start_time + (args.frames - 1) / args.fps
    if not last < 2**31:
        raise _UsageError(f"the last frame would be stamped {last:.6g} s: ROS stamps hold "
                          f"seconds below 2^31 ({2**31}); lower --start-time or --frames, "
                          "or raise --fps")


def _check_sidecar(args: argparse.Namespace) -> None:
    """Raise :class:`_UsageError` when ``--sidecar`` could not be written after the bag (a
    folder; an existing file without ``--overwrite``; a parent that is a file): found
    after the bag had replaced the earlier one, it left that bag without its ground truth."""
    from pathlib import Path

    if not args.sidecar:
        return
    path = Path(args.sidecar).expanduser()
    if path.is_dir():
        raise _UsageError(f"--sidecar {args.sidecar} is a folder; name a .jsonl file")
    if path.exists() and not args.overwrite:
        raise _UsageError(f"--sidecar {args.sidecar} exists already; choose another file or "
                          "pass --overwrite")
    parent = next((p for p in path.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise _UsageError(f"--sidecar {args.sidecar}: {parent} is not a folder")


def _frames(args: argparse.Namespace, renderer, pool, names, spec, topics, stats, sidecar):
    """Render the frames as :class:`~vl_distill_ros.bags.bag_io.BagFrame` objects, counting
    into ``stats`` and collecting the sidecar entries."""
    import zlib

    import numpy as np
    from tqdm import tqdm

    from ..bags.bag_io import BagFrame, GroundTruthObject
    from ..sim.depth_noise import NOISE_MODELS, apply_depth_noise
    from ..sim.scene import render_scene, render_views

    start_ns = int(round(args.start_time * 1e9))
    period_ns = 1e9 / args.fps
    noise = NOISE_MODELS[getattr(args, "depth_noise", "none")]
    views = int(getattr(args, "views_per_scene", 1))

    def scenes():
        """Each frame's rendered scene, in order."""
        if views == 1:
            for i in range(args.frames):
                yield render_scene(renderer, pool, np.random.default_rng(np.random.SeedSequence(
                    [int(args.seed), zlib.crc32(b"make-bag"), i])), spec)
            return
        for j in range(-(-args.frames // views)):
            rng = np.random.default_rng(np.random.SeedSequence(
                [int(args.seed), zlib.crc32(b"make-bag-views"), j]))
            yield from render_views(renderer, pool, rng, spec, min(views, args.frames - j * views),
                                    float(args.sweep))

    with tqdm(total=args.frames, disable=args.no_progress, unit="frame",
              desc="make-bag") as bar:
        for i, scene in enumerate(scenes()):
            stamp = start_ns + int(round(i * period_ns))
            centres = {p["key"]: tuple(p["centre_camera"]) for p in scene.meta["placed"]}
            objs = [GroundTruthObject(o.bbox, names[o.key], o.key, o.visible_frac,
                                      centres[o.key] if spec.depth else None)
                    for o in scene.objects]
            hand = [GroundTruthObject(o.bbox, names[o.key], o.key, o.visible_frac)
                    for o in scene.hand_objects]
            stats["images"] += 1
            stats["objects"] += len(objs)
            stats["hidden"] += len(scene.meta["placed"]) - len(objs)
            for o in objs:
                stats["labels"][o.label] = stats["labels"].get(o.label, 0) + 1
            sidecar.append((topics.camera, stamp, objs))
            if scene.hand_image is not None:
                stats["hand"] += 1
                sidecar.append((topics.hand_camera, stamp, hand))
            depth, hand_depth = scene.depth, scene.hand_depth
            if noise is not None:  # its own generator: colour stays as without depth
                depth_rng = np.random.default_rng(np.random.SeedSequence(
                    [int(args.seed), zlib.crc32(b"make-bag-depth"), i]))
                depth = apply_depth_noise(depth, depth_rng, noise) if depth is not None \
                    else None
                hand_depth = apply_depth_noise(hand_depth, depth_rng, noise) \
                    if hand_depth is not None else None
            bar.update(1)
            yield BagFrame(stamp, scene.image, objs, scene.hand_image, hand, depth=depth,
                           intrinsics=scene.intrinsics, hand_depth=hand_depth,
                           hand_intrinsics=scene.hand_intrinsics,
                           depth_camera=scene.depth_camera, depth_pose=scene.depth_pose)


def _summary(args: argparse.Namespace, out, topics, stats: dict, elapsed: float) -> None:
    from pathlib import Path

    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    n = stats["images"]
    print(f"[make-bag] wrote {out} ({args.storage}, compression {args.compression}, images "
          f"{getattr(args, 'image_format', 'raw')}, "
          f"{size / 1e6:.1f} MB) in {elapsed:.1f} s ({1000 * elapsed / max(n, 1):.0f} ms/frame)")
    print(f"[make-bag] {n} frames at {args.fps:g} fps on {topics.camera} "
          f"({args.width}x{args.height})"
          + (f", {stats['hand']} on {topics.hand_camera} ({args.hand_width}x"
             f"{args.hand_height})" if stats["hand"] else "")
          + (f"; depth on {topics.depth} (noise model {args.depth_noise}), CameraInfo on "
             f"{topics.camera_info}" if getattr(args, "depth", False) else "")
          + (f" (a separate depth camera: its CameraInfo on {topics.depth_camera_info}, its "
             f"pose on {topics.tf_static})" if getattr(args, "depth_camera", False) else "")
          + f"; ground truth on {topics.ground_truth}")
    common = sorted(stats["labels"].items(), key=lambda kv: (-kv[1], kv[0]))[:8]
    print(f"[make-bag] {stats['objects']} labelled objects ({stats['objects'] / max(n, 1):.1f} "
          f"per frame, {stats['hidden']} placed but hidden), {len(stats['labels'])} labels; "
          f"most common: {', '.join(f'{k} x{v}' for k, v in common)}")
    if args.sidecar:
        print(f"[make-bag] ground-truth sidecar: {args.sidecar}")


def run(args: argparse.Namespace) -> int:
    """Render and write the bag; 0 on success, 2 on a usage, models or data problem."""
    import time

    from ..bags.bag_io import (BagError, BagTopics, write_camera_bag, write_ground_truth_sidecar,
                               written_topics)
    from ..model.vocabulary import VocabularyError
    from ..sim.meshes import RenderError

    prog = "vl-distill make-bag"
    try:
        spec, pool, names, renderer = _setup(args)
    except (_UsageError, RenderError, VocabularyError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    image_format = getattr(args, "image_format", "raw")
    topics = written_topics(BagTopics(), image_format)
    stats = {"images": 0, "hand": 0, "objects": 0, "hidden": 0, "labels": {}}
    sidecar: list = []
    started = time.perf_counter()
    try:
        with renderer:
            frames = _frames(args, renderer, pool, names, spec, topics, stats, sidecar)
            out = write_camera_bag(args.out, frames, storage=args.storage, topics=BagTopics(),
                                   compression=args.compression, overwrite=args.overwrite,
                                   image_format=image_format,
                                   jpeg_quality=getattr(args, "jpeg_quality", 90))
        if args.sidecar:
            write_ground_truth_sidecar(args.sidecar, sidecar)
    except (RenderError, BagError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    _summary(args, out, topics, stats, time.perf_counter() - started)
    return 0

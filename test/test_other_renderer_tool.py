"""``tools/other_renderer_scenes.py``: the parts that run without pyrender.

The ``render`` step needs pyrender and Mesa's OSMesa (a development set-up, see the tool's
docstring); the ``bag`` step, the placement and the textures run in the project's own
interpreter and are checked here, so the bag the benchmarks score has the project's format.
"""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import load_script


@pytest.fixture(scope="module")
def tool(repo_root):
    return load_script(repo_root / "tools" / "other_renderer_scenes.py")


def _write_frame(folder, i: int, depth_m: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    depth = np.full((48, 64), depth_m, np.float32)
    depth[:4] = 0.0  # no measurement
    objects = [{"key": "011_banana", "bbox": [3, 4, 20, 10]},
               {"key": "003_cracker_box", "bbox": [30, 20, 16, 24]}]
    np.savez_compressed(folder / f"frame_{i:04d}.npz", image=image, depth=depth,
                        intrinsics=np.array([50.0, 50.0, 32.0, 24.0]),
                        objects=json.dumps(objects))
    return image, depth


def test_bag_step_writes_colour_depth_and_named_ground_truth(tool, tmp_path):
    """Frames become a camera bag: the colour image unchanged, depth in millimetres with its
    holes kept, camera info from the intrinsics, ground truth named by the vocabulary."""
    from vl_distill_ros.bags.bag_io import read_camera_bag

    frames = tmp_path / "frames"
    frames.mkdir()
    written = [_write_frame(frames, i, 0.8 + 0.1 * i) for i in range(2)]
    assert tool.main(["bag", "--frames-dir", str(frames), "--out", str(tmp_path / "bag"),
                      "--depth-noise", "none"]) == 0
    contents = read_camera_bag(tmp_path / "bag")
    got = list(contents.rgbd_frames())
    assert len(got) == 2
    for frame, (image, depth) in zip(got, written):
        np.testing.assert_array_equal(frame.image, image)
        np.testing.assert_allclose(frame.depth, depth, atol=0.0006)
        assert frame.camera_info[:4] == (50.0, 50.0, 32.0, 24.0)
        objs = contents.objects_for(frame.topic, frame.stamp_ns)
        assert [(o.label, o.key, tuple(o.bbox)) for o in objs] == [
            ("banana", "011_banana", (3, 4, 20, 10)),
            ("cracker box", "003_cracker_box", (30, 20, 16, 24))]

    assert tool.main(["bag", "--frames-dir", str(frames), "--out", str(tmp_path / "rgb"),
                      "--no-depth"]) == 0
    assert all(f.depth is None for f in read_camera_bag(tmp_path / "rgb").rgbd_frames())
    with pytest.raises(SystemExit, match="no frame_"):
        tool.main(["bag", "--frames-dir", str(tmp_path), "--out", str(tmp_path / "none")])
    # an existing --out, a frame file cut short, an unknown key: one line, exit 2 (tracebacks)
    args = ["bag", "--frames-dir", str(frames), "--depth-noise", "none"]
    assert tool.main([*args, "--out", str(tmp_path / "bag")]) == 2
    (frames / "frame_0001.npz").write_bytes((frames / "frame_0001.npz").read_bytes()[:40])
    assert tool.main([*args, "--out", str(tmp_path / "cut")]) == 2
    (frames / "frame_0001.npz").unlink()
    np.savez_compressed(frames / "frame_0002.npz", image=written[0][0], depth=written[0][1],
                        intrinsics=np.array([50.0, 50.0, 32.0, 24.0]),
                        objects=json.dumps([{"key": "999_nothing", "bbox": [1, 1, 2, 2]}]))
    assert tool.main([*args, "--out", str(tmp_path / "unknown")]) == 2
    assert not (tmp_path / "cut").exists() and not (tmp_path / "unknown").exists()


def test_placement_keeps_bounding_circles_apart_and_objects_on_the_table(tool):
    """With a non-negative gap no two footprints' bounding circles overlap, every object
    stands on z = 0; a table too small for the objects gives ``None`` (redraw)."""
    meshes = [SimpleNamespace(bounds=np.array([[-0.05, -0.03, 0.01], [0.05, 0.03, 0.2]])),
              SimpleNamespace(bounds=np.array([[0.0, 0.0, -0.02], [0.04, 0.04, 0.05]])),
              SimpleNamespace(bounds=np.array([[-0.02, -0.02, 0.0], [0.02, 0.02, 0.1]]))]
    rng = np.random.default_rng(3)
    for _ in range(20):
        poses = tool._place(meshes, rng, 0.3, (0.0, 0.02))
        assert poses is not None
        centres, radii = [], []
        for mesh, pose in zip(meshes, poses):
            lo, hi = mesh.bounds
            corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                                for z in (lo[2], hi[2])])
            world = corners @ pose.T
            assert world[:, 2].min() == pytest.approx(0.0, abs=1e-9)
            centres.append(pose[:3, :3] @ ((lo + hi) / 2) + pose[:3, 3])
            radii.append(0.5 * math.hypot(hi[0] - lo[0], hi[1] - lo[1]))
        for i in range(3):
            for j in range(i + 1, 3):
                dist = np.hypot(*(centres[i][:2] - centres[j][:2]))
                assert dist >= radii[i] + radii[j] - 1e-9
    assert tool._place(meshes * 4, rng, 0.02, (0.0, 0.0)) is None


def test_table_textures_are_varied_and_muted(tool):
    """Textures are uint8 RGB of the asked size, differ by seed and stay less vivid than a
    pure colour (mean HSV-like saturation below 0.8)."""
    textures = [tool.table_texture(np.random.default_rng(s), 64) for s in range(12)]
    assert all(t.shape == (64, 64, 3) and t.dtype == np.uint8 for t in textures)
    assert len({t.tobytes() for t in textures}) == 12
    for t in textures:
        x = t.reshape(-1, 3).astype(np.float64)
        sat = (x.max(1) - x.min(1)) / np.maximum(x.max(1), 1)
        assert sat.mean() < 0.8

"""Object placement with depth (perception/object_placement.py): each boxed object's centre
and size from the depth proposer's grids, on analytic tabletops with known cuboids (no YCB
models needed) and on rendered scenes; the ``~/labels`` fields, the ground truth's
``position`` and its score in replay-eval."""
from __future__ import annotations

import json

import numpy as np
import pytest

from vl_distill_ros.bags.bag_frames import GroundTruthObject, object_document
from vl_distill_ros.bags.ground_truth_sidecar import parse_objects
from vl_distill_ros.bags.raw_io import BagError
from vl_distill_ros.evaluation.scoring import score_frames
from vl_distill_ros.perception.depth_config import DepthProposalConfig
from vl_distill_ros.perception.depth_proposals import propose_depth_boxes
from vl_distill_ros.perception.labels_output import ObjectResult, labels_document
from vl_distill_ros.perception.object_placement import place_objects, quaternion_of

from test_depth import K, OBJECTS, _hostile, cast_tabletop, cuboid_centre, depth_and_boxes

CFG = DepthProposalConfig()


@pytest.fixture(scope="module")
def scene_renderer(ycb_models):
    from vl_distill_ros.sim.scene import SceneRenderer

    with SceneRenderer(ycb_models) as r:
        yield r


def _placed(objects, tilt_deg: float = 50.0, depth_fn=None):
    depth, owner = cast_tabletop(objects, tilt_deg)
    depth, boxes = depth_and_boxes(depth, owner, len(objects))
    if depth_fn is not None:
        depth = depth_fn(depth)
    found = propose_depth_boxes(depth, K, CFG)
    return place_objects(found, boxes, CFG), boxes, found


@pytest.mark.parametrize("tilt", [35.0, 50.0, 65.0])
def test_cuboids_are_placed_at_their_centres_with_their_height(tilt):
    placed, _, _ = _placed(OBJECTS, tilt)
    for obj, p in zip(OBJECTS, placed):
        assert p is not None, obj
        err = np.linalg.norm(np.array(p.position) - cuboid_centre(obj, tilt))
        # the hidden back half of each cuboid is not seen; its top and front span it
        assert err < 0.015, (tilt, obj, p, cuboid_centre(obj, tilt))
        across, along, height = p.size
        assert abs(height - obj[4]) < 0.008, (obj, p.size)
        assert abs(across - obj[2]) < 0.012, (obj, p.size)   # the cuboid's length is across
        assert along <= obj[3] + 0.012
        # the box axes: across (the image's x here), along (away on the table), the normal
        rot = _matrix(p.orientation)
        t = np.radians(tilt)
        normal = np.array([0.0, -np.sin(t), -np.cos(t)])
        assert rot[:, 0] @ [1.0, 0.0, 0.0] > 0.999 and rot[:, 2] @ normal > 0.999, rot
        assert rot[:, 1] @ np.cross(normal, [1.0, 0.0, 0.0]) > 0.999, rot


def _matrix(q) -> np.ndarray:
    """The rotation matrix of a unit quaternion ``(x, y, z, w)``."""
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def test_quaternion_of_inverts_the_rotation_matrix():
    rng = np.random.default_rng(0)
    for _ in range(500):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        q = -q if q[3] < 0 else q
        got = np.array(quaternion_of(_matrix(q)))
        assert np.allclose(got, q, atol=1e-9), (got, q)
    for m in (np.eye(3), np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]),
              np.diag([-1.0, -1.0, 1.0])):          # w = 0: the other branches
        assert np.allclose(_matrix(quaternion_of(m)), m, atol=1e-9)


def test_an_object_behind_a_taller_one_is_placed_by_its_own_samples():
    # a wide low crate (5 cm) behind a tall box that hides its middle: the crate's box
    # holds mostly the tall box's samples, but the crate's two visible pieces span it
    tray, tall = (0.0, 0.12, 0.3, 0.12, 0.05), (0.0, 0.0, 0.06, 0.06, 0.25)
    depth, owner = cast_tabletop([tray, tall])
    depth, boxes = depth_and_boxes(depth, owner, 2)
    found = propose_depth_boxes(depth, K, CFG)
    p_tray, p_tall = place_objects(found, boxes, CFG)
    assert p_tray is not None and p_tall is not None
    assert abs(p_tray.size[2] - 0.05) < 0.005, p_tray   # its own height, not the tall box's
    assert abs(p_tray.size[0] - 0.3) < 0.02, p_tray     # both pieces: its whole length
    assert abs(p_tall.size[2] - 0.25) < 0.01, p_tall
    assert np.linalg.norm(np.array(p_tray.position) - cuboid_centre(tray)) < 0.01
    assert np.linalg.norm(np.array(p_tall.position) - cuboid_centre(tall)) < 0.02


def test_a_neighbour_of_about_the_same_height_is_not_taken_for_part_of_the_object():
    # a box in front of another and to its left, about as tall, reaches into its image box:
    # nothing nearer lies between them, so it is not a piece of the same object
    back, front = (0.0, 0.1, 0.1, 0.1, 0.15), (-0.07, -0.03, 0.08, 0.08, 0.16)
    placed, _, _ = _placed([back, front])
    for obj, p in zip((back, front), placed):
        assert p is not None
        assert np.linalg.norm(np.array(p.position) - cuboid_centre(obj)) < 0.012, (obj, p)
        assert p.size[1] < 0.1, (obj, p)


def test_a_flat_object_is_centred_by_its_box_where_its_thin_middle_is_not_raised():
    # a wrench-like object lying flat: two 12 mm ends and a 3 mm shaft between them, under
    # the height band; its box spans all three, its raised samples only the ends
    parts = [(-0.08, 0.0, 0.04, 0.04, 0.012), (0.0, 0.0, 0.12, 0.015, 0.003),
             (0.08, 0.0, 0.04, 0.04, 0.012)]
    depth, owner = cast_tabletop(parts)
    depth, boxes = depth_and_boxes(depth, owner, 3)
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    found = propose_depth_boxes(depth, K, CFG)
    (p,) = place_objects(found, [(x0, y0, x1 - x0, y1 - y0)], CFG)
    assert p is not None and abs(p.size[2] - 0.012) < 0.004, p
    truth = cuboid_centre((0.0, 0.0, 0.2, 0.04, 0.012))
    assert np.linalg.norm(np.array(p.position) - truth) < 0.01, (p, truth)
    # one end's box alone: that end
    (end,) = place_objects(found, [boxes[0]], CFG)
    assert np.linalg.norm(np.array(end.position) - cuboid_centre(parts[0])) < 0.01, end


def test_boxes_without_raised_depth_or_without_a_plane_get_no_placement():
    def holes(depth):
        out = depth.copy()
        out[owner_of_first] = 0.0          # the first object's depth is all missing
        return out

    depth, owner = cast_tabletop(OBJECTS)
    owner_of_first = owner == 0
    placed, boxes, _ = _placed(OBJECTS, depth_fn=holes)
    assert placed[0] is None and placed[1] is not None and placed[2] is not None
    # a box on bare table, and a box outside the grid
    found = propose_depth_boxes(depth_and_boxes(depth, owner, 3)[0], K, CFG)
    assert place_objects(found, [(5, 5, 20, 20), (700, 500, 10, 10)], CFG) == [None, None]
    # no plane: nothing is placed
    flat = propose_depth_boxes(np.zeros((480, 640), np.float32), K, CFG)
    assert flat.plane is None
    assert place_objects(flat, boxes, CFG) == [None, None, None]


def test_placement_follows_noisy_depth():
    from vl_distill_ros.sim.depth_noise import NOISE_MODELS, apply_depth_noise

    rng = np.random.default_rng(0)
    placed, _, _ = _placed(OBJECTS, depth_fn=lambda d: apply_depth_noise(
        d, rng, NOISE_MODELS["coarse"]))
    for obj, p in zip(OBJECTS[:2], placed[:2]):
        assert p is not None
        assert np.linalg.norm(np.array(p.position) - cuboid_centre(obj)) < 0.025, (obj, p)
        assert abs(p.size[2] - obj[4]) < 0.015


def test_labels_carry_position_and_size_only_for_placed_objects():
    objs = [ObjectResult((1, 2, 3, 4), "apple", 0.9, True, [("apple", 0.9)],
                         position=(0.01234, -0.2, 0.87654), size=(0.07, 0.06, 0.0751),
                         orientation=(0.0, 0.0, 0.0, 1.0)),
            ObjectResult((5, 6, 7, 8), "unknown", 0.1, False, [("pear", 0.1)])]
    doc = json.loads(json.dumps(labels_document(1, 2, "cam", "/image", 3, objs)))
    assert doc["objects"][0]["position"] == [0.012, -0.2, 0.877]
    assert doc["objects"][0]["size"] == [0.07, 0.06, 0.075]
    assert doc["objects"][0]["orientation"] == [0.0, 0.0, 0.0, 1.0]
    assert set(doc["objects"][1]) == {"bbox", "label", "score", "known", "top_k"}


def test_ground_truth_position_is_checked_and_written():
    ok = parse_objects([{"bbox": [1, 2, 3, 4], "label": "apple",
                         "position": [0.1, -0.2, 0.9]}], "gt")
    assert ok[0].position == (0.1, -0.2, 0.9)
    assert object_document(GroundTruthObject((1, 2, 3, 4), "apple", "013_apple", None,
                                             (0.123456, 0.0, 1.0)))["position"] == \
        [0.1235, 0.0, 1.0]
    assert "position" not in object_document(GroundTruthObject((1, 2, 3, 4), "apple"))
    for bad in ([0.1, 0.2], [0.1, 0.2, -1.0], [0.1, float("nan"), 1.0], [True, 0.0, 1.0],
                "0 0 1", [0.0, 0.0, 1e9]):
        with pytest.raises(BagError, match="'position' must be"):
            parse_objects([{"bbox": [1, 2, 3, 4], "label": "apple", "position": bad}], "gt")


def test_replay_scores_published_positions_against_the_ground_truth():
    key = ("/image", 1)
    truth = {key: [GroundTruthObject((0, 0, 10, 10), "apple", "", None, (0.0, 0.0, 1.0)),
                   GroundTruthObject((50, 50, 10, 10), "pear", "", None, (0.1, 0.0, 1.0)),
                   GroundTruthObject((90, 90, 10, 10), "plum")]}
    doc = {"header": {"stamp": {"sec": 0, "nanosec": 1}}, "camera": "/image", "objects": [
        {"bbox": [0, 0, 10, 10], "label": "apple", "score": 0.9, "known": True,
         "position": [0.0, 0.03, 1.0], "size": [0.1, 0.1, 0.1]},
        {"bbox": [50, 50, 10, 10], "label": "pear", "score": 0.9, "known": True},
        {"bbox": [90, 90, 10, 10], "label": "plum", "score": 0.9, "known": True,
         "position": [0.0, 0.0, 1.0], "size": [0.1, 0.1, 0.1]}]}
    out = score_frames([key], truth, {key: doc})["placement"]
    assert out["objects"] == 2 and out["placed"] == 1     # plum has no true position
    assert out["error_m"]["p50"] == pytest.approx(0.03)
    assert out["within_2cm"] == 0.0 and out["within_5cm"] == 1.0
    plain = {key: [GroundTruthObject((0, 0, 10, 10), "apple")]}
    assert score_frames([key], plain, {key: doc})["placement"] is None


def test_rendered_scenes_are_placed_within_centimetres(scene_renderer):
    """The renderer's scenes (YCB meshes): every visible object's box placed, the centre
    of its 3-D bounding box found within a few centimetres (most within 2)."""
    from vl_distill_ros.perception.camera_model import CameraIntrinsics
    from vl_distill_ros.sim.scene import SceneSpec, render_scene

    keys = ["003_cracker_box", "005_tomato_soup_can", "006_mustard_bottle", "011_banana",
            "013_apple", "025_mug", "035_power_drill", "019_pitcher_base"]
    errors, heights = [], []
    for seed in range(6):
        frame = render_scene(scene_renderer, keys, np.random.default_rng(seed),
                             SceneSpec(depth=True, objects_per_scene=(3, 4)))
        fx, fy, cx, cy = frame.intrinsics
        k = CameraIntrinsics(fx, fy, cx, cy, frame.depth.shape[1], frame.depth.shape[0])
        truth = {p["key"]: p for p in frame.meta["placed"]}
        found = propose_depth_boxes(frame.depth, k, CFG, frame.image)
        for obj, p in zip(frame.objects, place_objects(found, [o.bbox for o in frame.objects],
                                                       CFG)):
            assert p is not None, obj
            errors.append(np.linalg.norm(np.array(p.position)
                                         - truth[obj.key]["centre_camera"]))
            heights.append(abs(p.size[2] - truth[obj.key]["size"][2]))
    assert len(errors) >= 18
    assert np.median(errors) < 0.02 and max(errors) < 0.08, sorted(errors)
    assert np.median(heights) < 0.005, sorted(heights)


def test_the_annotated_image_gives_a_placed_object_s_distance():
    from vl_distill_ros.perception.labels_output import draw_annotations

    image = np.zeros((120, 320, 3), np.uint8)
    plain = ObjectResult((20, 40, 60, 60), "mug", 0.9, True, [("mug", 0.9)])
    placed = ObjectResult((20, 40, 60, 60), "mug", 0.9, True, [("mug", 0.9)],
                          position=(0.0, 0.3, 0.4), size=(0.08, 0.08, 0.1))
    label_band = (slice(0, 40), slice(0, 320))
    wide = np.nonzero(draw_annotations(image, [placed])[label_band].any(axis=(0, 2)))[0]
    narrow = np.nonzero(draw_annotations(image, [plain])[label_band].any(axis=(0, 2)))[0]
    assert wide.max() > narrow.max() + 20     # "mug 0.90 @ 0.50 m" against "mug 0.90"


@pytest.mark.parametrize("kind", ["inf", "negative", "salt", "nan_half", "float_max",
                                  "subnormal"])
def test_hostile_depth_places_objects_or_none_never_raises(kind):
    depth, owner = cast_tabletop(OBJECTS)
    depth, boxes = depth_and_boxes(depth, owner, len(OBJECTS))
    spoilt = _hostile(kind, depth, np.random.default_rng(0))
    found = propose_depth_boxes(spoilt, K, CFG)
    placed = place_objects(found, boxes + [(0, 0, 640, 480), (639, 479, 1, 1)], CFG)
    assert len(placed) == len(boxes) + 2
    for p in placed:
        assert p is None or (all(np.isfinite(p.position)) and all(np.isfinite(p.size))
                             and p.position[2] > 0 and min(p.size) >= 0), p


def test_the_pipeline_places_proposals_but_not_a_full_frame_fallback(tmp_path):
    """Through the pipeline: proposals found with depth are placed; with nothing proposed
    and ``fallback_full_frame``, the whole frame is classified but not placed."""
    from helpers import make_colour_bundle

    from vl_distill_ros.model.bundle import load_bundle
    from vl_distill_ros.perception.pipeline import PerceptionPipeline

    bundle = load_bundle(make_colour_bundle(tmp_path / "b.vdb", ["banana", "apple"],
                                            ["banana", "apple"]))
    grey = np.full((480, 640, 3), 150, np.uint8)
    pipe = PerceptionPipeline(bundle, fallback_full_frame=True)
    try:
        depth, truth = depth_and_boxes(*cast_tabletop(OBJECTS[:2]), 2)
        frame = pipe.prepare(grey, depth, K)
        assert frame.depth_status == "used" and len(frame.boxes) >= 2
        assert frame.placements is not None and len(frame.placements) == len(frame.boxes)
        assert sum(p is not None for p in frame.placements) >= 2
        objects, _ = pipe.classify(frame)
        assert sum(o.position is not None for o in objects) >= 2
        empty = depth_and_boxes(*cast_tabletop([]), 0)[0]       # a bare table
        frame = pipe.prepare(grey, empty, K)
        assert frame.depth_status == "used" and frame.boxes == [(0, 0, 640, 480)]
        assert frame.placements is None
        assert all(o.position is None for o in pipe.classify(frame)[0])
    finally:
        pipe.close()


def test_a_flat_object_s_box_corners_without_a_ray_do_not_make_its_centre_nan():
    """A corrupt lens model leaves some pixels without a ray (NaN, see test_depth's
    lens-model test); a flat object's box whose corners are such pixels is not laid on the
    plane, and its centre comes from its own samples (`tools/fuzz_inputs.py --seed 73` found
    a NaN position: ~/labels would have carried it, and JSON has no NaN)."""
    import dataclasses

    from vl_distill_ros.perception.camera_model import CameraIntrinsics

    parts = [(-0.08, 0.0, 0.04, 0.04, 0.012), (0.0, 0.0, 0.12, 0.015, 0.003),
             (0.08, 0.0, 0.04, 0.04, 0.012)]
    depth, owner = cast_tabletop(parts)
    depth, _ = depth_and_boxes(depth, owner, 3)
    found = propose_depth_boxes(depth, K, CFG)
    lens = CameraIntrinsics(K.fx, K.fy, K.cx, K.cy, K.width, K.height, "rational_polynomial",
                            (-2.0444, -3.5667, 2.3256, -0.8238, 3.0104, 0.3649, -1.5395,
                             0.6021))
    rx, _ = lens.pixel_rays()
    assert np.isnan(rx[[0, 0, -1, -1], [0, -1, 0, -1]]).all()   # no ray at the corners
    with_lens = dataclasses.replace(found, camera=lens)
    (p,) = place_objects(with_lens, [(0, 0, K.width, K.height)], CFG)
    assert p is not None and np.isfinite(p.position).all() and np.isfinite(p.size).all(), p
    # the whole frame's box holds both ends, apart on the table: one end is the object
    assert min(np.linalg.norm(np.array(p.position) - cuboid_centre(end))
               for end in (parts[0], parts[2])) < 0.03, p   # rays bent by the lens


def test_an_object_without_depth_is_not_placed_at_a_neighbour_reaching_into_its_box():
    """A black or shiny object reads no depth; its box (a detector's, a little larger than
    its pixels) catches the edge of a taller neighbour beside it. It gets no position (as
    documented), not the neighbour's edge: it was placed 6 cm off with twice its height."""
    tall = (0.0, 0.05, 0.08, 0.08, 0.25)
    for gap in (0.07, 0.075):
        low = (gap, 0.05, 0.06, 0.06, 0.06)
        depth, owner = cast_tabletop([tall, low])
        depth, boxes = depth_and_boxes(depth, owner, 2)
        x, y, w, h = boxes[1]
        boxes[1] = (int(x - 0.075 * w), int(y - 0.075 * h), int(1.15 * w), int(1.15 * h))
        found = propose_depth_boxes(depth, K, CFG)
        placed = place_objects(found, boxes, CFG)
        assert placed[1] is not None and np.linalg.norm(
            np.array(placed[1].position) - cuboid_centre(low)) < 0.015      # with its depth
        black = np.where(owner == 1, 0.0, depth).astype(np.float32)
        found = propose_depth_boxes(black, K, CFG)
        placed = place_objects(found, boxes, CFG)
        assert placed[0] is not None and placed[1] is None, (gap, placed[1])

"""The support surface's extent (:mod:`vl_distill_ros.perception.support_region`): what stands
beyond the table is no object on it. Scenes are synthetic and ray-cast: a table of finite
size, the floor below it and cuboids (objects on the table, furniture on the floor)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from vl_distill_ros.perception.depth_fusion import fuse_proposals
from vl_distill_ros.perception.camera_model import CameraIntrinsics
from vl_distill_ros.perception.depth_config import DepthProposalConfig
from vl_distill_ros.perception.depth_proposals import propose_depth_boxes
from vl_distill_ros.perception.boxes import box_iou
from vl_distill_ros.perception.support_region import support_region

K = CameraIntrinsics(fx=540.0, fy=540.0, cx=319.5, cy=239.5, width=640, height=480)
FLOOR = -0.7
#: The table top: a (to the right) and b (away from the camera) ranges, m.
TABLE = ((-0.6, 0.6), (-0.6, 0.3))


def cast_room(cuboids: list[tuple[tuple[float, float, float], tuple[float, float, float]]],
              tilt_deg: float = 55.0, distance: float = 0.9, table=TABLE
              ) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast depth (m, 0: nothing) of a table top (``table``, its centre
    ``distance`` m along the optical axis, its normal tilted ``tilt_deg`` from it), the
    floor :data:`FLOOR` m below it and axis-aligned ``cuboids`` ``(lo, hi)`` in table
    coordinates (a, b, height); and the owner map (the cuboid's index; -1 table, -2 floor)."""
    t = math.radians(tilt_deg)
    n = np.array([0.0, -math.sin(t), -math.cos(t)])      # towards the camera
    basis = np.stack([np.array([1.0, 0.0, 0.0]), np.cross(n, [1.0, 0.0, 0.0]), n])
    start = -(basis @ np.array([0.0, 0.0, distance]))    # camera in table coordinates
    u, v = np.meshgrid(np.arange(K.width), np.arange(K.height))
    dirs = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u, float)], -1) \
        @ basis.T
    depth = np.full(u.shape, np.inf)
    owner = np.full(u.shape, -3)
    with np.errstate(divide="ignore", invalid="ignore"):
        for level, who, bounds in ((0.0, -1, table), (FLOOR, -2, ((-9, 9), (-9, 9)))):
            tt = (level - start[2]) / dirs[..., 2]
            a, b = start[0] + tt * dirs[..., 0], start[1] + tt * dirs[..., 1]
            hit = (tt > 0) & (tt < depth) & (a >= bounds[0][0]) & (a <= bounds[0][1]) & \
                (b >= bounds[1][0]) & (b <= bounds[1][1])
            depth = np.where(hit, tt, depth)
            owner[hit] = who
        for i, (lo, hi) in enumerate(cuboids):
            t0 = (np.array(lo) - start) / dirs
            t1 = (np.array(hi) - start) / dirs
            near = np.nanmax(np.minimum(t0, t1), axis=-1)
            far = np.nanmin(np.maximum(t0, t1), axis=-1)
            hit = (near <= far) & (near > 0) & (near < depth)
            depth = np.where(hit, near, depth)
            owner[hit] = i
    return np.where(np.isfinite(depth) & (depth < 2.4), depth, 0.0).astype(np.float32), owner


def _box(owner: np.ndarray, i: int) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(owner == i)
    return int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)


#: A box-shaped object on the table, and a cabinet on the floor beyond the table's far
#: edge that rises 0.15 m above the table top.
MUG = ((-0.05, -0.1, 0.0), (0.05, 0.0, 0.1))
CABINET = ((-0.2, 0.45, FLOOR), (0.2, 0.75, 0.15))


def test_what_stands_beyond_the_table_is_no_object():
    depth, owner = cast_room([MUG, CABINET])
    mug, cabinet = _box(owner, 0), _box(owner, 1)
    assert cabinet[2] * cabinet[3] > 3000      # in view, above the table's far edge
    cfg = DepthProposalConfig()
    off = dataclasses.replace(cfg, support_min_frac=0.0)
    found, without = propose_depth_boxes(depth, K, cfg), propose_depth_boxes(depth, K, off)
    assert found.support is not None
    # without the support region the cabinet's top is a cluster above the plane
    assert any(box_iou(b, cabinet) > 0.3 for b in without.boxes)
    assert [box_iou(b, mug) > 0.8 for b in found.boxes] == [True]
    # the fusion adds no colour box whose raised samples stand beyond the table (it would,
    # knowing no surface) ...
    assert fuse_proposals(found, [cabinet], cfg, 10) == found.boxes
    assert cabinet in fuse_proposals(dataclasses.replace(found, support=None), [cabinet],
                                     cfg, 10)
    # ... but still one without depth on the table (a black object)
    holey = depth.copy()
    black = (mug[0] + mug[2] + 60, mug[1] + 20, 30, 30)
    holey[black[1]:black[1] + 30, black[0]:black[0] + 30] = 0.0
    assert black in fuse_proposals(propose_depth_boxes(holey, K, cfg), [black], cfg, 10)


def test_a_network_box_on_what_stands_beyond_the_table_is_left_out():
    """The box network finds objects by their look, wherever they stand: with depth, its box
    on the cabinet beyond the table is left out as the colour boxes there are, its box on
    the mug stays first, and so does one without depth under it (a black object)."""
    depth, owner = cast_room([MUG, CABINET])
    mug, cabinet = _box(owner, 0), _box(owner, 1)
    cfg = DepthProposalConfig()
    found = propose_depth_boxes(depth, K, cfg)
    black = (mug[0] + mug[2] + 60, mug[1] + 20, 30, 30)
    holey = depth.copy()
    holey[black[1]:black[1] + 30, black[0]:black[0] + 30] = 0.0
    found_holey = propose_depth_boxes(holey, K, cfg)
    network = [cabinet, mug, black]

    def kept(fused: list) -> bool:   # the mug's box first (with fuse_network_refine_iou: moved)
        return box_iou(fused[0], mug) > 0.9 and fused[1] == black and \
            not any(box_iou(b, cabinet) > 0.5 for b in fused)

    assert kept(fuse_proposals(found_holey, [], cfg, 10, network_boxes=network))
    # as the node fuses them: the colour proposals hold the network's boxes too
    assert kept(fuse_proposals(found_holey, network, cfg, 10, network_boxes=network))
    unrefined = dataclasses.replace(cfg, fuse_network_refine_iou=0.0)
    fused = fuse_proposals(found_holey, [], unrefined, 10, network_boxes=network)
    assert fused[:2] == [mug, black] and cabinet not in fused
    # without the support region (or its rule off) the network's boxes all stay
    off = dataclasses.replace(unrefined, support_min_frac=0.0)   # boxes compared as given
    assert fuse_proposals(propose_depth_boxes(depth, K, off), [], off, 10,
                          network_boxes=[cabinet, mug])[:2] == [cabinet, mug]
    assert fuse_proposals(found, [], cfg, 10, network_boxes=[cabinet]) == found.boxes


def test_an_object_at_the_tables_edge_or_cut_by_the_image_border_is_kept():
    near_edge = ((0.45, 0.15, 0.0), (0.55, 0.25, 0.12))        # at the far right corner
    depth, owner = cast_room([near_edge])
    found = propose_depth_boxes(depth, K)
    assert [box_iou(b, _box(owner, 0)) > 0.7 for b in found.boxes] == [True]
    # an object in front, cut by the image's bottom border: its feet lie out of view,
    # between the camera and the visible table (the camera's foot is in the region)
    front = ((-0.05, -0.52, 0.0), (0.05, -0.42, 0.2))
    depth, owner = cast_room([front])
    box = _box(owner, 0)
    assert box[1] + box[3] == K.height          # cut by the border
    assert any(box_iou(b, box) > 0.7 for b in propose_depth_boxes(depth, K).boxes)


def test_a_small_table_over_the_floor_is_the_support_not_the_floor():
    # a side table 0.4 x 0.3 m: the floor around it holds more of the frame than it does
    small = ((-0.2, 0.2), (-0.2, 0.1))
    depth, owner = cast_room([MUG], table=small)
    assert np.count_nonzero(owner == -2) > 2 * np.count_nonzero(owner == -1)
    mug = _box(owner, 0)
    cfg = DepthProposalConfig()
    found = propose_depth_boxes(depth, K, cfg)
    floor_only = propose_depth_boxes(depth, K, dataclasses.replace(cfg, raised_plane_frac=0.0))
    # on the floor's plane the table and the mug are one cluster, the table's box
    assert not floor_only.raised_plane
    assert not any(box_iou(b, mug) > 0.5 for b in floor_only.boxes)
    assert found.raised_plane
    assert [box_iou(b, mug) > 0.8 for b in found.boxes] == [True]
    heights = np.asarray(found.height_grid)[::4, ::4]
    table = owner[found.offset::found.stride, found.offset::found.stride][::4, ::4] == -1
    assert np.nanmax(np.abs(heights[table])) < 0.01         # the table top is the plane
    # an object on the floor beside an empty small table: the floor holds the objects
    on_floor = ((0.3, 0.3, FLOOR), (0.42, 0.42, FLOOR + 0.12))
    depth_f, owner_f = cast_room([on_floor], table=small)
    floor = propose_depth_boxes(depth_f, K, cfg)
    assert not floor.raised_plane
    assert [box_iou(b, _box(owner_f, 0)) > 0.8 for b in floor.boxes] == [True]
    # a table that fills the view is the dominant plane: nothing is looked for above it;
    # and a table top holding under raised_plane_frac of the frame is not taken
    large = propose_depth_boxes(*cast_room([MUG])[:1], K, cfg)
    assert not large.raised_plane and [box_iou(b, mug) > 0.5 for b in large.boxes] == [True]
    assert not propose_depth_boxes(depth, K, dataclasses.replace(
        cfg, raised_plane_frac=1.2 * np.count_nonzero(owner == -1) / np.count_nonzero(depth))
    ).raised_plane


def test_the_bottom_of_something_taller_than_any_object_is_no_object():
    # a panel 0.5 m wide at the table's far edge (a cabinet's side, a monitor, a person),
    # rising past the height band; its bottom 0.45 m is a cluster above the plane
    panel = ((-0.25, 0.3, FLOOR), (0.25, 0.36, 1.5))
    depth, owner = cast_room([MUG, panel], tilt_deg=65.0, distance=1.4)
    mug, cfg = _box(owner, 0), DepthProposalConfig()
    without = propose_depth_boxes(depth, K, dataclasses.replace(cfg, taller_contact_cells=0))
    assert any(box_iou(b, _box(owner, 1)) > 0.3 for b in without.boxes)
    assert [box_iou(b, mug) > 0.8 for b in propose_depth_boxes(depth, K, cfg).boxes] == [True]
    # an object in front of the panel is no part of it: a depth step lies between them
    front = ((-0.05, 0.05, 0.0), (0.05, 0.15, 0.2))
    depth, owner = cast_room([front, panel], tilt_deg=65.0, distance=1.4)
    boxes = propose_depth_boxes(depth, K, cfg).boxes
    assert [box_iou(b, _box(owner, 0)) > 0.7 for b in boxes] == [True]


def _grid_points(shape: tuple[int, int], z: float = 1.0) -> np.ndarray:
    """Camera-frame points of a grid of samples (one per cell, every 2 px) on the plane
    ``z`` m in front of a camera looking straight at it."""
    rows, cols = np.indices(shape)
    return np.stack([(2 * cols.ravel() + 1 - K.cx) * z / K.fx,
                     (2 * rows.ravel() + 1 - K.cy) * z / K.fy,
                     np.full(rows.size, z)], 1).astype(np.float32)


def test_the_region_is_the_hull_of_the_surfaces_large_pieces_not_of_thin_lines():
    shape = (240, 320)
    points = _grid_points(shape)
    on = np.zeros(shape, np.uint8)
    on[100:200, 40:200] = 1          # the table
    on[20:24, :] = 1                 # where a wall crosses the plane's height: a thin line
    on[150:156, 290:296] = 1         # a small patch (under 5% of the on-plane cells)
    normal = np.array([0.0, 0.0, -1.0])
    region = support_region(on, np.arange(on.size), points, normal, 0.05, 0.05)
    assert region is not None

    def at(row: int, col: int) -> np.ndarray:
        return points[row * shape[1] + col][None]

    assert region.holds(at(150, 120))                 # on the table
    assert not region.holds(at(21, 270))              # at the line
    assert not region.holds(at(153, 293))             # at the small patch
    # the margin: 1.5 cm past the table's right edge is held, 15 cm past it is not
    step = 2 / K.fx                                   # m per cell at 1 m
    assert region.holds(at(150, 199 + round(0.015 / step)))
    assert not region.holds(at(150, 199 + round(0.15 / step)))
    tight = support_region(on, np.arange(on.size), points, normal, 0.05, 0.0)
    assert not tight.holds(at(150, 199 + round(0.015 / step)))
    # the camera's foot (here the image centre's ray) belongs to the region
    assert region.holds(np.array([[0.0, 0.0, 1.0]]))
    assert support_region(np.zeros(shape, np.uint8), np.arange(on.size), points, normal,
                          0.05, 0.05) is None
    assert not region.holds(np.zeros((0, 3)))


def test_a_plane_in_many_small_pieces_gives_no_region_and_no_error():
    # speckled depth (salt noise, inf or negative values) breaks the plane's samples into
    # pieces none of which holds support_min_frac of them: no region, nothing filtered
    shape = (240, 320)
    points = _grid_points(shape)
    on = np.zeros(shape, np.uint8)
    for top in range(0, 240, 24):
        for left in range(0, 320, 32):
            on[top:top + 10, left:left + 10] = 1     # 100 pieces of 1% each
    normal = np.array([0.0, 0.0, -1.0])
    assert support_region(on, np.arange(on.size), points, normal, 0.05, 0.05) is None
    # with a lower fraction the same pieces do make a region
    region = support_region(on, np.arange(on.size), points, normal, 0.005, 0.05)
    assert region is not None and region.holds(points[120 * shape[1] + 160][None])


def test_the_gaps_of_sparse_depth_between_cells_on_the_plane_are_filled():
    # half the cells measured at random: the opening removes the table's scattered cells;
    # the cells without a measurement between them count as plane when the frame is sparse
    shape = (240, 320)
    points = _grid_points(shape)
    rng = np.random.default_rng(2)
    measured = rng.random(shape) >= 0.5
    on = np.zeros(shape, np.uint8)
    on[100:200, 40:200] = 1
    on &= measured.view(np.uint8)
    flat = np.flatnonzero(measured)          # the samples: the measured cells
    normal = np.array([0.0, 0.0, -1.0])
    table = points[flat]
    broken = support_region(on, flat, table, normal, 0.05, 0.05)
    region = support_region(on, flat, table, normal, 0.05, 0.05, measured)
    assert region is not None

    def at(row: int, col: int) -> np.ndarray:
        return points[row * shape[1] + col][None]

    cells = [(row, col) for row in range(100, 200, 10) for col in range(40, 200, 10)]
    held = sum(region.holds(at(row, col)) for row, col in cells)
    assert held == len(cells)
    assert broken is None or sum(broken.holds(at(row, col)) for row, col in cells) < 0.75 * held
    step = 2 / K.fx
    assert not region.holds(at(150, 199 + round(0.15 / step)))


def test_depth_that_found_no_object_does_not_judge_the_network_s_boxes_by_the_support():
    """A frame where depth finds no object of its own (here an empty table; on real scenes
    also a plane that is not the table, see the rendered case in test_depth_touching) leaves
    the network's boxes as they are (``fuse_network_support_min_boxes`` 1): the cabinet's
    box beyond the empty table stays, as colour alone would have it; with 0 the support
    surface judges it as on a table with objects."""
    depth, owner = cast_room([CABINET])
    cabinet = _box(owner, 0)
    cfg = dataclasses.replace(DepthProposalConfig(), fuse_network_refine_iou=0.0)
    found = propose_depth_boxes(depth, K, cfg)
    assert found.plane is not None and found.boxes == []
    assert fuse_proposals(found, [], cfg, 10, network_boxes=[cabinet]) == [cabinet]
    always = dataclasses.replace(cfg, fuse_network_support_min_boxes=0)
    assert fuse_proposals(found, [], always, 10, network_boxes=[cabinet]) == []
    # with an object on the table depth finds it, and the cabinet's box is left out again
    depth, owner = cast_room([MUG, CABINET])
    found = propose_depth_boxes(depth, K, cfg)
    assert len(found.boxes) == 1
    fused = fuse_proposals(found, [], cfg, 10, network_boxes=[_box(owner, 1), _box(owner, 0)])
    assert fused == [_box(owner, 0)]

"""Object tracks (perception/object_tracks.py): boxes linked across a camera's frames by
overlap and look, views pooled, scene cuts, gaps, out-of-order frames and bounds; and through
the pipeline: a sequence of views of one object named from the pooled views."""
from __future__ import annotations

import numpy as np
import pytest

from vl_distill_ros.perception.boxes import box_iou_matrix
from vl_distill_ros.perception.object_tracks import (MAX_TRACKS, MIN_SIMILARITY, ObjectTracks,
                                                     TrackSettings)

ON = TrackSettings(enabled=True)


def _unit(*v: float) -> np.ndarray:
    a = np.asarray(v, np.float32)
    return a / np.linalg.norm(a)


def _image(level: int = 100) -> np.ndarray:
    return np.full((48, 64, 3), level, np.uint8)


def test_box_iou_matrix():
    iou = box_iou_matrix([(0, 0, 10, 10), (20, 20, 10, 10)], [(5, 0, 10, 10), (0, 0, 10, 10)])
    assert iou.shape == (2, 2)
    assert iou[0, 1] == pytest.approx(1.0) and iou[0, 0] == pytest.approx(50 / 150)
    assert iou[1, 0] == 0.0 and box_iou_matrix([], [(0, 0, 1, 1)]).shape == (0, 1)
    assert box_iou_matrix([(0, 0, 0, 0)], [(0, 0, 0, 0)])[0, 0] == 0.0


def test_an_object_keeps_its_id_and_its_views_are_pooled():
    tracks = ObjectTracks()
    a, b = _unit(1, 0, 0), _unit(0.8, 0.6, 0)
    pooled, ids = tracks.update("cam", 0.0, _image(), [(10, 10, 20, 20)], a[None], ON)
    assert ids == [1] and np.allclose(pooled[0], a)
    pooled, ids = tracks.update("cam", 0.1, _image(), [(12, 11, 20, 20)], b[None], ON)
    assert ids == [1]
    want = ON.memory * a + b
    assert np.allclose(pooled[0], want / np.linalg.norm(want), atol=1e-6)
    # memory 0: the id is kept, nothing pooled
    _, ids = tracks.update("cam", 0.2, _image(), [(12, 11, 20, 20)], a[None],
                           TrackSettings(enabled=True, memory=0.0))
    pooled, ids2 = tracks.update("cam", 0.3, _image(), [(12, 11, 20, 20)], b[None],
                                 TrackSettings(enabled=True, memory=0.0))
    assert ids == ids2 == [1] and np.allclose(pooled[0], b)


def test_a_box_that_does_not_overlap_or_looks_different_starts_a_new_track():
    tracks = ObjectTracks()
    a = _unit(1, 0, 0)
    tracks.update("cam", 0.0, _image(), [(10, 10, 20, 20), (100, 10, 20, 20)],
                  np.stack([a, _unit(0, 1, 0)]), ON)
    other = _unit(0, 0, 1)                     # cosine 0 < MIN_SIMILARITY
    assert float(a @ other) < MIN_SIMILARITY
    pooled, ids = tracks.update("cam", 0.1, _image(),
                                [(10, 10, 20, 20), (40, 40, 20, 20), (100, 10, 20, 20)],
                                np.stack([other, a, _unit(0, 1, 0)]), ON)
    assert ids[0] not in (1, 2) and ids[1] not in (1, 2) and ids[2] == 2
    assert np.allclose(pooled[0], other) and np.allclose(pooled[1], a)


def test_each_track_takes_one_box_the_best_first():
    tracks = ObjectTracks()
    a = _unit(1, 0, 0)
    tracks.update("cam", 0.0, _image(), [(10, 10, 20, 20)], a[None], ON)
    # two boxes over the old one: the one overlapping more (and alike) joins it
    _, ids = tracks.update("cam", 0.1, _image(), [(16, 10, 20, 20), (10, 10, 20, 20)],
                           np.stack([a, a]), ON)
    assert ids[1] == 1 and ids[0] != 1


def test_a_scene_cut_a_gap_and_another_camera_end_or_keep_tracks_apart():
    a = _unit(1, 0, 0)
    box = [(10, 10, 20, 20)]
    tracks = ObjectTracks()
    tracks.update("cam", 0.0, _image(100), box, a[None], ON)
    assert tracks.counts("cam") == (1, 1) and tracks.counts("nowhere") == (0, 0)
    _, ids = tracks.update("cam", 0.1, _image(220), box, a[None], ON)     # another scene
    assert ids == [2] and tracks.counts("cam") == (1, 2)
    _, ids = tracks.update("cam", 0.2 + ON.max_gap_s, _image(220), box, a[None], ON)  # gap
    assert ids == [3]
    _, ids = tracks.update("cam", 0.3 + ON.max_gap_s, _image(220), box, a[None], ON)
    assert ids == [3]
    _, ids = tracks.update("other", 0.3 + ON.max_gap_s, _image(220), box, a[None], ON)
    assert ids == [1]                          # cameras count their own tracks
    # a frame older than the camera's last (by up to max_gap_s) is scored alone and
    # changes nothing
    pooled, ids = tracks.update("cam", 0.5, _image(220), box, _unit(0.8, 0.6, 0)[None], ON)
    assert ids == [None] and np.allclose(pooled[0], _unit(0.8, 0.6, 0))
    _, ids = tracks.update("cam", 0.4 + ON.max_gap_s, _image(220), box, a[None], ON)
    assert ids == [3]
    # time gone back by more than max_gap_s (a bag played again, a simulator restarted):
    # the camera's tracks end and the frames are followed again, ids counting on
    _, ids = tracks.update("cam", 0.0, _image(220), box, a[None], ON)
    assert ids == [4] and tracks.counts("cam") == (1, 4)
    _, ids = tracks.update("cam", 0.1, _image(220), box, a[None], ON)
    assert ids == [4]
    tracks.reset()
    _, ids = tracks.update("cam", 9.0, _image(220), box, a[None], ON)
    assert ids == [1]


def test_a_loop_shorter_than_the_gap_is_followed_again_not_scored_alone():
    """``ros2 bag play --loop`` of a clip shorter than ``track_max_gap_s`` (or a clock
    stepped back by less): every frame after the first pass was older than the clip's last
    by less than the gap and scored alone, all but the clip's last, for as long as the loop
    ran. Two frames in a row older than the last one, in order, mean the time went back."""
    a, box = _unit(1, 0, 0), [(10, 10, 20, 20)]
    tracks = ObjectTracks()
    clip = [50.0 + 0.1 * i for i in range(8)]
    first = [tracks.update("cam", s, _image(), box, a[None], ON)[1][0] for s in clip]
    again = [tracks.update("cam", s, _image(), box, a[None], ON)[1][0] for s in clip]
    assert first == [1] * 8 and again[0] is None and again[1:] == [2] * 7, (first, again)
    # one late frame between frames in order, now and then, is still only scored alone
    tracks = ObjectTracks()
    ids = [tracks.update("cam", s, _image(), box, a[None], ON)[1][0]
           for s in (1.0, 1.1, 1.2, 1.05, 1.3, 1.4, 1.35, 1.5)]
    assert ids == [1, 1, 1, None, 1, 1, None, 1], ids


def test_tracks_and_cameras_are_bounded_and_bad_input_is_refused():
    tracks = ObjectTracks()
    rng = np.random.default_rng(0)
    for f in range(3):
        boxes = [(int(x), 0, 2, 2) for x in rng.integers(0, 10_000, 200)]
        emb = rng.normal(size=(200, 8)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        tracks.update("cam", 0.01 * f, _image(), boxes, emb, ON)
    assert len(tracks._cameras["cam"].tracks) <= MAX_TRACKS
    for c in range(100):
        tracks.update(f"cam{c}", float(c), _image(), [(0, 0, 2, 2)], _unit(1, 0)[None], ON)
    assert len(tracks._cameras) <= 32
    # the camera whose last frame came longest ago goes, whatever the stamps (cameras need
    # not share a clock): a new camera on a clock far behind the others is kept
    for f in range(2):
        _, ids = tracks.update("sim", 0.1 * f, _image(), [(0, 0, 2, 2)], _unit(1, 0)[None], ON)
        assert ids == [1] and "sim" in tracks._cameras
    assert "cam68" not in tracks._cameras and "cam69" in tracks._cameras
    with pytest.raises(ValueError, match="boxes but embeddings"):
        tracks.update("cam", 1.0, _image(), [(0, 0, 2, 2)], np.zeros((2, 3), np.float32), ON)
    for bad in ({"memory": 1.0}, {"min_iou": 0.0}, {"max_gap_s": -1.0}, {"max_gap_s": 11.0}):
        with pytest.raises(ValueError, match="track_"):
            TrackSettings(**bad)
    # no boxes: nothing to link, the frame still counts for the scene
    pooled, ids = tracks.update("cam", 2.0, _image(), [], np.zeros((0, 3), np.float32), ON)
    assert pooled.shape == (0, 3) and ids == []


@pytest.mark.parametrize("stamp_of", [lambda f: 5.0 + 0.1 * f, lambda f: 0.0],
                         ids=["stamps", "every-stamp-0"])
def test_a_new_object_keeps_its_track_when_stamps_repeat_past_the_track_bound(stamp_of):
    """Header stamps that do not move (a driver that leaves them 0, a camera stamped by a
    paused sim clock): no track ends by gap, so the bound is reached; it cut the newest
    tracks (the frame's own, all of one stamp), and every object seen after that got a new
    id on every frame while ``tracks_active`` counted every remembered track."""
    tracks = ObjectTracks()
    rng = np.random.default_rng(1)
    for f in range(MAX_TRACKS + 6):           # objects passing by, each seen once
        e = rng.normal(size=(1, 8)).astype(np.float32)
        tracks.update("cam", stamp_of(f), _image(), [(1000 * f, 0, 20, 20)],
                      e / np.linalg.norm(e), ON)
    still = _unit(1, 2, 3, 4, 5, 6, 7, 8)[None]
    ids = [tracks.update("cam", stamp_of(MAX_TRACKS + 6 + k), _image(), [(-5000, 0, 20, 20)],
                         still, ON)[1][0] for k in range(4)]
    assert len(set(ids)) == 1, ids
    assert tracks.counts("cam") == (1, MAX_TRACKS + 7)
    assert len(tracks._cameras["cam"].tracks) <= MAX_TRACKS


# -- through the pipeline, the shipped student on rendered views ------------------------------
@pytest.fixture(scope="module")
def views(ycb_models):
    """Five views of one scene along a 20-degree arc, then a view of another scene."""
    from vl_distill_ros.sim.scene import SceneRenderer, SceneSpec, render_scene, render_views

    spec = SceneSpec(objects_per_scene=(3, 3))
    pool = ["006_mustard_bottle", "011_banana", "013_apple", "024_bowl", "003_cracker_box",
            "012_strawberry", "035_power_drill"]
    with SceneRenderer(ycb_models) as r:
        frames = render_views(r, pool, np.random.default_rng(11), spec, views=5,
                              sweep_deg=20.0)
        frames.append(render_scene(r, pool, np.random.default_rng(12), spec))
    return frames


@pytest.fixture(scope="module")
def shipped_pipeline():
    from vl_distill_ros.model.bundle import load_bundle
    from vl_distill_ros.perception.pipeline import PerceptionPipeline
    from vl_distill_ros.ros.params import default_model_path

    pipe = PerceptionPipeline(load_bundle(default_model_path()))
    yield pipe
    pipe.close()


def _key_of(box, truth) -> str | None:
    iou = box_iou_matrix([box], [o.bbox for o in truth])[0]
    return truth[int(iou.argmax())].key if iou.size and iou.max() >= 0.5 else None


def test_the_pipeline_follows_each_object_across_views_and_scores_its_pooled_views(
        shipped_pipeline, views):
    pipe = shipped_pipeline
    pipe.tracks.reset()
    alone = [pipe.process(v.image)[0] for v in views]          # no stamp: not followed
    assert all(o.track_id is None for objs in alone for o in objs)
    no_time = pipe.process(views[0].image, camera="cam", stamp=float("nan"))[0]
    assert no_time and all(o.track_id is None for o in no_time)
    tracked = [pipe.process(v.image, camera="cam", stamp=0.1 * i)[0]
               for i, v in enumerate(views)]
    ids_by_key: dict[str, set] = {}
    for v, objs in zip(views[:5], tracked[:5]):
        for o in objs:
            key = _key_of(o.bbox, v.objects)
            if key is not None:
                ids_by_key.setdefault(key, set()).add(o.track_id)
    assert len(ids_by_key) >= 2, ids_by_key
    assert all(len(ids) == 1 for ids in ids_by_key.values()), ids_by_key   # one id each
    assert len({next(iter(ids)) for ids in ids_by_key.values()}) == len(ids_by_key)
    # the first view is scored alone; later views from their pooled views
    assert [o.top_k for o in tracked[0]] == [o.top_k for o in alone[0]]
    assert any(a.top_k != t.top_k for objs_a, objs_t in zip(alone[1:5], tracked[1:5])
               for a, t in zip(objs_a, objs_t))
    # another scene: new tracks, scored alone
    seen_ids = {i for ids in ids_by_key.values() for i in ids}
    assert not {o.track_id for o in tracked[5]} & seen_ids
    assert [o.top_k for o in tracked[5]] == [o.top_k for o in alone[5]]
    # off: each frame alone again; full_frame: the frame is no object to follow
    pipe.configure(tracks=TrackSettings(enabled=False))
    try:
        again = pipe.process(views[2].image, camera="cam", stamp=0.6)[0]
        assert [o.top_k for o in again] == [o.top_k for o in alone[2]]
        assert all(o.track_id is None for o in again)
    finally:
        pipe.configure(tracks=TrackSettings())
    pipe.configure(crop_source="full_frame")
    try:
        for i in range(2):
            (whole,) = pipe.process(views[i].image, camera="hand", stamp=1.0 + 0.1 * i)[0]
            assert whole.track_id is None
    finally:
        pipe.configure(crop_source="proposals")
    # nor the full frame that proposals fall back to when they find nothing
    pipe.configure(fallback_full_frame=True)
    try:
        blank = np.full((240, 320, 3), 128, np.uint8)
        for i in range(2):
            (whole,) = pipe.process(blank, camera="blank", stamp=2.0 + 0.1 * i)[0]
            assert whole.bbox == (0, 0, 320, 240) and whole.track_id is None
    finally:
        pipe.configure(fallback_full_frame=False)

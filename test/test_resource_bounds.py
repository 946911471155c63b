"""Resource bounds of the node's parameter, diagnostics, /tf_static and RANSAC paths.

Each input here was accepted and then cost work (or memory) that grew faster than the input
or without bound: a ``labels`` list of 20k names (quadratic key check, 15 s in the executor),
a free text of 4 MB in every ``/diagnostics`` message, a ``SetParameters`` request of 10k
entries (quadratic grouping, 12 s), a complete graph of static transforms (a million kept),
and RANSAC settings that made a 15 GB distance matrix. The assertions count work or
allocations, never time.
"""
from __future__ import annotations

import math
import random
import tracemalloc
from types import SimpleNamespace as NS

import numpy as np
import pytest
import rclpy
from rcl_interfaces.srv import SetParameters, SetParametersAtomically
from rclpy.node import Node
from rclpy.parameter import Parameter

import vl_distill_ros.perception.support_plane as support_plane
from test_depth import K, OBJECTS, render_tabletop
from helpers import ransac_draws
from vl_distill_ros.model.vocabulary import (MAX_LABELS, MAX_NAME_LENGTH, Label, Vocabulary,
                                             VocabularyError, fold_key)
from vl_distill_ros.perception.camera_model import DepthError
from vl_distill_ros.perception.depth_cloud import depth_cloud
from vl_distill_ros.perception.depth_config import (DepthProposalConfig,
                                                    load_depth_config)
from vl_distill_ros.perception import static_transforms
from vl_distill_ros.perception.static_transforms import (StaticTransforms, Transform,
                                                         TransformError)
from vl_distill_ros.perception.support_plane import fit_plane_ransac
from vl_distill_ros.ros import parameter_service, vocabulary_controller
from vl_distill_ros.ros.diagnostics import (MAX_DIAGNOSTIC_TEXT, MAX_VALUE_TEXT, CameraState,
                                            camera_status, model_status)
from vl_distill_ros.ros.parameter_service import GroupedParameterService, set_steps


# ---------------------------------------------------------------------------------------
# labels / descriptions (build_vocabulary)
# ---------------------------------------------------------------------------------------
@pytest.fixture()
def labels_built(monkeypatch) -> list[int]:
    """Counts the :class:`Label` objects build_vocabulary makes (its per-name work)."""
    made = [0]

    def counting(*args, **kwargs) -> Label:
        made[0] += 1
        return Label(*args, **kwargs)

    monkeypatch.setattr(vocabulary_controller, "Label", counting)
    return made


def test_too_many_labels_are_refused_before_any_per_name_work(labels_built):
    names = [f"name {i}" for i in range(MAX_LABELS + 5000)]
    with pytest.raises(VocabularyError, match=f"has {len(names)} labels; the limit is "
                                              f"{MAX_LABELS}"):
        vocabulary_controller.build_vocabulary(names, [], None)
    assert labels_built[0] == 0


def test_an_over_long_name_or_description_is_refused_before_the_rest_is_built(labels_built):
    names = ["x" * 5_000_000] + [f"name {i}" for i in range(900)]
    with pytest.raises(VocabularyError, match=f"label 0 name 'x+'... is 5000000 characters; "
                                              f"the limit is {MAX_NAME_LENGTH}") as err:
        vocabulary_controller.build_vocabulary(names, [], None)
    assert len(str(err.value)) < 200 and labels_built[0] == 0
    descriptions = ["d" * 1_000_000] + [""] * 900
    with pytest.raises(VocabularyError, match="label 0 .* description is 1000000 characters"):
        vocabulary_controller.build_vocabulary(names[1:] + ["mug"], descriptions, None)
    assert labels_built[0] == 0


def _carried_keys_as_before(names: list[str], previous: Vocabulary) -> list[str]:
    """The keys of the former (quadratic) rule: a name keeps its previous key unless that
    key equals another entry's own or carried key."""
    keys = {lb.name.casefold(): lb.key for lb in previous}
    labels = [Label(name=n, key=keys.get(n.casefold(), "")) for n in names]
    own, carried = [fold_key(lb.name) for lb in labels], [fold_key(lb.key) for lb in labels]
    out = []
    for i, lb in enumerate(labels):
        others = own[:i] + own[i + 1:] + carried[:i] + carried[i + 1:]
        clash = carried[i] != own[i] and carried[i] in others
        out.append(Label(name=lb.name).key if clash else lb.key)
    return out


def test_carried_keys_follow_the_same_rule_as_before():
    rng = random.Random(5)
    pool = ["mug", "cup", "bowl", "plate", "fork", "knife", "spoon", "pan", "pot", "lid"]
    for _ in range(300):
        prev_names = rng.sample(pool, rng.randint(1, 6))
        previous = Vocabulary(tuple(Label(n, key=k) for n, k in zip(
            prev_names, rng.sample(pool + ["box", "can"], len(prev_names)))))
        names = rng.sample(pool, rng.randint(1, 8))
        try:
            got = vocabulary_controller.build_vocabulary(names, [], previous).keys
        except VocabularyError:   # two carried keys alike: rejected, as before
            continue
        assert got == _carried_keys_as_before(names, previous), (names, previous)


# ---------------------------------------------------------------------------------------
# /diagnostics
# ---------------------------------------------------------------------------------------
def _period(**values) -> dict:
    base = {"topic": "/cam/image", "transport": "raw", "received": 3, "processed": 3,
            "dropped": 0, "last_error": ""}
    return {"values": {**base, **values}, "latencies": [], "processing": [], "bad_recent": 0,
            "last_error": "", "last_latency": 0.0}


def test_every_diagnostic_value_is_clipped():
    """A depth encoding of 4 MB reached ``last_colour_only_reason`` whole. Free texts are cut
    to 200 characters, identifiers (topics, paths) only past MAX_VALUE_TEXT: replay-eval
    keys cameras by ``topic``."""
    huge = "E" * 4_000_000
    long_topic = "/" + "t" * 300
    status = camera_status("/n", _period(last_colour_only_reason=f"bad encoding {huge}",
                                         depth_topic=huge, last_depth_error=huge,
                                         topic=long_topic), 1)
    values = {kv.key: kv.value for kv in status.values}
    assert len(values["last_depth_error"]) <= MAX_DIAGNOSTIC_TEXT
    assert len(values["last_colour_only_reason"]) <= MAX_DIAGNOSTIC_TEXT
    assert values["topic"] == long_topic
    assert all(len(v) <= MAX_VALUE_TEXT for v in values.values())
    assert values["last_colour_only_reason"].startswith("bad encoding EEE")
    assert values["last_colour_only_reason"].endswith(f"[{len(huge) + 13} chars]")
    assert values["received"] == "3"


def test_a_camera_that_stops_sending_is_reported_silent(monkeypatch):
    """A camera whose driver died stayed OK with its last latency in /diagnostics (only
    processed_in_period 0 told): after 5 s without an image (or 10 of its recent intervals
    when longer: a slow camera) its status is WARN, "no image for ..."; a camera that has
    sent nothing yet is not silent."""
    from vl_distill_ros.ros import diagnostics
    from vl_distill_ros.ros.diagnostics import DiagnosticStatus

    now = [100.0]
    monkeypatch.setattr(diagnostics, "time", NS(monotonic=lambda: now[0]))  # this module's
    fresh = CameraState("/cam/image", resolved="/cam/image")
    assert camera_status("/n", fresh.take_period(), 1).level == DiagnosticStatus.OK
    cam = CameraState("/cam/image", resolved="/cam/image")
    for i in range(30):                     # 30 images/s
        cam.image_arrived(100.0 + i / 30)
        cam.received += 1
    now[0] = 101.0 + 4.0
    status = camera_status("/n", cam.take_period(), 1)
    assert status.level == DiagnosticStatus.OK, status.message
    assert {kv.key: kv.value for kv in status.values}["last_image_age_s"] == "4.0"
    now[0] = 101.0 + 6.0
    status = camera_status("/n", cam.take_period(), 1)
    assert status.level == DiagnosticStatus.WARN
    assert status.message.startswith("no image for 6.0 s (before: 30.0 images/s)")
    slow = CameraState("/slow/image", resolved="/slow/image")
    for i in range(4):                      # one image every 2 s
        slow.image_arrived(100.0 + 2.0 * i)
    now[0] = 106.0 + 12.0
    assert camera_status("/n", slow.take_period(), 1).level == DiagnosticStatus.OK
    now[0] = 106.0 + 21.0
    assert camera_status("/n", slow.take_period(), 1).level == DiagnosticStatus.WARN


def test_the_label_listing_keeps_fifty_whole_names():
    names = [f"{i:02d}".ljust(MAX_NAME_LENGTH, "n") for i in range(60)]
    vocab = {"error": "", "store_error": "", "state": "ready", "source": "bundle"}
    status = model_status("/n", 1, names, vocab, 1, {"model_path": "m" * 100_000})
    values = {kv.key: kv.value for kv in status.values}
    assert values["labels"] == ", ".join(names[:50]) + " ..."
    assert len(values["model_path"]) <= MAX_VALUE_TEXT


# ---------------------------------------------------------------------------------------
# SetParameters requests
# ---------------------------------------------------------------------------------------
class _CountingGroup(frozenset):
    """A group that counts membership tests (the grouping's per-entry work)."""

    tests = 0

    def __contains__(self, name: object) -> bool:
        type(self).tests += 1
        return frozenset.__contains__(self, name)


def test_set_steps_is_linear_in_the_request():
    """Every repeat of a grouped name rescanned the whole request."""
    _CountingGroup.tests = 0
    groups = (_CountingGroup({"labels", "descriptions"}), _CountingGroup({"top_k", "crop"}))
    n = 600
    steps = set_steps(["top_k"] * n + ["labels", "descriptions"], groups)
    assert steps == [[i] for i in range(n)] + [[n, n + 1]]
    assert _CountingGroup.tests <= 4 * (n + 2), _CountingGroup.tests


@pytest.fixture(scope="module")
def grouped_node():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = Node("bounds_rules", context=ctx, start_parameter_services=False)
    node.declare_parameter("top_k", 3)
    service = GroupedParameterService(node, [frozenset({"top_k", "other"})])
    yield node, service
    node.destroy_node()
    ctx.try_shutdown()


def test_a_request_over_the_limit_is_refused_whole(grouped_node):
    limit = getattr(parameter_service, "MAX_REQUEST_PARAMETERS", 4096)
    node, service = grouped_node
    msgs = [Parameter("top_k", value=5).to_parameter_msg()] * (limit + 1)
    response = service._set_parameters_callback(SetParameters.Request(parameters=msgs),
                                                SetParameters.Response())
    assert len(response.results) == len(msgs)
    assert not any(r.successful for r in response.results)
    assert response.results[0].reason == (
        f"the request sets {len(msgs)} parameters; the limit is {limit} per "
        "request (nothing was set)")
    atomic = service._set_parameters_atomically_callback(
        SetParametersAtomically.Request(parameters=msgs), SetParametersAtomically.Response())
    assert not atomic.result.successful and "the limit is" in atomic.result.reason
    assert node.get_parameter("top_k").value == 3
    ok = service._set_parameters_callback(SetParameters.Request(parameters=msgs[:2]),
                                          SetParameters.Response())
    assert all(r.successful for r in ok.results) and node.get_parameter("top_k").value == 5


# ---------------------------------------------------------------------------------------
# /tf_static
# ---------------------------------------------------------------------------------------
def _held_transforms(store: StaticTransforms) -> int:
    """Transform objects the store holds, whatever its layout."""
    count, todo = 0, list(vars(store).values())
    while todo:
        item = todo.pop()
        if isinstance(item, Transform):
            count += 1
        elif isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, (list, tuple)):
            todo.extend(item)
    return count


def _ts(parent: str, child: str, x: float = 0.01) -> NS:
    return NS(header=NS(frame_id=parent), child_frame_id=child,
              transform=NS(translation=NS(x=x, y=0.0, z=0.0),
                           rotation=NS(x=0.0, y=0.0, z=0.0, w=1.0)))


def test_static_transforms_keep_one_parent_per_frame():
    """A complete graph over K frames kept K*(K-1) transforms; tf2 keeps one per child."""
    store, k = StaticTransforms(), 120
    for i in range(k):
        store.add_message(NS(transforms=[_ts(f"f{i}", f"f{j}") for j in range(i + 1, k)]))
    assert len(store) == k and _held_transforms(store) <= k
    # the last parent of f{k-1} is f{k-2}: f0 -> ... reaches it only through that link
    assert store.lookup(f"f{k - 2}", f"f{k - 1}").as_pose()[0] == pytest.approx(0.01)
    store.add("a", "b", (1, 0, 0), (0, 0, 0, 1))
    store.add("c", "b", (2, 0, 0), (0, 0, 0, 1))     # b moves from a to c, as in tf2
    assert store.lookup("c", "b").as_pose()[0] == 2.0
    with pytest.raises(TransformError, match="no static transform names frame 'a'"):
        store.lookup("a", "b")
    store.add("b", "c", (3, 0, 0), (0, 0, 0, 1))     # the same link the other way round
    assert store.lookup("b", "c").as_pose()[0] == 3.0
    assert store.lookup("c", "b").as_pose()[0] == -3.0


def test_long_frame_names_are_refused_and_errors_quote_them_clipped():
    store, limit = StaticTransforms(), getattr(static_transforms, "MAX_FRAME_NAME", 256)
    long = "a" * (limit + 1)
    with pytest.raises(TransformError, match=f"the limit is {limit}") as err:
        store.add(long, "b", (0, 0, 0), (0, 0, 0, 1))
    assert len(str(err.value)) < 300
    assert store.add_message(NS(transforms=[_ts("x" * 1_000_000, "b"), _ts("a", "b")])) == 1
    for i in range(20):
        store.add("a", f"{i:02d}".ljust(limit, "f"), (0, 0, 0), (0, 0, 0, 1))
    with pytest.raises(TransformError, match="no static transform names frame") as err:
        store.lookup("camera_color_optical_frame", "q" * 1_000_000)
    assert len(str(err.value)) < 2000


# ---------------------------------------------------------------------------------------
# RANSAC
# ---------------------------------------------------------------------------------------
def _dense_ransac(points: np.ndarray, cfg: DepthProposalConfig,
                  rng: np.random.Generator) -> tuple[np.ndarray, float, float] | None:
    """fit_plane_ransac as it was: every hypothesis scored in one dense matrix."""
    sub, fit, normals, offsets = ransac_draws(points, int(cfg.ransac_samples),
                                              int(cfg.ransac_iterations), rng)
    thr_sub = cfg.plane_threshold_m + cfg.plane_threshold_quadratic * sub[:, 2] ** 2
    dist = sub @ normals.T
    dist += offsets
    np.abs(dist, out=dist)
    scores = np.add.reduce((dist < thr_sub[:, None]).view(np.uint8), axis=0, dtype=np.int64)
    best = int(np.argmax(scores))
    n, d = normals[best].astype(np.float64), float(offsets[best])
    thr = cfg.plane_threshold_m + cfg.plane_threshold_quadratic * fit[:, 2] ** 2
    fit = np.ascontiguousarray(fit.T, np.float64)   # (the refit on coordinate rows, as now)
    for _ in range(2):
        inliers = np.abs(n @ fit + d) < thr
        n, d = support_plane._least_squares_plane(np.compress(inliers, fit, axis=1))
    if d < 0:
        n, d = -n, -d
    return n, d, float(np.count_nonzero(np.abs(n @ fit + d) < thr)) / fit.shape[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ransac_with_default_settings_is_bit_identical_to_the_dense_version(seed):
    depth = render_tabletop(OBJECTS, tilt_deg=40.0 + 5 * seed)[0]
    cfg = DepthProposalConfig()
    points = depth_cloud(depth, K, cfg).points
    new = fit_plane_ransac(points, cfg, np.random.default_rng(seed))
    old = _dense_ransac(points, cfg, np.random.default_rng(seed))
    assert new is not None and np.array_equal(new[0], old[0]) and new[1:] == old[1:]


def test_ransac_scores_in_bounded_chunks(monkeypatch, repo_root):
    """10000 x 1000000 was accepted and scored in one 40 GB float32 matrix."""
    with pytest.raises(DepthError, match="ransac_iterations x ransac_samples must be at most"):
        DepthProposalConfig(ransac_iterations=10000, ransac_samples=1_000_000)
    cfg = DepthProposalConfig(ransac_iterations=1000, ransac_samples=20000)
    rng = np.random.default_rng(3)
    points = rng.normal(0, 0.3, (20000, 3)).astype(np.float32)
    points[:8000, 2] = 0.8 + 0.002 * rng.normal(size=8000)
    monkeypatch.setattr(support_plane, "RANSAC_CHUNK_VALUES", 1 << 20, raising=False)
    tracemalloc.start()
    try:
        chunked = fit_plane_ransac(points, cfg, np.random.default_rng(0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # one pass held 20000 x 1000 float32 distances (80 MB) and their flags (20 MB)
    assert peak < 24 << 20, peak
    monkeypatch.setattr(support_plane, "RANSAC_CHUNK_VALUES", 1 << 30, raising=False)
    whole = fit_plane_ransac(points, cfg, np.random.default_rng(0))
    assert chunked is not None and whole is not None
    assert math.isclose(abs(float(chunked[0][2])), 1.0, abs_tol=1e-3)
    assert np.array_equal(chunked[0], whole[0]) and chunked[1:] == whole[1:]
    shipped = load_depth_config(repo_root / "config" / "depth_proposals.yaml")
    assert (shipped.ransac_iterations, shipped.ransac_samples) == (80, 2000)


def test_a_silent_camera_says_so_before_its_depth_unit_warning():
    """A camera that sent depth in the wrong unit and then stopped kept saying the unit
    warning (its window never empties): the outage hid behind it. Silence comes first;
    the unit warning stays in the values."""
    from vl_distill_ros.ros.diagnostics import DiagnosticStatus

    unit = "depth in the wrong unit? x0.1 would put its median 9.8 m at 0.98 m"
    status = camera_status("/n", {**_period(depth_unit_warning=unit), "silent_s": 6.0}, 1)
    assert status.level == DiagnosticStatus.WARN and status.message == "no image for 6.0 s"
    assert {kv.key: kv.value for kv in status.values}["depth_unit_warning"] == unit
    status = camera_status("/n", _period(depth_unit_warning=unit), 1)
    assert status.level == DiagnosticStatus.WARN and status.message == unit

"""``vl-distill replay-eval``: scoring, live replay through the real node, offline agreement,
bad inputs.

The bag is synthetic (coloured rectangles on a plain table, written with
``bag_io.write_camera_bag``) and the bundle is tiny with a head fitted in closed form so that
each ID colour maps to its label's text embedding (see test/helpers.py): predictions are
deterministic, the ID objects are named, the OOD ones (lemon, strawberry) are confused with
ID labels, and a high ``unknown_threshold`` turns the less certain ones into ``unknown``.
The live runs start the real ``vl_distill_node`` as a subprocess and talk to it over DDS on
loopback (conftest.py sets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a per-session
ROS_DOMAIN_ID, inherited by the node).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import OBJECTS, make_colour_bundle, make_synthetic_bag, rewrite_bag
from vl_distill_ros import cli
from vl_distill_ros.bags.bag_io import read_camera_bag
from vl_distill_ros.model.vocabulary import Label, Split, Vocabulary
from vl_distill_ros.evaluation import replay
from vl_distill_ros.evaluation.report import load_labels_jsonl
from vl_distill_ros.evaluation.scoring import (Membership, compare_documents, doc_frame_key,
                                               match_boxes, score_frames)
from vl_distill_ros.ros import node_process

REPO = Path(__file__).resolve().parents[1]
NAMES = ["banana", "apple", "power drill", "tennis ball", "lemon", "strawberry"]
ID_FIT = ["banana", "apple", "power drill", "tennis ball"]
N_FRAMES = 16
# Scores at temperature 0.08: drill / tennis ball >= 0.9994, apple ~0.9975, banana ~0.995,
# so 0.999 makes apples and bananas (and the OOD look-alikes) "unknown", far from any tie.
PARAMS = ["-p", "torch_threads:=1", "-p", "score_temperature:=0.08",
          "-p", "unknown_threshold:=0.999"]


# ----------------------------------------------------------------------------------------
# scoring (no ROS)
# ----------------------------------------------------------------------------------------
def _doc(camera: str, stamp_ns: int, objects: list[tuple]) -> dict:
    return {"header": {"stamp": {"sec": stamp_ns // 10**9, "nanosec": stamp_ns % 10**9},
                       "frame_id": "f"}, "camera": camera, "vocabulary_version": 1,
            "objects": [{"bbox": list(b), "label": lb, "score": 0.9, "known": lb != "unknown",
                         "top_k": []} for b, lb in objects]}


def test_a_vocabulary_of_other_written_forms_scores_the_objects_it_names():
    """A vocabulary that names the objects by their keys (or another case, hyphens): the
    ground truth is scored under the vocabulary's form of its label or key, so a right name
    is correct and the objects are in the vocabulary; an object it does not hold stays out."""
    split = Split("s", ("004_sugar_box",), ("019_pitcher_base",))
    names = ["004_sugar_box", "Pitcher-Base", "mug"]
    membership = Membership.from_split(split, [Vocabulary.from_names(names)])
    cam = "/cam"
    gt = {(cam, 1): [((0, 0, 10, 10), "sugar box", "004_sugar_box"),
                     ((20, 0, 10, 10), "pitcher", "019_pitcher_base"),   # by its key
                     ((40, 0, 10, 10), "power drill", "035_power_drill")]}
    labels = {(cam, 1): _doc(cam, 1, [((0, 0, 10, 10), "004_sugar_box"),
                                      ((20, 0, 10, 10), "Pitcher-Base"),
                                      ((40, 0, 10, 10), "mug")])}
    s = score_frames([(cam, 1)], gt, labels, membership, 0.5, vocabulary_names=names)
    a = s["groups"]["all"]
    assert (a["objects"], a["correct"], a["wrong"]) == (3, 2, 1)
    assert s["groups"]["id"]["correct"] == 1 and s["groups"]["ood"]["correct"] == 1
    assert s["not_in_vocabulary"] == {"objects": 1, "rejected": 0, "renamed": 2}
    assert s["per_object"]["004_sugar_box"]["tp"] == 1
    # without the vocabulary the names are compared as written
    plain = score_frames([(cam, 1)], gt, labels, membership, 0.5)
    assert plain["groups"]["all"]["correct"] == 0


def test_greedy_iou_matching_prefers_the_best_pair():
    gt = [(0, 0, 10, 10), (8, 0, 10, 10)]
    pred = [(7, 0, 10, 10), (1, 0, 10, 10), (100, 100, 5, 5)]
    assert [(i, j) for i, j, _ in match_boxes(gt, pred, 0.5)] == [(0, 1), (1, 0)]
    assert match_boxes(gt, pred, 0.95) == []


def test_score_frames_counts_every_outcome():
    split = Split("s", ("011_banana", "013_apple"), ("014_lemon",))
    vocab = Vocabulary((Label("banana", key="011_banana"), Label("apple", key="013_apple"),
                        Label("lemon", key="014_lemon")))
    membership = Membership.from_split(split, [vocab])
    cam = "/cam"
    frames = [(cam, 1), (cam, 2), (cam, 3)]
    gt = {(cam, 1): [((0, 0, 10, 10), "banana", "011_banana"), ((20, 0, 10, 10), "apple", ""),
                     ((40, 0, 10, 10), "lemon", "")],
          (cam, 2): [((0, 0, 10, 10), "Banana", "")],       # case-insensitive
          (cam, 3): [((0, 0, 10, 10), "apple", "")]}         # frame 3 is dropped
    labels = {(cam, 1): _doc(cam, 1, [((1, 0, 10, 10), "banana"),    # correct
                                      ((20, 1, 10, 10), "unknown"),  # unknown (wrong)
                                      ((70, 0, 10, 10), "apple")]),  # background FP; lemon missed
              (cam, 2): _doc(cam, 2, [((0, 0, 10, 10), "lemon")]),   # confused
              ("/other", 9): _doc("/other", 9, [])}
    s = score_frames(frames, gt, labels, membership, 0.5, latencies_s={(cam, 1): 0.01,
                                                                       (cam, 2): 0.03})
    assert s["frames"] == {"total": 3, "labelled": 2, "dropped": 1, "with_ground_truth": 3,
                           "evaluated": 2, "unexpected": 1,
                           "ground_truth_objects_in_dropped_frames": 1,
                           "left_out_repeated_stamps": 0, "ground_truth_without_frame": 0,
                           "ground_truth_without_frame_examples": []}
    a, i, o = s["groups"]["all"], s["groups"]["id"], s["groups"]["ood"]
    assert (a["objects"], a["matched"], a["missed"], a["correct"], a["wrong"], a["unknown"]) \
        == (4, 3, 1, 1, 1, 1)
    assert a["accuracy"] == pytest.approx(1 / 3) and a["recall"] == pytest.approx(1 / 4)
    assert (i["objects"], i["correct"], i["unknown"]) == (3, 1, 1)
    assert (o["objects"], o["missed"], o["accuracy"]) == (1, 1, None)
    banana, apple, lemon = (s["per_object"][n] for n in ("banana", "apple", "lemon"))
    assert (banana["tp"], banana["fp"], banana["fn"], banana["support"]) == (1, 0, 1, 2)
    assert (apple["tp"], apple["fp_background"], apple["unknown"]) == (0, 1, 1)
    assert (lemon["tp"], lemon["fp_confused"], lemon["missed"],
            lemon["group"]) == (0, 1, 1, "ood")
    assert banana["precision"] == 1.0 and banana["f1"] == pytest.approx(2 / 3)
    assert s["false_positives"] == {"boxes": 1, "known": 1, "unknown": 0}
    c = s["confusion"]
    assert c["rows"] == ["apple", "banana", "lemon"]  # ID then OOD, each sorted
    assert c["columns"] == ["apple", "banana", "lemon", "unknown", "(missed)"]
    assert c["matrix"] == [[0, 0, 0, 1, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 1]]
    assert s["latency_ms"]["n"] == 2 and s["latency_ms"]["p50"] == pytest.approx(20.0)


def test_a_live_replay_without_a_dds_profile_is_warned_about_its_transport():
    """Fast DDS without a profile sends frames over loopback UDP (large ones get lost): the
    warning names the package's shared-memory profile, which exists; a profile (either
    variable) or another middleware silences it."""
    from vl_distill_ros.commands.replay_eval import transport_warning

    warning = transport_warning({})
    assert warning is not None and "FASTRTPS_DEFAULT_PROFILES_FILE" in warning
    profile = Path(warning.split("FASTRTPS_DEFAULT_PROFILES_FILE=")[1].split(" ")[0])
    assert profile.is_file() and profile.name == "fastdds_shm_localhost.xml"
    assert transport_warning({"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}) == warning
    assert transport_warning({"FASTRTPS_DEFAULT_PROFILES_FILE": str(profile)}) is None
    assert transport_warning({"FASTDDS_DEFAULT_PROFILES_FILE": str(profile)}) is None
    assert transport_warning({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) is None


def test_offline_settings_are_the_nodes(monkeypatch):
    """The offline pipeline settings come from the same parameter values by the node's rule
    (``PipelineSettings.from_params``, which the node calls too)."""
    from vl_distill_ros.perception.pipeline import PipelineSettings

    name, value = replay.parse_param("rois:=[0, 0, 20, 20]")
    values = replay.node_parameter_values({"crop_source": "rois", name: value,
                                           "unknown_threshold": 0.25, "top_k": 2})
    settings = replay.pipeline_settings(values)
    assert settings == PipelineSettings.from_params(values)
    assert settings.crop_source == "rois" and settings.rois == ((0, 0, 20, 20),)
    assert settings.unknown_threshold == 0.25 and settings.top_k == 2
    with pytest.raises(replay.InputError, match="not a tunable"):
        replay.parse_param("model_path:=/x.vdb")
    with pytest.raises(replay.InputError, match=r"\[-1.0, 1.0\]"):
        replay.parse_param("unknown_threshold:=3.0")
    with pytest.raises(replay.InputError, match=r"\[-1.0, 1.0\]"):
        replay.parse_param("seen_bias:=2.0")
    # integers for doubles: the node refuses them too (README: a start-up value of another
    # type, `-p unknown_threshold:=0`); read as 0.0 offline
    for text in ("unknown_threshold:=0", "seen_bias:=1"):
        with pytest.raises(replay.InputError, match="must be of type double"):
            replay.parse_param(text)
    # doubles for integers: the node refuses them (rclpy's type check); read as 3 and 20
    # until session 80
    with pytest.raises(replay.InputError, match="top_k must be of type integer"):
        replay.parse_param("top_k:=3.0")
    with pytest.raises(replay.InputError, match="rois must be of type integer_array"):
        replay.parse_param("rois:=[0, 0, 20.0, 20]")
    # a string parameter takes its text as written: YAML 1.1 read `off` as False and the
    # README's proposal_box_net:=off was refused ("no model file at False")
    # (the node reads a false for these as off: so does replay-eval)
    for text in ("off", "false", "False", " no", "n", "N"):
        for name in ("proposal_box_net", "proposal_box_net_depth", "proposal_box_net_behind"):
            assert replay.parse_param(f"{name}:={text}") == (name, "off")
    assert replay.parse_param("crop_source:='full_frame'") == ("crop_source", "full_frame")
    values = replay.node_parameter_values(dict([replay.parse_param("proposal_box_net:=off")]))
    assert replay.pipeline_settings(values).proposal_cfg.box_net == "off"
    assert replay.pipeline_settings(replay.node_parameter_values()).proposal_cfg.box_net != "off"


def test_offline_warns_of_transport_parameters(capsys):
    """-p qos_depth, qos_reliability and publish_annotated do nothing with --offline: said,
    not silently taken."""
    from vl_distill_ros.commands.replay_eval import _warn_transport_params

    _warn_transport_params({"top_k": 2, "unknown_threshold": 0.3})
    assert capsys.readouterr().err == ""
    _warn_transport_params({"qos_depth": 5, "top_k": 2, "publish_annotated": True})
    err = capsys.readouterr().err
    assert "qos_depth, publish_annotated: no effect with --offline" in err


# ----------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_colour_bundle(tmp_path_factory.mktemp("bundle") / "colour.vdb", NAMES, ID_FIT)


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    return make_synthetic_bag(tmp_path_factory.mktemp("bags") / "table", N_FRAMES, NAMES,
                              fps=10.0, seed=3)


@pytest.fixture(scope="module")
def vocabulary_file(tmp_path_factory) -> Path:
    """The bundle's labels in another order (all embeddings come from the bundle's cache)."""
    path = tmp_path_factory.mktemp("vocab") / "vocabulary.yaml"
    Vocabulary(tuple(Label(n, key=OBJECTS[n][1]) for n in reversed(NAMES))).save(path)
    return path


class PopenSpy:
    """Wraps subprocess.Popen where the replay starts the node
    (:mod:`vl_distill_ros.ros.node_process`) to record the processes it starts."""

    def __init__(self, monkeypatch) -> None:
        self.pids: list[int] = []
        real = subprocess.Popen

        def spy(*args, **kwargs):
            proc = real(*args, **kwargs)
            self.pids.append(proc.pid)
            return proc

        monkeypatch.setattr(node_process.subprocess, "Popen", spy)


def process_gone(pid: int) -> bool:
    """True when ``pid`` is neither running nor a zombie, and nothing is left in its group."""
    if Path(f"/proc/{pid}").exists():
        return False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pid:  # process group id
            return False
    return True


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(["replay-eval", *args, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def live_run(bundle, bag, vocabulary_file, tmp_path_factory):
    """One live replay (rate 1: 16 frames at 10 fps) through the real node."""
    out = tmp_path_factory.mktemp("live")
    mp = pytest.MonkeyPatch()
    spy = PopenSpy(mp)
    try:
        code = cli.main(["replay-eval", str(bag), "--model", str(bundle), "--vocabulary",
                         str(vocabulary_file), "--out", str(out), "--text-cache-dir", "",
                         "--rate", "1.0", "--node-timeout", "90", "--no-progress", *PARAMS])
    finally:
        mp.undo()
    return code, out, spy.pids


# ----------------------------------------------------------------------------------------
# live and offline
# ----------------------------------------------------------------------------------------
def _recompute(out: Path, bag: Path, vocabulary_file: Path) -> tuple[dict, dict]:
    """Scores recomputed from labels.jsonl (first document per frame) and the bag."""
    report = json.loads((out / "report.json").read_text())
    rows = load_labels_jsonl(out / "labels.jsonl")
    contents = read_camera_bag(bag)
    frames = [(img.topic, img.stamp_ns) for img in contents.images()]
    docs: dict = {}
    lat: dict = {}
    for row in rows:
        key = tuple(row["frame"])
        if key not in docs:
            docs[key] = row["doc"]
            lat[key] = row["latency_s"]
        # the frame key is the document's own (namespace stripped)
        assert doc_frame_key(row["doc"])[1] == key[1]
    split = Split.load(REPO / "config" / "splits" / "ycb_paper.yaml")
    membership = Membership.from_split(split, [Vocabulary.load(vocabulary_file)])
    scores = score_frames(frames, contents.ground_truth, docs, membership, 0.5,
                          latencies_s=lat, vocabulary_names=NAMES)
    return report, scores


def test_live_report_matches_the_labels_the_node_published(live_run, bag, vocabulary_file,
                                                           capsys):
    code, out, pids = live_run
    assert code == 0
    for name in ("report.json", "report.md", "labels.jsonl", "node.log",
                 "confusion_matrix.png", "per_object_f1.png", "latency_hist.png"):
        assert (out / name).is_file(), name
    report, scores = _recompute(out, bag, vocabulary_file)
    fr = report["frames"]
    assert fr["in_bag"] == fr["published"] == fr["total"] == N_FRAMES
    assert fr["labelled"] + fr["dropped"] == N_FRAMES
    assert fr["labelled"] >= N_FRAMES // 2, fr
    assert fr["node_received"] + fr["lost_in_transport"] == N_FRAMES
    assert fr["node_dropped_latest_wins"] is not None
    assert 0 <= fr["node_processed_behind"] <= fr["labelled"] + fr["duplicate_documents"]
    assert 0 <= fr["node_processed_behind_student"] <= fr["node_processed_behind"]
    rows = load_labels_jsonl(out / "labels.jsonl")
    assert len(rows) == fr["labelled"] + fr["duplicate_documents"]
    assert all(r["doc"]["camera"].endswith("/camera/image_raw") for r in rows)
    # every number of the report is what the recorded documents give
    for key in ("groups", "per_object", "confusion", "macro_f1", "false_positives",
                "latency_ms"):
        assert report[key] == scores[key], key
    assert {k: v for k, v in report["frames"].items() if k in scores["frames"]} == \
        {k: v for k, v in scores["frames"].items() if k != "unexpected"}
    # and they are not trivial: ID objects named, apples/bananas "unknown", OOD confused
    g = report["groups"]
    assert g["id"]["correct"] > 0 and g["all"]["unknown"] > 0 and g["ood"]["correct"] == 0
    assert g["id"]["objects"] + g["ood"]["objects"] == g["all"]["objects"] > 0
    assert report["accuracy"]["id"] == g["id"]["accuracy"] and report["mode"] == "live"
    assert report["latency_ms"]["n"] == fr["labelled"] and report["latency_ms"]["p50"] > 0
    assert report["vocabulary"]["names"] == list(reversed(NAMES))
    assert report["node"]["vocabulary_size"] == len(NAMES)
    assert "| ID |" in (out / "report.md").read_text()
    # the node was stopped cleanly and nothing is left running
    assert len(pids) == 1 and report["node"]["pid"] == pids[0]
    assert report["node"]["returncode"] == 0
    assert process_gone(pids[0])


def test_offline_gives_the_same_labels_as_live(live_run, bundle, bag, vocabulary_file,
                                               tmp_path, capsys):
    _, live_out, _ = live_run
    out = tmp_path / "offline"
    code, stdout, err = run_cli([str(bag), "--offline", "--model", str(bundle), "--vocabulary",
                                 str(vocabulary_file), "--out", str(out), "--text-cache-dir",
                                 "", *PARAMS], capsys)
    assert code == 0, err
    assert "ID" in stdout and "processing time" in stdout
    off = json.loads((out / "report.json").read_text())
    assert off["mode"] == "offline" and off["frames"]["labelled"] == N_FRAMES
    assert off["frames"]["dropped"] == 0

    def docs(path: Path) -> dict:
        got: dict = {}
        for row in load_labels_jsonl(path / "labels.jsonl"):
            got.setdefault(tuple(row["frame"]), row["doc"])
        return got

    live_docs, off_docs = docs(live_out), docs(out)
    cmp = compare_documents(live_docs, off_docs, score_tolerance=1e-4)
    print(f"\nlive vs offline: {cmp['common']} common frames, {cmp['agree']} agree, "
          f"max score difference {cmp['max_score_diff']:.2e}")
    assert cmp["common"] == len(live_docs) >= N_FRAMES // 2
    live_frames = json.loads((live_out / "report.json").read_text())["frames"]
    if live_frames["dropped"] or live_frames.get("node_processed_behind"):
        # a loaded host: the node fell behind, took its cheaper box network and student and
        # its tracks pooled fewer views; the README promises the same labels without drops
        assert len(cmp["disagree"]) <= cmp["common"] // 2, cmp
        return
    assert cmp["disagree"] == [], cmp
    # scored on the same frames, the two modes give the same numbers
    contents = read_camera_bag(bag)
    common = [k for k in ((i.topic, i.stamp_ns) for i in contents.images()) if k in live_docs]
    membership = Membership.from_split(Split.load(REPO / "config/splits/ycb_paper.yaml"),
                                       [Vocabulary.load(vocabulary_file)])
    a = score_frames(common, contents.ground_truth, live_docs, membership)
    b = score_frames(common, contents.ground_truth, off_docs, membership)
    assert a["groups"] == b["groups"] and a["per_object"] == b["per_object"]
    assert off["groups"] == json.loads((live_out / "report.json").read_text())["groups"]


# ----------------------------------------------------------------------------------------
# bad input -> exit 2, node problems -> exit 3, never a stray process
# ----------------------------------------------------------------------------------------
def _strings_only_bag(path: Path) -> Path:
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    with Writer(path, version=9) as writer:
        conn = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        writer.write(conn, 5, store.serialize_cdr(store.types["std_msgs/msg/String"](data="hi"),
                                                  "std_msgs/msg/String"))
    return path


def _flipped_zstd_bag(path: Path) -> Path:
    """A zstd-compressed MCAP bag with 20 bytes flipped inside its (only) chunk."""
    import random

    from vl_distill_ros.bags.bag_io import write_camera_bag
    from helpers import synthetic_frames

    write_camera_bag(path, synthetic_frames(8, NAMES, seed=1), compression="zstd")
    storage = next(path.glob("*.mcap"))
    data = bytearray(storage.read_bytes())
    rng = random.Random(0)
    for _ in range(20):
        data[rng.randrange(len(data) // 4, len(data) // 2)] ^= 0xFF
    storage.write_bytes(bytes(data))
    return path


def test_bad_inputs_exit_2_with_a_message_and_start_nothing(bag, bundle, tmp_path, capsys,
                                                            monkeypatch):
    spy = PopenSpy(monkeypatch)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(bag, corrupt)
    storage = next(corrupt.glob("*.mcap"))
    storage.write_bytes(storage.read_bytes()[: storage.stat().st_size // 3])
    bad_sidecar = tmp_path / "gt.jsonl"
    bad_sidecar.write_text('{"stamp": {"sec": 1}, "camera": "/camera/image_raw"}\n')
    cases = [
        ([str(tmp_path / "no_such_bag")], "bag not found"),
        ([str(corrupt)], "corrupt"),
        ([str(_strings_only_bag(tmp_path / "strings"))], "no image topics"),
        ([str(bag), "--sidecar", str(bad_sidecar)], "missing 'objects'"),
        ([str(bag), "--model", str(tmp_path / "none.vdb")], "model bundle not found"),
        ([str(bag), "-p", "crop_source:=everything"], "crop_source must be one of"),
    ]
    # issue 11: flipped bytes in zstd-compressed storage (was a ZstdError traceback, exit 1),
    # --rate nan (hung) / inf (exit 0) / 0 / negative, a truncated bundle (was exit 3 after
    # the node died): exit 2 with one line, before any node is started
    flipped = _flipped_zstd_bag(tmp_path / "flipped")
    truncated = tmp_path / "truncated.vdb"
    truncated.write_bytes(bundle.read_bytes()[:2000])
    cases += [([str(flipped)], "corrupt or truncated"),
              ([str(flipped), "--offline"], "corrupt or truncated")]
    cases += [([str(bag), "--rate", rate], "--rate must be a finite number > 0")
              for rate in ("nan", "inf", "0", "-1")]
    cases += [([str(bag), "--model", str(truncated)], "cannot load model bundle"),
              ([str(bag), "--model", str(truncated), "--offline"], "cannot load model bundle")]
    for args, message in cases:
        code, _, err = run_cli(["--model", str(bundle), "--out", str(tmp_path / "o"), *args],
                               capsys)
        assert code == 2, (args, err)
        assert message in err and "replay-eval: error:" in err, (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)
    assert spy.pids == []  # no node was started for bad input
    # the installed command exits with status 2 too
    exe = Path(sys.executable).with_name("vl-distill")
    if exe.exists():
        res = subprocess.run([str(exe), "replay-eval", str(tmp_path / "no_such_bag")],
                             capture_output=True, text=True, timeout=120, env=dict(os.environ))
        assert res.returncode == 2 and "bag not found" in res.stderr


def test_node_that_fails_or_never_answers_exits_3_and_leaves_no_process(bag, bundle, tmp_path,
                                                                        capsys, monkeypatch):
    spy = PopenSpy(monkeypatch)
    failing = (f"{sys.executable} -c 'import sys; print(\"cannot start: simulated failure\"); "
               "sys.exit(1)'")  # a node that dies at start-up (bad bundles are caught before)
    code, _, err = run_cli([str(bag), "--model", str(bundle), "--out", str(tmp_path / "a"),
                            "--node-timeout", "60", "--node-command", failing], capsys)
    assert code == 3, err
    assert "exited with code 1 before it was ready" in err and "simulated failure" in err
    code, _, err = run_cli([str(bag), "--model", str(bundle), "--out", str(tmp_path / "b"),
                            "--node-timeout", "2", "--node-command",
                            f"{sys.executable} -c 'import time; time.sleep(600)'"], capsys)
    assert code == 3, err
    assert "never answered" in err and "image subscriptions matched 0/1" in err
    assert len(spy.pids) == 2
    for pid in spy.pids:
        assert process_gone(pid), pid


def test_sigterm_stops_a_live_replay_and_its_node_as_ctrl_c_does(bag, bundle, tmp_path):
    """`timeout` or `kill` (SIGTERM) ended a live replay at once, without its teardown: the
    node it started lived on (parented to init) and its shared-memory segment stayed in
    /dev/shm. SIGTERM now runs the same clean-up as Ctrl-C: exit 143, the node stopped."""
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "vl_distill_ros.cli", "replay-eval", str(bag), "--model",
         str(bundle), "--out", str(tmp_path / "out"), "--text-cache-dir", "", "--rate", "0.2",
         "--node-timeout", "90", "--no-progress", *PARAMS],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        node = None
        deadline = time.monotonic() + 60
        while node is None and time.monotonic() < deadline and proc.poll() is None:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            pids = children.read_text().split() if children.exists() else []
            node = int(pids[0]) if pids else None
            time.sleep(0.1)
        assert node is not None, proc.communicate(timeout=30)
        time.sleep(3.0)                       # the node is starting up, or replaying
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "replay-eval: error: terminated" in err and "Traceback" not in err, err
    assert wait_gone(node, 15.0), node


def test_live_replay_of_storage_that_fails_mid_bag_exits_2_and_stops_the_node(
        bundle, tmp_path, capsys, monkeypatch):
    """Ground truth from a sidecar, so the bag opens; its image chunk is corrupt, which shows
    only while replaying into the running node: exit 2 with one line, the node stopped."""
    spy = PopenSpy(monkeypatch)
    flipped = _flipped_zstd_bag(tmp_path / "flipped")
    sidecar = tmp_path / "gt.jsonl"
    sidecar.write_text("")
    code, _, err = run_cli([str(flipped), "--model", str(bundle), "--sidecar", str(sidecar),
                            "--out", str(tmp_path / "o"), "--node-timeout", "90", *PARAMS],
                           capsys)
    assert code == 2, err
    assert "corrupt or truncated" in err and len(err.strip().splitlines()) == 1, err
    assert len(spy.pids) == 1
    assert wait_gone(spy.pids[0], 15.0), spy.pids


def wait_gone(pid: int, timeout: float) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if process_gone(pid):
            return True
        time.sleep(0.1)
    return process_gone(pid)


def _corrupt_image_cdr_bag(src: Path, dst: Path, corrupt_index: int | None = 4,
                           pixels_only: bool = False) -> Path:
    """A copy of ``src`` whose ``corrupt_index``-th (None: every) image message has its CDR
    cut in half
    (header and stamp intact, the pixel data truncated), or with ``pixels_only`` its pixel
    data cut in half in a message that still deserialises (data shorter than step x height).
    """
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from vl_distill_ros.bags.bag_io import iter_raw_messages

    store = get_typestore(Stores.ROS2_JAZZY)
    n = 0
    with Writer(dst, version=9) as writer:
        conns = {}
        for raw in iter_raw_messages(src):
            if raw.topic not in conns:
                conns[raw.topic] = writer.add_connection(raw.topic, raw.msgtype, typestore=store)
            data = raw.data
            if raw.msgtype == "sensor_msgs/msg/Image":
                n += 1
                if corrupt_index in (n, None) and pixels_only:
                    msg = store.deserialize_cdr(data, raw.msgtype)
                    msg.data = msg.data[: len(msg.data) // 2]
                    data = store.serialize_cdr(msg, raw.msgtype)
                elif n == corrupt_index:
                    data = data[: len(data) // 2]
            writer.write(conns[raw.topic], raw.timestamp_ns, data)
    return dst


def test_corrupt_image_cdr_exits_2_live_as_offline(bag, bundle, tmp_path, capsys, monkeypatch):
    """Issue 11: a bag with a corrupt image message gave exit 2 with --offline but 0 live
    (the node dropped the bytes it could not deserialise). Both now stop with one line."""
    spy = PopenSpy(monkeypatch)
    corrupt = _corrupt_image_cdr_bag(bag, tmp_path / "corrupt_cdr")
    for mode in (["--offline"], []):
        code, _, err = run_cli([str(corrupt), "--model", str(bundle), "--out",
                                str(tmp_path / f"o{len(mode)}"), "--node-timeout", "90",
                                *PARAMS, *mode], capsys)
        assert code == 2, (mode, err)
        assert "cannot deserialise the image" in err and "replay-eval: error:" in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (mode, err)
    assert len(spy.pids) == 1  # the live run started the node, and stopped it
    assert wait_gone(spy.pids[0], 15.0), spy.pids


def test_an_image_that_cannot_be_decoded_is_skipped_and_counted_live_as_offline(
        bag, bundle, tmp_path, capsys):
    """A message that deserialises but whose image cannot be decoded (pixel data cut short)
    stopped the whole offline replay (and the live one before publishing): one bad frame in
    a long recording lost every result. The node drops such a frame and goes on; both modes
    now skip it, count it (frames.undecodable) and score its frame as unlabelled."""
    broken = _corrupt_image_cdr_bag(bag, tmp_path / "pixels", pixels_only=True)
    gt_frame = read_camera_bag(bag)
    keys = [(img.topic, img.stamp_ns) for img in gt_frame.images()]
    broken_key = keys[3]
    objects = len(gt_frame.objects_for(*broken_key) or [])
    assert objects > 0
    for mode in (["--offline"], ["--rate", "0.5"]):
        offline = mode == ["--offline"]
        out = tmp_path / f"out{len(mode)}"
        code, stdout, err = run_cli([str(broken), "--model", str(bundle), "--out", str(out),
                                     "--node-timeout", "90", *PARAMS, *mode], capsys)
        assert code == 0, err
        report = json.loads((out / "report.json").read_text())
        fr = report["frames"]
        assert fr["undecodable"] == 1 and fr["in_bag"] == N_FRAMES, fr
        labelled = {tuple(row["frame"]) for row in load_labels_jsonl(out / "labels.jsonl")}
        assert tuple(broken_key) not in labelled
        skipped = fr["undecodable_by_topic"]["/camera/image_raw"]
        assert skipped["images"] == 1 and skipped["decoded"] == N_FRAMES - 1, skipped
        assert "data" in skipped["first_error"], skipped
        assert "1 of the 16 image(s) on /camera/image_raw could not be decoded" in err, err
        assert "(1 undecodable)" in stdout
        if offline:     # exactly: every other frame is labelled
            assert fr["labelled"] == N_FRAMES - 1 and fr["dropped"] == 1, fr
            assert fr["ground_truth_objects_in_dropped_frames"] == objects, fr
            assert len(labelled) == N_FRAMES - 1 and "node_bad_frames" not in fr
        else:           # a loaded machine's node may also drop frames (latest wins)
            assert fr["node_bad_frames"] == 1, fr     # the node dropped it
            assert fr["dropped"] >= 1 and len(labelled) >= N_FRAMES // 2, fr
            assert fr["ground_truth_objects_in_dropped_frames"] >= objects, fr
    # with no image to score at all, both stop with one line (exit 2)
    none = _corrupt_image_cdr_bag(bag, tmp_path / "none", corrupt_index=None, pixels_only=True)
    for mode in (["--offline"], []):
        code, _, err = run_cli([str(none), "--model", str(bundle), "--out",
                                str(tmp_path / f"none{len(mode)}"), "--node-timeout", "90",
                                *PARAMS, *mode], capsys)
        assert code == 2 and "replay-eval: error:" in err and "--image-topic" in err, err
        assert len(err.strip().splitlines()) == 1, err


def test_stamp_from_cdr_checks_the_whole_image_message(bag):
    from vl_distill_ros.bags.bag_io import iter_raw_messages

    raw = next(r for r in iter_raw_messages(bag) if r.msgtype == "sensor_msgs/msg/Image")
    stamp, undecodable = replay.stamp_from_cdr(raw.data)
    assert stamp > 0 and undecodable is None
    for bad in (raw.data[: len(raw.data) // 2], raw.data[:40]):
        with pytest.raises(replay.InputError, match="corrupt bag"):
            replay.stamp_from_cdr(bad)


def test_frames_sharing_a_stamp_are_left_out_not_scored_twice():
    """Labels and ground truth are matched by (camera, stamp): frames that share one (a
    recording whose stamps start over, every image stamped 0) were each scored with the
    first frame's labels against the last frame's ground truth, counting its objects and
    false positives once per repeat. They are left out and counted; so is a frame that
    several ground-truth documents name; ground truth of no frame is counted."""
    cam = "/cam"
    gt = {(cam, 1): [((0, 0, 10, 10), "banana", "")], (cam, 2): [((0, 0, 10, 10), "apple", "")],
          (cam, 3): [((0, 0, 10, 10), "apple", "")], (cam, 7): [((0, 0, 10, 10), "apple", "")]}
    labels = {k: _doc(cam, k[1], [((0, 0, 10, 10), "apple"), ((50, 0, 9, 9), "apple")])
              for k in gt}
    s = score_frames([(cam, 1), (cam, 2), (cam, 1), (cam, 3)], gt, labels,
                     ambiguous={(cam, 3)})
    assert s["frames"]["left_out_repeated_stamps"] == 3
    assert s["frames"]["evaluated"] == 1 and s["groups"]["all"]["objects"] == 1
    assert s["groups"]["all"]["correct"] == 1 and s["false_positives"]["boxes"] == 1
    assert s["frames"]["ground_truth_without_frame"] == 1
    assert s["frames"]["ground_truth_without_frame_examples"] == [[cam, 7]]


def test_replay_of_a_bag_whose_stamps_repeat_says_what_it_left_out(bundle, tmp_path, capsys):
    """End to end: a bag with two frames of one stamp and ground truth naming a camera
    without its leading '/' (read as the topic) and one naming no frame: the scores count
    the other frames once, and replay-eval warns about both."""
    from vl_distill_ros.bags.bag_io import write_camera_bag
    from helpers import synthetic_frames

    frames = synthetic_frames(4, NAMES, seed=5)
    frames[1].stamp_ns = frames[0].stamp_ns                 # two frames of one stamp
    bag = write_camera_bag(tmp_path / "repeat", frames)
    contents = read_camera_bag(bag)
    assert len(contents.ground_truth) == 3 and contents.ground_truth_repeated == {
        ("/camera/image_raw", frames[0].stamp_ns)}
    out = tmp_path / "out"
    code, _, err = run_cli([str(bag), "--offline", "--model", str(bundle), "--out", str(out),
                            "--no-plots", *PARAMS], capsys)
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["frames"]["left_out_repeated_stamps"] == 2
    assert report["frames"]["evaluated"] == 2
    assert report["groups"]["all"]["objects"] == sum(len(f.objects) for f in frames[2:])
    assert "2 frame(s) left out of the scores" in err


def test_ground_truth_of_a_camera_without_its_slash_is_read_as_the_topic(tmp_path):
    """A ground-truth document whose camera lacks the topic's leading '/' names the topic
    (it matched no frame, silently); a document of no frame is warned about."""
    from rosbags.rosbag2 import Writer

    from vl_distill_ros.bags import bag_io
    from vl_distill_ros.commands.replay_eval import scoring_warnings
    from helpers import synthetic_frames

    frames = synthetic_frames(2, NAMES, seed=6)
    bag = bag_io.write_camera_bag(tmp_path / "plain", frames)
    store = bag_io.typestore()
    moved = tmp_path / "slashless"
    with Writer(moved, version=Writer.VERSION_LATEST) as writer:
        conns, topics = {}, read_camera_bag(bag).topics
        for raw in bag_io.iter_raw_messages(bag, list(topics)):
            if raw.topic not in conns:
                conns[raw.topic] = writer.add_connection(raw.topic, topics[raw.topic],
                                                         typestore=store)
            data = raw.data
            if raw.topic == bag_io.BagTopics.ground_truth:
                doc = json.loads(store.deserialize_cdr(data, bag_io.STRING_TYPE).data)
                doc["camera"] = doc["camera"].lstrip("/")
                message = store.types[bag_io.STRING_TYPE](data=json.dumps(doc))
                data = store.serialize_cdr(message, bag_io.STRING_TYPE)
            writer.write(conns[raw.topic], raw.timestamp_ns, data)
    contents = read_camera_bag(moved)
    assert set(contents.ground_truth) == set(read_camera_bag(bag).ground_truth)
    report = {"frames": {"ground_truth_without_frame": 1,
                         "ground_truth_without_frame_examples": [["/cam", 5]]},
              "bag": {"image_topics": ["/camera/image_raw"]}}
    (warning,) = scoring_warnings(report)
    assert "1 ground-truth document(s) name no frame of the bag (e.g. /cam at 5 ns)" in warning


def test_depth_no_colour_topic_takes_is_listed_and_warned_about():
    """A depth topic the naming convention pairs with no colour topic (its camera holds
    raw and rectified colour, or none) was left unused without a word: it is listed in
    the report and warned about; a camera's raw depth beside its registered one is not."""
    from vl_distill_ros.bags.bag_io import (CAMERA_INFO_TYPE, IMAGE_TYPE, pair_camera_topics,
                                            unpaired_depth_topics)
    from vl_distill_ros.commands.replay_eval import scoring_warnings

    topics = {"/camera/color/image_raw": IMAGE_TYPE, "/camera/color/image_rect_color": IMAGE_TYPE,
              "/camera/depth/image_raw": IMAGE_TYPE, "/camera/color/camera_info": CAMERA_INFO_TYPE,
              "/arm/depth/image_raw": IMAGE_TYPE,
              "/kinect/rgb/image_raw": IMAGE_TYPE, "/kinect/depth/image_raw": IMAGE_TYPE,
              "/kinect/depth_registered/image_raw": IMAGE_TYPE}
    colour, depth_of, _ = pair_camera_topics(topics)
    assert depth_of == {"/kinect/rgb/image_raw": "/kinect/depth_registered/image_raw"}
    assert unpaired_depth_topics(topics, depth_of) == ["/arm/depth/image_raw",
                                                       "/camera/depth/image_raw"]
    colour, depth_of, _ = pair_camera_topics(
        topics, {"/camera/color/image_raw": "/camera/depth/image_raw"})
    assert unpaired_depth_topics(topics, depth_of) == ["/arm/depth/image_raw"]
    report = {"frames": {}, "bag": {"unpaired_depth_topics": ["/arm/depth/image_raw"]}}
    (warning,) = scoring_warnings(report)
    assert "depth topic /arm/depth/image_raw was paired with no colour topic" in warning
    assert "--depth-topic COLOUR=/arm/depth/image_raw" in warning


def test_ground_truth_naming_the_base_topic_of_a_compressed_camera_scores_it(tmp_path):
    """Ground truth that names ``/camera/image_raw`` in a bag holding only its
    ``/compressed`` transport matched no frame: it is the frames of that transport."""
    from vl_distill_ros.bags.bag_io import BagContents, _name_transport_topics

    contents = BagContents(path=tmp_path, storage="mcap", topics={}, message_counts={},
                           image_topics=["/camera/image_raw/compressed", "/hand/image_raw"],
                           ground_truth={("/camera/image_raw", 5): [], ("/hand/image_raw", 5): [],
                                         ("/other/image_raw", 5): []},
                           ground_truth_repeated={("/camera/image_raw", 5)})
    _name_transport_topics(contents)
    assert set(contents.ground_truth) == {("/camera/image_raw/compressed", 5),
                                          ("/hand/image_raw", 5), ("/other/image_raw", 5)}
    assert contents.ground_truth_repeated == {("/camera/image_raw/compressed", 5)}


def test_depth_scale_reads_a_bags_16_bit_depth_in_other_units(tmp_path, capsys):
    """``-p depth_scale:=...``: a bag whose 16UC1 depth is in tenths of a millimetre (as
    YCB-Video stores it) replays offline as the same frame in millimetres does; read as
    millimetres it is ten times too far and the objects differ, and a warning and
    report.json's ``node.depth.unit_warnings`` name the unit and the depth_scale that fits
    (the frames only went colour-only, their reason in ``frames_by_status``, without a
    word); depth in the right unit is never warned of."""
    import numpy as np

    from vl_distill_ros.bags.bag_io import BagFrame, write_camera_bag

    sample = Path(__file__).resolve().parents[1] / "demo" / "sample_tabletop"
    frame = next(read_camera_bag(sample).rgbd_frames())
    camera = tuple(frame.camera_info[:4])
    tenths = np.round(frame.depth * 10000.0).astype(np.uint16)   # uint16: written as is
    mm = write_camera_bag(tmp_path / "mm", [BagFrame(1_000_000_000, frame.image, [],
                                                     depth=frame.depth, intrinsics=camera)])
    fine = write_camera_bag(tmp_path / "tenths", [BagFrame(1_000_000_000, frame.image, [],
                                                           depth=tenths, intrinsics=camera)])

    def objects(bag: Path, *extra: str) -> tuple[list, str, dict]:
        out = tmp_path / f"out_{bag.name}_{len(extra)}"
        code, _, err = run_cli([str(bag), "--offline", "--out", str(out), "--no-plots",
                                *extra], capsys)
        assert code == 0, err
        (doc,) = load_labels_jsonl(out / "labels.jsonl")
        report = json.loads((out / "report.json").read_text())
        return doc["doc"]["objects"], err, report["node"].get("depth") or {}

    reference, err, depth = objects(mm)
    assert reference and "wrong unit" not in err and "unit_warnings" not in depth
    found, err, depth = objects(fine, "-p", "depth_scale:=0.0001")
    assert found == reference and "wrong unit" not in err and "unit_warnings" not in depth
    found, err, depth = objects(fine)
    assert found != reference
    (text,) = depth["unit_warnings"].values()
    assert "x0.1 would put its median" in text and "depth_scale 0.0001 (now 0.001)" in text, text
    assert "warning: /camera/image_raw: depth in the wrong unit?" in err
    assert "-p depth_scale:=" in err


def test_options_that_gave_tracebacks_are_exit_2(bag, bundle, tmp_path, capsys, monkeypatch):
    """`-p qos_depth:=.inf` (OverflowError), `--out` a file (FileExistsError),
    `--node-command` with an unbalanced quote (ValueError), `--namespace bad-ns`
    (InvalidNamespaceException): tracebacks with exit 1; `--device bogus` live started the
    node and exited 3 where --offline exits 2. All are bad input: one line, exit 2, no node."""
    spy = PopenSpy(monkeypatch)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    out = str(tmp_path / "out")
    cases = [(["--offline", "-p", "qos_depth:=.inf", "--out", out], "qos_depth"),
             (["--offline", "--out", str(a_file)], "cannot be a folder"),
             (["--offline", "--out", str(a_file / "sub")], "cannot be a folder"),
             (["--node-command", "vl_distill_node 'unbalanced", "--out", out],
              "No closing quotation"),
             (["--namespace", "bad-ns", "--out", out], "--namespace 'bad-ns'"),
             (["--device", "bogus", "--out", out], "--device 'bogus'")]
    for args, message in cases:
        code, _, err = run_cli([str(bag), "--model", str(bundle), *args], capsys)
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
    assert not spy.pids  # no node was started

    # an existing --out that refuses files (a read-only mount) let the whole replay run and
    # then failed with a traceback writing the report; now refused before any work
    read_only = tmp_path / "read_only"
    read_only.mkdir()

    def refuse(*args, **kwargs):
        if Path(kwargs.get("dir", "")) == read_only:
            raise OSError(30, "Read-only file system")
        return real(*args, **kwargs)

    real = replay.tempfile.TemporaryFile
    monkeypatch.setattr(replay.tempfile, "TemporaryFile", refuse)
    for mode in (["--offline"], []):
        code, _, err = run_cli([str(bag), "--model", str(bundle), "--out", str(read_only),
                                *mode], capsys)
        assert code == 2 and "Read-only file system" in err, err
        assert len(err.strip().splitlines()) == 1, err
    assert not spy.pids and not list(read_only.iterdir())


def test_an_object_is_grouped_by_its_vocabulary_name_whatever_frame_comes_first():
    """Ground truth 'Sugar-Box' (scored under the vocabulary's 'sugar box', README) was
    grouped by its raw label, 'other', and the label's group was the first frame's: the id
    count, the per-object group and the GZSL seen accuracy and H depended on frame order."""
    from vl_distill_ros.evaluation.scoring import Membership, score_frames
    from vl_distill_ros.model.vocabulary import Split, Vocabulary

    split = Split("s", ("004_sugar_box",), ("025_mug",))
    vocab = Vocabulary.from_dict({"labels": [{"key": "004_sugar_box", "name": "sugar box"},
                                             {"key": "025_mug", "name": "mug"}]})
    membership = Membership.from_split(split, [vocab])

    def doc(label):
        return {"objects": [{"bbox": [0, 0, 10, 10], "label": label, "score": 0.9,
                             "known": True}]}
    keys = [("/cam", i) for i in (1, 2, 3)]
    gt = {keys[0]: [((0, 0, 10, 10), "Sugar-Box")], keys[1]: [((0, 0, 10, 10), "sugar box")],
          keys[2]: [((0, 0, 10, 10), "mug")]}
    labels = {keys[0]: doc("sugar box"), keys[1]: doc("sugar box"), keys[2]: doc("mug")}
    for order in (keys, [keys[1], keys[0], keys[2]]):
        r = score_frames(order, gt, labels, membership, vocabulary_names=["sugar box", "mug"])
        assert [r["groups"][g]["objects"] for g in ("id", "ood", "other")] == [2, 1, 0]
        assert r["per_object"]["sugar box"]["group"] == "id"
        assert r["gzsl"]["seen"] == 1.0 and r["gzsl"]["h"] == 1.0
    assert membership.group("SUGAR-BOX") == "id" and membership.group("", "25-mug") == "ood"


def test_ground_truth_is_scored_under_the_vocabulary_name_of_its_key():
    """A vocabulary naming YCB objects in another language keeps their keys (香蕉 for
    011_banana): ground truth labelled `banana` (key 011_banana) was never mapped to 香蕉, so
    every right answer was scored wrong and as a false positive."""
    from vl_distill_ros.evaluation.scoring import Membership, score_frames

    vocab = Vocabulary.from_dict({"labels": [{"name": "P\u00eache", "key": "015_peach"},
                                             {"name": "\u9999\u8549", "key": "011_banana"}]})
    frame = ("/cam", 0)
    gt = {frame: [{"bbox": [0, 0, 50, 50], "label": "peach", "key": "015_peach"},
                  {"bbox": [100, 100, 50, 50], "label": "banana", "key": ""}]}
    doc = {"objects": [
        {"bbox": [0, 0, 50, 50], "label": "P\u00eache", "score": 0.9, "known": True},
        {"bbox": [100, 100, 50, 50], "label": "\u9999\u8549", "score": 0.9, "known": True}]}
    scores = score_frames([frame], gt, {frame: doc}, Membership(), 0.5,
                          vocabulary_names=vocab.names, vocabulary_keys=vocab.keys)
    assert scores["groups"]["all"]["correct"] == 2
    assert scores["false_positives"]["boxes"] == 0
    assert sorted(scores["per_object"]) == sorted(vocab.names)
    assert scores["not_in_vocabulary"]["renamed"] == 2
    without = score_frames([frame], gt, {frame: doc}, Membership(), 0.5,
                           vocabulary_names=vocab.names)
    assert without["groups"]["all"]["correct"] == 0


def test_a_placement_error_of_exactly_2_cm_is_within_2_cm():
    from vl_distill_ros.evaluation.scoring import score_frames

    key = ("/cam", 1)
    gt = {key: [{"bbox": [0, 0, 10, 10], "label": "a", "position": [0.0, 0.0, 1.0]},
                {"bbox": [20, 0, 10, 10], "label": "b", "position": [0.0, 0.0, 0.7]}]}
    doc = {"objects": [{"bbox": [0, 0, 10, 10], "label": "a", "score": .9, "known": True,
                        "position": [0.0, 0.0, 1.02]},
                       {"bbox": [20, 0, 10, 10], "label": "b", "score": .9, "known": True,
                        "position": [0.0, 0.0, 0.75]}]}
    placement = score_frames([key], gt, {key: doc})["placement"]
    assert placement["within_2cm"] == 0.5 and placement["within_5cm"] == 1.0


def _edit_image_topic_metadata(bag: Path, edit) -> None:
    """Apply ``edit(topic entry)`` to the camera topic's entry of ``bag``'s metadata.yaml."""
    import yaml

    meta = bag / "metadata.yaml"
    doc = yaml.safe_load(meta.read_text())
    for entry in doc["rosbag2_bagfile_information"]["topics_with_message_count"]:
        if entry["topic_metadata"]["name"] == "/camera/image_raw":
            edit(entry)
    meta.write_text(yaml.safe_dump(doc, sort_keys=False))


def test_offline_counts_the_images_it_reads_not_what_metadata_yaml_says(bundle, tmp_path,
                                                                        capsys):
    """A metadata.yaml whose counts disagree with its storage files: 0 images listed refused a
    readable bag (exit 2), 60 listed reported frames.in_bag 60 for 6 frames read; one whose
    QoS profiles disagree with the storage's hid every image from the reader, and the
    replay exited 0 with nothing processed."""
    args = ["--offline", "--model", str(bundle), "--text-cache-dir", "", "--split", "none",
            "--no-plots", "--no-progress"]
    for listed in (0, 60):
        bag = make_synthetic_bag(tmp_path / f"listed{listed}", 3, NAMES, seed=3)
        _edit_image_topic_metadata(bag, lambda e: e.update(message_count=listed))
        out = tmp_path / f"out{listed}"
        assert cli.main(["replay-eval", str(bag), "--out", str(out), *args]) == 0
        frames = json.loads((out / "report.json").read_text())["frames"]
        assert (frames["in_bag"], frames["in_bag_metadata"], frames["labelled"]) == (3, listed, 3)
        assert f"metadata.yaml lists {listed} image message(s), 3 were read" in \
            capsys.readouterr().err

    def second_profile(entry: dict) -> None:     # the storage's connection has one or none
        zero = {"sec": 0, "nsec": 0}
        profile = {"history": "keep_last", "depth": 10, "reliability": "reliable",
                   "durability": "volatile", "deadline": zero, "lifespan": zero,
                   "liveliness": "automatic", "liveliness_lease_duration": zero,
                   "avoid_ros_namespace_conventions": False}
        entry["topic_metadata"]["offered_qos_profiles"] = [
            profile, {**profile, "reliability": "best_effort"}]

    bag = make_synthetic_bag(tmp_path / "qos", 3, NAMES, seed=3)
    _edit_image_topic_metadata(bag, second_profile)
    assert cli.main(["replay-eval", str(bag), "--out", str(tmp_path / "qos_out"), *args]) == 2
    assert "no image message of ['/camera/image_raw'] could be read (its metadata.yaml " \
        "lists 3" in capsys.readouterr().err


def test_image_topic_names_the_cameras_of_a_bag_with_other_images(bundle, bag, tmp_path,
                                                                  capsys):
    """A ZED bag's 32FC1 confidence map (an Image topic not named depth) was read as a
    camera and stopped the replay, with no way to leave it out: --image-topic names the
    cameras, and the error says so."""
    import numpy as np

    from vl_distill_ros.bags import bag_io

    def with_confidence(raw, store):
        out = [(raw.topic, raw.msgtype, raw.data)]
        if raw.topic == "/camera/image_raw":
            msg = store.deserialize_cdr(raw.data, raw.msgtype)
            msg.encoding, msg.step = "32FC1", msg.width * 4
            msg.data = np.zeros(msg.height * msg.width * 4, np.uint8)
            out.append(("/camera/confidence/confidence_map", bag_io.IMAGE_TYPE,
                        store.serialize_cdr(msg, bag_io.IMAGE_TYPE)))
        return out

    out_bag = rewrite_bag(bag, tmp_path / "zed_like", with_confidence)
    args = ["replay-eval", str(out_bag), "--offline", "--model", str(bundle),
            "--text-cache-dir", "", "--split", "none", "--no-plots", "--no-progress"]
    # a topic none of whose images decode is skipped with a warning that names the option
    # (it stopped the replay: a report of the real camera is worth more than none)
    assert cli.main([*args, "--out", str(tmp_path / "all")]) == 0
    err = capsys.readouterr().err
    assert "none of the 16 image(s) on /camera/confidence/confidence_map could be " \
        "decoded" in err
    assert "unsupported image encoding '32FC1'" in err and "--image-topic" in err
    report = json.loads((tmp_path / "all" / "report.json").read_text())
    assert report["frames"]["undecodable"] == N_FRAMES
    assert report["frames"]["labelled"] == N_FRAMES
    assert report["frames"]["evaluated"] == N_FRAMES    # the camera's frames are all scored
    assert cli.main([*args, "--out", str(tmp_path / "cam"),
                     "--image-topic", "/camera/image_raw"]) == 0
    report = json.loads((tmp_path / "cam" / "report.json").read_text())
    assert report["bag"]["image_topics"] == ["/camera/image_raw"]
    assert report["frames"]["labelled"] == report["frames"]["in_bag"] == N_FRAMES
    assert cli.main([*args, "--out", str(tmp_path / "bad"), "--image-topic", "/nope"]) == 2
    assert "--image-topic /nope is not a sensor_msgs/msg/Image" in capsys.readouterr().err


def test_offline_replay_warns_of_labels_the_teacher_embeds_alike(bundle, bag, tmp_path,
                                                                 capsys):
    """The node warns when two labels are embedded alike (the later is never chosen);
    --offline said nothing. With ties now broken in vocabulary order, the first is the
    one published."""
    names = list(NAMES)
    path = tmp_path / "alike.yaml"
    Vocabulary(tuple([Label(n, key=OBJECTS[n][1]) for n in names]
                     + [Label(f"042_{names[0].replace(' ', '_')}", key="alike")])).save(path)
    code, _, err = run_cli([str(bag), "--offline", "--model", str(bundle), "--vocabulary",
                            str(path), "--out", str(tmp_path / "out"), "--text-cache-dir", "",
                            "--split", "none", "--no-plots", *PARAMS], capsys)
    assert code == 0, err
    assert f"'042_{names[0].replace(' ', '_')}' (as '{names[0]}')" in err
    assert "never chosen" in err
    rows = load_labels_jsonl(tmp_path / "out" / "labels.jsonl")
    pairs = 0
    for obj in (o for row in rows for o in row["doc"]["objects"]):
        order = [name for name, _ in obj["top_k"]]
        if names[0] in order and f"042_{names[0].replace(' ', '_')}" in order:
            pairs += 1
            assert order.index(names[0]) < order.index(f"042_{names[0].replace(' ', '_')}")
    assert pairs > 0


def test_offline_replay_warns_of_descriptions_past_the_teachers_context(bundle, bag, tmp_path,
                                                                        capsys):
    """A description of 300 characters can be longer than the teacher's text context (here
    MiniLM's 256 tokens: one per ideograph); only its beginning is embedded, and replay-eval
    says which label's."""
    names = list(NAMES)
    path = tmp_path / "long.yaml"
    Vocabulary(tuple([Label(n, key=OBJECTS[n][1]) for n in names[1:]]
                     + [Label(names[0], "香" * 290 + "。", key=OBJECTS[names[0]][1])])
               ).save(path)
    code, _, err = run_cli([str(bag), "--offline", "--model", str(bundle), "--vocabulary",
                            str(path), "--out", str(tmp_path / "out"), "--text-cache-dir", "",
                            "--split", "none", "--no-plots", *PARAMS], capsys)
    assert code == 0, err
    assert f"beginning of the prompts of '{names[0]}'" in err
    assert not any(f"'{n}'" in err for n in names[1:])


def test_a_missing_required_package_is_named_not_a_traceback(bag, tmp_path):
    """setup.py installs no Python requirements (ament_python: they come from
    requirements.txt); a machine without rosbags got a 20-line traceback from replay-eval.
    Now one line names the package and how to install the requirements, exit 2."""
    (tmp_path / "block").mkdir()
    (tmp_path / "block" / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'rosbags':\n"
        "            raise ModuleNotFoundError(f\"No module named '{name}'\", name=name)\n"
        "sys.meta_path.insert(0, _Block())\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "block"))
    done = subprocess.run([sys.executable, "-m", "vl_distill_ros.cli", "replay-eval", str(bag),
                           "--offline", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "needs the Python package that provides 'rosbags'" in done.stderr
    assert "requirements.txt" in done.stderr


def test_frames_processed_behind_are_warned_of(capsys):
    """A live replay whose node fell behind ran those frames with its cheaper box network and
    student: their labels may differ from --offline's. The counts were in the summary only;
    now a warning says what it means and what to do."""
    from vl_distill_ros.commands.replay_eval import _print_warnings

    report = {"bag": {"ground_truth_frames": 3}, "groups": {}, "settings": {"qos_depth": 1},
              "frames": {"node_processed_behind": 0}}
    _print_warnings(report)
    assert "behind" not in capsys.readouterr().err
    report["frames"].update(node_processed_behind=33, node_processed_behind_student=30)
    _print_warnings(report)
    err = capsys.readouterr().err
    assert "33 frame(s) were processed while the node was behind" in err
    assert "30 of them" in err and "inference_backend_behind:=same" in err


def test_a_replay_into_an_out_folder_another_replay_writes_stops_at_once(bag, bundle,
                                                                         tmp_path, capsys):
    """Two replay-eval runs given the same --out (or the same default runs/replay/<bag>),
    e.g. the same bag with other parameters in two terminals: the second truncated the
    first's node.log, overwrote its report with its own, and both printed the same
    report path with exit 0. The folder is held while a run writes it: the second exits 2
    at once and the first's files are untouched; once the first is done the folder is free."""
    import fcntl

    out = tmp_path / "o"
    out.mkdir()
    (out / "report.json").write_text('{"first": true}')
    fd = os.open(out, os.O_RDONLY)           # the first run, still writing
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        code, _, err = run_cli(["--model", str(bundle), "--out", str(out), str(bag),
                                "--offline", "--no-plots"], capsys)
        assert code == 2, err
        assert "in use by another replay-eval run" in err and "Traceback" not in err, err
        assert (out / "report.json").read_text() == '{"first": true}'
    finally:
        os.close(fd)
    code, _, err = run_cli(["--model", str(bundle), "--out", str(out), str(bag),
                            "--offline", "--no-plots"], capsys)
    assert code == 0, err
    assert "first" not in (out / "report.json").read_text()


def test_an_out_folder_that_can_be_written_but_not_read_is_not_a_traceback(tmp_path,
                                                                           monkeypatch):
    """A drop folder (mode 0733: files can be made in it, it cannot be listed or opened for
    reading) passes writable_folder; opening it to lock it raised PermissionError, which
    replay-eval does not catch (a traceback and exit 1 where the replay used to run). As
    for a file system without flock, the replay goes on unlocked. (Root opens any folder,
    so the refusal is simulated.)"""
    from vl_distill_ros.evaluation import replay as replay_module

    out = replay_module.writable_folder(tmp_path / "drop")
    real_open = os.open

    def no_read(path, flags, *args, **kwargs):
        if Path(path) == out:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(replay_module.os, "open", no_read)
    with replay_module.claimed_folder(out) as claimed:
        assert claimed == out


def test_a_depth_camera_named_without_depth_is_warned_about(bundle, vocabulary_file,
                                                            tmp_path, capsys):
    """depthai-ros publishes an OAK's depth (16UC1) on ``/oak/stereo/image_raw``: no segment
    says depth, so the bag's depth was replayed as one more camera without a word (the
    frames doubled, no object placed, depth labelled as grey images). It is listed in
    ``report.json`` (``bag.depth_encoded_image_topics``) and warned about; paired with
    ``--depth-topic`` it is depth and neither."""
    from helpers import synthetic_frames
    from vl_distill_ros.bags.bag_io import BagTopics, write_camera_bag

    t = BagTopics()
    frames = synthetic_frames(2, NAMES[:3], seed=4)
    for f in frames:
        f.depth = np.full(f.image.shape[:2], 0.8, np.float32)
        f.intrinsics = (100.0, 100.0, f.image.shape[1] / 2, f.image.shape[0] / 2)
    names = {t.camera: "/oak/rgb/image_raw", t.depth: "/oak/stereo/image_raw",
             t.camera_info: "/oak/rgb/camera_info"}
    oak = rewrite_bag(write_camera_bag(tmp_path / "plain", frames), tmp_path / "oak",
                      lambda raw, store: [(names.get(raw.topic, raw.topic), raw.msgtype,
                                           raw.data)])
    assert read_camera_bag(oak).depth_encoded_topics == ["/oak/stereo/image_raw"]
    paired = read_camera_bag(oak, depth_topics={"/oak/rgb/image_raw": "/oak/stereo/image_raw"})
    assert paired.image_topics == ["/oak/rgb/image_raw"] and not paired.depth_encoded_topics
    common = ["--offline", "--model", str(bundle), "--vocabulary", str(vocabulary_file),
              "--text-cache-dir", "", *PARAMS]
    code, _, err = run_cli([str(oak), "--out", str(tmp_path / "out"), *common], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["bag"]["depth_encoded_image_topics"] == ["/oak/stereo/image_raw"]
    assert "image topic /oak/stereo/image_raw carries depth" in err
    assert "--depth-topic COLOUR=/oak/stereo/image_raw" in err
    code, _, err = run_cli([str(oak), "--out", str(tmp_path / "paired"), "--depth-topic",
                            "/oak/rgb/image_raw=/oak/stereo/image_raw", "--camera-info-topic",
                            "/oak/rgb/image_raw=/oak/rgb/camera_info", *common], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "paired" / "report.json").read_text())
    assert report["bag"]["depth_encoded_image_topics"] == [] and "carries depth" not in err
    assert report["bag"]["image_topics"] == ["/oak/rgb/image_raw"]

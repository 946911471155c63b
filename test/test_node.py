"""vl_distill_node end to end: real rclpy nodes talking over DDS on loopback.

The node under test runs in this process, spun by its own executor in a background thread;
a separate tester node publishes images, subscribes to ``~/labels`` and ``/diagnostics`` and
calls the parameter services (the SetParameters service is what ``ros2 param set`` calls).
One test starts the installed ``vl_distill_node`` console script as a subprocess. Every wait
is bounded. conftest.py keeps DDS discovery on loopback and gives the session its own domain.

The test bundle: an untrained tiny student (mobilenet_v3_small, 64 px) and the text
embeddings of ["banana", "mug", "power drill"] from the real offline teacher's text encoder
(MiniLM via TextEmbeddingService), so the node embeds new names for real. The student's
projection head is fitted in closed form (``helpers.make_colour_bundle``) so that its output
depends on the pixels: a yellow block -> "banana", the same yellow with red and blue swapped
-> "mug", a dark block -> "power drill", and a red block -> "zebra", the label added at
runtime. A wrong channel order (yellow read as BGR) or a wrong crop therefore changes the
label the node publishes; and "a parameter change adds a label that the very next frames can
predict" is testable: before "zebra" is in the vocabulary a red frame is labelled with one of
the others, as soon as it is added every red frame scored with the new vocabulary says
"zebra".
"""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.srv import GetParameters, SetParameters, SetParametersAtomically  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from helpers import OBJECTS, block_image, make_colour_bundle, os_thread_names  # noqa: E402
from vl_distill_ros.model.vocabulary import Vocabulary  # noqa: E402
from vl_distill_ros.ros import node as node_mod  # noqa: E402
from vl_distill_ros.ros.node import StartupError, VlDistillNode  # noqa: E402
from vl_distill_ros.ros.params import PARAMETERS, default_model_path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NAMES = ["banana", "mug", "power drill"]
DESCRIPTIONS = ["A curved yellow fruit.", "", ""]
NEW_LABEL = "zebra"
TEMPLATES = ["a photo of a {name}."]
YELLOW = OBJECTS["banana"][0]        # -> "banana"
SWAPPED = tuple(reversed(YELLOW))    # yellow with R and B swapped -> "mug"
DARK = OBJECTS["power drill"][0]     # -> "power drill"
RED = OBJECTS["apple"][0]            # -> "zebra" (added at runtime)

STRING_ARRAY = Parameter.Type.STRING_ARRAY


def wait_for(predicate, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# ----------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------
def make_node_test_bundle(path: Path) -> Path:
    """A tiny bundle whose student's output follows the colour of the crop (module
    docstring); also used by test_node_ros_cli.py."""
    fit = [(YELLOW, "banana"), (SWAPPED, "mug"), (DARK, "power drill"), (RED, NEW_LABEL)]
    return make_colour_bundle(path, NAMES, fit,
                              vocabulary=Vocabulary.from_names(NAMES, DESCRIPTIONS))


def module_bundle():
    """A module-scoped ``bundle_path`` fixture: the colour bundle of
    :func:`make_node_test_bundle` (made once per test module that takes it)."""
    @pytest.fixture(scope="module")
    def bundle_path(tmp_path_factory) -> Path:
        return make_node_test_bundle(tmp_path_factory.mktemp("bundle") / "test_student.vdb")
    return bundle_path


bundle_path = module_bundle()


class Tester:
    __test__ = False

    """The other node: publishes images, collects labels and diagnostics, calls services."""

    def __init__(self, context, name: str = "vl_distill_tester") -> None:
        self.node = Node(name, context=context)
        self.labels: dict[str, list[tuple[float, dict]]] = {}
        self.diagnostics: list[DiagnosticArray] = []
        self.images: dict[str, list[Image]] = {}
        self._pubs: dict[str, object] = {}
        self._clients: dict[tuple, object] = {}
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      self.diagnostics.append, 50)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def watch_labels(self, topic: str) -> list[tuple[float, dict]]:
        if topic not in self.labels:
            store: list[tuple[float, dict]] = []
            self.labels[topic] = store
            self.node.create_subscription(
                String, topic, lambda m: store.append((time.monotonic(), json.loads(m.data))),
                100)
        return self.labels[topic]

    def watch_images(self, topic: str) -> list[Image]:
        if topic not in self.images:
            store: list[Image] = []
            self.images[topic] = store
            self.node.create_subscription(Image, topic, store.append, 10)
        return self.images[topic]

    def publish(self, topic: str, msg) -> None:
        """Publish ``msg`` (an Image, CompressedImage, ...: the publisher takes its type)."""
        if topic not in self._pubs:
            self._pubs[topic] = self.node.create_publisher(type(msg), topic, 10)
        self._pubs[topic].publish(msg)

    def call(self, srv_type, name: str, request, timeout: float = 15.0):
        key = (srv_type, name)
        if key not in self._clients:
            self._clients[key] = self.node.create_client(srv_type, name)
        client = self._clients[key]
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        future = client.call_async(request)
        assert wait_for(future.done, timeout), f"service {name} did not answer in {timeout} s"
        return future.result()

    def set_params(self, node_fqn: str, params: list[Parameter], atomic: bool = False):
        msgs = [p.to_parameter_msg() for p in params]
        if atomic:
            return self.call(SetParametersAtomically, f"{node_fqn}/set_parameters_atomically",
                             SetParametersAtomically.Request(parameters=msgs)).result
        return self.call(SetParameters, f"{node_fqn}/set_parameters",
                         SetParameters.Request(parameters=msgs)).results

    def get_params(self, node_fqn: str, names: list[str]) -> dict:
        res = self.call(GetParameters, f"{node_fqn}/get_parameters",
                        GetParameters.Request(names=names))
        return {n: Parameter.from_parameter_msg(ParameterMsg(name=n, value=v)).value
                for n, v in zip(names, res.values)}

    def camera_status(self, node_fqn: str, topic: str) -> dict | None:
        """Values of the latest diagnostic status of ``topic`` on node ``node_fqn``."""
        for arr in reversed(self.diagnostics):
            for st in arr.status:
                if st.hardware_id == node_fqn and st.name.endswith(f"camera {topic}"):
                    return {"level": st.level, "message": st.message,
                            **{kv.key: kv.value for kv in st.values}}
        return None

    def node_status(self, node_fqn: str) -> dict | None:
        for arr in reversed(self.diagnostics):
            for st in arr.status:
                if st.hardware_id == node_fqn and st.name.endswith("model and vocabulary"):
                    return {"level": st.level, "message": st.message,
                            **{kv.key: kv.value for kv in st.values}}
        return None

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()


def module_tester(name: str):
    """A module-scoped ``tester`` fixture: a :class:`Tester` whose node is called ``name``
    (each test module gives its own, so that no two share a name)."""
    @pytest.fixture(scope="module")
    def tester(ctx):
        t = Tester(ctx, name)
        yield t
        t.close()
    return tester


tester = module_tester("vl_distill_tester")


@contextmanager
def running_node(ctx, namespace: str, bundle: Path, tmp: Path, node_class: type = VlDistillNode,
                 **overrides):
    """Start ``node_class`` (VlDistillNode) in ``namespace`` with its own executor thread;
    stop it after."""
    values = {"model_path": str(bundle), "crop_source": "full_frame",
              "text_cache_dir": str(tmp / "text_cache"),
              "vocabulary_store": str(tmp / "store.yaml"), "diagnostics_period": 0.2,
              **overrides}
    params = []
    for name, value in values.items():
        if isinstance(value, list) and value and isinstance(value[0], str):
            params.append(Parameter(name, STRING_ARRAY, value))
        elif isinstance(value, list):
            params.append(Parameter(name, Parameter.Type.INTEGER_ARRAY, value))
        else:
            params.append(Parameter(name, value=value))
    node = node_class(namespace=namespace, context=ctx, parameter_overrides=params)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        executor.shutdown(timeout_sec=5.0)
        thread.join(timeout=5.0)
        node.destroy_node()


def rgb_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)


def colour_image(h: int, w: int, colour, seed: int = 0) -> np.ndarray:
    """An RGB frame of one coloured block on the table (what the bundle was fitted on)."""
    return block_image(h, w, colour, np.random.default_rng(seed))


def make_msg(encoding: str, rgb: np.ndarray, frame_id: str, sec: int, pad: int = 0) -> Image:
    """A sensor_msgs/Image of ``rgb`` in ``encoding`` (rows padded by ``pad`` bytes)."""
    h, w = rgb.shape[:2]
    gray = rgb.mean(axis=2).astype(np.uint8)
    pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1],
              "rgba8": np.dstack([rgb, np.full((h, w), 255, np.uint8)]),
              "bgra8": np.dstack([rgb[..., ::-1], np.full((h, w), 255, np.uint8)]),
              "mono8": gray, "mono16": gray.astype("<u2") * 200}.get(encoding)
    if encoding == "yuv422_yuy2":   # Y0 U Y1 V, BT.601 video range, U and V of the pair's left
        f = rgb.astype(float)
        y = 16 + f @ np.array([65.481, 128.553, 24.966]) / 255
        u = 128 + f @ np.array([-37.797, -74.203, 112.0]) / 255
        v = 128 + f @ np.array([112.0, -93.786, -18.214]) / 255
        pixels = np.stack([y[:, 0::2], u[:, 0::2], y[:, 1::2], v[:, 0::2]], -1)
        pixels = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
    elif encoding == "bayer_rggb8":
        pixels = rgb[..., 1].copy()
        pixels[0::2, 0::2], pixels[1::2, 1::2] = rgb[0::2, 0::2, 0], rgb[1::2, 1::2, 2]
    rows = np.ascontiguousarray(pixels).reshape(h, -1).view(np.uint8)
    if pad:
        rows = np.hstack([rows, np.zeros((h, pad), np.uint8)])
    msg = Image()
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, 1234
    msg.height, msg.width, msg.encoding, msg.is_bigendian = h, w, encoding, 0
    msg.step = rows.shape[1]
    msg.data = rows.tobytes()
    return msg


def publish_until_labelled(tester: Tester, topic: str, msg: Image, labels: list,
                           timeout: float = 20.0) -> dict:
    """Publish ``msg`` (again every 0.25 s) until a labels document with its frame_id arrives."""
    def found():
        return next((d for _, d in labels if d["header"]["frame_id"] == msg.header.frame_id),
                    None)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        tester.publish(topic, msg)
        if wait_for(lambda: found() is not None, 0.25):
            return found()
    raise AssertionError(f"no labels for frame {msg.header.frame_id!r} within {timeout} s")


# ----------------------------------------------------------------------------------------
# tests
# ----------------------------------------------------------------------------------------
def test_every_encoding_is_labelled_and_malformed_frames_are_skipped(ctx, tester, bundle_path,
                                                                     tmp_path):
    ns = "/enc"
    with running_node(ctx, ns, bundle_path, tmp_path, qos_reliability="reliable",
                      image_topics=["cam_a/image", "cam_b/image"]) as node:
        fqn = node.get_fully_qualified_name()
        labels = tester.watch_labels(f"{fqn}/labels")
        # descriptors: read-only start-up parameters and enforced ranges
        assert node.describe_parameter("model_path").read_only
        assert node.describe_parameter("top_k").integer_range[0].from_value == 1
        assert not node.set_parameters([Parameter("model_path", value="x")])[0].successful
        assert not node.set_parameters([Parameter("top_k", value=0)])[0].successful

        for i, (enc, pad) in enumerate([("rgb8", 4), ("bgr8", 0), ("rgba8", 0), ("bgra8", 8),
                                        ("mono8", 3), ("mono16", 0), ("yuv422_yuy2", 2),
                                        ("bayer_rggb8", 0)]):
            h, w = 40 + 2 * i, 56 + 4 * i
            msg = make_msg(enc, colour_image(h, w, YELLOW, i), f"frame_{enc}", 100 + i, pad)
            doc = publish_until_labelled(tester, f"{ns}/cam_a/image", msg, labels)
            assert doc["header"] == {"stamp": {"sec": 100 + i, "nanosec": 1234},
                                     "frame_id": f"frame_{enc}"}, enc
            assert doc["camera"] == f"{ns}/cam_a/image"
            assert doc["vocabulary_version"] == 1
            (obj,) = doc["objects"]
            assert obj["bbox"] == [0, 0, w, h], enc          # decoded at the right size
            assert obj["label"] in NAMES and obj["known"] is True
            assert [p[0] for p in obj["top_k"]][0] == obj["label"]
            if not enc.startswith("mono"):  # a swapped channel order would say "mug"
                assert obj["label"] == "banana", (enc, obj)

        # malformed frames on camera B: each skipped, reported, nothing crashes
        cam_b = f"{ns}/cam_b/image"
        publish_until_labelled(tester, cam_b, make_msg("rgb8", rgb_image(30, 40), "b_ok1", 1),
                               labels)
        good = make_msg("rgb8", rgb_image(30, 40), "bad_step", 2)
        good.step = 40 * 3 - 1                                   # step < width * 3
        good.data = bytes(good.step * 30)
        truncated = make_msg("bgr8", rgb_image(30, 40), "bad_trunc", 3)
        truncated.data = bytes(truncated.data)[: len(truncated.data) // 2]
        unsupported = make_msg("rgb8", rgb_image(30, 40), "bad_enc", 4)
        unsupported.encoding = "nv21"
        cam = next(c for c in node._cameras if c.resolved == cam_b)
        for k, bad in enumerate((good, truncated, unsupported), start=1):
            tester.publish(cam_b, bad)  # one at a time: frames are "latest wins" per camera
            assert wait_for(lambda: cam.bad_frames >= k, 10.0), (k, cam.bad_frames)
        doc = publish_until_labelled(tester, cam_b, make_msg("mono8", rgb_image(30, 40), "b_ok2",
                                                             5), labels)
        assert doc["objects"][0]["bbox"] == [0, 0, 40, 30]
        assert not [d for _, d in labels if d["header"]["frame_id"].startswith("bad_")]
        # reported once per topic: the first bad frame is logged, the others are counted
        assert cam.suppressed.get("bad_frame") == 2
        assert wait_for(lambda: (tester.camera_status(fqn, cam_b) or {}).get("bad_frames") == "3",
                        5.0)
        st = tester.camera_status(fqn, cam_b)
        assert st["last_error"] and "nv21" in st["last_error"]
        assert tester.camera_status(fqn, f"{ns}/cam_a/image")["bad_frames"] == "0"

        # runtime crop settings: rois, and the annotated image output
        res = tester.set_params(fqn, [Parameter("crop_source", value="rois"),
                                      Parameter("rois", Parameter.Type.INTEGER_ARRAY,
                                                [4, 30, 26, 26, 80, 2, 100, 100, 5, 5, 0, 9]),
                                      Parameter("publish_annotated", value=True)], atomic=True)
        assert res.successful, res.reason
        annotated = tester.watch_images(f"{fqn}/image_annotated")
        # red everywhere else ("mug" among these names): a crop of the wrong region (moved,
        # x and y swapped) shows red or nothing instead of the block
        scene = colour_image(60, 120, RED)
        scene[30:56, 4:30] = colour_image(26, 26, YELLOW, 1)  # roi 1: [4, 30, 26, 26]
        scene[2:60, 80:120] = colour_image(58, 40, DARK, 2)   # roi 2, clipped: [80, 2, 40, 58]
        doc = publish_until_labelled(tester, f"{ns}/cam_a/image",
                                     make_msg("rgb8", scene, "rois", 7), labels)
        assert [o["bbox"] for o in doc["objects"]] == [[4, 30, 26, 26], [80, 2, 40, 58]]
        assert [o["label"] for o in doc["objects"]] == ["banana", "power drill"], doc
        assert wait_for(lambda: any(m.header.frame_id == "rois" for m in annotated), 5.0)
        ann = next(m for m in annotated if m.header.frame_id == "rois")
        assert (ann.encoding, ann.width, ann.height) == ("rgb8", 120, 60)
        bad = tester.set_params(fqn, [Parameter("crop_source", value="everything")])[0]
        assert not bad.successful and "crop_source" in bad.reason


def test_parameter_change_adds_label_rejects_bad_ones_and_persists(ctx, tester, bundle_path,
                                                                   tmp_path):
    ns = "/vocab"
    store = tmp_path / "store.yaml"
    with running_node(ctx, ns, bundle_path, tmp_path, persist_vocabulary=True) as node:
        fqn = node.get_fully_qualified_name()
        labels = tester.watch_labels(f"{fqn}/labels")
        topic = f"{ns}/image"
        first = publish_until_labelled(tester, topic,
                                       make_msg("rgb8", colour_image(32, 48, RED), "f0", 0),
                                       labels)
        assert first["vocabulary_version"] == 1 and first["objects"][0]["label"] != NEW_LABEL

        # frames keep flowing (10 Hz) in the background for the rest of the test
        stop = threading.Event()

        def stream():
            k = 0
            while not stop.is_set():
                k += 1
                tester.publish(topic, make_msg("rgb8", colour_image(32, 48, RED, k % 5),
                                               f"s{k}", k))
                time.sleep(0.1)

        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        try:
            # --- add a label with the SetParameters service (what `ros2 param set` calls).
            # Embedding is made slow on purpose (1 s) to show that frames keep flowing with
            # the old vocabulary meanwhile (the real teacher is still called).
            real_embed = node.text_service.embed_vocabulary

            def slow_embed(vocab):
                time.sleep(1.0)
                return real_embed(vocab)

            node.text_service.embed_vocabulary = slow_embed
            t_set = time.monotonic()
            (res,) = tester.set_params(fqn, [Parameter("labels", STRING_ARRAY,
                                                       NAMES + [NEW_LABEL])])
            assert res.successful, res.reason
            assert wait_for(lambda: any(d["vocabulary_version"] >= 2 for _, d in labels), 30.0)
            t_swap = next(t for t, d in labels if d["vocabulary_version"] >= 2)
            for t, d in labels:
                if d["vocabulary_version"] >= 2:  # every frame scored with the new vocabulary
                    assert d["objects"][0]["label"] == NEW_LABEL and d["objects"][0]["known"]
                    assert d["objects"][0]["score"] > 0.9
                else:
                    assert d["objects"][0]["label"] != NEW_LABEL
            # frames were still processed while the new label was being embedded
            meanwhile = sum(1 for t, _ in labels if t_set < t < t_swap)
            print(f"\nnew label swapped in {t_swap - t_set:.2f} s after the set; "
                  f"{meanwhile} frames labelled meanwhile")
            assert meanwhile >= 3
            node.text_service.embed_vocabulary = real_embed
            assert node.text_service.stats["teacher_loads"] == 1  # 'zebra' was a real miss
            # descriptions of names that stayed are kept, the new one has none
            got = tester.get_params(fqn, ["labels", "descriptions"])
            assert got["labels"] == NAMES + [NEW_LABEL]
            assert got["descriptions"] == DESCRIPTIONS + [""]

            # --- rejected changes: reason given, old vocabulary stays active
            rejects = [
                ([Parameter("labels", STRING_ARRAY, ["Mug", "mug"])], "duplicate"),
                ([Parameter("labels", STRING_ARRAY, ["ok", "   "])], "empty"),
                # (labels [] is not rejected: it requests the bundle's vocabulary, see
                # test_node_ros_cli.py)
                ([Parameter("labels", STRING_ARRAY, ["x" * 65])], "limit"),
                ([Parameter("labels", STRING_ARRAY, [f"l{i}" for i in range(1001)])], "limit"),
                ([Parameter("descriptions", STRING_ARRAY, ["a", "b"])], "descriptions"),
                ([Parameter("labels", STRING_ARRAY, ["a", "b"]),
                  Parameter("descriptions", STRING_ARRAY, ["1", "2", "3"])], "descriptions"),
                ([Parameter("vocabulary_file", value=str(tmp_path / "missing.yaml"))],
                 "not found"),
            ]
            for params, why in rejects:
                res = tester.set_params(fqn, params, atomic=True)
                assert not res.successful, params
                assert why in res.reason and "unchanged" in res.reason, res.reason
            assert tester.get_params(fqn, ["labels"])["labels"] == NAMES + [NEW_LABEL]
            n = len(labels)
            assert wait_for(lambda: len(labels) >= n + 3, 10.0)
            assert all(d["vocabulary_version"] == 2 for _, d in labels[n:])

            # --- both at once, atomically
            res = tester.set_params(fqn, [
                Parameter("labels", STRING_ARRAY, [NEW_LABEL, "cat"]),
                Parameter("descriptions", STRING_ARRAY, ["A striped horse.", "A small pet."])],
                atomic=True)
            assert res.successful, res.reason
            assert wait_for(lambda: labels[-1][1]["vocabulary_version"] == 3, 20.0)
            assert node.pipeline.active.vocabulary.labels[1].description == "A small pet."

            # --- both with the plain SetParameters service (`ros2 param load`): applied one
            # after the other, labels first; the final vocabulary has both
            results = tester.set_params(fqn, [
                Parameter("labels", STRING_ARRAY, [NEW_LABEL, "dog"]),
                Parameter("descriptions", STRING_ARRAY, ["Black and white.", "A loyal pet."])])
            assert all(r.successful for r in results), results
            assert wait_for(lambda: [lb.description for lb in node.pipeline.active.vocabulary]
                            == ["Black and white.", "A loyal pet."], 20.0)
            assert tester.get_params(fqn, ["labels"])["labels"] == [NEW_LABEL, "dog"]

            # --- a vocabulary file replaces labels and descriptions
            vfile = tmp_path / "kitchen.yaml"
            vfile.write_text(yaml.safe_dump({"labels": [
                {"key": "011_banana", "name": "banana", "description": "A yellow fruit."},
                {"name": NEW_LABEL}, {"name": "teapot"}]}))
            (res,) = tester.set_params(fqn, [Parameter("vocabulary_file", value=str(vfile))])
            assert res.successful, res.reason
            got = tester.get_params(fqn, ["labels", "descriptions"])
            assert got["labels"] == ["banana", NEW_LABEL, "teapot"]
            assert got["descriptions"] == ["A yellow fruit.", "", ""]
            assert wait_for(lambda: labels[-1][1]["vocabulary_version"] >= 5
                            and labels[-1][1]["objects"][0]["label"] == NEW_LABEL, 20.0)
            assert node.pipeline.active.names == ["banana", NEW_LABEL, "teapot"]
        finally:
            stop.set()
            streamer.join(timeout=5.0)

        # persisted on every accepted change (persist_vocabulary: true), keys kept
        assert wait_for(lambda: store.exists() and "teapot" in store.read_text(), 5.0)
        assert Vocabulary.load(store).keys[0] == "011_banana"
        res = tester.call(Trigger, f"{fqn}/save_vocabulary", Trigger.Request())
        assert res.success and str(store) in res.message

    # --- restart: the node comes back with the operator's vocabulary
    with running_node(ctx, ns, bundle_path, tmp_path, persist_vocabulary=True,
                      labels=["ignored", "because", "store"]) as node:
        fqn = node.get_fully_qualified_name()
        assert node.pipeline.active.names == ["banana", NEW_LABEL, "teapot"]
        assert tester.get_params(fqn, ["labels"])["labels"] == ["banana", NEW_LABEL, "teapot"]
        doc = publish_until_labelled(tester, f"{ns}/image",
                                     make_msg("rgb8", colour_image(32, 48, RED), "after_restart",
                                              1), labels)
        assert doc["objects"][0]["label"] == NEW_LABEL

    # --- a corrupt store is reported and set aside, the node still starts
    store.write_text("labels: [ {name: 'unterminated\n")
    with running_node(ctx, ns, bundle_path, tmp_path, persist_vocabulary=True) as node:
        fqn = node.get_fully_qualified_name()
        assert node.pipeline.active.names == NAMES
        assert not store.exists() and list(tmp_path.glob("store.yaml.corrupt-*"))
        assert wait_for(lambda: "corrupt" in (tester.node_status(fqn) or {}).get(
            "vocabulary_store_error", ""), 5.0)
        assert tester.node_status(fqn)["level"] != b"\x00"


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")  # pragma: no cover


def _flood(tester, topic: str, msg, seconds: float, tag: str,
           sent_at: dict[str, float]) -> tuple[int, float]:
    """Publish ``msg`` on ``topic`` at 100 Hz for ``seconds`` (frame ids ``tag0``, ``tag1``
    ...; their send times into ``sent_at``); returns (frames sent, end time)."""
    sent, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        msg.header.frame_id = f"{tag}{sent}"
        sent_at[msg.header.frame_id] = time.monotonic()
        tester.publish(topic, msg)
        sent += 1
        time.sleep(max(0.0, start + sent * 0.01 - time.monotonic()))
    return sent, time.monotonic()


def _slowed_and_labelling(tester, node, ns: str) -> tuple[list, str, Image, list]:
    """Make each frame of ``node`` (in namespace ``ns``) take 25 ms more, then publish a
    warm-up frame on ``ns/image`` until it is labelled. However fast this machine's runtime
    is, a frame then takes longer than the 10 ms between the frames of :func:`_flood`, so
    latest-wins dropping is exercised (the time goes to the student stage; the node overlaps
    it with the next frame's boxes). Returns the labels list, the topic, the message and, per
    frame classified so far (the list grows), whether it took the INT8 student."""
    real_classify, classified = node.pipeline.classify, []

    def slow_classify(frame):
        time.sleep(0.025)
        classified.append(frame.student_behind)       # not the frame: memory is measured
        return real_classify(frame)

    node.pipeline.classify = slow_classify
    labels = tester.watch_labels(f"{node.get_fully_qualified_name()}/labels")
    topic = f"{ns}/image"
    msg = make_msg("rgb8", rgb_image(240, 320), "warmup", 0)
    publish_until_labelled(tester, topic, msg, labels)
    return labels, topic, msg, classified


def test_flood_at_100hz_drops_instead_of_queueing(ctx, tester, bundle_path, tmp_path):
    ns = "/flood"
    # 24 regions per frame make one frame take longer than the 10 ms between frames
    rois = [v for i in range(24) for v in ((i % 6) * 50, (i // 6) * 50, 60, 60)]
    with running_node(ctx, ns, bundle_path, tmp_path, crop_source="rois", rois=rois) as node:
        fqn = node.get_fully_qualified_name()
        labels, topic, msg, _ = _slowed_and_labelling(tester, node, ns)
        sent_at: dict[str, float] = {}
        _flood(tester, topic, msg, 1.0, "warm", sent_at)  # allocators reach their steady state
        time.sleep(0.5)
        rss0, n0 = _rss_mb(), len(labels)
        sent, t_end = _flood(tester, topic, msg, 3.0, "flood", sent_at)
        rss1 = _rss_mb()
        time.sleep(1.5)
        flood_docs = [(t, d) for t, d in labels[n0:] if d["header"]["frame_id"].startswith("flood")]
        cam = node._cameras[0]
        assert sent >= 200
        assert 0 < len(flood_docs) < sent         # processed some, not all
        assert cam.dropped > 0                    # dropped frames are counted ...
        assert cam.pending is None                # ... and nothing is left queued
        # ... and the node fell behind its camera: the frames after that were processed with
        # proposal_box_net_behind's settings (regions here: no network to change)
        assert node._keeping_up.times_behind >= 1 and 0 < cam.processed_behind < \
            cam.processed
        # latency bounded: nothing arrives long after the flood stopped (no backlog)
        late = [t - t_end for t, _ in flood_docs if t - t_end > 1.0]
        assert not late, f"{len(late)} labels arrived up to {max(late):.2f} s after the flood"
        latency = sorted(t - sent_at[d["header"]["frame_id"]] for t, d in flood_docs)
        assert latency[len(latency) // 2] < 0.5 and latency[-1] < 1.5, latency
        assert rss1 - rss0 < 60, f"memory grew by {rss1 - rss0:.1f} MB during the flood"
        assert wait_for(lambda: int((tester.camera_status(fqn, topic) or {}).get("dropped", 0))
                        == cam.dropped, 5.0)
        st = tester.camera_status(fqn, topic)
        assert int(st["processed"]) >= len(flood_docs)
        assert int(st["processed_behind"]) == cam.processed_behind
        assert wait_for(lambda: (tester.node_status(fqn) or {}).get("times_behind")
                        == str(node._keeping_up.times_behind), 5.0)
        model = tester.node_status(fqn)
        assert model["behind_cameras"] in ("true", "false") and float(model["behind_hold_s"]) >= 10
        print(f"\nflood: sent {sent} in 3 s, processed {len(flood_docs)}, dropped total "
              f"{cam.dropped}, latency median {latency[len(latency) // 2] * 1e3:.0f} ms max "
              f"{latency[-1] * 1e3:.0f} ms, RSS {rss0:.0f} -> {rss1:.0f} MB")


def test_a_node_still_behind_with_cheaper_boxes_takes_the_int8_student(ctx, tester, tmp_path):
    """``inference_backend_behind`` (default ``onnxruntime_int8``) with the shipped bundle and
    box network (both have INT8 copies): flooded for 4.5 s, the node falls behind, still
    drops frames over a whole window with its first cheaper step (the box network's INT8
    copy), and classifies the frames after that with the INT8 student, counted in
    /diagnostics. With a runtime the user chose there is no second step."""
    ns = "/flood_int8"
    with running_node(ctx, ns, default_model_path(), tmp_path, crop_source="proposals",
                      labels=["banana", "mug"]) as node:
        fqn = node.get_fully_qualified_name()
        assert node.pipeline.runner_behind_what == "onnxruntime_int8"
        assert node._keeping_up.levels == 2
        _, topic, msg, classified = _slowed_and_labelling(tester, node, ns)
        n0 = len(classified)
        _flood(tester, topic, msg, 4.5, "flood", {})
        time.sleep(1.0)
        cam = node._cameras[0]
        assert node._keeping_up.times_behind >= 1 and node._keeping_up.times_further >= 1
        # the frames two steps behind were classified by the INT8 runtime, the others not
        on_int8 = sum(classified[n0:])
        assert 0 < cam.processed_behind_student == on_int8 < cam.processed_behind
        assert wait_for(lambda: int((tester.camera_status(fqn, topic) or {}).get(
            "processed_behind_student", -1)) == cam.processed_behind_student, 5.0)
        model = tester.node_status(fqn)
        assert model["student_runtime"] == "onnxruntime"
        assert model["student_runtime_behind"] == "onnxruntime_int8"
        assert int(model["times_behind_further"]) >= 1
    with running_node(ctx, ns, default_model_path(), tmp_path, inference_backend="torch",
                      labels=["banana", "mug"],
                      inference_backend_behind="onnxruntime_int8") as node:
        assert node.pipeline.runner_behind is node.pipeline.runner
        assert node.pipeline.runner_behind_what.startswith("same (inference_backend torch")
        assert node._keeping_up.levels == 1
    with running_node(ctx, ns, default_model_path(), tmp_path,       # turned off
                      labels=["banana", "mug"], inference_backend_behind="same") as node:
        assert node.pipeline.runner_behind is node.pipeline.runner
        assert node.pipeline.runner_behind_what == "same" and node._keeping_up.levels == 1


def test_pipelined_node_publishes_what_one_thread_publishes_in_order(
        ctx, tester, bundle_path, tmp_path):
    """``pipelined: true`` runs the boxes of one frame in one thread while another
    classifies the previous frame: the labels of each frame are those of ``pipelined:
    false``, a burst comes out in publishing order, and both threads end with the node."""
    colours = [YELLOW, SWAPPED, DARK, YELLOW, DARK]

    def table(colour, i: int) -> np.ndarray:  # one block on a plain table, somewhere else
        image = np.full((240, 320, 3), (200, 190, 170), np.uint8)
        image[40 + 10 * i:120 + 10 * i, 60 + 30 * i:150 + 30 * i] = colour
        return image

    results = {}
    for flag in (True, False):
        ns = f"/pipelined_{str(flag).lower()}"
        with running_node(ctx, ns, bundle_path, tmp_path / ns.strip("/"),
                          crop_source="proposals", pipelined=flag) as node:
            fqn = node.get_fully_qualified_name()
            names = {t.name for t in node._threads}
            stages = {"vl_distill_prepare", "vl_distill_classify"}
            assert (stages <= names) if flag else ("vl_distill_inference" in names
                                                   and not stages & names)
            labels = tester.watch_labels(f"{fqn}/labels")
            docs = [publish_until_labelled(tester, f"{ns}/image", make_msg(
                "rgb8", table(c, i), f"f{i}", i), labels) for i, c in enumerate(colours)]
            results[flag] = [[(o["bbox"], o["label"], round(o["score"], 5)) for o in d["objects"]]
                             for d in docs]
            n0 = len(labels)
            for i in range(30):  # a burst at 100 Hz: some dropped, the rest in order
                tester.publish(f"{ns}/image", make_msg("rgb8", colour_image(240, 320, DARK),
                                                       f"burst{i:02d}", 100 + i))
                time.sleep(0.01)
            assert wait_for(lambda: any(d["header"]["frame_id"] == "burst29"
                                        for _, d in labels[n0:]), 10.0)
            burst = [d["header"]["frame_id"] for _, d in labels[n0:]
                     if d["header"]["frame_id"].startswith("burst")]
            assert burst == sorted(burst) and len(set(burst)) == len(burst)
            threads = list(node._threads)
        assert not any(t.is_alive() for t in threads)
    assert results[True] == results[False]
    assert [len(objs) for objs in results[True]] == [1] * len(colours), results[True]
    assert [objs[0][1] for objs in results[True]] == [
        "banana", "mug", "power drill", "banana", "power drill"]


def test_missing_default_bundle_fails_with_instructions(ctx, monkeypatch, tmp_path):
    missing = tmp_path / "bundles" / "default_student.vdb"
    monkeypatch.setattr(node_mod, "default_model_path", lambda: missing)
    with pytest.raises(StartupError, match="vl-distill export"):
        VlDistillNode(namespace="/nomodel", context=ctx)
    with pytest.raises(StartupError, match="cannot load model bundle"):
        VlDistillNode(namespace="/badmodel", context=ctx, parameter_overrides=[
            Parameter("model_path", value=str(tmp_path / "nope.vdb"))])


def test_inference_backend_int8_runs_the_bundles_int8_model_or_fails_clearly(
        ctx, bundle_path, tmp_path):
    """The shipped bundle carries an INT8 model: asked for, the node runs it and says so in
    /diagnostics; a bundle without one, or an unknown backend (or backend behind the
    cameras), stops start-up clearly."""
    common = [Parameter("crop_source", value="full_frame"),
              Parameter("text_cache_dir", value=str(tmp_path / "cache")),
              Parameter("vocabulary_store", value=str(tmp_path / "store.yaml")),
              Parameter("warm_text_encoder", value=False)]
    node = VlDistillNode(namespace="/int8", context=ctx, parameter_overrides=common + [
        Parameter("inference_backend", value="onnxruntime_int8")])
    try:
        assert node.pipeline.runner.backend == "onnxruntime_int8"
        values = {kv.key: kv.value for kv in node.diagnostics().status[0].values}
        assert values["student_runtime"] == "onnxruntime_int8"
    finally:
        node.destroy_node()
    with pytest.raises(StartupError, match="has no INT8 model"):
        VlDistillNode(namespace="/int8none", context=ctx, parameter_overrides=common + [
            Parameter("model_path", value=str(bundle_path)),
            Parameter("inference_backend", value="onnxruntime_int8")])
    with pytest.raises(StartupError, match="onnxruntime_int8, torch"):
        VlDistillNode(namespace="/int8bad", context=ctx, parameter_overrides=common + [
            Parameter("model_path", value=str(bundle_path)),
            Parameter("inference_backend", value="tensorrt")])
    with pytest.raises(StartupError, match="inference_backend_behind must be one of same, "
                                           "onnxruntime_int8, got 'int4'"):
        VlDistillNode(namespace="/int8behind", context=ctx, parameter_overrides=common + [
            Parameter("model_path", value=str(bundle_path)),
            Parameter("inference_backend_behind", value="int4")])


def test_console_script_runs_and_stops_on_sigint(tester, bundle_path, tmp_path):
    exe = Path(sys.executable).with_name("vl_distill_node")
    if not exe.exists():
        pytest.skip("console script not installed (pip install -e .)")
    labels = tester.watch_labels("/cli/vl_distill_node/labels")
    env = dict(os.environ)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    proc = subprocess.Popen(
        [str(exe), "--ros-args", "-r", "__ns:=/cli", "-p", f"model_path:={bundle_path}",
         "-p", "crop_source:=full_frame", "-p", f"text_cache_dir:={tmp_path / 'cache'}",
         "-p", f"vocabulary_store:={tmp_path / 'store.yaml'}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        doc = publish_until_labelled(tester, "/cli/image",
                                     make_msg("bgr8", colour_image(24, 32, YELLOW), "cli", 9),
                                     labels, timeout=40.0)
        assert doc["camera"] == "/cli/image" and doc["objects"][0]["bbox"] == [0, 0, 32, 24]
        assert doc["objects"][0]["label"] == "banana", doc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out


def test_a_repeated_sigint_while_stopping_is_quiet():
    """Ctrl-C on ros2 launch: the terminal's SIGINT and launch's own reach the node within
    milliseconds; the second is ignored while it stops, a later one still interrupts."""
    previous = signal.getsignal(signal.SIGINT)
    try:
        node_mod.quiet_repeated_interrupts(grace_s=30.0)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)                      # the handler runs here: nothing is raised
        node_mod.quiet_repeated_interrupts(grace_s=0.0)
        time.sleep(0.01)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_run_node_leaves_sigint_ignored_for_the_exit():
    """After the node has stopped only the process's exit follows: a late SIGINT (launch's
    copy reaching a managed node as Python finalises) killed it, exit -2. (Its own process:
    run_node initialises and shuts down rclpy's default context.)"""
    script = ("import signal\n"
              "from vl_distill_ros.ros import node\n"
              "class Interrupted:\n"
              "    def __init__(self):\n"
              "        raise KeyboardInterrupt\n"          # Ctrl-C while the node is made
              "code = node.run_node(Interrupted, ['vl_distill_node'], exiting=True)\n"
              "print(code, signal.getsignal(signal.SIGINT) is signal.SIG_IGN)\n"
              "code = node.run_node(Interrupted, ['vl_distill_node'])\n"   # a library's
              "print(code, signal.getsignal(signal.SIGINT) is signal.SIG_IGN)\n")
    done = subprocess.run([sys.executable, "-c", script], env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["0", "True", "0", "True"], done.stdout + done.stderr


def test_run_node_called_as_a_library_puts_the_sigint_handler_back():
    """A program (or test) calling run_node goes on after it: its Ctrl-C, and its child
    processes' (SIG_IGN is inherited across exec), must still work."""
    script = ("import signal, subprocess, sys\n"
              "from vl_distill_ros.ros import node\n"
              "class Interrupted:\n"
              "    def __init__(self):\n"
              "        raise KeyboardInterrupt\n"
              "code = node.run_node(Interrupted, ['vl_distill_node'])\n"
              "child = subprocess.run([sys.executable, '-c', 'import signal; print(signal."
              "getsignal(signal.SIGINT) is signal.default_int_handler)'], capture_output=True,"
              " text=True)\n"
              "print(code, signal.getsignal(signal.SIGINT) is signal.default_int_handler,"
              " child.stdout.strip())\n")
    done = subprocess.run([sys.executable, "-c", script], env=dict(os.environ),
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["0", "True", "True"], done.stdout + done.stderr


def test_node_process_stops_cleanly_on_sigint_twice(bundle_path, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "vl_distill_ros.ros.node", "--ros-args", "-r", "__ns:=/twice",
         "-p", f"model_path:={bundle_path}", "-p", f"text_cache_dir:={tmp_path / 'cache'}",
         "-p", f"vocabulary_store:={tmp_path / 'store.yaml'}"],
        env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "ready:" in line:
                break
        assert "ready:" in "".join(lines), "".join(lines)
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)       # the terminal's, to the whole group
        time.sleep(0.01)
        proc.send_signal(signal.SIGINT)       # launch's, forwarded to its node at once
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    out = "".join(lines) + out
    assert proc.returncode == 0 and "Traceback" not in out, out


def test_detections_published_when_vision_msgs_is_available(ctx, tester, bundle_path, tmp_path):
    pytest.importorskip("vision_msgs", reason="vision_msgs is not installable here (no ROS 2 "
                        "apt packages, not on PyPI); ~/detections is disabled without it")
    from vision_msgs.msg import Detection2DArray

    with running_node(ctx, "/det", bundle_path, tmp_path, unknown_threshold=0.0) as node:
        fqn = node.get_fully_qualified_name()
        got: list = []
        tester.node.create_subscription(Detection2DArray, f"{fqn}/detections", got.append, 10)
        labels = tester.watch_labels(f"{fqn}/labels")
        publish_until_labelled(tester, "/det/image", make_msg("rgb8", rgb_image(24, 32), "d", 1),
                               labels)
        assert wait_for(lambda: bool(got), 5.0)
        det = got[-1].detections[0]
        assert det.results[0].hypothesis.class_id in NAMES
        assert det.bbox.size_x == 32 and det.bbox.size_y == 24


class _Logger:
    def __init__(self):
        self.infos: list[str] = []

    def info(self, text: str) -> None:
        self.infos.append(text)


_OBJECTS = [("banana", (10, 20, 30, 40), 0.875, True,
             [("banana", 0.875), ("mug", 0.1), ("power drill", 0.025)]),
            ("unknown", (0, 0, 5, 7), 0.25, False, [("mug", 0.25), ("banana", 0.2)])]


def _objects():
    from vl_distill_ros.perception.pipeline import ObjectResult

    return [ObjectResult(bbox, label, score, known, top_k)
            for label, bbox, score, known, top_k in _OBJECTS]


def test_detection_entries_leave_out_unknown_objects_and_carry_the_top_k():
    """The ~/detections convention, independent of the message classes: known objects only,
    box centre and size, the top-k hypotheses best first (class_id = label name)."""
    from vl_distill_ros.ros.conversions import detection_entries

    assert detection_entries(_objects()) == [
        ((25.0, 40.0, 30.0, 40.0), [("banana", 0.875), ("mug", 0.1), ("power drill", 0.025)])]
    assert detection_entries([]) == []


def test_detections_and_label_info_msgs_with_real_vision_msgs():
    vm_mod = pytest.importorskip(
        "vision_msgs.msg", reason="vision_msgs is not on PyPI; build it with "
        "../shared/tools/vision_msgs_build.sh and source its env.sh to run this")
    from types import SimpleNamespace

    from vl_distill_ros.ros.conversions import label_info_msg

    vm = VlDistillNode._import_vision_msgs(SimpleNamespace(get_logger=_Logger))
    assert vm["Detection2DArray"] is vm_mod.Detection2DArray and vm["LabelInfo"]
    src = make_msg("rgb8", rgb_image(50, 80), "camera_frame", 42)
    arr = VlDistillNode._detections_msg(SimpleNamespace(_vision_msgs=vm), src, _objects())
    assert isinstance(arr, vm_mod.Detection2DArray) and arr.header == src.header
    (det,) = arr.detections
    assert det.header == src.header and det.id == ""
    assert (det.bbox.center.position.x, det.bbox.center.position.y) == (25.0, 40.0)
    assert (det.bbox.size_x, det.bbox.size_y) == (30.0, 40.0)
    assert [(h.hypothesis.class_id, h.hypothesis.score) for h in det.results] == [
        ("banana", 0.875), ("mug", pytest.approx(0.1)), ("power drill", 0.025)]
    assert det.results[0].pose.pose.position.z == 0.0             # not placed: no pose
    placed = [dataclasses.replace(o, position=(0.1, -0.05, 0.8), size=(0.1, 0.1, 0.2))
              for o in _objects()]
    (det,) = VlDistillNode._detections_msg(SimpleNamespace(_vision_msgs=vm), src,
                                           placed).detections
    assert [(h.pose.pose.position.x, h.pose.pose.position.z) for h in det.results] == \
        [(0.1, 0.8)] * 3
    assert det.id == ""                                          # not tracked
    tracked = [dataclasses.replace(o, track_id=7) for o in _objects()]
    (det,) = VlDistillNode._detections_msg(SimpleNamespace(_vision_msgs=vm), src,
                                           tracked).detections
    assert det.id == "7"
    info = label_info_msg(vm, ["banana", "mug"], 0.4)
    assert isinstance(info, vm_mod.LabelInfo)
    assert [(c.class_id, c.class_name) for c in info.class_map] == [(0, "banana"), (1, "mug")]
    assert info.threshold == pytest.approx(0.4)


def test_without_vision_msgs_detections_are_disabled_with_a_message(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setitem(sys.modules, "vision_msgs", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "vision_msgs.msg", None)  # also when already imported
    logger = _Logger()
    assert VlDistillNode._import_vision_msgs(SimpleNamespace(get_logger=lambda: logger)) is None
    assert any("~/detections is disabled" in m for m in logger.infos)


# ----------------------------------------------------------------------------------------
# launch file, configuration and documentation agree with the declared parameters
# ----------------------------------------------------------------------------------------
def _config_params() -> dict:
    data = yaml.safe_load((REPO / "config" / "vl_distill.yaml").read_text())
    return data["/**/vl_distill_node"]["ros__parameters"]


def test_config_yaml_lists_every_parameter_with_its_default():
    cfg = _config_params()
    assert list(cfg) == [p.name for p in PARAMETERS]
    for p in PARAMETERS:
        assert cfg[p.name] == p.default, p.name
        assert p.description


def test_config_yaml_is_a_valid_ros_params_file(ctx, bundle_path, tmp_path):
    """rcl itself parses config/vl_distill.yaml (empty arrays included) for a namespaced node."""
    cfg = REPO / "config" / "vl_distill.yaml"
    node = VlDistillNode(namespace="/cfg", context=ctx, cli_args=[
        "--ros-args", "--params-file", str(cfg), "-p", f"model_path:={bundle_path}",
        "-p", f"text_cache_dir:={tmp_path}", "-p", "crop_source:=full_frame"])
    try:
        assert node.get_parameter("crop_source").value == "full_frame"
        assert node.get_parameter("image_topics").value == ["image"]
        assert node.get_parameter("score_temperature").value == 0.0
        assert node.get_parameter("labels").value == NAMES  # empty -> the bundle's vocabulary
        assert list(node.get_parameter("rois").value) == []
    finally:
        node.destroy_node()


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="thread names need Linux's /proc")
def test_the_node_s_workers_carry_their_names_in_the_os(ctx, bundle_path, tmp_path):
    """`top -H` tells the node's threads apart: the two frame stages and the vocabulary
    worker are named ``vl_prepare``, ``vl_classify`` and ``vl_vocabulary`` (one worker,
    ``vl_inference``, with ``pipelined: false``)."""
    args = ["--ros-args", "-p", f"model_path:={bundle_path}", "-p", f"text_cache_dir:={tmp_path}",
            "-p", "warm_text_encoder:=false"]
    for pipelined, expected in ((True, {"vl_prepare", "vl_classify", "vl_vocabulary"}),
                                (False, {"vl_inference", "vl_vocabulary"})):
        before = os_thread_names()
        node = VlDistillNode(namespace=f"/names_{int(pipelined)}", context=ctx,
                             cli_args=args + ["-p", f"pipelined:={str(pipelined).lower()}"])
        try:
            assert wait_for(lambda: all(os_thread_names().count(n) > before.count(n)
                                        for n in expected), 10.0), os_thread_names()
        finally:
            node.destroy_node()
        # destroy_node stops the frame workers (the vocabulary worker may still be ending)
        assert wait_for(lambda: all(os_thread_names().count(n) <= before.count(n)
                                    for n in expected - {"vl_vocabulary"}), 10.0)


def test_docs_table_documents_every_parameter():
    """Every parameter has a README row; a constrained one shows its allowed values as
    `ros2 param describe` does (proposal_box_net_close_topics' row lacked them)."""
    text = (REPO / "README.md").read_text()
    rows: dict[str, str] = {}  # the Parameters table's rows: name | type | default | ...
    for line in text.splitlines():
        cells = line.split("|")
        if line.startswith("| `") and len(cells) > 3 and cells[2].strip() in (
                "bool", "integer", "double", "string", "string_array", "integer_array"):
            rows.setdefault(cells[1].strip(), line)
    for p in PARAMETERS:
        assert f"`{p.name}`" in rows, p.name
        if p.constraints:
            assert f"Allowed: {p.constraints}" in rows[f"`{p.name}`"], p.name


def test_launch_file_is_valid_and_uses_config_parameter_names():
    path = REPO / "launch" / "vl_distill.launch.py"
    source = path.read_text()
    tree = ast.parse(source, str(path))
    compile(tree, str(path), "exec")
    cfg = _config_params()
    # parameter overrides the launch file builds (overrides["name"] = ...) are real parameters
    keys = {n.slice.value for n in ast.walk(tree)
            if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)
            and n.value.id == "overrides" and isinstance(n.slice, ast.Constant)}
    assert keys == {"image_topics", "model_path"} and keys <= set(cfg)
    assert '"vl_distill.yaml"' in source  # the default params file is the package's config
    args = {c.args[0].value for c in ast.walk(tree) if isinstance(c, ast.Call)
            and getattr(c.func, "id", "") == "DeclareLaunchArgument"}
    assert args == {"image_topics", "namespace", "params_file", "model_path", "lifecycle",
                    "autostart"}
    try:
        import launch_ros  # noqa: F401
    except ImportError:
        pytest.skip("launch_ros is not installable here; the launch file was only compiled "
                    "and its parameter names checked")
    from helpers import load_script

    mod = load_script(path, "vl_distill_launch")
    assert mod.generate_launch_description().entities


def test_help_prints_parameters_without_starting_ros(capsys, monkeypatch):
    """`vl_distill_node --help` documents every parameter and creates no DDS participant."""
    from vl_distill_ros.ros import node as node_mod

    def no_init(*a, **k):
        raise AssertionError("--help must not initialise rclpy")

    monkeypatch.setattr(node_mod.rclpy, "init", no_init)
    assert node_mod.main(["vl_distill_node", "--help"]) == 0
    out = capsys.readouterr().out
    for p in PARAMETERS:
        assert p.name in out


def test_two_nodes_with_one_name_are_reported(ctx, bundle_path, tmp_path):
    """A second node with the same name and namespace is seen in the graph: warning, WARN
    diagnostics and the count in the diagnostics values."""
    args = ["--ros-args", "-p", f"model_path:={bundle_path}", "-p", f"text_cache_dir:={tmp_path}",
            "-p", "warm_text_encoder:=false"]
    a = VlDistillNode(namespace="/dup", context=ctx, cli_args=args)
    b = VlDistillNode(namespace="/dup", context=ctx, cli_args=args)
    other = VlDistillNode(namespace="/single", context=ctx, cli_args=args)
    try:
        assert wait_for(lambda: a.duplicate_name_count() == 2, 10.0)
        assert other.duplicate_name_count() == 1
        a._check_duplicate_name()
        arr = a.diagnostics()
        status = [s for s in arr.status if s.name.endswith("model and vocabulary")][0]
        assert status.level == DiagnosticStatus.WARN and "2 nodes share" in status.message
        assert {kv.key: kv.value for kv in status.values}["nodes_with_this_name"] == "2"
        other._check_duplicate_name()
        status = [s for s in other.diagnostics().status
                  if s.name.endswith("model and vocabulary")][0]
        assert status.level == DiagnosticStatus.OK
    finally:
        for n in (a, b, other):
            n.destroy_node()


def test_names_given_alone_take_the_bundle_s_catalogued_descriptions(
        ctx, tester, bundle_path, tmp_path):
    """``labels`` without descriptions: a name the bundle's catalogue holds (in another
    written form too) is prompted with its description, so its embedding is the bundle's own
    (no teacher call) and it is published as given; /diagnostics counts it. With
    ``description_catalogue: false`` it is prompted bare (the teacher embeds it)."""
    given = ["Banana", "mug", "power_drill"]
    with running_node(ctx, "/catalogue", bundle_path, tmp_path, labels=given,
                      warm_text_encoder=False) as node:
        fqn = node.get_fully_qualified_name()
        labels = tester.watch_labels(f"{fqn}/labels")
        doc = publish_until_labelled(tester, "/catalogue/image",
                                     make_msg("rgb8", colour_image(32, 48, YELLOW), "c0", 0),
                                     labels)
        assert doc["objects"][0]["label"] == "Banana"
        assert node.text_service.stats["misses"] == 0    # all three from the bundle's seeds
        values = {kv.key: kv.value for kv in node.diagnostics().status[0].values}
        assert values["catalogued_descriptions"] == "1"   # banana (mug and drill: none)
    with running_node(ctx, "/bare", bundle_path, tmp_path / "bare", labels=given,
                      warm_text_encoder=False, description_catalogue=False) as node:
        assert node.text_service.catalogue is None
        assert node.text_service.stats["misses"] == 2     # "Banana" and "power_drill" embedded
        values = {kv.key: kv.value for kv in node.diagnostics().status[0].values}
        assert values["catalogued_descriptions"] == "0"


def test_start_up_values_of_the_wrong_type_or_bad_topic_names_are_startup_errors(
        ctx, bundle_path, tmp_path):
    """`-p top_k:=2.5`, `-p unknown_threshold:=0` (an integer for a double) or
    `-p image_topics:=/camera/image_raw` (no brackets) ended in rclpy's
    InvalidParameterTypeException traceback; a topic name rclpy cannot resolve
    (`image_topics:="[/a,/b]"` through the launch file, `camera_info_topics: ['/i-1']`) in
    an RCLError traceback, or only after the model had loaded."""
    common = [Parameter("model_path", value=str(bundle_path)),
              Parameter("text_cache_dir", value=str(tmp_path / "cache")),
              Parameter("vocabulary_store", value=str(tmp_path / "store.yaml"))]
    cases = [
        (Parameter("top_k", value=2.5), "top_k: 2.5 (a double) is not of its type integer"),
        (Parameter("unknown_threshold", value=0), "(0.0, not 0)"),
        (Parameter("image_topics", value="/camera/image_raw"), "a list in brackets"),
        (Parameter("image_topics", STRING_ARRAY, ["[/a"]), "'[/a' is not a valid topic name"),
        (Parameter("image_topics", STRING_ARRAY, ["/ok", "/x y"]),
         "image_topics: '/x y' is not a valid topic name"),
    ]
    for i, (param, message) in enumerate(cases):
        with pytest.raises(StartupError, match=re.escape(message)):
            VlDistillNode(namespace=f"/typed{i}", context=ctx,
                          parameter_overrides=common + [param])
    loaded = []
    real = VlDistillNode._load_model

    def spy(self, *args):
        loaded.append(args)
        return real(self, *args)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(VlDistillNode, "_load_model", spy)
        with pytest.raises(StartupError, match="camera_info_topics: '/i-1' is not a valid"):
            VlDistillNode(namespace="/typed_info", context=ctx, parameter_overrides=common + [
                Parameter("depth_topics", STRING_ARRAY, ["/d"]),
                Parameter("camera_info_topics", STRING_ARRAY, ["/i-1"])])
    assert not loaded  # refused before the model was loaded


def test_box_network_off_is_taken_as_yaml_reads_it(ctx, bundle_path, tmp_path):
    """README: `proposal_box_net: off`. YAML 1.1 (parameter files, `-p x:=off`, `ros2 param
    set`) reads off as false, and the string parameter refused it: start-up crashed
    (InvalidParameterTypeException), a runtime set was rejected ("Wrong parameter type")."""
    node = VlDistillNode(namespace="/boxoff", context=ctx, parameter_overrides=[
        Parameter("model_path", value=str(bundle_path)),
        Parameter("text_cache_dir", value=str(tmp_path / "cache")),
        Parameter("vocabulary_store", value=str(tmp_path / "store.yaml")),
        Parameter("proposal_box_net", value=False),
        Parameter("proposal_box_net_depth", value=False)])
    try:
        assert node.get_parameter("proposal_box_net").value == "off"
        assert node.get_parameter("proposal_box_net_depth").value == "off"
        result = node.set_parameters([Parameter("proposal_box_net_behind", value=False)])[0]
        assert result.successful, result.reason
        assert node.get_parameter("proposal_box_net_behind").value == "off"
        result = node.set_parameters([Parameter("proposal_box_net", value=True)])[0]
        assert not result.successful  # only false stands for a word ('off')
    finally:
        node.destroy_node()


def test_a_frame_in_flight_at_ctrl_c_is_not_reported_as_failed(ctx, bundle_path, tmp_path):
    """rclpy's Ctrl-C shuts the context down before destroy_node stops the workers: a frame
    being published then failed on the dead context and was logged as 'processing failed'
    (and counted as an error). Once the node stops, or its context is down, such failures
    are the shutdown's, not the frame's; run_node stops the workers when the context goes
    down."""
    import inspect

    with running_node(ctx, "/ctrlc", bundle_path, tmp_path) as node:
        reported: list[str] = []
        node._report_frame_problem = lambda cam, kind, text: reported.append(text)

        def fails() -> None:
            raise RuntimeError("Failed to publish: publisher's context is invalid")
        assert node._guarded(None, fails) is None and len(reported) == 1
        node._stop.set()
        assert node._guarded(None, fails) is None and len(reported) == 1
        node._stop.clear()
    assert "on_shutdown(node._stop.set)" in inspect.getsource(node_mod.run_node)


def test_a_node_told_to_stop_while_it_loads_stops_there(bundle_path, tmp_path, monkeypatch):
    """SIGTERM during start-up shut the context down, yet the node went on loading for
    seconds (its text encoder, the start-up vocabulary, the pipeline: ~20 s on a loaded
    machine) and then exited as if it had run. It now stops at the next step."""
    import rclpy

    from vl_distill_ros.ros.startup_checks import StartupCancelled
    from vl_distill_ros.ros.vocabulary_controller import VocabularyController

    context = rclpy.Context()
    rclpy.init(context=context)
    real = VlDistillNode._load_model

    def load_then_sigterm(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        context.shutdown()                # what rclpy's SIGINT/SIGTERM handler does
        return out

    warmed: list[bool] = []
    monkeypatch.setattr(VlDistillNode, "_load_model", load_then_sigterm)
    monkeypatch.setattr(VocabularyController, "warm", lambda self: warmed.append(True))
    try:
        with pytest.raises(StartupCancelled, match="stopped during start-up"):
            VlDistillNode(namespace="/cancelled", context=context, parameter_overrides=[
                Parameter("model_path", value=str(bundle_path)),
                Parameter("text_cache_dir", value=str(tmp_path / "cache")),
                Parameter("vocabulary_store", value=str(tmp_path / "store.yaml"))])
        assert not warmed            # nothing after the model was loaded
    finally:
        context.try_shutdown()


def test_a_publisher_whose_qos_the_subscription_does_not_match_is_reported(
        ctx, tester, bundle_path, tmp_path):
    """A best-effort camera with `qos_reliability: reliable` sends the node nothing: the
    camera's diagnostics said "no images received yet" at level OK. Now the mismatch is
    logged and the camera's status WARNs with the topic, the policy and the setting, until
    frames come (from a publisher that matches)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    ns = "/qosmismatch"
    with running_node(ctx, ns, bundle_path, tmp_path, qos_reliability="reliable") as node:
        fqn = node.get_fully_qualified_name()
        topic = f"{ns}/image"
        labels = tester.watch_labels(f"{fqn}/labels")
        msg = make_msg("rgb8", rgb_image(48, 64), "qos", 1)
        best_effort = tester.node.create_publisher(
            Image, topic, QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        try:
            def warned():
                st = tester.camera_status(fqn, topic)
                return st is not None and st["level"] == DiagnosticStatus.WARN \
                    and "does not match" in st["message"]
            assert wait_for(warned, 20.0), tester.camera_status(fqn, topic)
            st = tester.camera_status(fqn, topic)
            assert "reliability" in st["message"] and "qos_reliability: reliable" in \
                st["message"] and st["incompatible_qos"] == st["message"]
            for _ in range(5):
                best_effort.publish(msg)
                time.sleep(0.05)
            assert not labels and tester.camera_status(fqn, topic)["received"] == "0"
            publish_until_labelled(tester, topic, msg, labels)      # a reliable publisher
            assert wait_for(lambda: tester.camera_status(fqn, topic)["level"]
                            == DiagnosticStatus.OK, 10.0)
        finally:
            tester.node.destroy_publisher(best_effort)


def test_a_publisher_of_another_message_type_is_reported(ctx, tester, bundle_path, tmp_path):
    """A topic of another message type than the node reads by its name (a CompressedImage
    stream not named `.../compressed`, a theora or ffmpeg transport topic) sent the node
    nothing and its camera said "no images received yet" at level OK (rmw_fastrtps raises
    no incompatible_type event for another type name). Now the camera's status WARNs with
    the topic and both types, and the log says it once. A zstd_image_transport camera
    (`.../zstd`: a CompressedImage the node subscribed as Image) is read."""
    import rclpy
    from sensor_msgs.msg import CompressedImage

    from test_compressed_images import _zstd_transport

    ns = "/typemismatch"
    other = rclpy.Context()       # another participant: one may not hold a topic twice typed
    rclpy.init(context=other)
    try:
        publisher_node = rclpy.create_node("jpeg_camera", context=other)
        topic = f"{ns}/cam/image_jpeg"
        pub = publisher_node.create_publisher(CompressedImage, topic, 10)
        with running_node(ctx, ns, bundle_path, tmp_path, qos_reliability="reliable",
                          image_topics=["cam/image_jpeg", "z/image_raw/zstd"]) as node:
            fqn = node.get_fully_qualified_name()
            msg = CompressedImage(format="jpeg", data=bytes(40))
            labels = tester.watch_labels(f"{fqn}/labels")

            def warned():
                pub.publish(msg)
                st = tester.camera_status(fqn, topic)
                return st is not None and st["level"] == DiagnosticStatus.WARN
            assert wait_for(warned, 20.0), tester.camera_status(fqn, topic)
            st = tester.camera_status(fqn, topic)
            assert st["received"] == "0" and st["incompatible_type"].startswith(topic)
            assert "sensor_msgs/msg/CompressedImage" in st["incompatible_type"] and \
                "reads sensor_msgs/msg/Image" in st["incompatible_type"]
            assert st["message"].startswith(topic)
            raw = make_msg("rgb8", rgb_image(48, 64), "zstd", 1)
            zstd = CompressedImage(header=raw.header, format="zstd",
                                   data=_zstd_transport(raw))
            publish_until_labelled(tester, f"{ns}/z/image_raw/zstd", zstd, labels)
            st = tester.camera_status(fqn, f"{ns}/z/image_raw/zstd")
            assert st["incompatible_type"] == "" and st["transport"] == "zstd"
    finally:
        other.try_shutdown()

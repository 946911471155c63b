"""The student's INT8 ONNX model: quantisation at export, the bundle member, and the
``onnxruntime_int8`` runner (opt-in: ``auto`` keeps float32)."""
import json
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import onnx
from onnx import numpy_helper
from helpers import flip_byte, rewrite_zip
from vl_distill_ros.config import StudentConfig
from vl_distill_ros.model.bundle import (ONNX_INT8_MODEL, BundleError, load_bundle,
                                         replace_int8_model, save_bundle)
from vl_distill_ros.model.runtime import (OnnxRunner, RuntimeBackendError, export_student_onnx,
                                          make_behind_runner, make_runner)
from vl_distill_ros.model.student import build_student
from vl_distill_ros.model.vocabulary import Vocabulary
from vl_distill_ros.perception.pipeline import PerceptionPipeline
from vl_distill_ros.perception.preprocess import preprocess_crops
from vl_distill_ros.training.quantize import (STUDENT_FLOAT_CONVS, first_convolutions,
                                              quantize_student, split_calibration)

SIZE, DIM = 64, 32
VOCAB = Vocabulary.from_names(["banana", "mug", "drill"], ["", "", ""])
_CACHE: dict = {}


def _images(n: int, seed: int) -> np.ndarray:
    """Smooth, image-like square RGB uint8 images (gradients, blobs and noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    out = []
    for _ in range(n):
        img = np.stack([np.sin(xx / rng.uniform(4, 20) + rng.uniform(0, 6)) * 70
                        + np.cos(yy / rng.uniform(4, 20)) * 50 + rng.uniform(60, 190)
                        for _ in range(3)], axis=-1)
        cy, cx, r = rng.uniform(10, 54, 2).tolist() + [rng.uniform(6, 20)]
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
        out.append(np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


def _quantized():
    """One student, its float export and its INT8 model for the module (~3 s)."""
    if not _CACHE:
        torch.manual_seed(0)
        student = build_student(StudentConfig(backbone="efficientnet_lite0",
                                              pretrained="imagenet", image_size=SIZE),
                                DIM).eval()
        text = torch.nn.functional.normalize(torch.randn(len(VOCAB), DIM), dim=1).numpy()
        fp32 = export_student_onnx(student)
        int8, parity = quantize_student(student, _images(48, 0), text, fp32_model=fp32)
        _CACHE.update(student=student, text=text, fp32=fp32, int8=int8, parity=parity)
    return SimpleNamespace(**_CACHE)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_calibration_and_check_images_are_disjoint_and_spread():
    images = np.arange(10)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    calib, check = split_calibration(images, calibration=3, parity=3)
    assert len(calib) == len(check) == 3
    assert not set(calib[:, 0, 0, 0]) & set(check[:, 0, 0, 0])
    assert calib[0, 0, 0, 0] == 0 and check[-1, 0, 0, 0] == 9  # first and last image used
    with pytest.raises(ValueError, match="at least 2 images"):
        split_calibration(images[:1])


def test_int8_model_is_quantised_and_close_to_the_float_one():
    q = _quantized()
    graph = onnx.load_from_string(q.int8)
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8_weights = [t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 20  # every convolution's weights
    # 7-bit weights: ONNX Runtime's uint8 x int8 kernels on x86 CPUs without VNNI sum pairs
    # of products in 16 bits, which 8-bit weights saturate (mean cosine 0.89 there)
    assert max(np.abs(numpy_helper.to_array(t).astype(int)).max() for t in int8_weights) <= 64
    assert len(q.int8) < 0.6 * len(q.fp32)
    # the stem, the first block and block 1's first two convolutions stay in float32; every
    # later convolution is quantised
    first = first_convolutions(q.fp32, STUDENT_FLOAT_CONVS)
    dequantized = {o for n in graph.graph.node if n.op_type == "DequantizeLinear"
                   for o in n.output}
    convs = {n.name: n for n in graph.graph.node if n.op_type == "Conv"}
    assert len(first) == STUDENT_FLOAT_CONVS == 5 and set(first) <= set(convs)
    assert not any(convs[name].input[1] in dequantized for name in first)
    quantised = sum(c.input[1] in dequantized for c in convs.values())
    assert quantised == len(convs) - STUDENT_FLOAT_CONVS
    assert q.parity.float_nodes == tuple(first)
    p = q.parity
    assert (p.images, p.calibration_images) == (24, 24)
    assert 0.95 <= p.mean_cosine <= 1.0 and p.min_cosine <= p.mean_cosine
    assert 0.0 <= p.top1_agreement <= 1.0
    # on images it was neither calibrated nor checked on
    x = preprocess_crops(list(_images(8, 99)), q.student.input_spec)
    a, b = OnnxRunner(q.fp32).embed(x), OnnxRunner(q.int8, int8=True).embed(x)
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-4)
    assert _cos(a, b).mean() > 0.95
    assert _cos(a, b).min() < 1.0 - 1e-4  # it is a different model, not the float one


def _bundle(tmp_path, int8: bool = True, name: str = "b.vdb"):
    q = _quantized()
    record = {"images": 24, "mean_cosine": q.parity.mean_cosine}
    return save_bundle(tmp_path / name, q.student, torch.from_numpy(q.text), VOCAB, "t:1", {},
                       ["{name}"], False, onnx=False,
                       int8=(q.int8, record) if int8 else None)


def test_bundle_keeps_the_int8_model_and_auto_stays_float(tmp_path):
    path = _bundle(tmp_path)
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
    assert ONNX_INT8_MODEL in manifest["files"]
    assert manifest["student"]["onnx_int8"]["file"] == ONNX_INT8_MODEL
    assert manifest["student"]["onnx_int8"]["images"] == 24
    b = load_bundle(path)
    assert b.onnx_int8_bytes == _quantized().int8
    assert make_runner(b).backend == "onnxruntime"       # auto: float32
    runner = make_runner(b, backend="onnxruntime_int8")
    assert runner.backend == "onnxruntime_int8" and "onnxruntime_int8" in repr(runner)
    x = preprocess_crops(list(_images(4, 7)), b.input_spec)
    with torch.no_grad():
        ref = b.student(torch.from_numpy(x)).numpy()
    assert _cos(runner.embed(x), ref).mean() > 0.95
    assert load_bundle(_bundle(tmp_path, int8=False, name="f.vdb")).onnx_int8_bytes is None


def test_tampered_int8_member_is_refused(tmp_path):
    path = _bundle(tmp_path)
    with pytest.raises(BundleError, match="student_int8.onnx is corrupt"):
        load_bundle(rewrite_zip(path, tmp_path / "t.vdb", flip_byte(ONNX_INT8_MODEL)))


def test_int8_backend_errors_are_clear():
    q = _quantized()
    with pytest.raises(RuntimeBackendError, match="has no INT8 model"):
        make_runner(SimpleNamespace(student=q.student, onnx_bytes=q.fp32, onnx_int8_bytes=None),
                    backend="onnxruntime_int8")
    with pytest.raises(RuntimeBackendError, match="cannot load"):
        make_runner(SimpleNamespace(student=q.student, onnx_bytes=None,
                                    onnx_int8_bytes=b"\x00garbage"), backend="onnxruntime_int8")
    other = build_student(StudentConfig(backbone="efficientnet_lite0", pretrained="imagenet",
                                        image_size=96), DIM).eval()
    with pytest.raises(RuntimeBackendError, match="64 px"):
        make_runner(SimpleNamespace(student=other, onnx_bytes=None, onnx_int8_bytes=q.int8),
                    backend="onnxruntime_int8")
    # another student's INT8 model fails the probe check
    torch.manual_seed(1)
    stranger = build_student(StudentConfig(backbone="efficientnet_lite0", pretrained="none",
                                           image_size=SIZE), DIM).eval()
    with pytest.raises(RuntimeBackendError, match="disagree"):
        make_runner(SimpleNamespace(student=stranger, onnx_bytes=None, onnx_int8_bytes=q.int8),
                    backend="onnxruntime_int8")


def test_the_runner_behind_the_cameras_replaces_only_the_float_runtime_auto_chose(tmp_path):
    """``inference_backend_behind``: the INT8 model in place of the float32 ONNX Runtime that
    ``auto`` chose; a runtime the user chose, a bundle without an INT8 model, or an INT8
    model ONNX Runtime refuses keep the runner, with the reason."""
    b = load_bundle(_bundle(tmp_path))
    auto = make_runner(b)
    runner, what = make_behind_runner(b, auto, "auto", "onnxruntime_int8", threads=1)
    assert what == "onnxruntime_int8" and runner is not auto
    assert runner.backend == "onnxruntime_int8" and runner.threads == 1
    assert make_behind_runner(b, auto, "auto", "same") == (auto, "same")
    for backend in ("torch", "onnxruntime", "onnxruntime_int8"):
        chosen = make_runner(b, backend=backend)
        kept, why = make_behind_runner(b, chosen, backend, "onnxruntime_int8")
        assert kept is chosen and why.startswith(f"same (inference_backend {backend} runs")
    plain = load_bundle(_bundle(tmp_path, int8=False, name="f.vdb"))
    kept, why = make_behind_runner(plain, make_runner(plain), "auto", "onnxruntime_int8")
    assert why == "same (the bundle has no INT8 student)" and kept.backend == "onnxruntime"
    q = _quantized()
    broken = SimpleNamespace(student=q.student, onnx_bytes=q.fp32, onnx_int8_bytes=b"\x00junk")
    kept, why = make_behind_runner(broken, auto, "auto", "onnxruntime_int8")
    assert kept is auto and why.startswith("same (ONNX Runtime cannot load")
    with pytest.raises(ValueError, match="inference_backend_behind"):
        make_behind_runner(b, auto, "auto", "int8")


def test_frames_prepared_two_steps_behind_are_classified_with_the_int8_student(tmp_path):
    b = load_bundle(_bundle(tmp_path))
    pipe = PerceptionPipeline(b, crop_source="full_frame",
                              inference_backend_behind="onnxruntime_int8")
    assert pipe.runner.backend == "onnxruntime"
    assert pipe.runner_behind.backend == "onnxruntime_int8"
    calls = {"float": 0, "int8": 0}
    for key, runner in (("float", pipe.runner), ("int8", pipe.runner_behind)):
        def counted(batch, _embed=runner.embed, _key=key):
            calls[_key] += 1
            return _embed(batch)
        runner.embed = counted
    image = np.ascontiguousarray(np.repeat(np.repeat(_images(1, 5)[0], 2, 0), 2, 1))
    scores = {}
    for level in (0, 1, True, 2):
        frame = pipe.prepare(image, behind=level)
        assert frame.student_behind is (level == 2)
        objects, _ = pipe.classify(frame)
        scores[level] = objects[0].top_k
    assert calls == {"float": 3, "int8": 1}
    assert scores[0] == scores[1] == scores[True]
    assert scores[2] != scores[0]                   # another model: other scores
    # without a second runtime, frames two steps behind take the one runtime there is
    same = PerceptionPipeline(b, crop_source="full_frame")
    assert same.runner_behind is same.runner and same.runner_behind_what == "same"


def test_replacing_the_int8_member_keeps_the_rest_and_refuses_a_corrupt_bundle(tmp_path):
    path = _bundle(tmp_path)
    before = load_bundle(path)
    q = _quantized()
    replace_int8_model(path, path, q.fp32, {"images": 1, "note": "the float model, in place"})
    after = load_bundle(path)
    assert after.onnx_int8_bytes == q.fp32
    assert after.manifest["student"]["onnx_int8"] == {
        "file": ONNX_INT8_MODEL, "images": 1, "note": "the float model, in place"}
    assert torch.equal(after.text_embeddings, before.text_embeddings)
    assert all(torch.equal(a, b) for a, b in zip(after.student.state_dict().values(),
                                                 before.student.state_dict().values()))
    broken = rewrite_zip(path, tmp_path / "t.vdb", flip_byte("student.pt"))
    with pytest.raises(BundleError, match="student.pt is corrupt"):
        replace_int8_model(broken, tmp_path / "out.vdb", q.int8, {})
    assert not (tmp_path / "out.vdb").exists()

"""Fast inference path: ONNX export, ONNX Runtime / PyTorch runners, bundle ONNX member,
and the vectorised crop preprocessing."""
import io
import json
import logging
import sys
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import onnx
import onnxruntime  # noqa: F401 - pinned in requirements.txt: a broken install must fail
from helpers import flip_byte, rewrite_zip
from vl_distill_ros.model.bundle import ONNX_MODEL, BundleError, load_bundle, save_bundle
from vl_distill_ros.config import StudentConfig
from vl_distill_ros.perception.preprocess import preprocess_crops, resize_square
from vl_distill_ros.model.runtime import (INPUT_NAME, OUTPUT_NAME, OnnxRunner,
                                          RuntimeBackendError, StudentRunner, TorchRunner,
                                          export_student_onnx, make_runner)
from vl_distill_ros.model.student import InputSpec, build_student
from vl_distill_ros.model.vocabulary import Vocabulary

EMBED_DIM = 32
MIN_COS = 1.0 - 1e-4


def _crops(n: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth, image-like RGB uint8 crops of random sizes (gradients + blobs + noise)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = rng.integers(40, 180, size=2)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.stack([np.sin(xx / rng.uniform(5, 30) + c) * 80 + np.cos(yy / rng.uniform(5, 30))
                        * 60 + 128 for c in range(3)], axis=-1)
        img += rng.normal(0, 8, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _row_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


_STUDENTS: dict = {}


def _student_and_onnx(backbone: str, size: int):
    """One student (+ its export) per config for the whole module; exports take ~1 s."""
    key = (backbone, size)
    if key not in _STUDENTS:
        torch.manual_seed(0)
        pretrained = "imagenet" if backbone == "efficientnet_lite0" else "none"
        s = build_student(StudentConfig(backbone=backbone, pretrained=pretrained,
                                        image_size=size), EMBED_DIM).eval()
        _STUDENTS[key] = (s, export_student_onnx(s))
    return _STUDENTS[key]


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "mobilenet_v3_small"])
@pytest.mark.parametrize("size", [64, 128])
def test_onnx_and_torch_agree(backbone, size):
    student, onnx_bytes = _student_and_onnx(backbone, size)
    ort_runner = OnnxRunner(onnx_bytes, threads=2)
    torch_cl = TorchRunner(student, channels_last=True)
    torch_plain = TorchRunner(student, channels_last=False)
    assert ort_runner.backend == "onnxruntime" and torch_cl.backend == "torch"
    assert isinstance(ort_runner, StudentRunner) and isinstance(torch_cl, StudentRunner)
    assert (ort_runner.image_size, ort_runner.embed_dim) == (size, EMBED_DIM)
    crops = _crops(5, seed=size)
    for n in (1, 5):
        x = preprocess_crops(crops[:n], student.input_spec)
        a, b, c = ort_runner.embed(x), torch_cl.embed(x), torch_plain.embed(x)
        assert a.shape == (n, EMBED_DIM) and a.dtype == np.float32
        assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)  # normalised in-graph
        assert _row_cos(a, b).min() >= MIN_COS
        assert _row_cos(a, c).min() >= MIN_COS
        with torch.no_grad():
            ref = student(torch.from_numpy(x)).numpy()
        assert _row_cos(a, ref).min() >= MIN_COS


def test_export_graph_interface_and_destinations(tmp_path):
    student, data = _student_and_onnx("mobilenet_v3_small", 64)
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME)
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert isinstance(in_dims[0], str) and in_dims[1:] == [3, 64, 64]  # dynamic batch
    assert isinstance(out_dims[0], str) and out_dims[1] == EMBED_DIM
    student.train()
    buf = io.BytesIO()
    export_student_onnx(student, buf)
    assert student.training  # mode restored
    student.eval()
    export_student_onnx(student, tmp_path / "s.onnx")
    for src in (buf.getvalue(), tmp_path / "s.onnx"):
        assert OnnxRunner(src).embed(np.zeros((2, 3, 64, 64), np.float32)).shape == (2, EMBED_DIM)


def test_runners_validate_input_and_handle_empty_batches():
    student, data = _student_and_onnx("mobilenet_v3_small", 64)
    for runner in (OnnxRunner(data), TorchRunner(student)):
        assert runner.embed(np.zeros((0, 3, 64, 64), np.float32)).shape == (0, EMBED_DIM)
        with pytest.raises(ValueError, match=r"\(N, 3, 64, 64\)"):
            runner.embed(np.zeros((1, 3, 96, 96), np.float32))
        # float64 / non-contiguous input is accepted and converted
        x = np.zeros((2, 64, 64, 3)).transpose(0, 3, 1, 2)
        assert runner.embed(x).shape == (2, EMBED_DIM)
    with pytest.raises(RuntimeBackendError, match="cannot load"):
        OnnxRunner(b"not an onnx model")


def test_make_runner_prefers_onnxruntime_and_honours_backend():
    student, data = _student_and_onnx("mobilenet_v3_small", 64)
    assert make_runner(student).backend == "onnxruntime"  # exported in memory
    assert make_runner(student, backend="torch").backend == "torch"
    bundle = SimpleNamespace(student=student, onnx_bytes=data)
    assert make_runner(bundle, backend="onnxruntime", verify=False).backend == "onnxruntime"
    with pytest.raises(ValueError, match="unknown inference backend"):
        make_runner(student, backend="tensorrt")


def test_make_runner_falls_back_to_torch_when_onnxruntime_fails(monkeypatch, caplog):
    student, data = _student_and_onnx("mobilenet_v3_small", 64)
    x = preprocess_crops(_crops(3), student.input_spec)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
        with caplog.at_level(logging.WARNING, logger="vl_distill_ros.model.runtime"):
            runner = make_runner(student, backend="auto")
        assert runner.backend == "torch"
        assert "falling back to PyTorch" in caplog.text
        with torch.no_grad():
            assert np.allclose(runner.embed(x), student(torch.from_numpy(x)).numpy(), atol=1e-5)
        with pytest.raises(RuntimeBackendError, match="onnxruntime is not installed"):
            make_runner(student, backend="onnxruntime")
    # A broken ONNX member, or an ORT result that disagrees with torch, also falls back.
    broken = SimpleNamespace(student=student, onnx_bytes=b"\x00garbage")
    assert make_runner(broken).backend == "torch"
    monkeypatch.setattr(OnnxRunner, "embed", lambda self, b: np.ones((len(b), EMBED_DIM),
                                                                     np.float32))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vl_distill_ros.model.runtime"):
        assert make_runner(SimpleNamespace(student=student, onnx_bytes=data)).backend == "torch"
    assert "disagree" in caplog.text


# -- bundle ONNX member --------------------------------------------------------------------
VOCAB = Vocabulary.from_names(["banana", "mug"], ["", ""])


def _save(tmp_path, onnx_member=True, name="b.vdb"):
    student, _ = _student_and_onnx("mobilenet_v3_small", 64)
    emb = torch.nn.functional.normalize(torch.randn(2, EMBED_DIM), dim=1)
    return save_bundle(tmp_path / name, student, emb, VOCAB, "t:1", {}, ["{name}"], False,
                       onnx=onnx_member), student


def test_bundle_onnx_member_round_trips(tmp_path):
    path, student = _save(tmp_path)
    with zipfile.ZipFile(path) as zf:
        assert ONNX_MODEL in zf.namelist()
        manifest = json.loads(zf.read("manifest.json"))
    assert ONNX_MODEL in manifest["files"]
    assert manifest["student"]["onnx"]["input"] == INPUT_NAME
    b = load_bundle(path)
    assert isinstance(b.onnx_bytes, bytes)
    runner = make_runner(b)
    assert runner.backend == "onnxruntime"
    x = preprocess_crops(_crops(4), b.input_spec)
    with torch.no_grad():
        ref = student(torch.from_numpy(x)).numpy()
    assert _row_cos(runner.embed(x), ref).min() >= MIN_COS


def test_bundle_without_onnx_member_still_loads(tmp_path):
    path, _ = _save(tmp_path, onnx_member=False)
    b = load_bundle(path)
    assert b.onnx_bytes is None and ONNX_MODEL not in b.manifest["files"]
    assert make_runner(b).backend == "onnxruntime"  # exported on the fly


def test_bundle_rejects_tampered_or_missing_onnx_member(tmp_path):
    path, _ = _save(tmp_path)
    with pytest.raises(BundleError, match="student.onnx is corrupt"):
        load_bundle(rewrite_zip(path, tmp_path / "t1.vdb", flip_byte(ONNX_MODEL)))
    with pytest.raises(BundleError, match="student.onnx is missing"):
        load_bundle(rewrite_zip(path, tmp_path / "t2.vdb", lambda m: m.pop(ONNX_MODEL)))


# -- preprocessing -------------------------------------------------------------------------
def _reference_preprocess(crops, spec: InputSpec) -> np.ndarray:
    """The original (stack, normalise, transpose) implementation of preprocess_crops."""
    if len(crops) == 0:
        return np.zeros((0, 3, spec.image_size, spec.image_size), np.float32)
    batch = np.stack([resize_square(np.ascontiguousarray(c), spec.image_size) for c in crops])
    if spec.channels == "BGR":
        batch = batch[..., ::-1]
    mean = np.asarray(spec.mean, np.float32) * 255.0
    std = np.asarray(spec.std, np.float32) * 255.0
    out = (batch.astype(np.float32) - mean) / std
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("spec", [
    InputSpec(64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    InputSpec(96, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    InputSpec(64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), channels="BGR"),
])
def test_preprocess_crops_is_bit_identical_to_reference(spec):
    crops = _crops(6, seed=spec.image_size)
    crops.append(np.full((spec.image_size, spec.image_size, 3), 7, np.uint8))  # no resize
    crops.append(np.asfortranarray(crops[0]))  # non-contiguous input
    crops.append(crops[1].astype(np.float32))  # float crop
    got = preprocess_crops(crops, spec)
    want = _reference_preprocess(crops, spec)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.shape == want.shape and np.array_equal(got, want)
    assert preprocess_crops([], spec).shape == (0, 3, spec.image_size, spec.image_size)

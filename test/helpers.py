"""Shared test helpers: a tiny deterministic bundle and synthetic tabletop camera bags.

* :func:`make_colour_bundle`: an untrained tiny student (mobilenet_v3_small, 64 px) whose
  projection head is fitted in closed form (ridge regression on the backbone's features of
  plain coloured crops) so that crops of a label's colour map to that label's text
  embedding. Text embeddings come from the real offline teacher's text encoder (MiniLM via
  :class:`~vl_distill_ros.model.text_service.TextEmbeddingService`). Predictions are then
  deterministic, vary with the object's colour, and OOD objects of a similar colour are
  confused with an ID label (a lemon looks like a banana) or come out ``unknown``.
* :func:`synthetic_frames` / :func:`make_synthetic_bag`: frames of a plain noisy table with
  coloured rectangles (objects) and their ground-truth boxes, written with
  :func:`~vl_distill_ros.bags.bag_io.write_camera_bag`.
* :func:`rewrite_zip`: a copy of a zip file (a bundle) with its members changed, for
  tampering tests.
* :func:`missing_ycb_models`: what a test that needs ``../shared/ycb_models`` does when
  they are absent: skip on a user's machine, fail in CI.
* :func:`colour_model_boxes`: the proposer's colour model alone (no box network), for the
  tests of the colour model.
* :func:`load_script`: a script of the repository (``tools/*.py``, a launch file) imported
  by its path, as a module.
* :func:`ransac_draws`: the random draws of ``support_plane.fit_plane_ransac``, for the
  tests that compare it with a reference version of itself.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import types
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from vl_distill_ros.perception.proposals import propose_boxes

#: :func:`~vl_distill_ros.perception.proposals.propose_boxes` without the box network: the
#: colour model (steps 1-5 of :mod:`vl_distill_ros.perception.proposals`) alone.
colour_model_boxes = functools.partial(propose_boxes, learned=False)

#: Label -> (RGB colour, key in config/ycb_vocabulary.yaml).
OBJECTS: dict[str, tuple[tuple[int, int, int], str]] = {
    "banana": ((232, 202, 40), "011_banana"),          # ID
    "apple": ((196, 28, 32), "013_apple"),             # ID
    "power drill": ((30, 32, 38), "035_power_drill"),  # ID
    "tennis ball": ((190, 235, 60), "056_tennis_ball"),  # ID
    "lemon": ((248, 232, 96), "014_lemon"),            # OOD (close to banana)
    "strawberry": ((214, 24, 66), "012_strawberry"),   # OOD (close to apple)
}
TABLE = (168, 138, 108)
TEMPLATES = ["a photo of a {name}."]


def _crop_of(colour: Sequence[int], rng: np.random.Generator, size: int = 40) -> np.ndarray:
    """A crop like the proposer gives: a coloured block with a margin of table."""
    h = int(rng.integers(size - 10, size + 10))
    w = int(rng.integers(size - 10, size + 10))
    return block_image(h, w, colour, rng)


def block_image(h: int, w: int, colour: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """An (h, w, 3) RGB uint8 image: a ``colour`` block with a margin of table (1/11 of
    each side) and a little noise, as the crops :func:`make_colour_bundle` is fitted on."""
    img = np.empty((h, w, 3), np.float32)
    img[:] = TABLE
    my, mx = max(1, h // 11), max(1, w // 11)
    img[my:h - my, mx:w - mx] = colour
    img += rng.normal(0.0, 2.0, img.shape)
    return img.clip(0, 255).astype(np.uint8)


def make_colour_bundle(path: Path, names: Sequence[str], fit: Sequence,
                       seed: int = 0, vocabulary=None) -> Path:
    """Write a bundle for vocabulary ``names`` whose head maps each colour in ``fit`` to its
    label's text embedding (see the module docstring). Returns the bundle path.

    An entry of ``fit`` is a name of :data:`OBJECTS` (its colour -> its own label) or a pair
    ``(rgb, label)``: crops of colour ``rgb`` -> the text embedding of ``label``, which may
    be a name outside ``names`` (embedded by the same text service). ``vocabulary`` (a
    :class:`~vl_distill_ros.model.vocabulary.Vocabulary` whose names are ``names``) replaces
    the default one (names with the keys of :data:`OBJECTS`, no descriptions)."""
    import torch

    from vl_distill_ros.model.bundle import save_bundle
    from vl_distill_ros.config import StudentConfig, TeacherConfig
    from vl_distill_ros.perception.preprocess import preprocess_crops
    from vl_distill_ros.model.student import build_student
    from vl_distill_ros.model.teachers.factory import teacher_spec
    from vl_distill_ros.model.text_service import TextEmbeddingService
    from vl_distill_ros.model.vocabulary import Label, Vocabulary

    spec = teacher_spec(TeacherConfig(backend="offline", device="cpu"))
    service = TextEmbeddingService(spec, spec["id"], TEMPLATES, enrich=True)
    vocab = vocabulary or Vocabulary(tuple(
        Label(name=n, key=OBJECTS[n][1] if n in OBJECTS else "") for n in names))
    assert list(vocab.names) == list(names), (vocab.names, names)
    emb = service.embed_vocabulary(vocab)
    torch.manual_seed(seed)
    student = build_student(StudentConfig(backbone="mobilenet_v3_small", pretrained="none",
                                          image_size=64), emb.shape[1]).eval()
    rng = np.random.default_rng(seed)
    feats, targets = [], []
    for entry in fit:
        colour, name = (OBJECTS[entry][0], entry) if isinstance(entry, str) else entry
        crops = [_crop_of(colour, rng) for _ in range(6)]
        batch = torch.from_numpy(preprocess_crops(crops, student.input_spec))
        with torch.no_grad():
            feats.append(student.backbone(batch))
        target = (emb[list(names).index(name)] if name in names
                  else service.embed([Label(name)])[0])
        targets.append(target.expand(len(crops), -1))
    x = torch.cat(feats).double()
    y = torch.cat(targets).double()
    mean = x.mean(0, keepdim=True)
    xc = x - mean
    ridge = 1e-3 * torch.eye(xc.shape[1], dtype=torch.float64) * xc.pow(2).sum() / xc.shape[0]
    w = torch.linalg.solve(xc.T @ xc + ridge, xc.T @ y)          # (feat, D)
    with torch.no_grad():
        student.head.weight.copy_(w.T.float())
        student.head.bias.copy_((-(mean @ w)).squeeze(0).float())
    return save_bundle(path, student, emb, vocab, spec["id"], spec, TEMPLATES, enrich=True,
                       onnx=False)


def synthetic_frames(n: int, labels: Sequence[str], size: tuple[int, int] = (120, 160),
                     per_frame: int = 3, seed: int = 0, start_ns: int = 1_700_000_000 * 10**9,
                     fps: float = 10.0) -> list:
    """``n`` :class:`~vl_distill_ros.bags.bag_io.BagFrame` of coloured rectangles on a table,
    each object's ground truth its rectangle; objects are spread over the frame width."""
    from vl_distill_ros.bags.bag_io import BagFrame, GroundTruthObject

    rng = np.random.default_rng(seed)
    h, w = size
    frames = []
    slot = w // per_frame
    for i in range(n):
        img = np.empty((h, w, 3), np.float32)
        img[:] = TABLE
        img += rng.normal(0.0, 1.5, img.shape)
        objects = []
        chosen = rng.choice(len(labels), size=per_frame, replace=len(labels) < per_frame)
        for j, k in enumerate(chosen):
            name = labels[int(k)]
            ow = int(rng.integers(slot // 2, slot - 12))
            oh = int(rng.integers(h // 5, h // 2))
            x = j * slot + int(rng.integers(6, slot - ow - 5))
            y = int(rng.integers(8, h - oh - 8))
            img[y:y + oh, x:x + ow] = OBJECTS[name][0]
            objects.append(GroundTruthObject((x, y, ow, oh), name, OBJECTS[name][1]))
        frames.append(BagFrame(stamp_ns=start_ns + int(round(i * 1e9 / fps)),
                               image=img.clip(0, 255).astype(np.uint8), objects=objects))
    return frames


def make_synthetic_bag(path: Path, n: int, labels: Sequence[str], fps: float = 10.0,
                       seed: int = 0, storage: str = "mcap") -> Path:
    """Write :func:`synthetic_frames` to a rosbag2 bag at ``path`` and return it."""
    from vl_distill_ros.bags.bag_io import write_camera_bag

    return write_camera_bag(path, synthetic_frames(n, labels, seed=seed, fps=fps),
                            storage=storage)


def missing_ycb_models(reason: str) -> None:
    """The YCB models a test needs are missing: skip with ``reason``, except when the
    environment variable ``CI`` is ``true``, where a missing models folder is a failure
    (CI has ``../shared`` and must never quietly skip the rendering tests)."""
    import os

    import pytest

    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{reason} (CI=true: the YCB models must be present)", pytrace=False)
    pytest.skip(reason)


def flip_byte(member: str) -> Callable[[dict[str, bytes]], None]:
    """A :func:`rewrite_zip` change that inverts one byte in the middle of ``member``."""
    def change(members: dict[str, bytes]) -> None:
        data = bytearray(members[member])
        data[len(data) // 2] ^= 0xFF
        members[member] = bytes(data)
    return change


def rewrite_bag(src: Path, dst: Path,
                edit: Callable[[object, object], Sequence[tuple[str, str, bytes]]]) -> Path:
    """Copy the bag ``src`` to ``dst`` message by message, writing for each the messages
    ``edit(raw, typestore)`` gives as ``(topic, message type, CDR bytes)`` (none drops it;
    ``[(raw.topic, raw.msgtype, raw.data)]`` keeps it), at its bag time; returns ``dst``."""
    from rosbags.rosbag2 import Writer

    from vl_distill_ros.bags.bag_io import iter_raw_messages, typestore

    store = typestore()
    with Writer(dst, version=Writer.VERSION_LATEST) as writer:
        conns: dict[str, object] = {}
        for raw in iter_raw_messages(src):
            for topic, msgtype, data in edit(raw, store):
                if topic not in conns:
                    conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
                writer.write(conns[topic], raw.timestamp_ns, data)
    return dst


def rewrite_zip(path: Path, out: Path, change: Callable[[dict[str, bytes]], None]) -> Path:
    """Copy the zip file ``path`` to ``out`` after ``change`` edited its ``{name: bytes}``
    members in place (members may be changed, added or removed); returns ``out``."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    change(members)
    with zipfile.ZipFile(out, "w") as zf:
        for n, d in members.items():
            zf.writestr(n, d)
    return out


def record_box_net_widths(monkeypatch) -> list[int]:
    """The input width of every box-network pass from now on (``BoxNet._pass`` wrapped with
    ``monkeypatch``, so undone after the test): 480 for the first pass, 240 for the close
    pass."""
    from vl_distill_ros.perception.box_net import BoxNet

    widths: list[int] = []
    real = BoxNet._pass

    def recording(self, image, width, threshold):
        widths.append(int(width))
        return real(self, image, width, threshold)

    monkeypatch.setattr(BoxNet, "_pass", recording)
    return widths


def load_script(path: Path, name: str | None = None) -> types.ModuleType:
    """The Python file at ``path`` (a tool or a launch file, not an installed module)
    imported as a module named ``name`` (its file name without ``.py`` by default)."""
    spec = importlib.util.spec_from_file_location(name or Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def os_thread_names() -> list[str]:
    """The OS names of this process's threads (``/proc/self/task/*/comm``, Linux); a thread
    that ends while they are read is left out."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm", encoding="ascii") as fh:
                names.append(fh.read().strip())
        except OSError:
            continue
    return names


def ransac_draws(points: np.ndarray, samples: int, iterations: int, rng: np.random.Generator,
                 cross: Callable[[np.ndarray, np.ndarray], np.ndarray] = np.cross
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What ``fit_plane_ransac`` draws, in its order: ``(sub, fit, normals, offsets)`` = the
    scored subsample (``samples`` points), the refit's points (at most ``8 * samples``;
    float32) and the planes through the ``iterations`` random triples that are no line
    (unit ``normals`` by ``cross``, and ``offsets``)."""
    n_pts = len(points)
    pts = np.asarray(points, np.float32)
    sub = np.take(pts, rng.integers(0, n_pts, size=min(n_pts, samples)), 0)
    fit = np.take(pts, rng.integers(0, n_pts, size=min(n_pts, 8 * samples)),
                  0) if n_pts > 8 * samples else pts
    tri = np.take(pts, rng.integers(0, n_pts, size=(iterations, 3)), 0)
    normals = cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(normals, axis=1)
    ok = norm > 1e-9
    normals = normals[ok] / norm[ok, None]
    return sub, fit, normals, -np.einsum("ij,ij->i", normals, tri[ok, 0])

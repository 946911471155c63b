"""Offline distillation: teacher -> student (ROS-free; CPU, one GPU, or torchrun DDP).

Run with ``vl-distill train --config config/train_ycb.yaml``. Under ``torchrun`` (which
sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``) the same command trains with
DistributedDataParallel: NCCL on GPUs, gloo on CPUs. Rank 0 fills the teacher cache,
logs, validates and writes checkpoints; the global batch is split across ranks.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from ..atomic_io import atomic_write_bytes
from ..config import TrainConfig, from_dict, to_dict
from .augment import CropAugment, mix_views
from .losses import DistillLoss
from .metrics import accuracy
from ..perception.preprocess import preprocess_crops
from ..model.student import (Student, StudentError, build_student, conse_class_prompts,
                             with_zero_shot_prior)
from .data import (LazyTeacher, TrainingSet, broad_text_embeddings, load_split_images,
                   load_training_set, load_vocabularies, merge_similar_names,
                   teacher_image_targets, text_classifier)

CHECKPOINT = "checkpoint.pt"
FINAL = "student_final.pt"
#: What the YAML file beside a checkpoint's weights says it is (``format``), and its version.
CHECKPOINT_META_FORMAT = "vl_distill_checkpoint"
CHECKPOINT_META_VERSION = 1
#: Largest checkpoint YAML file read (the config and a few facts: a few kB).
MAX_CHECKPOINT_META_BYTES = 1 << 20
#: Checkpoint entries kept in the YAML file beside the weights (not in the weights file).
META_KEYS = ("config", "teacher_id", "embed_dim", "trained_names")
#: The progress bar's running loss is refreshed (one device sync) every this many steps.
POSTFIX_EVERY = 20
#: What a run writes into its ``output_dir``: a fresh run (not ``--resume``) moves an earlier
#: run's files into :data:`PREVIOUS_RUN` first, so its metrics, curves and calibration are
#: never mixed with the new student's (and ``export`` never pairs them).
RUN_FILES = ("config.yaml", CHECKPOINT, "checkpoint.yaml", FINAL, "student_final.yaml",
             "metrics.csv", "metrics.jsonl", "training_curves.png", "calibration.json")
PREVIOUS_RUN = "previous_run"


class TrainingError(RuntimeError):
    """Training cannot start or resume; the message says why."""


@dataclass
class DistEnv:
    """Where this process sits in a (possibly single-process) job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (it logs and writes files)."""
        return self.rank == 0


def setup_distributed(device: str) -> DistEnv:
    """Initialise torch.distributed when launched by torchrun; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = (device == "cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistEnv(rank=rank, world=world, local_rank=local_rank, device=dev)


def _barrier(env: DistEnv) -> None:
    if env.world > 1:
        dist.barrier()


def _atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def meta_path(weights: Path) -> Path:
    """The YAML file beside a checkpoint's weights: ``checkpoint.pt`` -> ``checkpoint.yaml``."""
    return Path(weights).with_suffix(".yaml")


def save_checkpoint(ckpt: dict, path: Path) -> None:
    """Write a checkpoint as two files: the weights (``path``: tensors, the optimizer state
    and the epoch, for ``torch.load(weights_only=True)``) and, beside them, a YAML file with
    the config, teacher id, embedding size and trained names (:func:`meta_path`).

    The YAML file is written first: a crash between the two writes leaves the previous
    weights with the config of the run that continues them (the student and teacher
    sections, which must match on ``--resume``, never change within a run).
    """
    import yaml

    meta = {"format": CHECKPOINT_META_FORMAT, "format_version": CHECKPOINT_META_VERSION,
            "weights": Path(path).name,
            **{k: ckpt[k] for k in META_KEYS if k in ckpt}}
    header = (f"# vl_distill_ros training checkpoint: the config and facts of the weights in "
              f"{Path(path).name} (read by --resume, eval and export)\n")
    atomic_write_bytes(meta_path(path), (header + yaml.safe_dump(
        meta, sort_keys=False, allow_unicode=True)).encode("utf-8"))
    _atomic_torch_save({k: v for k, v in ckpt.items() if k not in META_KEYS}, path)


def _read_meta(path: Path) -> dict | None:
    """The checkpoint YAML beside ``path`` (None when there is none: an old run folder keeps
    everything in the weights file); any problem is a one-line :class:`TrainingError`."""
    import yaml

    from ..atomic_io import read_regular_file

    meta_file = meta_path(path)
    try:
        raw = read_regular_file(meta_file, MAX_CHECKPOINT_META_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TrainingError(f"checkpoint config {meta_file} cannot be read: "
                            f"{_first_line(exc)}") from None
    try:
        meta = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TrainingError(f"checkpoint config {meta_file} is not valid YAML "
                            f"({_first_line(exc, 120)})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_META_FORMAT:
        raise TrainingError(f"checkpoint config {meta_file} is malformed: expected a mapping "
                            f"with format: {CHECKPOINT_META_FORMAT}")
    if meta.get("format_version") != CHECKPOINT_META_VERSION:
        raise TrainingError(f"checkpoint config {meta_file}: format_version "
                            f"{meta.get('format_version')!r:.40} is not supported (expected "
                            f"{CHECKPOINT_META_VERSION})")
    return meta


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint, turning any corruption into a clear one-line :class:`TrainingError`.

    Checkpoints are loaded with ``weights_only=True``: only tensors and plain data (dicts,
    lists, strings, numbers) are accepted, so a crafted file can never run code; one that
    needs other pickled objects is refused. The config, teacher id, embedding size and
    trained names come from the YAML file beside the weights (:func:`save_checkpoint`);
    checkpoints of older runs, which kept them inside the weights file, load too. The
    content is checked: ``student`` a non-empty dict of tensors, ``config`` a dict,
    ``embed_dim`` a positive integer.
    """
    import pickle

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", str(exc), re.IGNORECASE)
        if found:
            raise TrainingError(f"checkpoint {path} refused: it needs the pickled Python object "
                                f"{found.group(1)!r}, and checkpoints are only loaded as "
                                "tensors and plain data (weights_only=True), never run as "
                                "code; delete it or retrain") from None
        raise TrainingError(f"checkpoint {path} is corrupt or unreadable (not a checkpoint "
                            "saved by vl-distill train); delete it or train without --resume"
                            ) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise TrainingError(f"checkpoint {path} is corrupt or unreadable ({type(exc).__name__}: "
                            f"{_first_line(exc)}); delete it or train without --resume") from None
    if not isinstance(ckpt, dict):
        raise TrainingError(f"{path} is not a vl_distill_ros checkpoint")
    meta = _read_meta(path)
    if meta is not None:
        ckpt = {**ckpt, **{k: meta[k] for k in META_KEYS if k in meta}}
    elif "student" in ckpt and "config" not in ckpt:
        raise TrainingError(f"checkpoint {path}: its config file {meta_path(path).name} is "
                            "missing (it is written beside the weights)")
    if not {"student", "config", "embed_dim"} <= set(ckpt):
        raise TrainingError(f"{path} is not a vl_distill_ros checkpoint")
    student = ckpt["student"]
    if (not isinstance(student, dict) or not student
            or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                       for k, v in student.items())):
        raise TrainingError(f"checkpoint {path} is malformed: 'student' must be a non-empty "
                            "mapping of parameter names to tensors")
    if not isinstance(ckpt["config"], dict):
        raise TrainingError(f"checkpoint {path} is malformed: 'config' must be a mapping, got "
                            f"{type(ckpt['config']).__name__}")
    dim = ckpt["embed_dim"]
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise TrainingError(f"checkpoint {path} is malformed: 'embed_dim' must be a positive "
                            f"integer, got {dim!r:.50}")
    return ckpt


#: Config keys that older versions wrote into checkpoints and that no longer exist (section
#: -> keys). A stored config holding them still loads; the keys had no effect to keep.
RETIRED_CONFIG_KEYS: dict[str, tuple[str, ...]] = {"data": ("workers",)}


def _without_retired_keys(config: dict) -> dict:
    """A copy of a stored config without :data:`RETIRED_CONFIG_KEYS`."""
    out = dict(config)
    for section, keys in RETIRED_CONFIG_KEYS.items():
        if isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k not in keys}
    return out


def checkpoint_config(ckpt: dict, path: Path) -> TrainConfig:
    """The :class:`TrainConfig` stored in a checkpoint (keys that older versions wrote and
    that were retired since are dropped); an invalid one is a TrainingError."""
    from ..config import ConfigError

    try:
        return from_dict(TrainConfig, _without_retired_keys(ckpt["config"]),
                         where=f"{path}: config")
    except (ConfigError, TypeError, ValueError) as exc:
        raise TrainingError(f"checkpoint {path} is malformed: {_first_line(exc)}") from None


def load_student_weights(student: torch.nn.Module, state: dict, path: Path) -> None:
    """``student.load_state_dict(state)``; weights that do not fit are a TrainingError."""
    try:
        student.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise TrainingError(f"checkpoint {path}: the student weights do not fit the configured "
                            f"student ({_first_line(exc)})") from None


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up then cosine decay to zero."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def epoch_plan(n: int, batch_size: int, world: int) -> tuple[int, int]:
    """``(per-rank batch size, steps per epoch)`` for ``n`` images and a global batch.

    Every rank gets the same number of images at every step (the gathered contrastive
    loss needs equal shards); the ``n % (local * world)`` images left over after the last
    full step are skipped in that epoch (a new shuffle every epoch).
    """
    if n < world:
        raise TrainingError(f"{n} training images cannot be split across {world} processes")
    local = max(1, min(batch_size // world, n // world))
    return local, max(1, n // (local * world))


def shard_indices(perm: torch.Tensor, step: int, local_bs: int, rank: int,
                  world: int) -> torch.Tensor:
    """The images of ``rank`` at ``step`` of an epoch shuffled as ``perm``: the global batch
    of the step is ``perm[step * local_bs * world:][:local_bs * world]``, rank r takes its
    r-th block, so the ranks' shards are disjoint and together cover the epoch."""
    start = (step * world + rank) * local_bs
    return perm[start:start + local_bs]


def parameters_digest(named: Any) -> str:
    """SHA-256 over the names and bytes of ``named`` ((name, tensor) pairs, e.g.
    ``module.named_parameters()`` or a state dict's ``items()``), in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(named, key=lambda kv: kv[0]):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def vlkl_vocabulary(cfg: TrainConfig, teacher: "LazyTeacher", label_text: torch.Tensor,
                    device: torch.device) -> torch.Tensor | None:
    """(M, D) text embeddings L_vl-kl's distributions are taken over (None without
    L_vl-kl): the broad vocabulary's, followed, with ``loss.vlkl_trained_names``, by
    ``label_text`` (the L_cls label names' embeddings)."""
    if cfg.loss.vlkl_weight <= 0:
        return None
    broad = broad_text_embeddings(teacher, cfg.data).to(device)
    if cfg.loss.vlkl_trained_names:
        broad = torch.cat([broad, label_text.to(device, broad.dtype)])
    return broad


@torch.no_grad()
def embed_images(student: Student, images: np.ndarray, device: torch.device,
                 batch_size: int = 128) -> torch.Tensor:
    """Student embeddings of un-augmented uint8 crops (N, H, W, 3), eval preprocessing."""
    was_training = student.training
    student.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(preprocess_crops(list(images[i:i + batch_size]), student.input_spec))
        out.append(student(x.to(device)).float().cpu())
    student.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, student.embed_dim)


def _epoch_means(sums: dict[str, torch.Tensor], steps: int, env: DistEnv) -> dict[str, float]:
    """Per-step means of the summed loss terms, averaged over the ranks: one device sync
    (and one all-reduce under DDP) per epoch."""
    if not sums:
        return {}
    keys = list(sums)  # the same insertion order on every rank: total, then the terms
    stacked = torch.stack([sums[k].float() for k in keys])
    if env.world > 1:
        dist.all_reduce(stacked)
    return dict(zip(keys, (stacked / (steps * env.world)).tolist()))


def _check_ranks_in_sync(student: torch.nn.Module, env: DistEnv) -> None:
    """Under DDP every rank prints the digest of its own parameters; diverged ranks (a
    broken gradient all-reduce) are a TrainingError."""
    digest = parameters_digest(student.named_parameters())
    print(f"[train] rank {env.rank}/{env.world} parameters sha256 {digest}", flush=True)
    digests: list = [None] * env.world
    dist.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        raise TrainingError(f"DDP ranks diverged: parameter digests per rank {digests}")


class _CsvLog:
    """Per-epoch metrics as CSV and JSON lines (columns grow as needed). A resumed run keeps
    the rows of the epochs its checkpoint holds (``up_to_epoch``); lines that are not such a
    row (a write cut short) are skipped with a warning."""

    def __init__(self, out_dir: Path, up_to_epoch: int = 0) -> None:
        self.csv_path = out_dir / "metrics.csv"
        self.jsonl_path = out_dir / "metrics.jsonl"
        self.rows: list[dict] = []
        if self.jsonl_path.is_file() and up_to_epoch > 0:
            skipped = 0
            for line in self.jsonl_path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    row = json.loads(line) if line.strip() else None
                except json.JSONDecodeError:
                    row = None
                if isinstance(row, dict) and type(row.get("epoch")) is int \
                        and 1 <= row["epoch"] <= up_to_epoch:
                    self.rows.append(row)
                elif line.strip():
                    skipped += 1
            if skipped:
                print(f"[train] {self.jsonl_path}: {skipped} line(s) that are no row of "
                      f"epochs 1-{up_to_epoch} left out")

    def append(self, row: dict) -> None:
        self.rows = [r for r in self.rows if r.get("epoch") != row["epoch"]] + [row]
        atomic_write_bytes(self.jsonl_path,
                           "".join(json.dumps(r) + "\n" for r in self.rows).encode())
        cols: list[str] = []
        for r in self.rows:
            cols += [k for k in r if k not in cols]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=cols)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_bytes(self.csv_path, text.getvalue().encode())


def _trained_student_settings(cfg: TrainConfig) -> dict:
    """The student settings a checkpoint's weights depend on: all but
    ``zero_shot_prior``, which only applies after the last epoch (so a finished run can be
    resumed to add it)."""
    settings = to_dict(cfg.student)
    settings.pop("zero_shot_prior", None)
    return settings


def _resume_checkpoint(cfg: TrainConfig, env: DistEnv, ckpt_path: Path,
                       resume: bool) -> tuple[dict | None, int]:
    """(checkpoint, first epoch) when resuming from a compatible checkpoint, else (None, 0)."""
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        saved = checkpoint_config(ckpt, ckpt_path)
        if (_trained_student_settings(saved) != _trained_student_settings(cfg)
                or _teacher_identity(saved) != _teacher_identity(cfg)):
            raise TrainingError(f"{ckpt_path} was written for a different student/teacher "
                                "configuration; use another output_dir or drop --resume")
        epoch = ckpt.get("epoch")
        if type(epoch) is not int or epoch < 0:
            raise TrainingError(f"checkpoint {ckpt_path} is malformed: its 'epoch' must be a "
                                f"whole number >= 0, got {epoch!r:.40} (a final student is no "
                                "checkpoint to resume); delete it or train without --resume")
        return ckpt, epoch
    if resume and env.is_main:
        print(f"[train] no checkpoint at {ckpt_path}; starting from scratch")
    return None, 0


def _teacher_identity(cfg: TrainConfig) -> dict:
    """The teacher settings the cached targets and a checkpoint depend on: all but where and
    in what batches it runs (``device``, ``batch_size``), so a run started on a CPU can be
    resumed on a GPU."""
    settings = to_dict(cfg.teacher)
    for key in ("device", "batch_size"):
        settings.pop(key, None)
    return settings


def _prepare_output(cfg: TrainConfig, env: DistEnv, out: Path, resume: bool
                    ) -> tuple[dict | None, int]:
    """Before a run: ``out`` made, the devices the run names exist, the calibration folders
    it will read at the end are there, and (a fresh run, rank 0) an earlier run's files in
    ``out`` are moved into ``out/previous_run`` (replacing an older one there). Returns
    :func:`_resume_checkpoint`'s (checkpoint, first epoch)."""
    import shutil

    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
    _barrier(env)
    ckpt, start_epoch = _resume_checkpoint(cfg, env, out / CHECKPOINT, resume)

    for name in ("optim.device", "teacher.device"):
        section, key = name.split(".")
        if getattr(getattr(cfg, section), key).startswith("cuda") \
                and not torch.cuda.is_available():
            raise TrainingError(f"{name} is {getattr(getattr(cfg, section), key)!r} but no "
                                "CUDA device is available; use auto or cpu")
    for name in ("seen", "unseen"):
        folder = getattr(cfg.calibration, name)
        if cfg.calibration.seen and cfg.calibration.unseen and not Path(folder).is_dir():
            raise TrainingError(f"calibration.{name} folder {folder} does not exist (it is "
                                "read after the last epoch)")
    earlier = [out / f for f in RUN_FILES if (out / f).exists()]
    if ckpt is None and env.is_main and earlier:
        previous = out / PREVIOUS_RUN
        shutil.rmtree(previous, ignore_errors=True)
        previous.mkdir()
        for f in earlier:
            f.rename(previous / f.name)
        print(f"[train] {out} held an earlier run: its {len(earlier)} files were moved to "
              f"{previous} (use --resume to continue a run)")
    _barrier(env)
    return ckpt, start_epoch


def _label_texts(cfg: TrainConfig, env: DistEnv, teacher: "LazyTeacher",
                 train_set: TrainingSet) -> tuple[TrainingSet, torch.Tensor]:
    """The teacher text embeddings of L_cls's labels (on the run's device), after the names
    of named folders that the teacher's text cannot tell apart are folded together."""
    text_emb = text_classifier(teacher, train_set.cls_vocab, cfg.data).to(env.device)
    return merge_similar_names(train_set, text_emb, cfg.data.named_merge_similarity)


def _targets(cfg: TrainConfig, env: DistEnv, teacher: "LazyTeacher", train_data,
             progress: bool) -> torch.Tensor:
    """The teacher's image embeddings of the training set: rank 0 fills the cache, then
    every other rank reads it."""
    targets = None
    if env.is_main:
        targets = teacher_image_targets(teacher, train_data, cfg.data.cache_dir,
                                        cfg.teacher.batch_size, progress=progress)
    _barrier(env)
    if not env.is_main:
        targets = teacher_image_targets(teacher, train_data, cfg.data.cache_dir,
                                        cfg.teacher.batch_size, progress=False, compute=False)
    return targets


def _head_class_embeddings(cfg: TrainConfig, teacher: "LazyTeacher", ckpt: dict | None
                           ) -> torch.Tensor | None:
    """A new ``conse`` head's class embeddings: the teacher's text embeddings of the
    ImageNet class prompts (None for other heads, or when a checkpoint restores them)."""
    if cfg.student.head != "conse" or ckpt is not None:
        return None
    return _conse_class_embeddings(teacher)


def _conse_class_embeddings(teacher: "LazyTeacher") -> torch.Tensor:
    """The teacher's text embeddings of the ImageNet class prompts, (1000, D) on the CPU."""
    return teacher.get().encode_texts(conse_class_prompts()).float().cpu()


def _build_model(cfg: TrainConfig, env: DistEnv, embed_dim: int, ckpt: dict | None,
                 ckpt_path: Path, class_embeddings: torch.Tensor | None = None
                 ) -> tuple[Student, torch.nn.Module, torch.optim.Optimizer]:
    """The student (restored from ``ckpt``), its DDP wrapper and the optimizer."""
    # seeded here, not only at the start: whether the teacher had to be built (a cold
    # cache) must not change the student's initial head
    torch.manual_seed(cfg.optim.seed)
    try:
        student = build_student(cfg.student, embed_dim, load_weights=ckpt is None,
                                class_embeddings=class_embeddings).to(env.device)
    except StudentError as exc:
        raise TrainingError(f"cannot build the student: {exc}") from None
    if ckpt is not None:
        load_student_weights(student, ckpt["student"], ckpt_path)
    if cfg.optim.channels_last:
        student = student.to(memory_format=torch.channels_last)
    model: torch.nn.Module = student
    if env.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            student, device_ids=[env.local_rank] if env.device.type == "cuda" else None)
    params = [
        {"params": student.backbone_parameters(), "lr_scale": cfg.optim.backbone_lr_scale},
        {"params": student.head_parameters(), "lr_scale": 1.0},
    ]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    if ckpt is not None:
        try:
            optimizer.load_state_dict(ckpt["optimizer"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise TrainingError(f"checkpoint {ckpt_path}: cannot restore the optimizer state "
                                f"({_first_line(exc)}); train without --resume") from None
        # load_state_dict also restores each group's settings as they were saved; the
        # settings come from the config the run continues with (its config.yaml), only the
        # moments and step counts from the checkpoint
        for group, scale in zip(optimizer.param_groups, (cfg.optim.backbone_lr_scale, 1.0)):
            group["lr_scale"] = scale
            group["weight_decay"] = cfg.optim.weight_decay
    return student, model, optimizer


@dataclass
class _Run:
    """Everything one epoch needs (built by :func:`train`)."""

    cfg: TrainConfig
    env: DistEnv
    student: Student
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: DistillLoss
    augment: CropAugment
    images: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor       # cached teacher embeddings (empty: consistent targets)
    text_emb: torch.Tensor
    broad: torch.Tensor | None
    local_bs: int
    teacher: "LazyTeacher"
    steps_per_epoch: int
    total_steps: int
    warmup: int


def _batch(run: _Run, idx: torch.Tensor, aug_gen: torch.Generator
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The student's augmented batch, the teacher embeddings it is matched to and its
    labels: cached embeddings of the un-augmented images, or (``loss.teacher_targets:
    consistent``) the teacher's embeddings of the same views, computed now, a share of them
    blended in pairs (``loss.mixup_prob``; blended views lose their label)."""
    device = run.env.device
    labels = run.labels[idx]
    if run.cfg.loss.teacher_targets != "consistent":
        x = run.augment(run.images[idx], aug_gen)
        return x.to(device), run.targets[idx].to(device), labels.to(device)
    teacher = run.teacher.get()
    x, views = run.augment.with_teacher_view(run.images[idx], aug_gen, teacher.input_size)
    if run.cfg.loss.mixup_prob > 0:
        x, views, labels = mix_views(x, views, labels, run.cfg.loss.mixup_prob,
                                     run.cfg.loss.mixup_alpha, aug_gen,
                                     run.cfg.loss.mixup_labelled)
    with torch.no_grad():
        targets = teacher.encode_images(list(views))
    return x.to(device), targets.float().to(device), labels.to(device)


def _train_epoch(run: _Run, epoch: int, progress: bool) -> dict[str, Any]:
    """One epoch of distillation; returns its log row (without validation)."""
    cfg, env, n = run.cfg, run.env, len(run.images)
    t0 = time.time()
    run.student.train()
    gen = torch.Generator().manual_seed(cfg.optim.seed * 1000 + epoch)
    perm = torch.randperm(n, generator=gen)
    aug_gen = torch.Generator().manual_seed(cfg.optim.seed * 7919 + epoch * 31 + env.rank)
    # the global RNG (drop-connect in the backbone) is seeded per epoch too, so a run
    # resumed at an epoch boundary continues exactly as an uninterrupted one
    torch.manual_seed(cfg.optim.seed * 104729 + epoch * 131 + env.rank)
    sums: dict[str, torch.Tensor] = {}
    bar = tqdm(range(run.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
               disable=not (progress and env.is_main), leave=False)
    for step in bar:
        g = epoch * run.steps_per_epoch + step
        for group in run.optimizer.param_groups:
            group["lr"] = lr_at(g, run.total_steps, run.warmup, cfg.optim.lr) * group["lr_scale"]
        idx = shard_indices(perm, step, run.local_bs, env.rank, env.world)
        x, targets, labels = _batch(run, idx, aug_gen)
        if cfg.optim.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        s = run.model(x)
        total, parts = run.loss_fn(s, targets, run.text_emb, labels, run.broad,
                                   as_float=False)
        run.optimizer.zero_grad(set_to_none=True)
        total.backward()
        run.optimizer.step()
        # detached device tensors: no host-device sync until the epoch is logged
        for k, v in (("loss", total.detach()), *parts.items()):
            sums[k] = sums[k] + v if k in sums else v
        if not bar.disable and ((step + 1) % POSTFIX_EVERY == 0
                                or step + 1 == run.steps_per_epoch):
            bar.set_postfix(loss=f"{float(sums['loss']) / (step + 1):.3f}")
    means = _epoch_means(sums, run.steps_per_epoch, env)
    elapsed = time.time() - t0
    return {"epoch": epoch + 1, "lr": run.optimizer.param_groups[1]["lr"], **means,
            "epoch_time_s": round(elapsed, 2),
            "images_per_s": round(run.steps_per_epoch * run.local_bs * env.world
                                  / max(elapsed, 1e-9), 1)}


def _check_finite(row: dict[str, Any], student: Student, epoch: int, ckpt_path: Path) -> None:
    """Raise :class:`TrainingError` when epoch ``epoch`` (0-based) diverged: a non-finite
    loss or weight. Nothing of it is saved: the last checkpoint stays the last good epoch."""
    from ..model.bundle import nonfinite_weight

    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    reason = (f"its mean {bad[0]} is {row[bad[0]]}" if bad else nonfinite_weight(student))
    if reason:
        kept = (f"{ckpt_path} (epoch {epoch}) is kept" if epoch else "nothing was saved")
        raise TrainingError(f"training diverged in epoch {epoch + 1}: {reason}; {kept}. "
                            "Lower optim.lr or raise the loss temperatures")


def _finish(cfg: TrainConfig, env: DistEnv, out: Path, student: Student, teacher: "LazyTeacher",
            trained_names: list[str], embed_dim: int, log: "_CsvLog | None") -> None:
    """Rank 0: the final student (with ``student.zero_shot_prior``, the trained one with the
    zero-shot map added), the training curves and (when configured) calibration."""
    weight = cfg.student.zero_shot_prior
    if weight > 0:
        student = with_zero_shot_prior(student, weight, _conse_class_embeddings(teacher))
        cfg = dataclasses.replace(cfg, student=student.cfg)
        print(f"[train] zero-shot prior added (weight {weight:g}): the final student has a "
              "conse head")
    save_checkpoint({"student": student.state_dict(), "config": to_dict(cfg),
                     "teacher_id": teacher.id, "embed_dim": embed_dim,
                     "trained_names": trained_names}, out / FINAL)
    if log is not None and log.rows:
        from ..plots import drawn_or_warned, plot_training_curves

        drawn_or_warned(lambda: plot_training_curves(log.rows, out / "training_curves.png"),
                        "training curves")
    if cfg.calibration.seen and cfg.calibration.unseen:
        from .calibrate import calibrate, write_calibration

        record, curve = calibrate(student, cfg, teacher, trained_names, embed_images,
                                  env.device)
        write_calibration(out, record, curve)
        print(f"[train] calibration: seen_bias={record.seen_bias:.4f} "
              f"unknown_threshold={record.unknown_threshold:.4f} "
              f"(seen {record.chosen_on['seen_acc']:.3f}, pseudo-unseen "
              f"{record.chosen_on['unseen_acc']:.3f}, H {record.chosen_on['h']:.3f})")


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Distil the configured teacher into a student; return the output directory.

    Writes ``config.yaml``, ``checkpoint.pt`` + ``checkpoint.yaml`` (every epoch),
    ``metrics.csv``/``.jsonl``, ``training_curves.png`` and finally ``student_final.pt`` +
    ``student_final.yaml`` (weights + their config, :func:`save_checkpoint`).
    """
    env = setup_distributed(cfg.optim.device)
    if cfg.optim.threads > 0:
        torch.set_num_threads(cfg.optim.threads)
    out = Path(cfg.output_dir)
    ckpt_path = out / CHECKPOINT
    torch.manual_seed(cfg.optim.seed)
    np.random.seed(cfg.optim.seed)
    # the data are checked before an earlier run in output_dir is moved aside: a typo in
    # the split or a folder name stops here and leaves that run where it was
    vocabs = load_vocabularies(cfg.data)
    train_set = load_training_set(cfg.data, cfg.loss.cls_label_set, vocabs)
    if train_set is None:
        first = Path(cfg.data.root) / cfg.data.train_splits[0]
        raise TrainingError(f"no training images at {first}; run `vl-distill render` first "
                            "or point data.root at an image folder")
    ckpt, start_epoch = _prepare_output(cfg, env, out, resume)
    train_data = train_set.data
    val_data = load_split_images(cfg.data.root, "test_id", vocabs.id)
    teacher = LazyTeacher(cfg.teacher, seed=cfg.optim.seed)
    if cfg.loss.teacher_targets == "consistent":
        targets = torch.zeros(0)       # none cached: the teacher embeds every batch
        teacher.get().to(env.device)
    else:
        targets = _targets(cfg, env, teacher, train_data, progress)
    train_set, text_emb = _label_texts(cfg, env, teacher, train_set)
    train_data = train_set.data
    embed_dim = text_emb.shape[1]
    val_text = text_emb[:len(vocabs.id)].cpu()  # the ID labels come first in cls_vocab
    broad = vlkl_vocabulary(cfg, teacher, text_emb, env.device)
    student, model, optimizer = _build_model(cfg, env, embed_dim, ckpt, ckpt_path,
                                             _head_class_embeddings(cfg, teacher, ckpt))
    n = len(train_data)
    local_bs, steps_per_epoch = epoch_plan(n, cfg.optim.batch_size, env.world)
    if cfg.optim.max_steps_per_epoch > 0:
        steps_per_epoch = min(steps_per_epoch, cfg.optim.max_steps_per_epoch)
    augment = CropAugment(student.input_spec, aug=cfg.data.augment)
    run = _Run(cfg, env, student, model, optimizer, DistillLoss(cfg.loss),
               augment, torch.from_numpy(train_data.images),
               torch.from_numpy(train_data.labels), targets, text_emb, broad, local_bs,
               teacher, steps_per_epoch, steps_per_epoch * cfg.optim.epochs,
               int(cfg.optim.warmup_epochs * steps_per_epoch))
    log = _CsvLog(out, start_epoch) if env.is_main else None
    if env.is_main:
        (out / "config.yaml").write_text(_yaml_dump(to_dict(cfg)), encoding="utf-8")
        print(f"[train] {cfg.name}: {n} images ({train_set.n_labelled_id} labelled ID, "
              f"{train_set.n_aux} auxiliary), L_cls over {len(train_set.cls_vocab)} labels, "
              f"teacher {teacher.id}, "
              f"student {cfg.student.backbone}@{cfg.student.image_size}, world {env.world} "
              f"({env.device.type}), "
              f"{steps_per_epoch} steps/epoch x {cfg.optim.epochs} epochs")
    for epoch in range(start_epoch, cfg.optim.epochs):
        row = _train_epoch(run, epoch, progress)
        _check_finite(row, student, epoch, ckpt_path)
        if env.is_main:
            if val_data is not None:
                emb = embed_images(student, val_data.images, env.device)
                pred = (emb @ val_text.T).argmax(1).numpy()
                row["val_id_acc"] = accuracy(pred, val_data.labels)
            log.append(row)
            save_checkpoint({"epoch": epoch + 1, "student": student.state_dict(),
                             "optimizer": optimizer.state_dict(), "config": to_dict(cfg),
                             "teacher_id": teacher.id, "embed_dim": embed_dim}, ckpt_path)
            print("[train] " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in row.items()))
        _barrier(env)
    if env.world > 1:
        _check_ranks_in_sync(student, env)
    if env.is_main:
        _finish(cfg, env, out, student, teacher, train_set.cls_vocab.names, embed_dim, log)
    _barrier(env)
    if env.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
    return out


def load_trained_student(run_dir: str | Path) -> tuple[Student, TrainConfig, str]:
    """The final (or latest) student of a run, its config and teacher id."""
    run_dir = Path(run_dir)
    path = run_dir / FINAL if (run_dir / FINAL).exists() else run_dir / CHECKPOINT
    if not path.exists():
        raise TrainingError(f"no trained student in {run_dir} (expected {FINAL} or {CHECKPOINT})")
    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt, path)
    try:
        student = build_student(cfg.student, int(ckpt["embed_dim"]), load_weights=False)
    except (ValueError, RuntimeError) as exc:  # StudentError is a ValueError
        raise TrainingError(f"checkpoint {path}: cannot build its student "
                            f"({_first_line(exc)})") from None
    load_student_weights(student, ckpt["student"], path)
    from ..model.bundle import nonfinite_weight

    bad = nonfinite_weight(student)
    if bad:
        raise TrainingError(f"checkpoint {path}: {bad}")
    teacher_id = ckpt.get("teacher_id")
    if not isinstance(teacher_id, str) or not teacher_id:
        raise TrainingError(f"checkpoint {path} is malformed: 'teacher_id' must be a non-empty "
                            "string")
    return student.eval(), cfg, teacher_id


def _yaml_dump(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)

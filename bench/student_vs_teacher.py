#!/usr/bin/env python3
"""Student vs teacher throughput on this CPU: the same uint8 crops, one process, alternating.

Each repeat runs the teacher image encoder (open_clip ViT-B-32 at 224 px; random weights
have the real cost) on the crops, then every student configuration (backbone x input
size x backend) on the same crops, batch by batch. Preprocessing (resize + normalise) and
the network are timed separately per batch, so the report has network-only crops/s,
end-to-end crops/s from uint8 crops, and the preprocessing rate. The median over repeats is
reported, with the ratio student / teacher at equal batch size.

To keep the default run near 3 minutes, a timed run stops after the batch that passes
``--max-run-s`` seconds (at least ``--min-batches`` batches); every run starts at the first
crop of the same sequence, and ``crops_timed`` says how many it covered. ``--max-run-s 0``
always runs all crops.

Prints ONE JSON object on stdout (progress goes to stderr). Run from the repository root:

    .venv/bin/python bench/student_vs_teacher.py [--crops 256 --batch 32 --repeats 3 ...]
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from _common import (emit_or_error, loadavg, log, machine_info, non_negative_float,
                     non_negative_int)


def _set_omp_wait_policy(argv: Sequence[str]) -> str:
    """Apply ``--omp-wait-policy`` before torch (and its OpenMP runtime) is imported.

    ``passive`` (the default here) makes idle OpenMP threads sleep instead of spinning. On a
    CPU shared with another busy process, spinning threads of torch eager wait on descheduled
    peers at every operator barrier: on this 2-core machine with a training job running,
    MobileNetV3-small went from ~15 to ~600 crops/s at 2 threads with ``passive``.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--omp-wait-policy", choices=("passive", "active", "env"), default="passive")
    policy = pre.parse_known_args(argv)[0].omp_wait_policy
    if policy != "env":
        os.environ["OMP_WAIT_POLICY"] = policy.upper()
    return os.environ.get("OMP_WAIT_POLICY", "unset")


OMP_WAIT_POLICY = _set_omp_wait_policy(sys.argv[1:])

import torch  # noqa: E402 - after OMP_WAIT_POLICY is set

from vl_distill_ros.config import StudentConfig  # noqa: E402
from vl_distill_ros.perception.preprocess import preprocess_crops  # noqa: E402
from vl_distill_ros.model.runtime import OnnxRunner, TorchRunner, export_student_onnx  # noqa: E402
from vl_distill_ros.model.student import BACKBONES, InputSpec, build_student  # noqa: E402

BACKENDS = ("torch_eager", "torch_channels_last", "onnxruntime")
TEACHER_MODEL = "ViT-B-32"
#: Teacher embedding dimension (ViT-B-32); students project to it.
EMBED_DIM = 512
#: Issue target: student crops/s >= this many times the teacher's.
TARGET_RATIO = 10.0
#: Student input sizes ``--sizes`` may name: multiples of 32 (the backbones' stride) in this
#: range.
SIZE_RANGE = (32, 512)
#: The largest crop side ``--crop-max`` may ask for, in pixels.
MAX_CROP_SIDE = 4096


def bench_machine_info(threads: int) -> dict[str, Any]:
    """CPU model, core counts, load, threads, OpenMP wait policy and library versions."""
    return machine_info(("onnxruntime", "onnx", "cv2", "open_clip"), threads=threads,
                        omp_wait_policy=OMP_WAIT_POLICY, torch=torch.__version__,
                        numpy=np.__version__)


def make_crops(n: int, lo: int, hi: int, seed: int) -> list[np.ndarray]:
    """``n`` random RGB uint8 crops with sides uniform in [lo, hi]."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1)), 3),
                         dtype=np.uint8) for _ in range(n)]


def time_batches(crops: Sequence[np.ndarray], batch: int,
                 prep: Callable[[Sequence[np.ndarray]], Any], net: Callable[[Any], Any],
                 max_s: float = 0.0, min_batches: int = 1) -> tuple[float, float, int]:
    """Run the crops batch by batch; (preprocess s, network s, crops done).

    With ``max_s > 0`` the run stops after the first batch that ends past ``max_s`` seconds
    (but not before ``min_batches`` batches): a rate from the first crops of the same
    fixed sequence, which keeps slow configurations from dominating the bench's runtime.
    """
    t_pre = t_net = 0.0
    done = 0
    for k, i in enumerate(range(0, len(crops), batch)):
        t0 = time.perf_counter()
        x = prep(crops[i:i + batch])
        t1 = time.perf_counter()
        net(x)
        t2 = time.perf_counter()
        t_pre += t1 - t0
        t_net += t2 - t1
        done += len(crops[i:i + batch])
        if max_s > 0 and k + 1 >= min_batches and t_pre + t_net >= max_s:
            break
    return t_pre, t_net, done


def summarise(runs: list[tuple[float, float, int]]) -> dict[str, Any]:
    """Median crops/s (network, end-to-end, preprocessing) over repeats."""
    net = [n / t for _, t, n in runs]
    e2e = [n / (p + t) for p, t, n in runs]
    pre = [n / p for p, _, n in runs]
    return {
        "crops_per_s": round(statistics.median(net), 2),
        "crops_per_s_e2e": round(statistics.median(e2e), 2),
        "preprocess_crops_per_s": round(statistics.median(pre), 1),
        "ms_per_crop": round(1000.0 / statistics.median(net), 3),
        "repeats_crops_per_s": [round(v, 2) for v in net],
        "crops_timed": [n for _, _, n in runs],
    }


class TeacherBench:
    """The teacher's own preprocessing (PIL resize/crop/normalise) and image tower."""

    def __init__(self, batch: int) -> None:
        from PIL import Image

        from vl_distill_ros.model.teachers.open_clip_teacher import OpenClipTeacher

        self.teacher = OpenClipTeacher(TEACHER_MODEL, pretrained=None, batch_size=batch)
        self._image = Image
        self._pre = self.teacher._preprocess
        self._model = self.teacher._model

    def prep(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        return torch.stack([self._pre(self._image.fromarray(c)) for c in crops])

    def net(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.nn.functional.normalize(self._model.encode_image(x).float(), dim=-1)


def build_runners(backbone: str, size: int, backends: Sequence[str],
                  threads: int) -> tuple[dict[str, Any], dict[str, Any], InputSpec]:
    """Runners for one student config, facts (parameters, export time, ONNX size), its spec."""
    torch.manual_seed(0)
    pretrained = "imagenet" if backbone == "efficientnet_lite0" else "none"
    student = build_student(StudentConfig(backbone=backbone, pretrained=pretrained,
                                          image_size=size), EMBED_DIM).eval()
    n_params = sum(p.numel() for p in student.parameters())
    facts: dict[str, Any] = {"params_m": round(n_params / 1e6, 2)}
    runners: dict[str, Any] = {}
    if "onnxruntime" in backends:
        t0 = time.perf_counter()
        data = export_student_onnx(student)
        facts["onnx_export_s"] = round(time.perf_counter() - t0, 2)
        facts["onnx_mb"] = round(len(data) / 1e6, 1)
        t0 = time.perf_counter()
        runners["onnxruntime"] = OnnxRunner(data, threads=threads)
        facts["ort_session_s"] = round(time.perf_counter() - t0, 2)
    if "torch_eager" in backends:
        runners["torch_eager"] = TorchRunner(copy.deepcopy(student), channels_last=False)
    if "torch_channels_last" in backends:
        runners["torch_channels_last"] = TorchRunner(student, channels_last=True)
    return runners, facts, student.input_spec


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--crops", type=int, default=256, help="number of crops (default 256)")
    ap.add_argument("--batch", type=int, default=32, help="batch size for teacher and students")
    ap.add_argument("--repeats", type=int, default=3, help="repeats; the median is reported")
    ap.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    ap.add_argument("--sizes", default="96,128,160", help="student input sizes (multiples of 32)")
    ap.add_argument("--backbones", default=",".join(BACKBONES), help="student backbones")
    ap.add_argument("--backends", default=",".join(BACKENDS), help=f"subset of {BACKENDS}")
    ap.add_argument("--crop-min", type=int, default=60, help="smallest crop side in pixels")
    ap.add_argument("--crop-max", type=int, default=200, help="largest crop side in pixels")
    ap.add_argument("--max-run-s", type=non_negative_float, default=1.5,
                    help="stop a timed run after the batch that passes this many seconds "
                         "(at least --min-batches batches); 0 = always all crops")
    ap.add_argument("--min-batches", type=int, default=1, help="batches per run at least")
    ap.add_argument("--teacher-min-batches", type=int, default=2,
                    help="batches per teacher run at least (the teacher is every ratio's "
                         "denominator)")
    ap.add_argument("--no-teacher", action="store_true", help="skip the teacher (no ratios)")
    ap.add_argument("--omp-wait-policy", choices=("passive", "active", "env"), default="passive",
                    help="OMP_WAIT_POLICY for torch (read from the command line at start-up; "
                         "'env' keeps the environment's); passive avoids spin-wait collapse "
                         "on a shared CPU")
    ap.add_argument("--seed", type=non_negative_int, default=0, help="seed of the crops")
    return ap


def build_configs(backbones: list[str], sizes: list[int], backends: list[str],
                  threads: int) -> list[dict[str, Any]]:
    """One entry per (backbone, size, backend): its runner, input spec and one-off facts."""
    configs: list[dict[str, Any]] = []
    for backbone in backbones:
        for size in sizes:
            log(f"building {backbone}@{size}")
            runners, facts, spec = build_runners(backbone, size, backends, threads)
            for name, runner in runners.items():
                configs.append({"backbone": backbone, "image_size": size, "backend": name,
                                "runner": runner, "spec": spec, "facts": facts, "runs": []})
    return configs


def time_all(args: argparse.Namespace, crops: list, teacher: "TeacherBench | None",
             configs: list[dict[str, Any]]) -> list[tuple[float, float, int]]:
    """Warm everything up, then ``--repeats`` timed runs; returns the teacher's runs (the
    students' go into their config's ``runs``)."""
    warm = crops[:args.batch]  # allocators, oneDNN primitives, ORT arenas
    if teacher is not None:
        teacher.net(teacher.prep(warm))
    for c in configs:
        c["runner"].embed(preprocess_crops(warm, c["spec"]))
    budget = {"max_s": args.max_run_s, "min_batches": args.min_batches}
    teacher_runs: list[tuple[float, float, int]] = []
    for r in range(args.repeats):
        # Teacher first, then every student config; the students' order is reversed on odd
        # repeats so that no config always follows the same neighbour.
        if teacher is not None:
            teacher_runs.append(time_batches(
                crops, args.batch, teacher.prep, teacher.net, max_s=args.max_run_s,
                min_batches=max(args.min_batches, args.teacher_min_batches)))
            _, t, k = teacher_runs[-1]
            log(f"repeat {r + 1}/{args.repeats}: teacher {k / t:.1f} crops/s")
        for c in (configs if r % 2 == 0 else configs[::-1]):
            spec, runner = c["spec"], c["runner"]
            c["runs"].append(time_batches(crops, args.batch,
                                          lambda b, s=spec: preprocess_crops(b, s), runner.embed,
                                          **budget))
            _, t, k = c["runs"][-1]
            log(f"repeat {r + 1}/{args.repeats}: {c['backbone']}@{c['image_size']} "
                f"{c['backend']} {k / t:.1f} crops/s")
    return teacher_runs


def add_results(result: dict[str, Any], teacher_runs: list, configs: list[dict[str, Any]],
                with_teacher: bool) -> None:
    """``teacher``, ``students``, ``fastest_e2e`` and ``target`` of the JSON object."""
    t_net = t_e2e = None
    if with_teacher:
        t = summarise(teacher_runs)
        t_net, t_e2e = t["crops_per_s"], t["crops_per_s_e2e"]
        result["teacher"] = {"model": f"open_clip {TEACHER_MODEL} (random weights)",
                             "image_size": 224, "backend": "torch_eager", **t}
    students = []
    for c in configs:
        s = {"backbone": c["backbone"], "image_size": c["image_size"], "backend": c["backend"],
             **summarise(c["runs"]), **c["facts"]}
        if t_net:
            s["ratio_vs_teacher"] = round(s["crops_per_s"] / t_net, 2)
            s["ratio_vs_teacher_e2e"] = round(s["crops_per_s_e2e"] / t_e2e, 2)
        students.append(s)
    result["students"] = students
    fastest = max(students, key=lambda s: s["crops_per_s_e2e"]) if students else None
    if fastest is not None:
        result["fastest_e2e"] = {k: fastest[k] for k in ("backbone", "image_size", "backend",
                                                         "crops_per_s_e2e")}
    if t_net:
        result["target"] = {
            "min_ratio": TARGET_RATIO,
            "met_by": [f"{s['backbone']}@{s['image_size']}/{s['backend']}" for s in students
                       if s["ratio_vs_teacher"] >= TARGET_RATIO],
        }


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace
               ) -> tuple[list[int], list[str], list[str]]:
    """The sizes, backbones and backends to run; a bad option ends in ``ap.error`` (one
    line naming it, exit status 2) before anything is built."""
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--sizes must be comma-separated whole numbers, got {args.sizes!r}")
    lo, hi = SIZE_RANGE
    if not sizes or any(s % 32 or not lo <= s <= hi for s in sizes):
        ap.error(f"--sizes must be multiples of 32 in {lo}..{hi}, got {args.sizes!r}")
    backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in backends if b not in BACKENDS] + [b for b in backbones if b not in BACKBONES]
    if bad or not backbones or not backends:
        ap.error(f"unknown or no backbones/backends {bad}: backbones {', '.join(BACKBONES)}; "
                 f"backends {', '.join(BACKENDS)}")
    for name in ("crops", "batch", "repeats", "min_batches", "teacher_min_batches"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be 1 or above, got {getattr(args, name)}")
    if args.threads < 0:
        ap.error(f"--threads must be 0 or above, got {args.threads}")
    if not 1 <= args.crop_min <= args.crop_max <= MAX_CROP_SIDE:
        ap.error(f"--crop-min and --crop-max need 1 <= crop-min <= crop-max <= "
                 f"{MAX_CROP_SIDE}, got {args.crop_min} and {args.crop_max}")
    return sizes, backbones, backends


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    sizes, backbones, backends = check_args(ap, args)
    t_start = time.perf_counter()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    crops = make_crops(args.crops, args.crop_min, args.crop_max, args.seed)
    teacher = None
    if not args.no_teacher:
        log(f"building teacher open_clip {TEACHER_MODEL} (random weights)")
        teacher = TeacherBench(args.batch)
    configs = build_configs(backbones, sizes, backends, args.threads)
    teacher_runs = time_all(args, crops, teacher, configs)
    result: dict[str, Any] = {
        "bench": "student_vs_teacher",
        "machine": bench_machine_info(args.threads),
        "settings": {"crops": len(crops), "batch": args.batch, "repeats": args.repeats,
                     "threads": args.threads, "crop_side_px": [args.crop_min, args.crop_max],
                     "max_run_s": args.max_run_s, "min_batches": args.min_batches,
                     "teacher_min_batches": args.teacher_min_batches,
                     "embed_dim": EMBED_DIM, "dtype": "float32", "statistic": "median"},
    }
    add_results(result, teacher_runs, configs, teacher is not None)
    result["machine"]["loadavg_end"] = loadavg()
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    return emit_or_error(result)


if __name__ == "__main__":
    sys.exit(main())

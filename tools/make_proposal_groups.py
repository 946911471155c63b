"""Make the rendered RGB-D bag groups that the proposer's changes are measured on.

Since session 44 every change to the proposals is measured with ``bench/proposals_recall.py
--depth`` on the same groups of ``vl-distill make-bag --depth`` bags: eight *looked-at*
groups (a rule may be chosen on them; a ninth, ``ycbv``, since session 87) and nine
*held-out* ones (measured once, after the choice). Their ``make-bag`` lines were spread
over ``bench/README.md`` and the result files; this script holds them in one table
(:data:`GROUPS`), makes the bags of the groups asked for (bags already there are kept) and
prints, per group, its bag paths (``--list`` and ``--paths`` print the table or one
group's paths and make nothing). ``--objects`` ``every`` stands for all the models of the
models directory (the 78 YCB meshes), listed in sorted order as ``ls`` lists them, as the
bags were made.

Usage::

    .venv/bin/python tools/make_proposal_groups.py OUT_DIR               # all 18 groups
    .venv/bin/python tools/make_proposal_groups.py OUT_DIR --groups tuning cut
    .venv/bin/python tools/make_proposal_groups.py OUT_DIR --list        # nothing made
    .venv/bin/python tools/make_proposal_groups.py OUT_DIR --measure [--jobs 2] \
        [--results DIR] [--min-visible F] [-p FIELD=VALUE ...]   # make, then measure

(about 7 minutes for all 18 groups on one core of the 2-core development machine; the
sample bag of the ``guard`` group is ``demo/sample_tabletop``, shipped.) Then, e.g.::

    .venv/bin/python bench/proposals_recall.py --depth --no-labels \\
        --bags $(.venv/bin/python tools/make_proposal_groups.py OUT_DIR --paths tuning)
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent.parent
#: A bag that ships with the package instead of being made.
SAMPLE_BAG = ROOT / "demo" / "sample_tabletop"
#: ``--objects`` value standing for every model of the models directory.
EVERY = "every"

_CLUTTER = ("--frames 40 --objects all --objects-per-scene 6-10 --contact-prob 0.8 "
            "--camera-distance 0.35,0.65 --elevation 45,85 --table-size 0.4,0.7 "
            "--furniture 2")
_CUT = "--cut-border 1"
_YCBV = ("--frames 40 --keep-distance --fov-y 24,27 --camera-distance 0.6,1.2 "
         "--objects-per-scene 4-7 --contact-prob 0.6 --roll=-10,10")

#: group -> (held out?, {bag name: make-bag options after ``--depth``}); the bag named
#: ``sample`` is :data:`SAMPLE_BAG`.
GROUPS: dict[str, tuple[bool, dict[str, str]]] = {
    "tuning": (False, {
        "touch91": "--frames 60 --seed 91 --objects-per-scene 2-3 --contact-prob 0.8",
        "touch92": "--frames 60 --seed 92 --objects-per-scene 2-3 --contact-prob 0.8 "
                   "--objects every",
        "clutter95": "--frames 40 --seed 95 --objects-per-scene 5-7 --contact-prob 0.5"}),
    "cut": (False, {
        "cut141": f"{_CUT} --frames 60 --seed 141 --contact-prob 0.4 --objects-per-scene 2-5",
        "cut142": f"{_CUT} --frames 60 --seed 142 --contact-prob 0.4 --objects-per-scene 3-6 "
                  "--objects every",
        "cut145": f"{_CUT} --frames 60 --seed 145 --contact-prob 0.3 --objects-per-scene 3-5 "
                  "--fov-y 24,30 --camera-distance 1.0,1.8"}),
    "hand": (False, {
        "hand91": "--hand-camera --frames 40 --seed 91",
        "hand91_640": "--hand-camera --hand-width 640 --hand-height 480 --frames 40 --seed 91"}),
    "roll": (False, {
        "r180_91": "--frames 40 --seed 91 --objects-per-scene 2-4 --contact-prob 0.3 "
                   "--roll=-180,180",
        "r180_92": "--frames 40 --seed 92 --objects-per-scene 2-4 --contact-prob 0.3 "
                   "--roll=-180,180",
        "r30_91": "--frames 40 --seed 91 --objects-per-scene 2-4 --contact-prob 0.3 "
                  "--roll=-30,30"}),
    "guard": (False, {
        "s57": "--frames 60 --seed 57",
        "s41": "--frames 60 --seed 41",
        "sample": ""}),
    "all78t": (False, {
        "all99": "--frames 60 --seed 99 --objects-per-scene 2-3 --contact-prob 0.8 "
                 "--objects every",
        "all100": "--frames 40 --seed 100 --objects-per-scene 5-7 --contact-prob 0.5 "
                  "--objects every"}),
    # as remade in session 46 (209 objects; session 44's far bags had 238)
    "fart": (False, {
        "far63": "--frames 40 --seed 63 --camera-distance 1.2,2",
        "far64": "--frames 40 --seed 64 --camera-distance 1.2,2 --objects-per-scene 2-3 "
                 "--contact-prob 0.8"}),
    "clut": (False, {
        "clut4101": f"{_CLUTTER} --seed 4101",
        "clut4102": f"{_CLUTTER} --seed 4102"}),
    # session 87: YCB-Video's views (its Xtion's long lens kept 0.6-1.2 m from a crowded
    # table, --keep-distance; objects cut by the frame and hiding each other), with the
    # RealSense-like and the Xtion-like (coarse) depth noise, plain and cut by the border
    "ycbv": (False, {
        "ycbv8701": f"{_YCBV} --seed 8701",
        "ycbv8702": f"{_YCBV} --seed 8702 {_CUT}",
        "ycbv8703": f"{_YCBV} --seed 8703 --depth-noise coarse",
        "ycbv8704": f"{_YCBV} --seed 8704 --depth-noise coarse {_CUT}"}),
    "hcut": (True, {
        "cut151": f"{_CUT} --frames 60 --seed 151 --contact-prob 0.4 --objects-per-scene 2-5",
        "cut152": f"{_CUT} --frames 40 --seed 152 --objects every --contact-prob 0.5 "
                  "--objects-per-scene 5-7",
        "cut153": f"{_CUT} --frames 50 --seed 153 --fov-y 24,28 --camera-distance 0.9,1.5 "
                  "--objects-per-scene 3-6 --contact-prob 0.4",
        "cut154": f"{_CUT} --frames 40 --seed 154 --hand-camera --objects every"}),
    "hclut": (True, {
        "clut4201": f"{_CLUTTER} --seed 4201",
        "clut4202": f"{_CLUTTER} --seed 4202"}),
    "h201": (True, {"ho201": "--frames 60 --seed 201"}),
    "h202": (True, {"ho202": "--frames 60 --seed 202 --objects every --objects-per-scene 2-3 "
                             "--contact-prob 0.8"}),
    "h203": (True, {"ho203": "--frames 40 --seed 203 --objects-per-scene 5-7 "
                             "--contact-prob 0.5"}),
    "h204": (True, {"ho204": "--frames 50 --seed 204 --fov-y 24,28 --camera-distance 0.9,1.5 "
                             "--objects-per-scene 3-6 --contact-prob 0.4"}),
    "h205": (True, {"ho205": "--frames 40 --seed 205 --objects every "
                             "--camera-distance 1.2,2.0"}),
    "h206": (True, {"ho206": "--frames 40 --seed 206 --objects every --hand-camera"}),
    "h207": (True, {"ho207": "--frames 40 --seed 207 --furniture 4 --table-size 0.4,0.7"}),
}


def every_model(models_dir: Path) -> str:
    """The ``--objects`` list of every model in ``models_dir`` (its sub-directories, sorted
    by name)."""
    if not models_dir.is_dir():
        raise SystemExit(f"error: the models folder {models_dir} does not exist")
    names = sorted(p.name for p in models_dir.iterdir() if p.is_dir() and "." not in p.name)
    if not names:
        raise SystemExit(f"error: no models in {models_dir}")
    return ",".join(names)


def make_bag_args(options: str, out: Path, models_dir: Path | None) -> list[str]:
    """``vl-distill make-bag`` arguments for one bag: ``--depth --no-progress --out OUT`` and
    ``options``, ``every`` replaced by :func:`every_model`'s list."""
    words = shlex.split(options)
    for i, word in enumerate(words[:-1]):
        if word == "--objects" and words[i + 1] == EVERY:
            if models_dir is None:
                from vl_distill_ros.sim.meshes import default_models_dir
                models_dir = Path(default_models_dir())
            words[i + 1] = every_model(models_dir)
    return ["make-bag", "--depth", "--no-progress", "--out", str(out), *words]


def bag_paths(group: str, out_dir: Path) -> list[Path]:
    """The bags of ``group`` under ``out_dir`` (the sample bag where the group has it)."""
    return [SAMPLE_BAG if name == "sample" else out_dir / name for name in GROUPS[group][1]]


KINDS = ("colour", "depth", "auto")


def summarise(results: dict[str, dict]) -> dict:
    """The table of a measurement: per group (``bench/proposals_recall.py --depth`` objects
    in ``results``) and over the looked-at and held-out groups, each proposer's objects
    found and false boxes (in all and a frame), as the README's table gives them."""
    def row(objects: int, frames: int, tallies: dict[str, list[int]]) -> dict:
        return {"objects": objects, "frames": frames, **{
            k: {"found": f, "found_pct": round(100.0 * f / max(1, objects), 1),
                "false_boxes": fp, "false_per_frame": round(fp / max(1, frames), 2)}
            for k, (f, fp) in tallies.items()}}

    groups, totals = {}, {}
    for g, result in results.items():
        depth = result["depth"]["all"]
        tallies = {k: [depth[k]["matched"], depth[k]["false_positives"]] for k in KINDS}
        groups[g] = row(depth["auto"]["objects"], depth["auto"]["frames"], tallies)
        total = totals.setdefault("held_out" if GROUPS[g][0] else "looked_at",
                                  {"objects": 0, "frames": 0, **{k: [0, 0] for k in KINDS}})
        total["objects"] += groups[g]["objects"]
        total["frames"] += groups[g]["frames"]
        for k in KINDS:
            total[k] = [a + b for a, b in zip(total[k], tallies[k])]
    return {"groups": groups, **{name: row(t.pop("objects"), t.pop("frames"), t)
                                 for name, t in totals.items()}}


def measure(groups: Sequence[str], out_dir: Path, params: Sequence[str], jobs: int,
            results_dir: Path | None, min_visible: float = 0.0) -> dict:
    """Run ``bench/proposals_recall.py --depth --no-labels`` (plus ``-p`` ``params`` and
    ``--min-visible``) on each group's bags, ``jobs`` groups at a time; keep each group's
    JSON in ``results_dir`` (optional); return :func:`summarise`'s table.

    Raises:
        RuntimeError: a measurement failed (its exit status and the end of its stderr).
    """
    from concurrent.futures import ThreadPoolExecutor

    bench = ROOT / "bench" / "proposals_recall.py"

    def one(g: str) -> dict:
        cmd = [sys.executable, str(bench), "--depth", "--no-labels",
               "--min-visible", str(min_visible), *[a for p in params for a in ("-p", p)],
               "--bags", *map(str, bag_paths(g, out_dir))]
        print(f"[make_proposal_groups] measuring {g}", file=sys.stderr)
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if done.returncode:
            raise RuntimeError(f"proposals_recall failed on {g} ({done.returncode}): "
                               f"{done.stderr[-500:]}")
        if results_dir is not None:
            results_dir.mkdir(parents=True, exist_ok=True)
            (results_dir / f"{g}.json").write_text(done.stdout)
        return json.loads(done.stdout)

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        results = dict(zip(groups, pool.map(one, groups)))
    return summarise(results)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path, help="directory the bags are written into")
    ap.add_argument("--groups", nargs="+", choices=sorted(GROUPS), default=None,
                    help="groups to make (default: all)")
    ap.add_argument("--list", action="store_true",
                    help="print each group's bags and make-bag options; make nothing")
    ap.add_argument("--paths", metavar="GROUP", choices=sorted(GROUPS), default=None,
                    help="print the bag paths of GROUP on one line; make nothing")
    ap.add_argument("--models-dir", type=Path, default=None,
                    help="YCB models directory (default: make-bag's)")
    ap.add_argument("--measure", action="store_true",
                    help="after making them, measure the groups with bench/proposals_recall.py "
                         "--depth and print the table as JSON on stdout")
    ap.add_argument("-p", "--param", dest="params", action="append", default=[],
                    metavar="FIELD=VALUE", help="with --measure: a ProposalConfig override "
                    "passed on to proposals_recall (repeatable)")
    ap.add_argument("--jobs", type=int, default=2,
                    help="with --measure: groups measured at once (default 2)")
    ap.add_argument("--results", type=Path, default=None,
                    help="with --measure: keep each group's proposals_recall JSON here")
    ap.add_argument("--min-visible", type=float, default=0.0, metavar="F",
                    help="with --measure: ignore objects less than F visible "
                         "(proposals_recall --min-visible; 0.1 is BOP's convention; groups "
                         "made before session 54 record no visible fractions)")
    args = ap.parse_args(argv)
    if not 0.0 <= args.min_visible <= 1.0:
        ap.error(f"--min-visible must be in [0, 1], got {args.min_visible}")
    if args.paths:
        print(" ".join(str(p) for p in bag_paths(args.paths, args.out_dir)))
        return 0
    groups = args.groups or list(GROUPS)
    if args.list:
        for g in groups:
            held, bags = GROUPS[g]
            print(f"{g} ({'held out' if held else 'looked at'}):")
            for name, options in bags.items():
                print(f"  {name}: {options or SAMPLE_BAG.relative_to(ROOT)}")
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for g in groups:
        for name, options in GROUPS[g][1].items():
            out = args.out_dir / name
            if name == "sample" or (out / "metadata.yaml").exists():
                continue
            print(f"[make_proposal_groups] {g}: {name}", file=sys.stderr)
            extra = ["--models-dir", str(args.models_dir)] if args.models_dir else []
            code = subprocess.call([sys.executable, "-m", "vl_distill_ros.cli",
                                    *make_bag_args(options, out, args.models_dir), *extra])
            if code:
                print(f"error: make-bag failed for {name} ({code})", file=sys.stderr)
                return code
    if args.measure:
        try:
            table = measure(groups, args.out_dir, args.params, args.jobs, args.results,
                            args.min_visible)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(json.dumps({"params": args.params, "min_visible": args.min_visible, **table},
                         indent=2))
        return 0
    for g in groups:
        print(f"{g}: {' '.join(str(p) for p in bag_paths(g, args.out_dir))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

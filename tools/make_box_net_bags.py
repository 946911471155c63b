"""Make the training bags of the box network (``config/train_box_net.yaml``).

A hundred and thirty ``vl-distill make-bag`` bags of 60 frames (seeds 3000-3129, none of
them a bench bag's), each with its own scene settings drawn from the lists below: objects
per scene, how many touch, furniture beyond the table, field of view, camera distance,
table size and frame size. The last thirty (seeds 3100-3129) are far views, where objects
are small: the camera 1.2-2.2 m from the table (``FAR_CHOICES``). ``--rolled N`` adds N
bags (seeds 3130 on) whose camera is rolled about its optical axis (``ROLL_CHOICES``: a
hand-held camera, a wrist camera at any angle), the third stage's data
(``config/train_box_net_roll.yaml``). ``--cut-border N`` adds N bags (seeds 3170 on) whose
frames are cut by the image border with chance ``CUT_PROB`` (``make-bag --cut-border``: the
image a crop of a larger frame, the cut objects' boxes those of what is in view), the
cut-border stage's data (``config/train_box_net_cut.yaml``). ``--clutter N`` adds N bags
(seeds 3210 on) of crowded small tables seen close and from high above (``CLUTTER_CHOICES``),
the clutter stage's data (``config/train_box_net_clutter.yaml``). ``--busy N`` adds N bags
(seeds 3240 on) on busy table cloths (``make-bag --table-kinds``: a tartan, a printed cloth
of small motifs, large shapes; ``BUSY_CHOICES``), the busy-cloth stage's data
(``config/train_box_net_busy.yaml``). ``--close N`` adds N bags (seeds 3340 on) of close
long-lens views that keep the drawn camera distance (``make-bag --keep-distance``: the
view is not pulled back until every object is in it, so near objects are large and cut by
the border, as in YCB-Video's frames; ``CLOSE_CHOICES``), the close-view stage's data
(``config/train_box_net_close.yaml``). The objects are the 66
YCB models outside the out-of-distribution half of ``config/splits/ycb_paper.yaml``, so the
network is measured on objects it never saw.

Usage: ``.venv/bin/python tools/make_box_net_bags.py OUT_DIR [--count 130] [--rolled 40]
[--cut-border 40] [--clutter 30] [--busy 40] [--close 30]``
(about 23 minutes on one core for the 130; bags already there are kept).
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHOICES = {  # make-bag option -> values, one drawn per bag
    "--objects-per-scene": ["1-3", "2-4", "3-6", "4-8", "5-8"],
    "--contact-prob": [0, 0.2, 0.4, 0.6, 0.8],
    "--furniture": [0, 0, 1, 3],
    "--fov-y": ["42,50", "42,50", "24,30", "55,70"],
    "--camera-distance": ["0.6,1.2", "0.5,0.9", "0.9,1.6"],
    "--table-size": ["1.2,2.0", "1.2,2.0", "0.4,0.7"],
    "size": [(640, 480), (640, 480), (640, 480), (848, 480)],
}
#: Overrides of the far views, the bags from index ``FAR_FROM`` on.
FAR_CHOICES = {
    "--objects-per-scene": ["2-4", "3-6", "4-8"],
    "--camera-distance": ["1.2,2.2"],
    "--fov-y": ["42,50", "42,50", "55,70"],
}
FAR_FROM = 100
FIRST_SEED = 3000
#: The rolled bags (``--rolled``) follow the ``--count`` ones from this index on, each with
#: one roll range drawn from these (degrees; ``make-bag --roll``) besides ``CHOICES``.
ROLL_FROM = 130
ROLL_CHOICES = ["-45,45", "-180,180"]
#: The cut-border bags (``--cut-border``) follow the rolled ones from this index on, each
#: frame cut by the border with this chance (``make-bag --cut-border``).
CUT_FROM = 170
CUT_PROB = 0.7
#: The clutter bags (``--clutter``) follow the cut-border ones from this index on: crowded
#: small tables seen close and from high above (a bin or a shelf's piles rather than a
#: laid table), these overrides of ``CHOICES`` and an elevation from ``CLUTTER_ELEVATION``.
CLUTTER_FROM = 210
CLUTTER_CHOICES = {
    "--objects-per-scene": ["5-8", "6-10"],
    "--contact-prob": [0.6, 0.8],
    "--furniture": [1, 2, 3],
    "--camera-distance": ["0.35,0.65", "0.4,0.8"],
    "--table-size": ["0.4,0.7"],
}
CLUTTER_ELEVATION = ["45,85", "35,70"]
#: The busy-cloth bags (``--busy``) follow the clutter ones from this index on: near views
#: of fuller tables (these overrides of ``CHOICES``) laid with one of ``BUSY_TABLE_KINDS``.
BUSY_FROM = 240
#: Most busy-cloth bags (the close views follow them).
MAX_BUSY = 100
BUSY_CHOICES = {
    "--objects-per-scene": ["2-4", "3-6", "4-8", "5-8"],
    "--contact-prob": [0.2, 0.4, 0.6, 0.8],
}
BUSY_TABLE_KINDS = "plaid,print,blobs"
#: The close-view bags (``--close``) follow the busy-cloth ones from this index on: long
#: lenses near the objects with the drawn distance kept (``make-bag --keep-distance``),
#: these overrides of ``CHOICES`` and a small roll from ``CLOSE_ROLL``.
CLOSE_FROM = BUSY_FROM + MAX_BUSY
#: Most close-view bags (the last kind: this bounds the work asked for).
MAX_CLOSE = 1000
CLOSE_CHOICES = {
    "--objects-per-scene": ["2-4", "3-6", "4-8"],
    "--contact-prob": [0.2, 0.4, 0.6, 0.8],
    "--fov-y": ["20,26", "24,30", "30,40"],
    "--camera-distance": ["0.5,0.9", "0.6,1.2", "0.8,1.4"],
}
CLOSE_ROLL = ["-10,10", "-20,20"]


def training_objects(models_dir: str | None = None) -> list[str]:
    """Every YCB model key except the split's out-of-distribution ones."""
    from vl_distill_ros.sim.meshes import default_models_dir, find_models

    split = yaml.safe_load((ROOT / "config/splits/ycb_paper.yaml").read_text())
    held_out = set(split["out_of_distribution"])
    return [k for k in sorted(find_models(models_dir or default_models_dir()))
            if k not in held_out]


def bag_args(index: int, out_dir: Path, objects: list[str]) -> list[str]:
    """The ``make-bag`` arguments of bag ``index``."""
    seed = FIRST_SEED + index
    args = ["make-bag", "--out", str(out_dir / f"b{seed}"), "--frames", "60",
            "--seed", str(seed), "--objects", ",".join(objects), "--no-progress"]
    for k, (option, values) in enumerate(CHOICES.items(), start=1):
        if FAR_FROM <= index < ROLL_FROM:
            values = FAR_CHOICES.get(option, values)
        elif index >= CLOSE_FROM:
            values = CLOSE_CHOICES.get(option, values)
        elif index >= BUSY_FROM:
            values = BUSY_CHOICES.get(option, values)
        elif index >= CLUTTER_FROM:
            values = CLUTTER_CHOICES.get(option, values)
        value = random.Random(seed * 7 + k).choice(values)
        if option == "size":
            args += ["--width", str(value[0]), "--height", str(value[1])]
        else:
            args += [option, str(value)]
    if index >= CLOSE_FROM:
        roll = random.Random(seed * 7 + len(CHOICES) + 1).choice(CLOSE_ROLL)
        args += ["--keep-distance", f"--roll={roll}"]
    elif index >= BUSY_FROM:
        args += ["--table-kinds", BUSY_TABLE_KINDS]
    elif index >= CLUTTER_FROM:
        elevation = random.Random(seed * 7 + len(CHOICES) + 1).choice(CLUTTER_ELEVATION)
        args += [f"--elevation={elevation}"]
    elif index >= CUT_FROM:
        args += ["--cut-border", str(CUT_PROB)]
    elif index >= ROLL_FROM:
        roll = random.Random(seed * 7 + len(CHOICES) + 1).choice(ROLL_CHOICES)
        args += [f"--roll={roll}"]
    return args


def main(argv: list[str] | None = None) -> int:
    """Make the bags that are missing; returns the exit status."""
    from vl_distill_ros.cli import main as cli

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--count", type=int, default=130)
    parser.add_argument("--rolled", type=int, default=0,
                        help="also make this many rolled bags (indices from 130 on)")
    parser.add_argument("--cut-border", type=int, default=0,
                        help="also make this many cut-border bags (indices from 170 on)")
    parser.add_argument("--clutter", type=int, default=0,
                        help="also make this many clutter bags (indices from 210 on)")
    parser.add_argument("--busy", type=int, default=0,
                        help="also make this many busy-cloth bags (indices from 240 on)")
    parser.add_argument("--close", type=int, default=0,
                        help="also make this many close-view bags (indices from 340 on)")
    args = parser.parse_args(argv)
    # each kind has its own index range: a count past it made bags of the next kind
    for name, count, room in (("--count", args.count, ROLL_FROM),
                              ("--rolled", args.rolled, CUT_FROM - ROLL_FROM),
                              ("--cut-border", args.cut_border, CLUTTER_FROM - CUT_FROM),
                              ("--clutter", args.clutter, BUSY_FROM - CLUTTER_FROM),
                              ("--busy", args.busy, MAX_BUSY),
                              ("--close", args.close, MAX_CLOSE)):
        if not 0 <= count <= room:
            parser.error(f"{name} must be in 0..{room}, got {count}")
    objects = training_objects()
    indices = list(range(args.count)) + list(range(ROLL_FROM, ROLL_FROM + args.rolled)) \
        + list(range(CUT_FROM, CUT_FROM + args.cut_border)) \
        + list(range(CLUTTER_FROM, CLUTTER_FROM + args.clutter)) \
        + list(range(BUSY_FROM, BUSY_FROM + args.busy)) \
        + list(range(CLOSE_FROM, CLOSE_FROM + args.close))
    for i in indices:
        if (args.out_dir / f"b{FIRST_SEED + i}").exists():
            continue
        status = cli(bag_args(i, args.out_dir, objects))
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``vl-distill import-bop``: write real RGB-D frames of BOP-format scenes (YCB-V: the real
frames of YCB-Video) into a camera bag with ground truth, for ``replay-eval``.

The bag has the layout of ``make-bag``'s (docs/bags.md): colour on /camera/image_raw,
registered 16UC1 depth in millimetres on /camera/depth/image_raw and the colour camera's
CameraInfo on /camera/camera_info with the colour frame's stamp, one ground-truth document
per frame on /ground_truth. See :mod:`vl_distill_ros.bags.bop_scenes` for what is read.
"""
from __future__ import annotations

import argparse
import sys

from ..package_files import add_packaged_option

DEFAULT_START_TIME = 1_700_000_000.0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``import-bop`` subcommand to ``subparsers`` (sets ``func=run``)."""
    from .make_bag import _add_storage_args

    p = subparsers.add_parser(
        "import-bop", help="write real RGB-D frames of BOP-format scenes (e.g. YCB-V) into a "
                           "camera bag with ground truth",
        description="Read scene folders of a dataset in the BOP benchmark's format (rgb/, "
                    "depth/, scene_camera.json, scene_gt.json, scene_gt_info.json; YCB-V holds "
                    "the real frames of YCB-Video) and write them to a rosbag2 bag in "
                    "make-bag's layout (docs/bags.md): colour, registered 16UC1 depth in "
                    "millimetres, the colour camera's CameraInfo and one ground-truth document "
                    "per frame (the box of each object's visible part), for "
                    "'vl-distill replay-eval'. Scenes follow one another in the bag.")
    p.add_argument("scenes", nargs="+", metavar="SCENE",
                   help="BOP scene folders, e.g. ycbv/test/000048 (in this order)")
    p.add_argument("--out", required=True, metavar="BAG",
                   help="bag folder to create (refused if it exists, unless --overwrite)")
    p.add_argument("--objects", default="ycbv", metavar="ycbv|FILE",
                   help="what each object id is called: 'ycbv' (YCB-V's 21 YCB objects, named "
                        "by --vocabulary) or a YAML file mapping ids to vocabulary keys or "
                        "names, e.g. '1: mug' (default: %(default)s)")
    add_packaged_option(p, "--vocabulary", "config/ycb_vocabulary.yaml",
                        "vocabulary YAML whose keys name the objects")
    p.add_argument("--min-visible", type=float, default=0.1, metavar="F",
                   help="leave out objects with less than this fraction in view (BOP's "
                        "visib_fract; 0-1, default: %(default)s)")
    p.add_argument("--every", type=int, default=1, metavar="K",
                   help="take every K-th image of each scene (default: %(default)s)")
    p.add_argument("--max-frames", type=int, default=0, metavar="N",
                   help="at most N images per scene (0: all; default: %(default)s)")
    p.add_argument("--fps", type=float, default=10.0,
                   help="frame rate of the stamps, start + i / fps (default: %(default)s)")
    p.add_argument("--start-time", type=float, default=DEFAULT_START_TIME,
                   help="stamp of the first frame, seconds since the epoch "
                        "(default: %(default)s)")
    p.add_argument("--models-info", default=None, metavar="FILE",
                   help="the dataset's models/models_info.json: each object's pose places the "
                        "centre of its model in the camera (ground-truth position, scored by "
                        "replay-eval against the positions the node publishes with depth)")
    p.add_argument("--no-depth", action="store_true",
                   help="write colour and ground truth only (no depth, no CameraInfo)")
    _add_storage_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing bag at --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


class _UsageError(ValueError):
    pass


def _check_args(args: argparse.Namespace) -> None:
    import math

    if not 0.0 <= args.min_visible <= 1.0:
        raise _UsageError(f"--min-visible must be in [0, 1], got {args.min_visible}")
    if not 1 <= args.every <= 100_000:
        raise _UsageError(f"--every must be in [1, 100000], got {args.every}")
    if not 0 <= args.max_frames <= 1_000_000:
        raise _UsageError(f"--max-frames must be in [0, 1000000], got {args.max_frames}")
    if not (math.isfinite(args.fps) and 0.01 <= args.fps <= 1000):
        raise _UsageError(f"--fps must be in [0.01, 1000], got {args.fps}")
    if not (math.isfinite(args.start_time) and 0 <= args.start_time < 4e9):
        raise _UsageError(f"--start-time must be seconds since the epoch, got {args.start_time}")


def _object_names(args: argparse.Namespace):
    from ..bags.bop_scenes import load_object_names, ycbv_object_names
    from ..model.vocabulary import Vocabulary

    vocabulary = Vocabulary.load(args.vocabulary)
    if args.objects == "ycbv":
        return ycbv_object_names(vocabulary)
    return load_object_names(args.objects, vocabulary)


def _frames(args: argparse.Namespace, scenes, names, stats: dict, centres=None):
    from tqdm import tqdm

    from ..bags.bop_scenes import scene_frames

    start_ns = int(round(args.start_time * 1e9))
    period_ns = 1e9 / args.fps
    counts = [len(s.image_ids[::args.every]) for s in scenes]
    if args.max_frames:
        counts = [min(c, args.max_frames) for c in counts]
    done = 0
    with tqdm(total=sum(counts), disable=args.no_progress, unit="frame",
              desc="import-bop") as bar:
        for scene, count in zip(scenes, counts):
            for frame in scene_frames(scene, names, start_ns, period_ns,
                                      depth=not args.no_depth, min_visible=args.min_visible,
                                      every=args.every, max_frames=args.max_frames,
                                      first_index=done, model_centres=centres):
                stats["frames"] += 1
                stats["objects"] += len(frame.objects)
                for o in frame.objects:
                    stats["labels"][o.label] = stats["labels"].get(o.label, 0) + 1
                bar.update(1)
                yield frame
            done += count


def run(args: argparse.Namespace) -> int:
    """Read the scenes and write the bag; 0 on success, 2 on a usage or data problem."""
    import time
    from pathlib import Path

    from ..bags.bag_io import BagError, BagTopics, write_camera_bag
    from ..bags.bop_scenes import load_models_info, read_bop_scene
    from ..model.vocabulary import VocabularyError

    prog = "vl-distill import-bop"
    started = time.perf_counter()
    stats = {"frames": 0, "objects": 0, "labels": {}}
    try:
        _check_args(args)
        names = _object_names(args)
        scenes = [read_bop_scene(s) for s in args.scenes]
        centres = load_models_info(args.models_info) if args.models_info else None
        out = write_camera_bag(args.out, _frames(args, scenes, names, stats, centres),
                               storage=args.storage, topics=BagTopics(),
                               compression=args.compression, overwrite=args.overwrite,
                               image_format=args.image_format, jpeg_quality=args.jpeg_quality)
    except (_UsageError, BagError, VocabularyError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    n = stats["frames"]
    common = sorted(stats["labels"].items(), key=lambda kv: (-kv[1], kv[0]))[:8]
    print(f"[import-bop] wrote {out} ({args.storage}, {size / 1e6:.1f} MB) in "
          f"{time.perf_counter() - started:.1f} s: {n} frames of {len(scenes)} scene(s), "
          + ("colour only" if args.no_depth else "with depth and CameraInfo")
          + f"; {stats['objects']} labelled objects ({stats['objects'] / max(n, 1):.1f} per "
          f"frame), {len(stats['labels'])} labels; most common: "
          f"{', '.join(f'{k} x{v}' for k, v in common)}")
    return 0

"""``vl-distill render-cutouts``: named crops of cut-out photos on rendered backgrounds."""
from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``render-cutouts`` subcommand to ``subparsers`` (sets ``func=run``)."""
    p = subparsers.add_parser(
        "render-cutouts", help="crops of cut-out photos of many kinds of things",
        description="Composite RGBA cut-out photos (by default the stamps of Debian's "
                    "tuxpaint-stamps-default, fetched by tools/fetch_cutouts.sh) onto the "
                    "renderer's procedural backgrounds: <out>/<category>/<stem>_<i>.png plus "
                    "manifest.json (each crop's file and name), training crops for the "
                    "teacher-only losses (data.unlabelled_splits) or for every loss with "
                    "their names (data.named_splits). Deterministic for a given seed.")
    p.add_argument("--config", default="config/render_cutouts.yaml",
                   help="cut-out YAML (default: %(default)s)")
    p.add_argument("--source", default=None, help="folder of RGBA *.png cut-outs; overrides "
                                                  "source_dir")
    p.add_argument("--out", default=None, help="output folder; overrides out_dir")
    p.add_argument("--views", type=int, default=None, help="crops per cut-out; overrides views")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the crops; 0 on success, 2 on a configuration or source problem."""
    import time

    from ..sim.photo_cutouts import CutoutError, check_spec, load_cutout_spec, render_cutouts

    try:
        spec = load_cutout_spec(args.config)
        if args.source is not None:
            spec.source_dir = args.source
        if args.out is not None:
            spec.out_dir = args.out
        if args.views is not None:
            spec.views = args.views
        check_spec(spec)
        started = time.perf_counter()
        manifest = render_cutouts(spec, progress=not args.no_progress)
    except CutoutError as exc:
        print(f"vl-distill render-cutouts: error: {exc}", file=sys.stderr)
        return 2
    print(f"[render-cutouts] wrote {manifest['crops']} crops of {manifest['cutouts']} cut-outs "
          f"to {spec.out_dir} in {time.perf_counter() - started:.1f} s")
    return 0

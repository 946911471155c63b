"""``vl-distill render``: render labelled YCB object crops on the CPU (no GPU, no display)."""
from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``render`` subcommand to ``subparsers`` (sets ``func=run``)."""
    p = subparsers.add_parser(
        "render", help="render labelled object crops from YCB meshes (CPU only)",
        description="Render a labelled image-folder dataset "
                    "(<out>/<split>/<key>/<key>_<i>.png + manifest.json) from textured YCB "
                    "meshes with pybullet's software renderer. Deterministic for a given seed.")
    p.add_argument("--config", default="config/render_ycb.yaml",
                   help="render YAML (default: %(default)s)")
    p.add_argument("--models-dir", default=None,
                   help="folder with one <key>/textured.obj per YCB object (the google_16k "
                        "meshes from ycbbenchmarks.com); overrides models_dir (default: the "
                        "config's models_dir, else $VL_DISTILL_YCB_MODELS, else "
                        "../shared/ycb_models)")
    p.add_argument("--out", default=None, help="output dataset folder; overrides out_dir")
    p.add_argument("--seed", type=int, default=None,
                   help="master random seed (non-negative); overrides seed")
    p.add_argument("--views-scale", type=float, default=1.0,
                   help="multiply every split's views by this factor, e.g. 0.1 for a quick "
                        "smoke dataset (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides with dotted keys, e.g. image_size=128 "
                        "splits.train.views=10")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Render the dataset; 0 on success, 2 on a configuration or models problem."""
    import time

    from ..sim.crop_dataset import RenderError, load_render_spec, render_dataset

    overrides = list(getattr(args, "overrides", None) or [])
    # explicit options win over KEY=VALUE overrides and the config file
    if getattr(args, "models_dir", None) is not None:
        overrides.append(f"models_dir={_quote(args.models_dir)}")
    if getattr(args, "out", None) is not None:
        overrides.append(f"out_dir={_quote(args.out)}")
    if getattr(args, "seed", None) is not None:
        overrides.append(f"seed={int(args.seed)}")
    try:
        spec = load_render_spec(args.config, overrides,
                                views_scale=float(getattr(args, "views_scale", 1.0)))
        total = sum(len(s.objects) * s.views for s in spec.splits.values())
        started = time.perf_counter()
        out = render_dataset(spec, progress=not getattr(args, "no_progress", False))
    except RenderError as exc:
        print(f"vl-distill render: error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    print(f"[render] wrote {total} images to {out} in {elapsed:.1f} s "
          f"({1000.0 * elapsed / max(total, 1):.0f} ms/view)")
    return 0


def _quote(value: str) -> str:
    """A YAML scalar that always parses back to the same string (overrides are YAML)."""
    import json

    return json.dumps(str(value))

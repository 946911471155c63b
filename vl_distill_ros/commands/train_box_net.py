"""``vl-distill train-box-net``: train the class-agnostic box network on camera bags."""
from __future__ import annotations

import argparse
import sys

HELP = ("Train the learned colour proposer (perception/box_net.py, a small CenterNet on "
        "EfficientNet-Lite0) on 'vl-distill make-bag' bags; writes box_net.onnx, box_net.pt, "
        "train_log.jsonl, training_curves.png and the INT8 copy box_net_int8.onnx (with "
        "box_net_int8.json, its agreement with the float network) to --out. "
        "tools/make_box_net_bags.py makes the bags of config/train_box_net.yaml. --quantize "
        "MODEL skips training and writes MODEL's INT8 copy, calibrated on the config's bags.")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train-box-net`` subcommand and its options."""
    p = sub.add_parser("train-box-net", help="train the class-agnostic box network",
                       description=HELP)
    p.add_argument("--config", default="config/train_box_net.yaml",
                   help="training YAML (default: config/train_box_net.yaml)")
    p.add_argument("--out", required=True, help="output folder, e.g. runs/box_net")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. iterations=200 'bags=[/tmp/b*]'")
    p.add_argument("--quantize", metavar="MODEL", default="",
                   help="no training: write the INT8 copy of this box network .onnx file "
                        "(box_net_int8.onnx and .json in --out)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``vl-distill train-box-net``; returns the exit status."""
    from ..bags.bag_io import BagError
    from ..config import ConfigError
    from ..model.runtime import RuntimeBackendError
    from ..perception.box_net import BoxNet, BoxNetError
    from ..training.box_net import load_box_net_config, train_box_net, write_int8_copy

    progress = not args.no_progress
    try:
        cfg = load_box_net_config(args.config, args.overrides)
        if not cfg.bags:
            raise ConfigError("no training bags: set 'bags' in the config or as an override")
        if args.quantize:
            BoxNet(args.quantize)   # a clear error for a file that is not a box network
            path = write_int8_copy(cfg, args.quantize, args.out, progress)
        else:
            path = train_box_net(cfg, args.out, progress=progress)
    except (ConfigError, BagError, BoxNetError, RuntimeBackendError) as exc:
        print(f"vl-distill train-box-net: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"[train-box-net] wrote {path}")
    return 0

"""Make a bundle's INT8 student again from its float student (``vl-distill export --int8``'s
quantisation, as the code now does it), calibrated on the training images of the run's
config; every other member of the bundle stays byte for byte.

The images are the config's training set (``data.root`` and the auxiliary sets, rendered by
``vl-distill render`` as ``make default-bundle`` does), so the result is the INT8 member
``make default-bundle`` would write for the same float student.

Usage::

    .venv/bin/python tools/requantize_student.py vl_distill_ros/bundles/default_student.vdb \\
        --config config/ablation/gzsl_dim_noise.yaml

(writes the bundle in place unless ``--out`` is given; prints the new and the old record)
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Sequence

from vl_distill_ros.config import ConfigError, load_train_config
from vl_distill_ros.model.bundle import BundleError, load_bundle, replace_int8_model
from vl_distill_ros.model.runtime import RuntimeBackendError
from vl_distill_ros.training.data import load_training_set, load_vocabularies
from vl_distill_ros.training.image_folder import DatasetError
from vl_distill_ros.training.quantize import quantize_student


def main(argv: Sequence[str] | None = None) -> int:
    """Re-quantise; 0 on success, 2 (with the reason on stderr) on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="the .vdb bundle whose student is quantised")
    parser.add_argument("--config", required=True,
                        help="the training config of the bundle's run (its training images "
                             "calibrate the copy)")
    parser.add_argument("--out", default=None, help="where to write (default: in place)")
    args = parser.parse_args(argv)
    try:
        bundle = load_bundle(args.bundle, device="cpu")
        cfg = load_train_config(args.config)
        training = load_training_set(cfg.data, cfg.loss.cls_label_set,
                                     load_vocabularies(cfg.data))
        if training is None:
            raise DatasetError(f"the training images of {args.config} ({cfg.data.root}) are "
                               "not on this machine (vl-distill render makes them)")
        model, parity = quantize_student(bundle.student.eval(), training.data.images,
                                         bundle.text_embeddings.numpy())
        record = {**asdict(parity), "calibrated_on": "training images"}
        out = replace_int8_model(args.bundle, args.out or args.bundle, model, record)
        load_bundle(out)                                     # what was written loads
    except (BundleError, ConfigError, DatasetError, RuntimeBackendError, KeyError) as exc:
        print(f"requantize_student: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(json.dumps({"bundle": str(out), "new": record,
                      "old": bundle.manifest["student"].get("onnx_int8")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Give a bundle the description catalogue ``vl-distill export`` now writes (the manifest's
``descriptions``): the described labels of its own vocabulary, then of a vocabulary file
(default ``config/ycb_vocabulary.yaml``, the 78 YCB objects). Every member stays byte for
byte. A name given to the node without a description is then prompted with the catalogue's
(README, "Vocabulary and language enrichment").

Usage::

    .venv/bin/python tools/add_description_catalogue.py vl_distill_ros/bundles/default_student.vdb

(writes the bundle in place unless ``--out`` is given; prints how many labels it holds)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from vl_distill_ros.model.bundle import BundleError, load_bundle, replace_descriptions
from vl_distill_ros.model.descriptions import catalogue_vocabulary
from vl_distill_ros.model.vocabulary import Vocabulary, VocabularyError

REPO = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> int:
    """Add the catalogue; 0 on success, 2 (with the reason on stderr) on bad input."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="the .vdb bundle")
    parser.add_argument("--vocabulary", default=str(REPO / "config/ycb_vocabulary.yaml"),
                        help="vocabulary YAML whose descriptions join the bundle's own")
    parser.add_argument("--out", default=None, help="where to write (default: in place)")
    args = parser.parse_args(argv)
    try:
        bundle = load_bundle(args.bundle, device="cpu")
        catalogue = catalogue_vocabulary(bundle.vocabulary, Vocabulary.load(args.vocabulary))
        if catalogue is None:
            raise VocabularyError("neither the bundle nor the vocabulary has a description")
        out = replace_descriptions(args.bundle, args.out or args.bundle, catalogue)
        written = load_bundle(out)                           # what was written loads
    except (BundleError, VocabularyError, OSError) as exc:   # OSError: --out a folder
        print(f"add_description_catalogue: error: {' '.join(str(exc).split())}",
              file=sys.stderr)
        return 2
    print(json.dumps({"bundle": str(out), "catalogued_labels": len(written.descriptions)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``vl-distill`` subcommands: thin argparse layers over the library (one module each)."""

"""`biopost eval ...`: evaluation commands the modality packages contribute (BioReason-Pro:
`go`, CAFA-style GO metrics of prediction files)."""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    from biopost.data.cli import dispatch
    return dispatch("eval", sys.argv[1:] if argv is None else argv,
                    "Evaluation commands of the installed modality packages.")

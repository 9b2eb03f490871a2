#!/usr/bin/env python3
"""Continued pre-training (mid-training) of the Qwen3 backbone on biology text.

Rows are {"text": ...} (the FineFineWeb biology subset format), in a directory of *.jsonl[.gz]
shards, one file, or a HF dataset. Writes <output_dir>/final/, the --text_model_name of SFT/GRPO.

    python BioReason/train_finefineweb_midtrain.py --config BioReason/configs/cpt_tiny.yaml \\
        --output_dir runs/cpt_tiny

Exit codes: 0 done; 75 checkpointed after SIGTERM/SIGUSR1 (requeue me); anything else failed.
"""
import sys

from biopost.config import ConfigError, parse_config
from biopost.data.text import TextDataError
from biopost.train.cpt import CPTConfig, train_cpt


def main(argv=None) -> int:
    cfg = parse_config(CPTConfig, argv, prog="train_finefineweb_midtrain.py", description=__doc__)
    try:
        return train_cpt(cfg)
    except (ConfigError, TextDataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

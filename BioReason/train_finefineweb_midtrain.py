#!/usr/bin/env python3
"""Continued pre-training (mid-training) of the Qwen3 backbone on biology text.

Rows are {"text": ...} (the FineFineWeb biology subset format), in a directory of *.jsonl[.gz]
shards, one file, or a HF dataset. Writes <output_dir>/final/, the --text_model_name of SFT/GRPO.

    python BioReason/train_finefineweb_midtrain.py --config BioReason/configs/cpt_tiny.yaml \\
        --output_dir runs/cpt_tiny

Exit codes (as every stage, docs/contracts.md): 0 done; 1 bad input (one `error:` line); 2 bad
command line; 75 checkpointed after SIGTERM/SIGUSR1 (requeue me); a crash keeps its traceback.
"""
import sys

from biopost.config import parse_config
from biopost.stage import run_stage
from biopost.train.cpt import CPTConfig, train_cpt


def main(argv=None) -> int:
    cfg = parse_config(CPTConfig, argv, prog="train_finefineweb_midtrain.py", description=__doc__)
    return run_stage(train_cpt, cfg)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""SFT of a DNA reasoning model (DNA encoder -> projector -> Qwen3) on KEGG / variant-effect data.

Example (tiny CPU run):  python BioReason/train_dna_qwen.py --config BioReason/configs/sft_tiny.yaml
Every config key is also a flag (`--learning_rate 1e-4`); `--help` lists them. Exit code 75
means "checkpointed after SIGTERM/SIGUSR1, requeue me"; rerunning the same command resumes.
"""
import sys

from biopost.train.sft import main

if __name__ == "__main__":
    sys.exit(main(prog="train_dna_qwen.py"))

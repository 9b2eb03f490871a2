#!/usr/bin/env python3
"""GRPO of a DNA reasoning model (DNA encoder -> projector -> Qwen3) on KEGG / variant-effect prompts.

Example (tiny CPU run, after the tiny SFT):  python BioReason/train_grpo.py --config BioReason/configs/grpo_tiny.yaml
Warm start: --init sft --sft_checkpoint <sft run>/checkpoints/last [--merge_sft true]; cold: --init base.
Every config key is also a flag (`--beta 1e-3`); `--help` lists them and explains the batch sizes.
Exit code 75 means "checkpointed after SIGTERM/SIGUSR1, requeue me"; rerunning the same command resumes.
"""
import sys

from biopost.train.grpo import main

if __name__ == "__main__":
    sys.exit(main(prog="train_grpo.py"))

#!/usr/bin/env python3
"""Evaluate a DNA reasoning checkpoint on the KEGG / variant-effect ID and OOD test splits.

The name is kept for users of the published code; `--engine hf` (transformers with a KV cache)
is the default and, until a vLLM engine can be tested, the only engine.
Example:  python BioReason/eval_kegg_dna_vllm.py --run_dir runs/sft_tiny --eval_split both
Writes <run_dir>/eval/<split>[@<label>]/{metrics.json,predictions.jsonl}.
"""
import sys

from biopost.eval.run import main

if __name__ == "__main__":
    sys.exit(main(prog="eval_kegg_dna_vllm.py"))

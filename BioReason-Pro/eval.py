#!/usr/bin/env python3
"""Evaluate a protein reasoning checkpoint on the GO ID and OOD test splits (or the val probes).

Greedy decoding by default: the answers are unscored GO id sets, so metrics.json leads with the
IA-weighted F1 (`f1`, per aspect MF_/BP_/CC_ and pooled). With `--num_samples k` (k >= 2) every
protein gets k sampled answers (`--temperature`, `--top_p`, `--top_k`; `--do_sample` is implied)
and a GO term's score is the fraction of the k answers that name it (propagated to ancestors as
the maximum over descendants, as cafaeval does); metrics.json then leads with `fmax` (the IA-weighted
Fmax over cafaeval's thresholds, pooled over MF/BP/CC), with per-aspect Fmax / weighted Fmax / Smin,
the CAFA5 mean (`cafa5`: the mean IA-weighted Fmax over MF, BP and CC) and the F1 of the majority
answer (terms in at least half of the samples). `computed` in metrics.json says which it was.
Example:  python BioReason-Pro/eval.py --run_dir runs/protein_sft_tiny --eval_split both --num_samples 8
Writes <run_dir>/eval/<split>[@<label>]/{metrics.json,predictions.jsonl}.
"""
import sys

from biopost.eval.run import main

if __name__ == "__main__":
    sys.exit(main(prog="eval.py"))

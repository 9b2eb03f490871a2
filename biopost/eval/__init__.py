"""Evaluation: parse answers, score them, and write the metrics files the harvester reads.

Nothing here imports torch or transformers at module level: the harvester and login-node
tools import these modules too.
  parse.py           answers out of completions (<think> ... </think>, `Answer:`), label
                     normalization; shared by evaluation and the GRPO rewards
  classification.py  KEGG / variant-effect metrics: accuracy, macro-F1 over the gold label
                     set, per-class precision/recall/F1, bootstrap intervals
  metrics_file.py    eval/<split>[@<label>]/{predictions.jsonl, metrics.json}: provenance,
                     validated atomic writing, reading, recomputing metrics from predictions
  run.py             the evaluation script (generation, then the three above)
"""

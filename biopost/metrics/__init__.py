"""The metric math a Task owns: answer parsing and scoring, shared by evaluation and the rewards.

Pure Python (no torch, no transformers), below evaluation and training in the import order, so
`biopost.tasks` can use it without importing the evaluation stage.
  parse.py           answers out of completions (<think> ... </think>, `Answer:`), label
                     normalization; shared by evaluation and the GRPO rewards
  classification.py  KEGG / variant-effect metrics: accuracy, macro-F1 over the gold label
                     set, per-class precision/recall/F1, bootstrap intervals
  multilabel.py      Fmax / Smin / weighted F1 over weighted label sets (GO terms are one use)
"""

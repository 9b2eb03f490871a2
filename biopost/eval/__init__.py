"""Evaluation: generate answers, score them with the task's metrics, and write the metrics files
the harvester reads. The metric math itself lives in biopost.metrics (tasks use it too).

Nothing here imports torch or transformers at module level: the harvester and login-node
tools import these modules too.
  metrics_file.py    eval/<split>[@<label>]/{predictions.jsonl, metrics.json}: provenance,
                     validated atomic writing, reading, recomputing metrics from predictions
  run.py             the evaluation script (generation, then the task's metrics, then the file)
"""

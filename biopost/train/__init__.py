"""Training stages (cpt.py, sft.py, grpo.py) and what they share (checkpoints, signals, schedules)."""

"""Learning-rate schedules as multipliers of the peak rate, for torch's LambdaLR.

A plain function of the step keeps the scheduler's state to one integer, so resuming is exact.
"""
import math

SCHEDULES = ("cosine", "constant", "linear", "wsd")


def lr_multiplier(step: int, *, kind: str, warmup_steps: int, total_steps: int,
                  min_lr_ratio: float = 0.0, decay_fraction: float = 0.2) -> float:
    """Multiplier for optimizer step `step` (0-based). Warmup is linear from 1/(warmup+1)."""
    if kind not in SCHEDULES:
        from biopost.config import ConfigError
        raise ConfigError(f"lr_scheduler_type: unknown schedule {kind!r} (choose from {', '.join(SCHEDULES)})")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if kind == "constant":
        return 1.0
    total = max(total_steps, warmup_steps + 1)
    if kind == "wsd":
        # warmup-stable-decay: flat until the last `decay_fraction` of training, then linear to min.
        decay_steps = max(1, int(round(decay_fraction * (total - warmup_steps))))
        decay_start = total - decay_steps
        if step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start + 1) / decay_steps)
        return 1.0 - (1.0 - min_lr_ratio) * progress
    progress = min(1.0, (step - warmup_steps + 1) / max(1, total - warmup_steps))
    if kind == "linear":
        return 1.0 - (1.0 - min_lr_ratio) * progress
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

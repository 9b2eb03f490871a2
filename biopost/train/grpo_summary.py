"""The one-file summary of a finished GRPO run: `train_summary.json` in its run directory.

Why: a GRPO run in which every group's completions got the same reward has zero advantages and
hence zero gradient from the policy term; it "finishes" and its evaluation reads like a result
(the demo's cold-start cell scored 0.00 for 12 steps without saying why). The summary makes that
visible downstream: the sweep runner copies `train_summary.json` into the cell's final
status.json under `summary` (biopost/sweeps/runner.py), and the harvester's notes column says
"no learning signal" when every logged step had zero reward spread in every group.

Computed from train_log.jsonl (the per-step rollout statistics GRPO logs: `reward`,
`frac_reward_zero_std`), so it needs nothing from the training loop but one call at its end.
Standard library only: the runner and the harvester read what it writes on login nodes.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

SUMMARY_FILE = "train_summary.json"
SCHEMA = "biopost.train_summary/v1"
# A step whose every group had zero reward std: frac_reward_zero_std is 1.0 up to float noise.
_ALL_ZERO = 1.0 - 1e-9


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def grpo_summary(log_entries: list[dict]) -> dict:
    """Summary of GRPO's per-step log entries (entries without a `reward` -- evaluations, other
    records -- are ignored).

    steps: logged optimizer steps; frac_steps_zero_std: fraction of them whose every group had
    zero reward std (no advantage, no policy gradient); mean_reward / final_reward: the total
    weighted reward, mean over steps and at the last step; no_learning_signal: every logged step
    was such a step (the policy term never moved the model; only the KL term could)."""
    steps = [e for e in log_entries if isinstance(e, dict) and _finite(e.get("reward"))]
    zero = [e for e in steps if _finite(e.get("frac_reward_zero_std")) and e["frac_reward_zero_std"] >= _ALL_ZERO]
    rewards = [float(e["reward"]) for e in steps]
    n = len(steps)
    out = {"schema": SCHEMA, "stage": "grpo", "steps": n,
           "last_step": steps[-1].get("step") if steps else None,
           "frac_steps_zero_std": round(len(zero) / n, 4) if n else None,
           "mean_reward": round(sum(rewards) / n, 6) if n else None,
           "final_reward": round(rewards[-1], 6) if n else None,
           "no_learning_signal": bool(n) and len(zero) == n}
    per_func = sorted({k for e in steps for k in e if k.startswith("rewards/")})
    if per_func:
        out["mean_rewards"] = {k.split("/", 1)[1]: round(sum(float(e[k]) for e in steps if _finite(e.get(k)))
                                                         / max(1, sum(_finite(e.get(k)) for e in steps)), 6)
                               for k in per_func}
    return out


def write_grpo_summary(run_dir) -> dict:
    """Summarize <run_dir>/train_log.jsonl into <run_dir>/train_summary.json; returns the summary.
    A line cut by a kill is skipped, as JsonlLog does on resume."""
    from biopost.files import write_json_atomic

    run_dir = Path(run_dir)
    entries = []
    log_path = run_dir / "train_log.jsonl"
    if log_path.is_file():
        for line in log_path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    summary = grpo_summary(entries)
    write_json_atomic(run_dir / SUMMARY_FILE, summary, indent=1)
    return summary

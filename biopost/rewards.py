"""Reward registry for GRPO: modality packages register named reward functions here.

A reward function scores a batch of completions:

    fn(completions: list[str], rows: list[dict]) -> list[float]

`completions[i]` is the decoded completion (stop token removed) and `rows[i]` the dataset row of
its prompt, with the key `gold` added by the trainer (the task's gold answer, `task.gold(row)`),
so a reward needs no task object. One float per completion; the trainer weights and sums them.

The core never imports a modality package: `BioReason/train_grpo.py` imports `bioreason.rewards`
(correctness, format, concise), which calls `register_reward`. This module imports neither torch
nor transformers.
"""
from __future__ import annotations

from typing import Callable

RewardFn = Callable[[list, list], list]

REWARDS: dict[str, RewardFn] = {}
# where the known rewards live, only to make the "not registered" error helpful
KNOWN_REWARD_PACKAGES = {"correctness": "bioreason.rewards", "format": "bioreason.rewards",
                         "concise": "bioreason.rewards"}


def register_reward(name: str, fn: RewardFn, *, replace: bool = False) -> RewardFn:
    """Register `fn` under `name`. Registering a different function under a taken name is an
    error (two packages silently fighting over "format" would change what a run optimizes)."""
    if not name or not isinstance(name, str):
        raise ValueError(f"reward name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise TypeError(f"reward {name!r}: {fn!r} is not callable")
    old = REWARDS.get(name)
    if old is not None and old is not fn and not replace:
        raise ValueError(f"reward {name!r} is already registered ({_describe(old)}); pass replace=True to override")
    REWARDS[name] = fn
    return fn


def get_reward(name: str) -> RewardFn:
    if name not in REWARDS:
        hint = KNOWN_REWARD_PACKAGES.get(name)
        extra = f" (import {hint} first: the entry scripts do)" if hint else ""
        raise KeyError(f"reward {name!r} is not registered{extra}; registered: {', '.join(sorted(REWARDS)) or 'none'}")
    return REWARDS[name]


def registered_rewards() -> list[str]:
    return sorted(REWARDS)


def resolve_rewards(names: list[str], weights: list[float] | None) -> list[tuple[str, RewardFn, float]]:
    """(name, function, weight) for each requested reward; empty weights mean 1.0 each."""
    if not names:
        raise ValueError("reward_funcs: at least one reward function is needed")
    if len(set(names)) != len(names):
        raise ValueError(f"reward_funcs: duplicate names in {names}")
    weights = list(weights) if weights else [1.0] * len(names)
    if len(weights) != len(names):
        raise ValueError(f"reward_weights has {len(weights)} values for {len(names)} reward_funcs ({', '.join(names)})")
    return [(n, get_reward(n), float(w)) for n, w in zip(names, weights)]


def score(fn: RewardFn, name: str, completions: list[str], rows: list[dict]) -> list[float]:
    """Call a reward function and check what it returned (one finite number per completion)."""
    out = list(fn(completions, rows))
    if len(out) != len(completions):
        raise ValueError(f"reward {name!r} returned {len(out)} values for {len(completions)} completions")
    values = []
    for i, v in enumerate(out):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"reward {name!r} returned {v!r} for completion {i}: expected a number") from None
        if f != f or f in (float("inf"), float("-inf")):
            raise ValueError(f"reward {name!r} returned {f} for completion {i}: expected a finite number")
        values.append(f)
    return values


def _describe(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"

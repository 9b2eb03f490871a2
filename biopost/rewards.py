"""GRPO rewards: named functions scoring a batch of completions, shared by every modality.

A reward function scores a batch of completions:

    fn(completions: list[str], rows: list[dict]) -> list[float]

`completions[i]` is the decoded completion (stop token removed) and `rows[i]` the dataset row of
its prompt, with the key `gold` added by the trainer (the task's gold answer, `task.gold(row)`).
One float per completion; the trainer weights and sums them. A function whose attribute
`needs_task` is true is called with the stage's task as a keyword (`fn(completions, rows, task=...)`).

Built in (every task has them):
    correctness  `task.example_score(task.parse(completion), row)`: the task's own per-example
                 metric, so the reward and the evaluation metric cannot disagree (KEGG: 1.0 when
                 the normalized answer equals the gold label; GO: the IA-weighted F1).
    format       1.0 for `<think> ... </think>` exactly once (each tag once, the block opening
                 the completion, spanning any number of lines) followed by a non-empty answer,
                 else 0.0. The published code's regexes lacked DOTALL, so a multi-line think
                 block never matched and this reward never fired.
    concise      a length bonus in [0, 1] for completions that give an answer: 1.0 up to
                 CONCISE_TARGET_CHARS characters, falling linearly to 0.0 at
                 CONCISE_ZERO_CHARS; 0.0 without a parsed answer (so saying nothing earns
                 nothing). Characters, not tokens, so the reward does not depend on the tokenizer.
Modality packages register more by name (`REWARDS.register_lazy(name, "pkg.module:fn")`).
This module imports neither torch nor transformers.
"""
from __future__ import annotations

import functools
import re
from typing import Callable

from biopost.errors import UserError
from biopost.metrics.parse import THINK_CLOSE, THINK_OPEN, extract_answer, strip_stop_tokens  # torch-free
from biopost.registry import Registry

RewardFn = Callable[[list, list], list]

REWARDS: Registry[RewardFn] = Registry("reward")

CONCISE_TARGET_CHARS = 1024
CONCISE_ZERO_CHARS = 4096

# One think block opening the completion, then the rest. DOTALL: the block spans lines.
_THINK_BLOCK = re.compile(r"\A\s*<think>(?P<think>.*?)</think>(?P<after>.*)\Z", re.DOTALL)


class RewardError(UserError, ValueError):
    """A bad reward configuration or a reward function that returned something unusable."""


def register_reward(name: str, fn: RewardFn, *, replace: bool = False) -> RewardFn:
    """Register `fn` under `name`. Registering a different function under a taken name is an
    error (two packages silently fighting over "format" would change what a run optimizes)."""
    if not callable(fn):
        raise TypeError(f"reward {name!r}: {fn!r} is not callable")
    return REWARDS.register(name, fn, replace=replace)


def get_reward(name: str) -> RewardFn:
    return REWARDS.get(name)


def registered_rewards() -> list[str]:
    return REWARDS.names()


def bind(fn: RewardFn, task=None) -> RewardFn:
    """`fn` ready to call as fn(completions, rows): task-scored rewards get the task bound."""
    if getattr(fn, "needs_task", False):
        if task is None:
            raise RewardError(f"reward {getattr(fn, '__name__', fn)!r} scores with the task's metric: give a task")
        return functools.partial(fn, task=task)
    return fn


def resolve_rewards(names: list[str], weights: list[float] | None, task=None) -> list[tuple[str, RewardFn, float]]:
    """(name, function, weight) for each requested reward; empty weights mean 1.0 each."""
    if not names:
        raise RewardError("reward_funcs: at least one reward function is needed")
    if len(set(names)) != len(names):
        raise RewardError(f"reward_funcs: duplicate names in {names}")
    weights = list(weights) if weights else [1.0] * len(names)
    if len(weights) != len(names):
        raise RewardError(f"reward_weights has {len(weights)} values for {len(names)} reward_funcs ({', '.join(names)})")
    return [(n, bind(get_reward(n), task), float(w)) for n, w in zip(names, weights)]


def score(fn: RewardFn, name: str, completions: list[str], rows: list[dict]) -> list[float]:
    """Call a reward function and check what it returned (one finite number per completion)."""
    out = list(fn(completions, rows))
    if len(out) != len(completions):
        raise RewardError(f"reward {name!r} returned {len(out)} values for {len(completions)} completions")
    values = []
    for i, v in enumerate(out):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise RewardError(f"reward {name!r} returned {v!r} for completion {i}: expected a number") from None
        if f != f or f in (float("inf"), float("-inf")):
            raise RewardError(f"reward {name!r} returned {f} for completion {i}: expected a finite number")
        values.append(f)
    return values


# --- the built-in rewards --------------------------------------------------------------------------

def correctness(completions: list[str], rows: list[dict], *, task) -> list[float]:
    return [float(task.example_score(task.parse(text), row)) for text, row in zip(completions, rows, strict=True)]


correctness.needs_task = True


def is_well_formatted(text: str | None) -> bool:
    if not text:
        return False
    text = strip_stop_tokens(text)
    if text.count(THINK_OPEN) != 1 or text.count(THINK_CLOSE) != 1:
        return False
    m = _THINK_BLOCK.match(text)
    return m is not None and extract_answer(text) is not None and bool(m.group("after").strip())


def format_reward(completions: list[str], rows: list[dict]) -> list[float]:
    return [1.0 if is_well_formatted(t) else 0.0 for t in completions]


def concise_score(text: str | None, target: int = CONCISE_TARGET_CHARS, zero: int = CONCISE_ZERO_CHARS) -> float:
    if not text or extract_answer(text) is None:
        return 0.0
    n = len(strip_stop_tokens(text))
    if n <= target:
        return 1.0
    if n >= zero:
        return 0.0
    return (zero - n) / (zero - target)


def concise(completions: list[str], rows: list[dict]) -> list[float]:
    return [concise_score(t) for t in completions]


register_reward("correctness", correctness)
register_reward("format", format_reward)
register_reward("concise", concise)

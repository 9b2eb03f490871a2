"""DNA-task rewards for GRPO (KEGG, variant effect), registered with the core by name.

    correctness  1.0 when the answer (after the last `</think>`, after `Answer:` if present)
                 equals the gold label once both are normalized, else 0.0. Parsing and
                 normalization are evaluation's (`biopost.eval.parse`), so a reward never
                 accepts an answer that evaluation would score differently.
    format       1.0 for `<think> ... </think>` exactly once (each tag once, the block opening
                 the completion, spanning any number of lines) followed by a non-empty answer,
                 else 0.0. The published code's regexes lacked DOTALL, so a multi-line think
                 block never matched and this reward never fired.
    concise      a length bonus in [0, 1] for completions that give an answer: 1.0 up to
                 CONCISE_TARGET_CHARS characters, falling linearly to 0.0 at
                 CONCISE_ZERO_CHARS; 0.0 without a parsed answer (so saying nothing earns
                 nothing). Characters, not tokens, so the reward does not depend on the tokenizer.

Signature (biopost.train.rewards): fn(completions: list[str], rows: list[dict]) -> list[float];
`rows[i]["gold"]` is the gold answer the trainer adds (falls back to `rows[i]["answer"]`).
"""
from __future__ import annotations

import re

from biopost.eval.parse import THINK_CLOSE, THINK_OPEN, extract_answer, normalize_label, strip_stop_tokens
from biopost.train.rewards import register_reward

CONCISE_TARGET_CHARS = 1024
CONCISE_ZERO_CHARS = 4096

# One think block opening the completion, then the rest. DOTALL: the block spans lines.
_THINK_BLOCK = re.compile(r"\A\s*<think>(?P<think>.*?)</think>(?P<after>.*)\Z", re.DOTALL)


def _gold(row: dict) -> str | None:
    gold = row.get("gold", row.get("answer"))
    return None if gold is None else str(gold)


def correctness(completions: list[str], rows: list[dict]) -> list[float]:
    out = []
    for text, row in zip(completions, rows, strict=True):
        answer, gold = extract_answer(text), _gold(row)
        ok = answer is not None and gold is not None and normalize_label(answer) == normalize_label(gold)
        out.append(1.0 if ok else 0.0)
    return out


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

"""Answers out of model completions, and the label normalization every comparison uses.

A completion is `<think>\\n...\\n</think>\\n\\nAnswer: X` (the SFT target format) or any looser
variant a model produces: no think block, no `Answer:`, markdown, quotes, a final period, a stop
token at the end. Evaluation and the GRPO rewards both parse through here, so a reward never
accepts an answer that evaluation would score differently.

Every pattern is compiled with DOTALL: think blocks and answers span lines, and a pattern that
silently stops at the first newline was a bug of the published code.
"""
from __future__ import annotations

import re
import unicodedata

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
# Chat-template end tokens a decoded completion may still carry (and the padding after them).
STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")

# `Answer:`, also as markdown (`**Answer:**`, `**Answer**:`) and in `Final answer:`.
_ANSWER_TAG = re.compile(r"\banswer\s*(?:\*\*|__)?\s*:", re.IGNORECASE | re.DOTALL)
_TRAILING_PUNCT = ".,;:!?。"
# Wrappers removed only in pairs: a lone apostrophe can belong to the label (3', Alzheimers').
_PAIRS = (("**", "**"), ("__", "__"), ("'", "'"), ("\u2018", "\u2019"))
# Removed wherever they stand at either end: never part of a label.
_LOOSE = "*`\"\u201c\u201d"

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
                         "\u2032": "'", "\u00b4": "'",
                         "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
                         "\u2033": '"',
                         "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-",
                         "\u2014": "-", "\u2015": "-", "\u2212": "-", "\ufe63": "-",
                         "\uff0d": "-"})


def strip_stop_tokens(text: str) -> str:
    """The completion without the end-of-turn / end-of-text tokens (and whitespace) at its end."""
    while True:
        text = text.rstrip()
        for token in STOP_TOKENS:
            if text.endswith(token):
                text = text[:-len(token)]
                break
        else:
            return text


def split_reasoning(text: str) -> tuple[str | None, str]:
    """(think block content, text after it).

    The think block runs from `<think>` to the LAST `</think>`; a completion without `<think>`
    but with `</think>` (chat templates that open the block in the prompt) has everything before
    `</think>` as its reasoning. Without `</think>` there is no think block: (None, text), or,
    when `<think>` was opened and never closed, (the unfinished reasoning, "") -- there is no
    answer to read then, which `extract_answer` reports as None.
    """
    text = strip_stop_tokens(text)
    close = text.rfind(THINK_CLOSE)
    if close < 0:
        open_ = text.find(THINK_OPEN)
        if open_ < 0:
            return None, text.strip()
        return text[open_ + len(THINK_OPEN):].strip(), ""
    head, after = text[:close], text[close + len(THINK_CLOSE):]
    open_ = head.find(THINK_OPEN)
    think = head[open_ + len(THINK_OPEN):] if open_ >= 0 else head
    return think.strip(), after.strip()


PARSE_RULE = ("an answer needs a closing </think> or an `Answer:` tag: the text after the last </think> "
              "(an unclosed <think> gives none), after the last `Answer:` there if any, first non-empty line "
              "with quotes, markdown and trailing punctuation stripped; anything else is unparsed and "
              "counts as wrong")


def extract_answer(text: str | None) -> str | None:
    """The answer a completion gives, or None when it gives none (unparsed). PARSE_RULE says it
    in one sentence (written into metrics.json).

    An answer needs a closing `</think>` or an `Answer:` tag: free text without either is not an
    answer, however it starts (a truncated ramble's first line must not count as one). After the
    last `</think>` (an unclosed `<think>` leaves no answer); after the last `Answer:` there, if
    any; then the first line that is not empty once whitespace, quotes, markdown bold / backticks
    and trailing punctuation are stripped from it.
    """
    if text is None:
        return None
    closed = THINK_CLOSE in text
    _, after = split_reasoning(text)  # "" when a think block never closed
    if THINK_OPEN in after:  # a second think block opened after the last close: unfinished
        return None
    tags = list(_ANSWER_TAG.finditer(after))
    if not tags and not closed:
        return None
    if tags:
        after = after[tags[-1].end():]
    for line in after.splitlines():
        answer = _clean(line)
        if answer:
            return answer
    return None


def _clean(s: str) -> str:
    """Strip wrappers and trailing punctuation until nothing changes (they nest: `"**X.**"`)."""
    while True:
        before = s
        s = s.strip().strip(_LOOSE).strip().rstrip(_TRAILING_PUNCT).rstrip()
        for left, right in _PAIRS:
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left):-len(right)]
        if s == before:
            return s


def normalize_label(text: str) -> str:
    """The form labels are compared in: "Parkinson's disease." == "parkinson’s  disease".

    Unicode compatibility forms folded (NFKC), curly quotes and dashes made ASCII, case-folded,
    whitespace collapsed, trailing periods removed. `;` separates the parts of a variant-effect
    answer (`pathogenic; Disease`): each part is normalized and the parts rejoined with "; ",
    so spacing around the separator does not matter; empty parts are dropped.
    """
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).casefold()
    parts = (" ".join(part.split()).rstrip(".").rstrip() for part in text.split(";"))
    return "; ".join(p for p in parts if p)

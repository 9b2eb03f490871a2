"""Task registry: what a modality package tells the core about one of its tasks.

The core never imports a modality package; an entry script imports it (`import bioreason`),
which registers its tasks here. A task knows its row schema, how to turn a row into chat
messages and a supervised target, and what the gold label is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from biopost.data.schema import RowSchema


@dataclass(frozen=True)
class Task:
    name: str
    modality: str                                   # "dna" | "protein"
    schema: RowSchema                               # what evaluation needs
    train_schema: RowSchema                         # what SFT needs (adds the reasoning field)
    prompt_messages: Callable[[dict], list[dict]]   # row -> system/user messages with bio items
    target_text: Callable[[dict], str]              # row -> assistant turn for SFT
    gold: Callable[[dict], str]                     # row -> gold answer (from gold columns only)
    headline: str = "accuracy"


TASKS: dict[str, Task] = {}
# where the known tasks live, only to make the "not registered" error helpful
KNOWN_TASK_PACKAGES = {"kegg": "bioreason", "vep": "bioreason", "go": "bioreason_pro"}


def register_task(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        hint = KNOWN_TASK_PACKAGES.get(name)
        extra = f" (import {hint} first: its entry scripts do)" if hint else ""
        raise KeyError(f"task {name!r} is not registered{extra}; registered: {', '.join(sorted(TASKS)) or 'none'}")
    return TASKS[name]


def reasoning_text(reasoning) -> str:
    """KEGG-style reasoning is a string or {reasoning_steps: [...], labels: {...}}."""
    if reasoning is None:
        return ""
    if isinstance(reasoning, dict):
        steps = reasoning.get("reasoning_steps") or []
        return "\n".join(s.strip() for s in steps)
    return str(reasoning).strip()


def think_then_answer(reasoning: str, answer: str) -> str:
    """The SFT target of both modalities: a think block, a blank line, then the answer."""
    return f"<think>\n{reasoning}\n</think>\n\nAnswer: {answer}"

"""Tasks: what a modality package tells the core about one of its tasks.

A task knows its row schema, how to turn a row into chat messages and a supervised target, what
the gold label is — and it owns its metric: `parse` reads the answer out of a completion,
`metrics` scores a split, `example_score` scores one answer. The GRPO `correctness` reward is
`example_score` (biopost.rewards), so a reward can never accept an answer the metric rejects.

Tasks are registered by name in `TASKS`; modality packages register them lazily from their
torch-free plug-in module (`TASKS.register_lazy("kegg", "bioreason.tasks:KEGG")`), so naming a
task in a sweep spec imports nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from biopost.data.schema import RowSchema
from biopost.registry import Registry


@dataclass
class MetricResult:
    """What `Task.metrics` returns: headline and other metrics, their bootstrap intervals, one
    score per example (what `correct` / `score` in predictions.jsonl holds), and a sentence
    saying exactly what was computed (written into metrics.json)."""
    metrics: dict[str, float]
    ci95: dict[str, list[float]]
    per_example: list[float]
    computed: str
    extra: dict[str, Any] = field(default_factory=dict)   # more metrics.json fields (per_class, ...)


@dataclass(frozen=True)
class Task:
    name: str
    modality: str                                   # a registered modality's name
    schema: RowSchema                               # what evaluation needs
    train_schema: RowSchema                         # what SFT needs (adds the reasoning field)
    prompt_messages: Callable[..., list[dict]]      # (row, system_prompt=None) -> messages with bio items
    target_text: Callable[[dict], str]              # row -> assistant turn for SFT
    gold: Callable[[dict], Any]                     # row -> gold answer (from gold columns only)
    parse: Callable[[str], Any]                     # completion text -> answer, None when unparsed
    metrics: Callable[..., MetricResult]            # (golds, parsed, bootstrap_resamples=1000, seed=0)
    example_score: Callable[[Any, dict], float]     # (parsed answer, row with "gold") -> score in [0, 1]
    headline: str = "accuracy"
    prediction_field: str = "correct"               # predictions.jsonl's per-example field
    # Scored answers (evaluation with --num_samples k >= 2), optional: `score_samples(parsed_list)`
    # turns one example's k parsed answers into one scored answer (e.g. label -> frequency over the
    # samples; None when none parsed) and `scored_metrics(golds, scored, bootstrap_resamples, seed)`
    # computes the metrics of scored answers (e.g. Fmax over thresholds), led by `scored_headline`.
    score_samples: Callable[[list], Any] | None = None
    scored_metrics: Callable[..., MetricResult] | None = None
    scored_headline: str = "fmax"
    # Task-specific row checks after the generic validation, optional: `check_row(row) -> row`
    # (cleaned) or raises DataError (e.g. GO ids that exist, alt ids mapped to primary ids).
    check_row: Callable[[dict], dict] | None = None


TASKS: Registry[Task] = Registry("task")


def register_task(task: Task) -> Task:
    return TASKS.register(task.name, task)


def get_task(name: str) -> Task:
    return TASKS.get(name)


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


# --- the classification task family (one label per example) --------------------------------------

def classification_metrics(golds, parsed, bootstrap_resamples: int = 1000, seed: int = 0) -> MetricResult:
    """Accuracy and macro-F1 over the gold label set with bootstrap intervals: the metric of every
    single-label task (KEGG disease, variant effect, a toy task in the tests)."""
    from biopost.metrics.classification import bootstrap_ci, classification_metrics as compute, majority_rate
    from biopost.metrics.parse import normalize_label
    m = compute(golds, parsed)
    metrics = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    ci95 = ({k: bootstrap_ci(golds, parsed, metric=k, n_resamples=bootstrap_resamples, seed=seed)
             for k in ("accuracy", "macro_f1")} if bootstrap_resamples > 0 else {})
    correct = [float(p is not None and normalize_label(p) == normalize_label(g)) for g, p in zip(golds, parsed)]
    from biopost.metrics.parse import PARSE_RULE
    computed = ("accuracy and macro-F1 over the gold label set (one-vs-rest) of exact matches of the "
                "normalized answer parsed after </think> / Answer:; unparsed answers count as wrong; "
                f"ci95: percentile bootstrap over examples ({bootstrap_resamples} resamples)")
    return MetricResult(metrics, ci95, correct, computed,
                        extra={"per_class": m["per_class"], "majority_rate": majority_rate(golds),
                               "parse_rule": PARSE_RULE})


def label_match(parsed, row: dict) -> float:
    """1.0 when the parsed answer equals the row's gold label once both are normalized."""
    from biopost.metrics.parse import normalize_label
    gold = row.get("gold", row.get("answer"))
    if parsed is None or gold is None:
        return 0.0
    return 1.0 if normalize_label(str(parsed)) == normalize_label(str(gold)) else 0.0


def parse_answer(text: str):
    from biopost.metrics.parse import extract_answer
    return extract_answer(text)


def classification_task(name: str, modality: str, schema: RowSchema, train_schema: RowSchema,
                        prompt_messages, target_text, gold) -> Task:
    """A single-label task: parse after </think> / Answer:, accuracy headline, exact-match score."""
    return Task(name, modality, schema, train_schema, prompt_messages, target_text, gold,
                parse=parse_answer, metrics=classification_metrics, example_score=label_match)

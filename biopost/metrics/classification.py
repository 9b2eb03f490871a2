"""Metrics of single-label answers (KEGG disease, variant effect): accuracy, macro-F1 over the
gold label set, per-class precision / recall / F1, and percentile-bootstrap intervals.

KEGG has dozens of classes: every class is scored one-vs-rest and averaged (macro), never as a
binary positive/negative task, which is what the published code got wrong. The classes are the
labels that occur in the gold answers. A prediction outside that set (a disease that is not
among the golds, an unparsed answer) is no class of its own: it is a false negative of its
example's gold class and a false positive of none. This equals sklearn's
`f1_score(y_true, y_pred, labels=sorted(set(y_true)), average="macro", zero_division=0)` with
unparsed answers mapped to a sentinel label; sklearn is the test oracle, not a dependency.

Labels are compared after `normalize_label`; per-class results are keyed by normalized label.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from biopost.metrics.parse import normalize_label

METRICS = ("accuracy", "macro_f1")
# Resamples scored at once in bootstrap_ci: bounds memory to about CHUNK x n indices.
_CHUNK = 100


def exact_match(gold: str, parsed: str | None) -> bool:
    """Whether a parsed answer is correct; an unparsed one (None) never is."""
    return parsed is not None and normalize_label(parsed) == normalize_label(gold)


def _encode(golds: list[str], preds: list[str | None]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(sorted gold classes, gold class indices, prediction class indices with -1 for a
    prediction outside the gold classes or unparsed)."""
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold labels but {len(preds)} predictions")
    if not golds:
        raise ValueError("no examples to score")
    if any(g is None for g in golds):
        raise ValueError("a gold label is None: gold labels come from the data and must exist")
    gold_norm = [normalize_label(g) for g in golds]
    labels = sorted(set(gold_norm))
    index = {label: i for i, label in enumerate(labels)}
    y_true = np.array([index[g] for g in gold_norm], dtype=np.int64)
    y_pred = np.array([-1 if p is None else index.get(normalize_label(p), -1) for p in preds],
                      dtype=np.int64)
    return labels, y_true, y_pred


def _per_class_counts(y_true: np.ndarray, y_pred: np.ndarray, k: int):
    """(true positives, gold count, predicted count) per class; -1 predictions count nowhere."""
    hit = y_true == y_pred
    tp = np.bincount(y_true[hit], minlength=k)
    support = np.bincount(y_true, minlength=k)
    predicted = np.bincount(y_pred[y_pred >= 0], minlength=k)
    return tp, support, predicted


def _f1(tp: np.ndarray, support: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    # 2TP / (2TP + FP + FN) = 2TP / (predicted + support): sklearn's form, and 0 where both are 0.
    denom = predicted + support
    return np.divide(2.0 * tp, denom, out=np.zeros(tp.shape, dtype=float), where=denom > 0)


def classification_metrics(golds: list[str], preds: list[str | None]) -> dict:
    """{"accuracy", "macro_f1", "per_class": {label: {precision, recall, f1, support}}, "n",
    "n_unparsed"} of parsed answers `preds` (None = unparsed, counted wrong) against `golds`."""
    labels, y_true, y_pred = _encode(golds, preds)
    tp, support, predicted = _per_class_counts(y_true, y_pred, len(labels))
    f1 = _f1(tp, support, predicted)
    precision = np.divide(tp, predicted, out=np.zeros(len(labels)), where=predicted > 0)
    recall = tp / support  # every class has gold examples
    per_class = {label: {"precision": float(precision[i]), "recall": float(recall[i]),
                         "f1": float(f1[i]), "support": int(support[i])}
                 for i, label in enumerate(labels)}
    return {"accuracy": float(np.mean(y_true == y_pred)), "macro_f1": float(np.mean(f1)),
            "per_class": per_class, "n": len(golds),
            "n_unparsed": sum(p is None for p in preds)}


def _resampled_scores(y_true: np.ndarray, y_pred: np.ndarray, k: int, metric: str,
                      rows: np.ndarray) -> np.ndarray:
    """The metric on each resample; `rows` is (resamples, n) example indices."""
    if metric == "accuracy":
        return (y_true == y_pred)[rows].mean(axis=1)
    # macro-F1 of each resample over the classes present in that resample's golds, as the point
    # estimate would be computed on it. Counts of all resamples at once: class c of resample r
    # is bin r*k + c.
    r = rows.shape[0]
    offset = (np.arange(r) * k)[:, None]
    t, p = y_true[rows], y_pred[rows]
    size = r * k
    support = np.bincount((t + offset).ravel(), minlength=size).reshape(r, k)
    tp = np.bincount((t + offset)[t == p], minlength=size).reshape(r, k)
    predicted = np.bincount((p + offset)[p >= 0], minlength=size).reshape(r, k)
    f1 = _f1(tp, support, predicted)
    present = support > 0
    return (f1 * present).sum(axis=1) / present.sum(axis=1)


def bootstrap_ci(golds: list[str], preds: list[str | None], metric: str = "accuracy",
                 n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05) -> list[float]:
    """[lo, hi]: the percentile bootstrap interval of `metric` over examples.

    Examples are resampled with replacement `n_resamples` times from a numpy Generator seeded
    with `seed`, so the interval is the same on every run; lo / hi are the alpha/2 and
    1 - alpha/2 quantiles of the resampled metric.
    """
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: use one of {', '.join(METRICS)}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    labels, y_true, y_pred = _encode(golds, preds)
    rng = np.random.default_rng(seed)
    n = len(y_true)
    scores = []
    for start in range(0, n_resamples, _CHUNK):
        rows = rng.integers(0, n, size=(min(_CHUNK, n_resamples - start), n))
        scores.append(_resampled_scores(y_true, y_pred, len(labels), metric, rows))
    lo, hi = np.quantile(np.concatenate(scores), [alpha / 2, 1 - alpha / 2])
    return [float(lo), float(hi)]


def majority_rate(golds: list[str]) -> float:
    """Accuracy of always answering the most frequent gold label: the floor a model must beat."""
    if not golds:
        raise ValueError("no examples")
    counts = Counter(normalize_label(g) for g in golds)
    return counts.most_common(1)[0][1] / len(golds)

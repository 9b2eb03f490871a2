"""Weighted multi-label precision / recall / F over score thresholds: Fmax, Smin, coverage.

Generic over any label space: an evaluation is a set of *items* (the examples that have gold
labels), their gold label sets, scored predicted labels, and one non-negative weight per label
(1 for plain counting; an information content for weighted metrics; 0 takes a label out of the
evaluation). Label hierarchies, propagation and where the weights come from belong to the
caller (a modality package); this module knows only sets, scores and weights.

The averaging follows the CAFA evaluator (cafaeval 1.3.0, evaluation.py), which a modality's
metrics reproduce to 1e-6 (docs/go_metrics.md):

- thresholds are `np.arange(step, 1, step)` and a label is predicted at threshold t when its
  score is >= t (float comparison, exactly as cafaeval's `pred >= tau`);
- per threshold, for each item: predicted weight P, true-positive weight TP, false-positive
  weight FP = P - TP, false-negative weight FN = G - TP (G: the item's gold weight);
  precision TP/P for items with P > 0 and recall TP/G for items with G > 0 are *summed* over
  items, then normalized (`norm`): "cafa" divides precision by the number of items with P > 0
  (n, the covered items) and everything else by the number of items (ne); "pred" divides
  everything by n, "gt" everything by ne;
- misinformation mi = FP sum / norm, remaining uncertainty ru = FN sum / norm,
  S = sqrt(ru^2 + mi^2), coverage = n / ne; micro-averaged precision/recall from the summed
  TP / FP / FN;
- the best threshold is the *first* (lowest) threshold with the maximal F (minimal S) among the
  thresholds kept (cafaeval keeps those with unweighted coverage > 0; `best_index` takes the
  mask so the caller can apply that rule).

Inputs are flat numpy arrays (item index, label index[, score]) rather than dense matrices:
an evaluation over tens of thousands of labels and thousands of items then costs a sort and a few
`bincount`s instead of cafaeval's dense item x label matrix per threshold.
numpy only (no torch, no scipy).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NORMS = ("cafa", "pred", "gt")
# Items per block in threshold_curves: bounds the (items x thresholds) work arrays to ~100 MB.
_ITEM_BLOCK = 32768


def threshold_grid(step: float = 0.01) -> np.ndarray:
    """The thresholds cafaeval uses: `np.arange(step, 1, step)` (0.01 ... 0.99 by default).
    Built by the same call so every float is bit-identical to cafaeval's."""
    if not 0 < step < 1:
        raise ValueError(f"threshold step must be in (0, 1), got {step}")
    return np.arange(step, 1, step)


def max_by_pair(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_cols: int):
    """Deduplicate (row, col) pairs keeping the largest value; returned sorted by (row, col).

    This is how a label predicted twice for one item (or reached through two propagated
    descendants) counts once, with its highest score.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if rows.size == 0:
        return rows, cols, values
    key = rows * int(n_cols) + cols
    order = np.argsort(key, kind="stable")
    key = key[order]
    values = values[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    best = np.maximum.reduceat(values, starts)
    key = key[starts]
    return key // n_cols, key % n_cols, best


def unique_pairs(rows: np.ndarray, cols: np.ndarray, n_cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicated (row, col) pairs, sorted by (row, col)."""
    key = np.unique(np.asarray(rows, dtype=np.int64) * int(n_cols) + np.asarray(cols, dtype=np.int64))
    return key // n_cols, key % n_cols


@dataclass(frozen=True)
class Curves:
    """One value per threshold (arrays of len(thresholds)); cafaeval's column names."""
    thresholds: np.ndarray
    n_items: int        # ne: items with gold labels
    n: np.ndarray       # covered items: predicted weight > 0 at the threshold
    tp: np.ndarray      # normalized sums (see the module docstring)
    fp: np.ndarray
    fn: np.ndarray
    pr: np.ndarray
    rc: np.ndarray
    f: np.ndarray
    mi: np.ndarray
    ru: np.ndarray
    s: np.ndarray
    cov: np.ndarray
    pr_micro: np.ndarray
    rc_micro: np.ndarray
    f_micro: np.ndarray

    def row(self, i: int) -> dict:
        """Every curve's value at threshold index i, as plain floats."""
        out = {"threshold": float(self.thresholds[i])}
        for name in ("n", "tp", "fp", "fn", "pr", "rc", "f", "mi", "ru", "s", "cov",
                     "pr_micro", "rc_micro", "f_micro"):
            out[name] = float(getattr(self, name)[i])
        return out


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def f_score(pr: np.ndarray, rc: np.ndarray) -> np.ndarray:
    """2PR/(P+R), 0 where P+R = 0."""
    return _safe_div(2 * np.asarray(pr) * np.asarray(rc), np.asarray(pr) + np.asarray(rc))


def threshold_curves(n_items: int, truth_rows, truth_cols, pred_rows, pred_cols, pred_scores,
                     weights: np.ndarray | None = None, thresholds: np.ndarray | None = None,
                     norm: str = "cafa", n_labels: int | None = None) -> Curves:
    """Precision / recall / F / S / coverage at every threshold.

    Items are 0..n_items-1 (every item counts in ne, predicted or not); truth pairs
    (truth_rows[k], truth_cols[k]) and prediction triples must each be unique (see
    `unique_pairs`, `max_by_pair`). `weights[label]` >= 0 (None: 1 for every label). Items
    that are not in 0..n_items-1 are an error: the caller decides which predictions count.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if n_items <= 0:
        raise ValueError("no items with gold labels to evaluate")
    thresholds = threshold_grid() if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    if np.any(np.diff(thresholds) <= 0):
        raise ValueError("thresholds must be strictly increasing")
    truth_rows = np.asarray(truth_rows, dtype=np.int64)
    truth_cols = np.asarray(truth_cols, dtype=np.int64)
    pred_rows = np.asarray(pred_rows, dtype=np.int64)
    pred_cols = np.asarray(pred_cols, dtype=np.int64)
    pred_scores = np.asarray(pred_scores, dtype=np.float64)
    for name, r in (("truth", truth_rows), ("prediction", pred_rows)):
        if r.size and (r.min() < 0 or r.max() >= n_items):
            raise ValueError(f"{name} item index outside 0..{n_items - 1}")
    if n_labels is None:
        n_labels = int(max(truth_cols.max(initial=-1), pred_cols.max(initial=-1))) + 1
    if weights is None:
        weights = np.ones(n_labels)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.size < n_labels:
        raise ValueError(f"{weights.size} label weights for {n_labels} labels")
    if np.any(weights < 0) or not np.all(np.isfinite(weights)):
        raise ValueError("label weights must be finite and >= 0")

    k = thresholds.size
    # gold weight per item, and which predictions are true positives
    g_w = weights[truth_cols]
    n_gt = np.bincount(truth_rows, weights=g_w, minlength=n_items)
    w = weights[pred_cols]
    keep = w > 0
    pred_rows, pred_cols, pred_scores, w = pred_rows[keep], pred_cols[keep], pred_scores[keep], w[keep]
    truth_key = np.sort(truth_rows * n_labels + truth_cols)
    pred_key = pred_rows * n_labels + pred_cols
    pos = np.searchsorted(truth_key, pred_key)
    hit = np.zeros(pred_key.size, dtype=bool)
    inside = pos < truth_key.size
    hit[inside] = truth_key[pos[inside]] == pred_key[inside]
    # a prediction with score s counts at thresholds[:b], b = number of thresholds <= s
    bins = np.searchsorted(thresholds, pred_scores, side="right")

    sums = {name: np.zeros(k) for name in ("n", "tp", "fp", "fn", "pr", "rc")}
    for start in range(0, n_items, _ITEM_BLOCK):
        stop = min(start + _ITEM_BLOCK, n_items)
        m = (pred_rows >= start) & (pred_rows < stop)
        flat = (pred_rows[m] - start) * (k + 1) + bins[m]
        size = (stop - start) * (k + 1)
        hm = hit[m]
        tp_h = np.bincount(flat[hm], weights=w[m][hm], minlength=size)
        fp_h = np.bincount(flat[~hm], weights=w[m][~hm], minlength=size)
        tp = _at_thresholds(tp_h, stop - start, k)      # (k, items) C-contiguous
        fp = _at_thresholds(fp_h, stop - start, k)
        npred = tp + fp
        gt = n_gt[start:stop]
        sums["n"] += (npred > 0).sum(axis=1)
        sums["tp"] += tp.sum(axis=1)
        sums["fp"] += fp.sum(axis=1)
        sums["fn"] += (gt[None, :] - tp).sum(axis=1)
        sums["pr"] += _safe_div(tp, npred).sum(axis=1)
        sums["rc"] += _safe_div(tp, np.broadcast_to(gt, tp.shape)).sum(axis=1)

    n = sums["n"]
    ne = np.full(k, float(n_items))
    norm_of = {}
    for name in ("tp", "fp", "fn", "pr", "rc"):
        by_pred = norm == "pred" or (norm == "cafa" and name == "pr")
        norm_of[name] = _safe_div(sums[name], n if by_pred else ne)
    pr, rc = norm_of["pr"], norm_of["rc"]
    tp, fp, fn = norm_of["tp"], norm_of["fp"], norm_of["fn"]
    pr_micro = _safe_div(tp, tp + fp)
    rc_micro = _safe_div(tp, tp + fn)
    return Curves(thresholds=thresholds, n_items=int(n_items), n=n, tp=tp, fp=fp, fn=fn, pr=pr, rc=rc,
                  f=f_score(pr, rc), mi=fp, ru=fn, s=np.sqrt(fn ** 2 + fp ** 2), cov=n / ne,
                  pr_micro=pr_micro, rc_micro=rc_micro, f_micro=f_score(pr_micro, rc_micro))


def _at_thresholds(hist: np.ndarray, n_items: int, k: int) -> np.ndarray:
    """(k, n_items): at threshold j, the sum of the item's histogram bins b > j."""
    h = hist.reshape(n_items, k + 1)
    cum = np.cumsum(h[:, ::-1], axis=1)[:, ::-1]   # cum[:, b] = sum of bins >= b
    return np.ascontiguousarray(cum[:, 1:].T)


def best_index(values: np.ndarray, keep: np.ndarray | None = None, *, maximize: bool = True) -> int | None:
    """Index of the first maximal (or minimal) value among the kept thresholds; None when no
    threshold is kept. First = lowest threshold, as pandas' idxmax / idxmin in cafaeval."""
    values = np.asarray(values, dtype=np.float64)
    idx = np.arange(values.size) if keep is None else np.flatnonzero(keep)
    if idx.size == 0:
        return None
    sub = values[idx]
    return int(idx[np.argmax(sub) if maximize else np.argmin(sub)])


def set_scores(pred: np.ndarray, gold: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float, float]:
    """(precision, recall, F) of one item's predicted label set against its gold set, both
    arrays of unique label indices, weighted by `weights[label]` (None: counted).
    Precision is 0 when nothing of weight is predicted, recall 0 when the gold weighs nothing:
    the one-item, one-threshold case of `threshold_curves` with norm="cafa"."""
    pred = np.asarray(pred, dtype=np.int64)
    gold = np.asarray(gold, dtype=np.int64)
    common = np.intersect1d(pred, gold, assume_unique=True)
    if weights is None:
        tp, p, g = float(common.size), float(pred.size), float(gold.size)
    else:
        tp, p, g = float(weights[common].sum()), float(weights[pred].sum()), float(weights[gold].sum())
    precision = tp / p if p > 0 else 0.0
    recall = tp / g if g > 0 else 0.0
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f

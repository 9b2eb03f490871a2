"""Scored GO predictions and their Fmax: the `go` task's `score_samples` / `scored_metrics`.

`eval.py --num_samples k` samples k answers per protein; `score_samples` turns them into one
scored prediction: each GO id's score is the fraction of the k answers that name it (an unparsed
answer names nothing; None when no answer parsed). `scored_metrics` then computes, with the
ontology and IA weights of the GO reward:

- `fmax` (the headline): the IA-weighted Fmax pooled over MF, BP and CC (the same space as the
  unscored `f1`), over cafaeval's thresholds 0.01..0.99, precision averaged over proteins with a
  prediction above the threshold, recall over proteins with gold (norm "cafa"); scores are
  propagated to ancestors as the maximum over descendants, gold over is_a and part_of;
  `plain_fmax` the same unweighted; ci95 by a percentile bootstrap over proteins;
- per aspect (`MF_fmax`, `MF_plain_fmax`, `MF_smin`, `MF_weighted_smin`, `MF_threshold`, ...):
  `bioreason_pro.go_metrics.evaluate_method` on the same predictions written as cafaeval files
  (truth.tsv / predictions.tsv: exactly cafaeval's rules and numbers); `cafa5`: the mean
  IA-weighted Fmax over MF, BP and CC (a namespace with gold and no prediction counts 0);
- the unscored metrics of the majority answer (terms named by at least half of the samples),
  under their usual names (`f1`, `MF_f1`, ...), so a scored run is comparable with a greedy one.

`naive_predictions(train_rows)` is CAFA's naive baseline: every protein gets every training term,
scored by its frequency among the training proteins.
Not built: scoring a greedy answer by the mean token probability of each GO id.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from biopost.metrics.multilabel import best_index, f_score, max_by_pair, threshold_curves, threshold_grid
from biopost.tasks import MetricResult


def score_samples(parsed_list: list) -> dict[str, float] | None:
    """{GO id: fraction of the k answers naming it}; None when no answer parsed."""
    k = len(parsed_list)
    if k == 0 or all(p is None for p in parsed_list):
        return None
    counts = Counter(g for p in parsed_list if p for g in dict.fromkeys(p))
    return {g: c / k for g, c in sorted(counts.items())}


def majority_answer(scored: dict | None) -> list[str] | None:
    if scored is None:
        return None
    return [g for g, s in scored.items() if s >= 0.5]


def naive_predictions(train_rows: list[dict]) -> dict[str, float]:
    """CAFA's naive baseline: each gold term of the training rows scored by the fraction of
    training proteins annotated with it (as written, before propagation)."""
    n = len(train_rows)
    c = Counter(t for r in train_rows for col in ("go_mf", "go_bp", "go_cc") for t in dict.fromkeys(r.get(col) or []))
    return {t: v / n for t, v in sorted(c.items())} if n else {}


# --- pooled per-protein curves (fast bootstrap) -----------------------------------------------------

def _propagated_scores(scorer, scored: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """(term indices, scores) of one prediction, resolved and propagated (max over descendants)."""
    if not scored:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    onto = scorer.onto
    idx, vals = [], []
    for g, s in scored.items():
        terms, _ = onto.resolve(g)
        for t in terms:
            idx.append(t)
            vals.append(float(s))
    if not idx:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    src, anc = onto.expand(np.asarray(idx, dtype=np.int64))
    _, cols, v = max_by_pair(np.zeros(anc.size, dtype=np.int64), anc, np.asarray(vals)[src], len(onto))
    return cols, v


def per_protein_curves(golds: list[dict], scored: list, scorer, weights: np.ndarray,
                       thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """For the proteins with gold: per protein and threshold, precision (0 where nothing is
    predicted), recall and covered (predicted weight > 0), shape (n, T); sums of these rows are
    what `threshold_curves` accumulates."""
    pr, rc, cov = [], [], []
    for row, pred in zip(golds, scored):
        gold = scorer.gold_terms(row)
        g_w = weights[gold].sum()
        if gold.size == 0 or g_w <= 0:
            continue
        cols, vals = _propagated_scores(scorer, pred)
        w = weights[cols]
        hit = np.isin(cols, gold)
        at = vals[None, :] >= thresholds[:, None]          # (T, m)
        npred = (at * w).sum(axis=1)
        tp = (at * (w * hit)).sum(axis=1)
        pr.append(np.divide(tp, npred, out=np.zeros_like(tp), where=npred > 0))
        rc.append(tp / g_w)
        cov.append((npred > 0).astype(np.float64))
    T = thresholds.size
    as_arr = lambda x: np.array(x) if x else np.zeros((0, T))  # noqa: E731
    return {"pr": as_arr(pr), "rc": as_arr(rc), "cov": as_arr(cov)}


def _fmax_from_sums(pr_sum, rc_sum, n_cov, n_items):
    """Fmax per row of (R, T) sums: precision over covered proteins, recall over all."""
    pr = np.divide(pr_sum, n_cov, out=np.zeros_like(pr_sum), where=n_cov > 0)
    rc = rc_sum / max(n_items, 1)
    f = f_score(pr, rc)
    f = np.where(n_cov > 0, f, -1.0)
    return np.maximum(f.max(axis=-1), 0.0)


def pooled_fmax(golds, scored, scorer, weights, bootstrap_resamples: int = 0, seed: int = 0):
    """(point Fmax, best threshold, ci95 or None) pooled over all namespaces."""
    thresholds = threshold_grid()
    c = per_protein_curves(golds, scored, scorer, weights, thresholds)
    n = c["pr"].shape[0]
    if n == 0:
        return 0.0, None, None
    pr_s, rc_s, cov_s = c["pr"].sum(0), c["rc"].sum(0), c["cov"].sum(0)
    point = float(_fmax_from_sums(pr_s[None], rc_s[None], cov_s[None], n)[0])
    pr = np.divide(pr_s, cov_s, out=np.zeros_like(pr_s), where=cov_s > 0)
    i = best_index(f_score(pr, rc_s / n), cov_s > 0)
    threshold = None if i is None else float(thresholds[i])
    ci = None
    if bootstrap_resamples > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(bootstrap_resamples, n))
        counts = np.stack([np.bincount(r, minlength=n) for r in idx]).astype(np.float64)   # (R, n)
        boot = _fmax_from_sums(counts @ c["pr"], counts @ c["rc"], counts @ c["cov"], n)
        lo, hi = np.quantile(boot, [0.025, 0.975])
        ci = [float(lo), float(hi)]
    return point, threshold, ci


def pooled_curves_reference(golds, scored, scorer, weights):
    """The same pooled curves through `biopost.metrics.multilabel.threshold_curves` (tests compare)."""
    t_rows, t_cols, p_rows, p_cols, p_vals = [], [], [], [], []
    item = 0
    for row, pred in zip(golds, scored):
        gold = scorer.gold_terms(row)
        if gold.size == 0 or weights[gold].sum() <= 0:
            continue
        cols, vals = _propagated_scores(scorer, pred)
        t_rows += [item] * gold.size
        t_cols += gold.tolist()
        p_rows += [item] * cols.size
        p_cols += cols.tolist()
        p_vals += vals.tolist()
        item += 1
    return threshold_curves(item, t_rows, t_cols, p_rows, p_cols, p_vals, weights=weights,
                            n_labels=len(scorer.onto))


# --- per namespace, exactly as cafaeval ---------------------------------------------------------------

def cafa_files(golds: list[dict], scored: list, out_dir) -> tuple[Path, Path]:
    """truth.tsv and predictions.tsv of scored answers (protein = row number), cafaeval's format."""
    from biopost.files import write_text_atomic
    out = Path(out_dir)
    truth, preds = [], []
    for i, (row, pred) in enumerate(zip(golds, scored)):
        for col in ("go_mf", "go_bp", "go_cc"):
            truth += [f"P{i}\t{g}\n" for g in row.get(col) or []]
        preds += [f"P{i}\t{g}\t{s:.6g}\n" for g, s in (pred or {}).items()]
    write_text_atomic(out / "truth.tsv", "".join(truth))
    write_text_atomic(out / "predictions.tsv", "".join(preds))
    return out / "truth.tsv", out / "predictions.tsv"


def per_namespace(golds, scored, scorer) -> dict:
    from bioreason_pro.cafa_files import CafaFileError, read_predictions, read_truth
    from bioreason_pro.go_metrics import cafa5_score, evaluate_method
    with tempfile.TemporaryDirectory(prefix="go-scored-") as tmp:
        truth_path, pred_path = cafa_files(golds, scored, tmp)
        try:
            truth = read_truth(truth_path, scorer.onto)
        except CafaFileError:
            return {"namespaces": {}, "cafa5": {"value": None, "reason": "no gold term of the ontology"}}
        pred = read_predictions(pred_path, scorer.onto, truth)
        result = evaluate_method(scorer.onto, truth, pred, scorer.ia)
    return {"namespaces": result, "cafa5": cafa5_score(result)}


def scored_metrics(golds: list[dict], scored: list, bootstrap_resamples: int = 1000, seed: int = 0,
                   scorer=None) -> MetricResult:
    from bioreason_pro.go_reward import go_scorer
    from bioreason_pro.tasks import metrics as unscored_metrics

    scorer = scorer or go_scorer()
    if len(golds) != len(scored):
        raise ValueError(f"{len(golds)} gold rows but {len(scored)} predictions")
    values: dict[str, float] = {}
    ci95: dict[str, list[float]] = {}
    fmax, threshold, ci = pooled_fmax(golds, scored, scorer, scorer.ia, bootstrap_resamples, seed)
    values["fmax"] = fmax
    if threshold is not None:
        values["fmax_threshold"] = threshold
    if ci is not None:
        ci95["fmax"] = ci
    plain, _, plain_ci = pooled_fmax(golds, scored, scorer, np.ones(len(scorer.onto)), bootstrap_resamples, seed)
    values["plain_fmax"] = plain
    if plain_ci is not None:
        ci95["plain_fmax"] = plain_ci
    ns = per_namespace(golds, scored, scorer)
    per_aspect = {}
    for name, r in ns["namespaces"].items():
        aspect = r.get("aspect", name)
        per_aspect[aspect] = {k: v for k, v in r.items() if k != "aspect"}
        if not r.get("evaluated"):
            if r.get("n_truth"):
                values[f"{aspect}_fmax"] = 0.0
            continue
        if r.get("weighted_fmax"):
            values[f"{aspect}_fmax"] = r["weighted_fmax"]["fmax"]
            values[f"{aspect}_threshold"] = r["weighted_fmax"]["threshold"]
        if r.get("fmax"):
            values[f"{aspect}_plain_fmax"] = r["fmax"]["fmax"]
        if r.get("smin"):
            values[f"{aspect}_smin"] = r["smin"]["smin"]
        if r.get("weighted_smin"):
            values[f"{aspect}_weighted_smin"] = r["weighted_smin"]["smin"]
    if ns["cafa5"].get("value") is not None:
        values["cafa5"] = ns["cafa5"]["value"]
    majority = [majority_answer(s) for s in scored]
    unscored = unscored_metrics(golds, majority, bootstrap_resamples=bootstrap_resamples, seed=seed, scorer=scorer)
    for k, v in unscored.metrics.items():
        values.setdefault(k, v)
    for k, v in unscored.ci95.items():
        ci95.setdefault(k, v)
    per_example = unscored.per_example
    k_note = ("each GO id scored by the fraction of the k sampled answers naming it (unparsed answers name "
              "nothing)")
    computed = (f"scored GO predictions: {k_note}; fmax = IA-weighted Fmax pooled over MF/BP/CC over thresholds "
                "0.01..0.99 (scores propagated to ancestors as the max over descendants, gold over is_a and "
                "part_of; precision over proteins with a prediction at the threshold, recall over proteins with "
                "gold), plain_fmax unweighted; per aspect (MF_/BP_/CC_) fmax = IA-weighted Fmax, plain_fmax, "
                "smin (unweighted, as cafaeval's) and weighted_smin from bioreason_pro.go_metrics (= cafaeval "
                "1.3.0); cafa5 = mean IA-weighted Fmax over MF, BP, CC; f1 / precision / recall and the other "
                "unscored metrics are those of the majority answer (terms in >= half of the samples); "
                f"ci95: percentile bootstrap over proteins ({bootstrap_resamples} resamples, seed {seed}); "
                "per-example score = the GO reward of the majority answer")
    extra = {"scored": True, "per_aspect": per_aspect, "cafa5": ns["cafa5"]}
    return MetricResult(values, ci95, per_example, computed, extra=extra)

"""GO term prediction metrics, equal to cafaeval 1.3.0's `cafa_eval` on the same files.

Per namespace (BP, MF, CC): the Fmax over cafaeval's threshold grid with its precision, recall,
threshold and coverage; the IA-weighted Fmax; Smin; micro-averaged Fmax; and the CAFA5 summary
(the mean weighted Fmax over MF, BP and CC). The arithmetic is `biopost.metrics.multilabel`'s; this
module decides what the items, labels and weights are, and applies cafaeval's rules for which
thresholds may be chosen (docs/go_metrics.md):

- a namespace is evaluated only when the truth has proteins in it *and* the method predicted a
  term of it for at least one of those proteins; every truth protein of the namespace counts in
  the denominator (ne), predicted or not;
- the unweighted metrics use every term of the namespace (cafaeval's `toi`; with
  `orphans=False`, only terms that have a parent), the weighted ones the terms with IA > 0
  (`toi_ia`) weighted by IA;
- thresholds with unweighted coverage 0 are dropped before the best is taken (for the weighted
  metrics too: the filter is on the unweighted coverage); a namespace left with none is not
  evaluated; of equal values the lowest threshold wins;
- "smin" is what cafaeval reports as Smin: the minimum of S computed from *unweighted* term
  counts (its `evaluation_best_s.tsv`); the IA-weighted Smin of the CAFA papers is
  "weighted_smin" (cafaeval computes it as `s_w` but does not pick its minimum).
"""
from __future__ import annotations

import numpy as np

from biopost.metrics.multilabel import Curves, best_index, threshold_curves, threshold_grid

from bioreason_pro.cafa_files import Predictions, Truth
from bioreason_pro.ontology import ASPECT_OF, Ontology

CAFA5_NAMESPACES = ("molecular_function", "biological_process", "cellular_component")


def _best(curves: Curves, values: np.ndarray, keep: np.ndarray, cov: np.ndarray, maximize: bool) -> dict | None:
    i = best_index(values, keep, maximize=maximize)
    if i is None:
        return None
    row = curves.row(i)
    return {"threshold": row["threshold"], "precision": row["pr"], "recall": row["rc"],
            "coverage": row["cov"], "coverage_max": float(cov[keep].max()), "n_covered": int(row["n"]),
            "f": row["f"], "s": row["s"], "ru": row["ru"], "mi": row["mi"],
            "precision_micro": row["pr_micro"], "recall_micro": row["rc_micro"], "f_micro": row["f_micro"]}


def _fmax(curves, keep, cov) -> dict | None:
    b = _best(curves, curves.f, keep, cov, True)
    return None if b is None else {"fmax": b["f"], **{k: b[k] for k in ("precision", "recall", "threshold",
                                                                       "coverage", "coverage_max", "n_covered")}}


def _smin(curves, keep, cov) -> dict | None:
    b = _best(curves, curves.s, keep, cov, False)
    return None if b is None else {"smin": b["s"], **{k: b[k] for k in ("ru", "mi", "threshold", "coverage")}}


def _micro(curves, keep, cov) -> dict | None:
    b = _best(curves, curves.f_micro, keep, cov, True)
    return None if b is None else {"fmax_micro": b["f_micro"], "precision_micro": b["precision_micro"],
                                   "recall_micro": b["recall_micro"], "threshold": b["threshold"]}


def namespace_curves(onto: Ontology, truth: Truth, pred: Predictions, namespace: str,
                     ia: np.ndarray | None, *, norm: str = "cafa", th_step: float = 0.01,
                     orphans: bool = True) -> tuple[Curves, Curves | None]:
    """(unweighted curves, IA-weighted curves or None) of one method in one namespace."""
    start, stop = onto.namespace_range(namespace)
    t = truth.namespaces[namespace]
    p = pred.namespaces[namespace]
    thresholds = threshold_grid(th_step)
    weights = np.ones(stop - start)
    if not orphans:  # cafaeval's -no_orphans: terms without a parent (the roots) leave toi
        weights[np.diff(onto.parent_indptr[start:stop + 1]) == 0] = 0.0
    args = (len(t.proteins), t.rows, t.cols, p.rows, p.cols, p.scores)
    plain = threshold_curves(*args, weights=weights, thresholds=thresholds, norm=norm, n_labels=stop - start)
    weighted = None
    if ia is not None:
        weighted = threshold_curves(*args, weights=np.asarray(ia[start:stop], dtype=np.float64),
                                    thresholds=thresholds, norm=norm, n_labels=stop - start)
    return plain, weighted


def evaluate_method(onto: Ontology, truth: Truth, pred: Predictions, ia: np.ndarray | None = None, *,
                    norm: str = "cafa", th_step: float = 0.01, orphans: bool = True) -> dict:
    """{namespace: result} for one prediction set; see the module docstring for the rules.

    A result holds "fmax", "weighted_fmax" (None without IA), "smin", "weighted_smin",
    "micro", "weighted_micro", "n_truth", "n_predicted"; a namespace that cafaeval would not
    report is {"evaluated": False, "reason": ...}.
    """
    out = {}
    for ns in onto.namespaces:
        aspect = ASPECT_OF.get(ns, ns)
        if ns not in truth.namespaces:
            if ns in pred.namespaces or ns in CAFA5_NAMESPACES:
                out[ns] = {"aspect": aspect, "evaluated": False, "reason": "no truth in this namespace"}
            continue
        n_truth = len(truth.namespaces[ns].proteins)
        if ns not in pred.namespaces:
            out[ns] = {"aspect": aspect, "evaluated": False, "n_truth": n_truth, "n_predicted": 0,
                       "reason": "no prediction for a protein with truth in this namespace"}
            continue
        plain, weighted = namespace_curves(onto, truth, pred, ns, ia, norm=norm, th_step=th_step, orphans=orphans)
        keep = plain.cov > 0
        base = {"aspect": aspect, "n_truth": n_truth, "n_predicted": pred.namespaces[ns].n_proteins}
        if not keep.any():
            out[ns] = {**base, "evaluated": False,
                       "reason": f"no predicted score reaches the lowest threshold {plain.thresholds[0]:g}"}
            continue
        res = {**base, "evaluated": True, "fmax": _fmax(plain, keep, plain.cov),
               "smin": _smin(plain, keep, plain.cov), "micro": _micro(plain, keep, plain.cov),
               "weighted_fmax": None, "weighted_smin": None, "weighted_micro": None}
        if weighted is not None:
            res["weighted_fmax"] = _fmax(weighted, keep, weighted.cov)
            res["weighted_smin"] = _smin(weighted, keep, weighted.cov)
            res["weighted_micro"] = _micro(weighted, keep, weighted.cov)
        res["scored"] = bool(np.unique(pred.namespaces[ns].scores).size > 1)
        out[ns] = res
    return out


def cafa5_score(result: dict) -> dict:
    """The CAFA5 summary: the mean weighted Fmax over MF, BP and CC. A namespace with truth but
    no evaluated prediction counts 0 (the method said nothing there); without truth (or without
    IA weights) in one of the three the summary is None, with the reason."""
    values = []
    for ns in CAFA5_NAMESPACES:
        r = result.get(ns)
        if r is None or r.get("reason") == "no truth in this namespace":
            return {"value": None, "reason": f"no truth in {ns}"}
        if not r.get("evaluated"):
            values.append(0.0)
            continue
        if r.get("weighted_fmax") is None:
            return {"value": None, "reason": "no IA weights"}
        values.append(r["weighted_fmax"]["fmax"])
    return {"value": float(np.mean(values)), "per_namespace": dict(zip(CAFA5_NAMESPACES, values))}


def set_metrics(golds: list[dict], preds: list[list[str] | None], scorer=None) -> dict:
    """Precision, recall and F1 of *unscored* predicted GO id sets (parsed model answers), per
    namespace and pooled over all three, plain and IA-weighted.

    Each prediction is scored as cafaeval scores a prediction file whose scores are all 1.0 (one
    threshold, so this is an F1, not an Fmax), with one difference that matters for a model's
    evaluation: a namespace where no protein got any prediction scores 0 instead of being left
    out. Gold comes from the rows' `go_mf`, `go_bp`, `go_cc`; `None` (unparsed) predicts nothing.
    Returns {"BP"/"MF"/"CC"/"pooled": {"precision", "recall", "f1", "coverage", "n",
    "weighted_precision", "weighted_recall", "weighted_f1", "weighted_coverage"} or None without gold},
    plus "n_unparsed".
    """
    from biopost.metrics.multilabel import set_scores

    from bioreason_pro.go_reward import go_scorer

    scorer = scorer or go_scorer()
    onto, ia = scorer.onto, scorer.ia
    if len(golds) != len(preds):
        raise ValueError(f"{len(golds)} gold rows but {len(preds)} predictions")
    spaces = [(ASPECT_OF.get(ns, ns), onto.namespace_range(ns)) for ns in onto.namespaces]
    spaces.append(("pooled", (0, len(onto))))
    acc = {name: {"n": 0, "p": 0.0, "r": 0.0, "covered": 0, "wp": 0.0, "wr": 0.0, "wcovered": 0}
           for name, _ in spaces}
    ones = np.ones(len(onto))
    for row, pred in zip(golds, preds):
        gold = scorer.gold_terms(row)
        terms = scorer.terms(pred or [])
        for name, (start, stop) in spaces:
            g = gold[(gold >= start) & (gold < stop)]
            if not g.size:
                continue
            p = terms[(terms >= start) & (terms < stop)]
            a = acc[name]
            a["n"] += 1
            pr, rc, _ = set_scores(p, g, ones)
            wpr, wrc, _ = set_scores(p, g, ia)
            a["p"] += pr
            a["r"] += rc
            a["covered"] += p.size > 0
            a["wp"] += wpr
            a["wr"] += wrc
            a["wcovered"] += bool(ia[p].sum() > 0)
    out: dict = {"n_unparsed": sum(p is None for p in preds)}
    for name, _ in spaces:
        a = acc[name]
        if a["n"] == 0:
            out[name] = None
            continue
        p = a["p"] / a["covered"] if a["covered"] else 0.0
        r = a["r"] / a["n"]
        wp = a["wp"] / a["wcovered"] if a["wcovered"] else 0.0
        wr = a["wr"] / a["n"]
        out[name] = {"n": a["n"], "precision": p, "recall": r, "f1": _f1(p, r), "coverage": a["covered"] / a["n"],
                     "weighted_precision": wp, "weighted_recall": wr, "weighted_f1": _f1(wp, wr),
                     "weighted_coverage": a["wcovered"] / a["n"]}
    return out


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0

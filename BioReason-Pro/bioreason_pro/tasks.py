"""The `go` task: GO term prediction for a protein (BioReason-Pro).

Row (DESIGN.md section 3): `protein_id, sequence, organism, go_mf, go_bp, go_cc` (lists of GO
ids), optional `protein_names, protein_function, interpro_formatted, ppi_formatted, go_pred`
(GO-GPT text: prompt context only, never gold), `reasoning, final_answer`, `aspects`.

- prompt: the protein as a `{"type": "protein", "sequence": ...}` item, its organism, the optional
  InterPro / PPI / GO-GPT context as text, and the aspects asked for;
- target: `<think>\\n{reasoning}\\n</think>\\n\\n` + the GO summary (`go_answer_text`: one line per
  aspect, GO ids comma-separated);
- gold: `{"go_mf": [...], "go_bp": [...], "go_cc": [...]}` from the gold columns only;
- parse: `bioreason_pro.go_reward.parse_go_answer` (GO ids after `</think>`, None when unparsed);
- metrics: per aspect and pooled, precision / recall / F1 of the propagated predicted sets, plain
  and IA-weighted (`bioreason_pro.go_metrics.set_metrics`, cafaeval's weighted F at one threshold
  of unscored answers: an F1, not an Fmax), percentile bootstrap ci95 over proteins; headline
  `f1` = the pooled IA-weighted F1; per-example = the GO reward's score (`example_score`).
"""
from __future__ import annotations

import numpy as np

from biopost.data.schema import RowSchema, SeqField
from biopost.tasks import MetricResult, Task, reasoning_text

from bioreason_pro.go_reward import GOLD_COLUMNS, example_score, go_answer_text, parse_go_answer
from bioreason_pro import go_scored as _go_scored

SEQUENCES = (SeqField("sequence", "protein"),)
EVAL_SCHEMA = RowSchema(name="go", sequences=SEQUENCES, lists=GOLD_COLUMNS,
                        optional_text_or_struct=("reasoning",))
# SFT rows may lack reasoning (BioReason-Pro's first stage trains on GO summaries alone): the
# think block is then empty.
TRAIN_SCHEMA = EVAL_SCHEMA

ASPECT_NAMES = {"MF": "molecular function", "BP": "biological process", "CC": "cellular component"}
CONTEXT_FIELDS = (("interpro_formatted", "InterPro domains"),
                  ("ppi_formatted", "Protein-protein interactions"),
                  ("go_pred", "GO-GPT predicted GO terms (context, may be wrong)"))


def _aspects(row: dict) -> list[str]:
    asked = row.get("aspects")
    if not asked:
        return ["MF", "BP", "CC"]
    if isinstance(asked, str):
        asked = [a for a in asked.replace(",", " ").split() if a]
    return [a.upper() for a in asked if a.upper() in ASPECT_NAMES] or ["MF", "BP", "CC"]


def _context_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    return str(value).strip()


def prompt_messages(row: dict, system_prompt: str | None = None) -> list[dict]:
    """User turn: the protein sequence item, organism, optional context, the aspects asked for.
    `go_pred` (GO-GPT output) is shown as context only; gold never comes from it."""
    content = [{"type": "text", "text": "Protein sequence: "},
               {"type": "protein", "sequence": row["sequence"]}]
    text = ""
    if row.get("organism"):
        text += f"\nOrganism: {str(row['organism']).strip()}"
    for fld, label in CONTEXT_FIELDS:
        value = row.get(fld)
        if value not in (None, "", []):
            text += f"\n{label}: {_context_text(value)}"
    aspects = ", ".join(ASPECT_NAMES[a] for a in _aspects(row))
    text += f"\n\nPredict the Gene Ontology terms of this protein ({aspects}); answer with GO ids."
    content.append({"type": "text", "text": text})
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": content}]


def gold(row: dict) -> dict:
    """The gold GO ids, from `go_mf / go_bp / go_cc` only (a KeyError when a column is missing,
    so a row without gold is evaluated as unlabeled, never scored against `go_pred`)."""
    return {col: list(row[col] or []) for col in GOLD_COLUMNS}


def target_text(row: dict) -> str:
    return f"<think>\n{reasoning_text(row.get('reasoning'))}\n</think>\n\n{go_answer_text(gold(row))}"


# --- metrics ---------------------------------------------------------------------------------------

SPACES = ("MF", "BP", "CC", "pooled")


def _per_protein(golds: list[dict], parsed: list, scorer) -> dict[str, np.ndarray]:
    """Per protein and space: has-gold, plain (p, r, covered) and weighted (p, r, covered),
    exactly the sums `go_metrics.set_metrics` accumulates (so bootstrap resamples are sums)."""
    from biopost.metrics.multilabel import set_scores
    from bioreason_pro.ontology import ASPECT_OF

    onto, ia = scorer.onto, scorer.ia
    ranges = {ASPECT_OF.get(ns, ns): onto.namespace_range(ns) for ns in onto.namespaces}
    ranges["pooled"] = (0, len(onto))
    ones = np.ones(len(onto))
    n = len(golds)
    out = {s: np.zeros((n, 7)) for s in ranges}
    for i, (row, pred) in enumerate(zip(golds, parsed)):
        g_all = scorer.gold_terms(row)
        p_all = scorer.terms(pred or [])
        for name, (start, stop) in ranges.items():
            g = g_all[(g_all >= start) & (g_all < stop)]
            if not g.size:
                continue
            p = p_all[(p_all >= start) & (p_all < stop)]
            pr, rc, _ = set_scores(p, g, ones)
            wpr, wrc, _ = set_scores(p, g, ia)
            out[name][i] = (1, pr, rc, p.size > 0, wpr, wrc, ia[p].sum() > 0)
    return out


def _f1(p, r):
    return np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1), 0.0)


def _from_sums(s: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics from column sums (last axis: the 7 accumulated quantities)."""
    n, p, r, cov, wp, wr, wcov = (s[..., k] for k in range(7))
    safe = lambda d: np.where(d > 0, d, 1)  # noqa: E731
    prec = np.where(cov > 0, p / safe(cov), 0.0)
    rec = np.where(n > 0, r / safe(n), 0.0)
    wprec = np.where(wcov > 0, wp / safe(wcov), 0.0)
    wrec = np.where(n > 0, wr / safe(n), 0.0)
    return {"precision": prec, "recall": rec, "f1": _f1(prec, rec),
            "weighted_precision": wprec, "weighted_recall": wrec, "weighted_f1": _f1(wprec, wrec),
            "coverage": np.where(n > 0, cov / safe(n), 0.0)}


def metrics(golds: list[dict], parsed: list, bootstrap_resamples: int = 1000, seed: int = 0,
            scorer=None) -> MetricResult:
    """Per-aspect and pooled P / R / F1 (plain and IA-weighted) of unscored GO answers."""
    from bioreason_pro.go_reward import go_scorer

    scorer = scorer or go_scorer()
    if len(golds) != len(parsed):
        raise ValueError(f"{len(golds)} gold rows but {len(parsed)} predictions")
    per = _per_protein(golds, parsed, scorer)
    values: dict[str, float] = {}
    ci95: dict[str, list[float]] = {}
    rng = np.random.default_rng(seed)
    n = len(golds)
    resamples = rng.integers(0, n, size=(bootstrap_resamples, n)) if bootstrap_resamples > 0 and n else None
    for space in SPACES:
        arr = per[space]
        if arr[:, 0].sum() == 0:
            continue
        point = _from_sums(arr.sum(axis=0))
        prefix = "" if space == "pooled" else f"{space}_"
        # headline names: f1 / precision / recall = IA-weighted, pooled; unweighted get `plain_`
        for key, value in point.items():
            if key.startswith("weighted_"):
                name = prefix + key[len("weighted_"):]
            elif key == "coverage":
                name = prefix + "coverage"
            else:
                name = prefix + "plain_" + key
            values[name] = float(value)
        if resamples is not None:
            sums = np.stack([arr[idx].sum(axis=0) for idx in resamples])
            boot = _from_sums(sums)
            for key in ("weighted_f1", "weighted_precision", "weighted_recall", "f1"):
                name = prefix + (key[len("weighted_"):] if key.startswith("weighted_") else "plain_" + key)
                lo, hi = np.quantile(boot[key], [0.025, 0.975])
                ci95[name] = [float(lo), float(hi)]
    if "f1" not in values:  # no protein with gold: report zeros rather than a missing headline
        values.update(f1=0.0, precision=0.0, recall=0.0)
    per_example = [example_score(p, g) for g, p in zip(golds, parsed)]
    values["mean_example_score"] = float(np.mean(per_example)) if per_example else 0.0
    computed = ("GO answers are unscored sets, so this is an F1 at one threshold, not an Fmax: "
                "predicted GO ids parsed after </think> (alt ids mapped, obsolete/unknown dropped) and gold "
                "go_mf/go_bp/go_cc are propagated over is_a and part_of; per aspect (MF_, BP_, CC_) and pooled "
                "over the three namespaces, precision averaged over proteins with a prediction, recall over "
                "proteins with gold (cafaeval norm='cafa' with every score 1.0); f1/precision/recall are "
                "IA-weighted (packaged IA from human experimental annotations), plain_* unweighted; unparsed "
                "answers predict nothing; per-example score = the GO reward (pooled IA-weighted F1 of one "
                f"protein); ci95: percentile bootstrap over proteins ({bootstrap_resamples} resamples, seed {seed})")
    extra = {"scored": False}
    return MetricResult(values, ci95, per_example, computed, extra=extra)


def _check_go_row(row: dict) -> dict:
    """GO ids that exist in the ontology (alt ids mapped, obsolete dropped and counted): the GO pass
    of bioreason_pro.protein_data, run by the core's loader after its generic checks."""
    from bioreason_pro.protein_data import check_go_row
    return check_go_row(row)


GO = Task("go", "protein", EVAL_SCHEMA, TRAIN_SCHEMA, prompt_messages, target_text, gold,
          parse=parse_go_answer, metrics=metrics, example_score=example_score,
          headline="f1", prediction_field="score",
          # eval.py --num_samples k: term frequency over k answers -> Fmax (bioreason_pro.go_scored)
          score_samples=_go_scored.score_samples, scored_metrics=_go_scored.scored_metrics,
          scored_headline="fmax", check_row=_check_go_row)

"""The GO reward for GRPO: IA-weighted F1 of the GO ids a completion answers, after propagation.

Answer format (the protein SFT target, `go_answer_text`): the assistant turn is
`<think>\\n{reasoning}\\n</think>\\n\\n` followed by the GO summary, one line per aspect:

    Molecular function: GO:0003824, GO:0016787
    Biological process: GO:0008152
    Cellular component: GO:0005737

Parsing (`parse_go_answer`): the answer is the text after the last `</think>`; without any
think tag, the text after the last `Answer:`; a completion with neither, or whose think block
never closes, is unparsed (None, reward 0). Every `GO:` + 7 digits in the answer counts,
wherever it stands (the aspect labels are for the reader: a term's namespace comes from the
ontology). Ids are resolved as in the metrics (alt_id -> term; obsolete and unknown ids are
dropped), then propagated over is_a and part_of.

Score (`GoScorer.score`): with gold terms from the row's `go_mf`, `go_bp`, `go_cc` lists only
(never `go_pred*`, the GO-GPT context), propagated the same way, and IA weights w:
precision = w(P & G) / w(P), recall = w(P & G) / w(G), F = 2PR / (P + R), 0 where undefined.
This is exactly cafaeval's weighted F (norm="cafa") of one protein whose predictions all
score 1.0 (tests/test_go_reward.py checks it against cafaeval on real proteins).
`mode` picks what is scored:
- "pooled" (default): one F over all three namespaces together (a term predicted in a
  namespace where the protein has no gold is a false positive);
- "mean": the mean of the per-namespace F over the namespaces that have gold (a namespace
  with gold and no prediction scores 0, as the CAFA5 summary counts it);
- "MF", "BP" or "CC": that namespace alone (0 when the protein has no gold there).

The ontology and IA file are loaded once per process (`go_scorer`, cached), then a completion
costs tens of microseconds (bench/bench_go_reward.py).
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np

from biopost.metrics.multilabel import set_scores
from biopost.metrics.parse import THINK_CLOSE, THINK_OPEN, split_reasoning, strip_stop_tokens

from bioreason_pro.ontology import ASPECT_OF, NAMESPACE_OF_ASPECT, load_ontology

GOLD_COLUMNS = ("go_mf", "go_bp", "go_cc")
MODES = ("pooled", "mean", "MF", "BP", "CC")
DEFAULT_IA = Path(__file__).resolve().parent / "resources" / "go" / "ia_human_exp.tsv.gz"
_GO_ID = re.compile(r"(?<![A-Za-z0-9_:])GO:(\d{7})(?!\d)")
_ANSWER_TAG = re.compile(r"\banswer\s*(?:\*\*|__)?\s*:", re.IGNORECASE)
_ASPECT_LABELS = (("go_mf", "Molecular function"), ("go_bp", "Biological process"),
                  ("go_cc", "Cellular component"))


def go_answer_text(row: dict) -> str:
    """The answer part of a protein SFT target: one line per aspect, GO ids comma-separated
    ("none" for an aspect without terms)."""
    return "\n".join(f"{label}: {', '.join(row.get(col) or []) or 'none'}" for col, label in _ASPECT_LABELS)


def parse_go_answer(completion: str | None) -> list[str] | None:
    """The GO ids a completion answers, in order, without repeats; None when unparsed."""
    if completion is None:
        return None
    text = strip_stop_tokens(completion)
    if THINK_CLOSE in text:
        _, answer = split_reasoning(text)
        if THINK_OPEN in answer:  # a second think block opened after the last close: unfinished
            return None
    elif THINK_OPEN in text:      # a think block that never closed: no answer yet
        return None
    else:
        tags = list(_ANSWER_TAG.finditer(text))
        if not tags:
            return None
        answer = text[tags[-1].end():]
    return list(dict.fromkeys("GO:" + m.group(1) for m in _GO_ID.finditer(answer)))


class GoScorer:
    """The ontology and IA weights, loaded once; scores parsed answers against gold rows."""

    def __init__(self, onto, ia: np.ndarray):
        self.onto = onto
        self.ia = np.asarray(ia, dtype=np.float64)

    def terms(self, go_ids) -> np.ndarray:
        """Propagated term indices of GO ids (alt ids mapped, obsolete / unknown dropped)."""
        index, alt = self.onto.index, self.onto.alt
        idx = []
        for g in go_ids:
            i = index.get(g)
            if i is not None:
                idx.append(i)
            else:
                idx.extend(alt.get(g, ()))
        return self.onto.propagate(idx)

    def gold_terms(self, row: dict) -> np.ndarray:
        ids = []
        for col in GOLD_COLUMNS:
            value = row.get(col) or []
            if isinstance(value, str):
                raise ValueError(f"row {row.get('protein_id', '?')}: field {col} must be a list of GO ids, "
                                 f"got a string {value[:40]!r}")
            ids.extend(value)
        return self.terms(ids)

    def _by_namespace(self, terms: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for ns in self.onto.namespaces:
            start, stop = self.onto.namespace_range(ns)
            lo, hi = np.searchsorted(terms, [start, stop])
            out[ns] = terms[lo:hi]
        return out

    def details(self, pred_ids: list[str] | None, row: dict) -> dict:
        """{"pooled": (P, R, F), "MF"/"BP"/"CC": (P, R, F) or None when no gold there}."""
        gold = self.gold_terms(row)
        pred = self.terms(pred_ids or [])
        out = {"pooled": set_scores(pred, gold, self.ia)}
        pred_ns, gold_ns = self._by_namespace(pred), self._by_namespace(gold)
        for ns in self.onto.namespaces:
            aspect = ASPECT_OF.get(ns, ns)
            out[aspect] = set_scores(pred_ns[ns], gold_ns[ns], self.ia) if gold_ns[ns].size else None
        return out

    def score(self, pred_ids: list[str] | None, row: dict, mode: str = "pooled") -> float:
        """The reward of one parsed answer (None: unparsed -> 0.0)."""
        if mode not in MODES:
            raise ValueError(f"GO reward mode must be one of {', '.join(MODES)}, got {mode!r}")
        if pred_ids is None:
            return 0.0
        gold = self.gold_terms(row)
        pred = self.terms(pred_ids)
        if mode == "pooled":
            return set_scores(pred, gold, self.ia)[2]
        pred_ns, gold_ns = self._by_namespace(pred), self._by_namespace(gold)
        if mode != "mean":
            ns = NAMESPACE_OF_ASPECT[mode]
            return set_scores(pred_ns[ns], gold_ns[ns], self.ia)[2] if gold_ns[ns].size else 0.0
        fs = [set_scores(pred_ns[ns], gold_ns[ns], self.ia)[2] for ns in self.onto.namespaces if gold_ns[ns].size]
        return float(np.mean(fs)) if fs else 0.0


@functools.lru_cache(maxsize=4)
def go_scorer(obo: str | None = None, ia: str | None = None) -> GoScorer:
    """The process-wide scorer for an ontology and IA file (default: the packaged go-basic
    2022-07-01 and the IA estimated from human experimental annotations)."""
    from bioreason_pro.cafa_files import read_ia

    onto = load_ontology(obo)
    weights, _ = read_ia(ia or DEFAULT_IA, onto)
    return GoScorer(onto, weights)


def example_score(pred: list[str] | None, row: dict) -> float:
    """A Task's per-example score: the pooled IA-weighted F1 of a parsed answer."""
    return go_scorer().score(pred, row)


def go_reward(completions: list[str], rows: list[dict], *, mode: str = "pooled") -> list[float]:
    """GRPO reward: one IA-weighted F1 per completion (see the module docstring)."""
    if len(completions) != len(rows):
        raise ValueError(f"{len(completions)} completions but {len(rows)} rows")
    scorer = go_scorer()
    return [scorer.score(parse_go_answer(c), r, mode) for c, r in zip(completions, rows)]


def go_reward_per_aspect(completions: list[str], rows: list[dict]) -> list[float]:
    """GRPO reward: the mean of the per-namespace IA-weighted F1 over the namespaces with gold."""
    return go_reward(completions, rows, mode="mean")

"""The GO reward: answer parsing, and equality with cafaeval's weighted F (norm='cafa', every
score 1.0, one protein) per namespace and pooled over the three, on 50 real proteins with
random predictions.

cafaeval builds a dense term x term matrix per namespace (minutes on the full GO), so each
oracle call runs on the sub-ontology of the terms involved and all their ancestors. That is the
same evaluation: propagation only ever reaches ancestors, and a term no annotation reaches
contributes nothing. "Pooled" is cafaeval on that sub-ontology with one namespace for all terms.
"""
import random
import time
from pathlib import Path

import numpy as np
import pytest

from bioreason_pro.go_reward import (GoScorer, example_score, go_answer_text, go_reward, go_scorer,
                                     parse_go_answer)

TRUTH = Path(__file__).parent / "fixtures" / "go" / "truth_human_exp.tsv"
NS_COLUMN = {"molecular_function": "go_mf", "biological_process": "go_bp", "cellular_component": "go_cc"}


@pytest.fixture(scope="module")
def scorer() -> GoScorer:
    return go_scorer()


@pytest.fixture(scope="module")
def rows(scorer):
    onto = scorer.onto
    by_protein = {}
    for line in TRUTH.read_text().splitlines():
        p, t = line.split()[:2]
        if t in onto.index:
            by_protein.setdefault(p, {c: [] for c in NS_COLUMN.values()})[NS_COLUMN[onto.namespace(onto.index[t])]].append(t)
    return [{"protein_id": p, **cols} for p, cols in sorted(by_protein.items(), key=lambda kv: int(kv[0]))]


def test_parse_go_answer():
    think = "<think>\nGO:0000001 is a guess in the reasoning\n</think>\n\n"
    assert parse_go_answer(think + "Molecular function: GO:0003824, GO:0016787\nCellular component: GO:0003824") == \
        ["GO:0003824", "GO:0016787"]
    assert parse_go_answer(think + "Answer: none") == []
    assert parse_go_answer("Answer: GO:0005737.<|im_end|>") == ["GO:0005737"]          # no think block
    assert parse_go_answer("GO:0005737 and GO:0005634") is None                       # neither: unparsed
    assert parse_go_answer("<think>\nstill thinking GO:0005737") is None               # never closed
    assert parse_go_answer(think + "GO:00057371 xGO:0005737 GO:000573") == []          # not 7-digit ids
    assert parse_go_answer("reasoning</think>GO:0005737") == ["GO:0005737"]            # template-opened think
    assert parse_go_answer(None) is None


def test_answer_text_round_trips_and_scores_one(scorer, rows):
    row = next(r for r in rows if r["go_mf"] and r["go_bp"] and r["go_cc"])
    text = f"<think>\nreasoning\n</think>\n\n{go_answer_text(row)}"
    assert text.splitlines()[-3].startswith("Molecular function: GO:")
    assert set(parse_go_answer(text)) == set(row["go_mf"] + row["go_bp"] + row["go_cc"])
    for mode in ("pooled", "mean", "MF", "BP", "CC"):
        assert go_reward([text], [row], mode=mode) == [pytest.approx(1.0)]
    assert example_score(parse_go_answer(text), row) == pytest.approx(1.0)
    assert go_reward(["no answer at all"], [row]) == [0.0]


def test_gold_never_comes_from_go_pred(scorer, rows):
    row = rows[0]
    wrong = dict(row, go_mf=[], go_bp=[], go_cc=["GO:0005737"], go_pred="GO:0005737", go_pred_mf=["GO:0005737"])
    completion = "</think>\n" + " ".join(row["go_mf"] + row["go_bp"] + row["go_cc"])
    assert go_reward([completion], [row])[0] == pytest.approx(1.0)
    assert go_reward([completion], [wrong])[0] < 0.5
    with pytest.raises(ValueError, match="go_mf must be a list"):
        scorer.score([], dict(row, go_mf="GO:0003824"))


def _random_prediction(rng, onto, row):
    gold = row["go_mf"] + row["go_bp"] + row["go_cc"]
    pred = [t for t in gold if rng.random() < 0.5]
    for t in rng.sample(gold, min(3, len(gold))):   # parents of gold terms: partly right
        i = onto.index[t]
        ps = onto.parents[onto.parent_indptr[i]:onto.parent_indptr[i + 1]]
        if ps.size:
            pred.append(onto.ids[int(ps[0])])
    for _ in range(rng.randint(0, 6)):               # anything, in any namespace
        pred.append(onto.ids[rng.randrange(len(onto))])
    if rng.random() < 0.3:
        pred.append(rng.choice(sorted(onto.alt)))
    if rng.random() < 0.3:
        pred.append(rng.choice(sorted(onto.obsolete)))
    if rng.random() < 0.1:
        pred = ["GO:0008150"]                         # only a root: weighs nothing
    return pred


def _oracle_files(d, onto, ia, cases):
    """One cafaeval input where every (case, namespace) and every case's pooled ontology is a
    namespace of its own, holding one protein: cafaeval evaluates namespaces independently, so
    a single call scores 50 one-protein evaluations. Ids are prefixed per copy (`c7n_GO:...`,
    pooled `c7p_GO:...`); obsolete and unknown ids stay unknown to cafaeval either way."""
    alt_of = {}
    for a, ts in onto.alt.items():
        for t in ts:
            alt_of.setdefault(t, []).append(a)
    obo, ia_lines, gt, pred = [], [], [], []
    for k, (row, predicted) in enumerate(cases):
        gold = row["go_mf"] + row["go_bp"] + row["go_cc"]
        known = [i for g in gold + predicted for i in onto.resolve(g)[0]]
        for copy in ("n", "p"):
            pre = f"c{k}{copy}_"
            for t in onto.propagate(known).tolist():
                ns = f"c{k}|" + ("pooled" if copy == "p" else onto.namespace(t))
                obo += ["[Term]", f"id: {pre}{onto.ids[t]}", f"name: t{t}", f"namespace: {ns}"]
                obo += [f"alt_id: {pre}{a}" for a in alt_of.get(t, [])]
                obo += [f"is_a: {pre}{onto.ids[int(p)]}"
                        for p in onto.parents[onto.parent_indptr[t]:onto.parent_indptr[t + 1]]]
                obo.append("")
                ia_lines.append(f"{pre}{onto.ids[t]}\t{float(ia[t])!r}\n")
            gt += [f"P\t{pre}{g}\n" for g in gold]
            pred += [f"P\t{pre}{g}\t1.0\n" for g in predicted]
    d.mkdir(parents=True, exist_ok=True)
    (d / "sub.obo").write_text("\n".join(obo))
    (d / "ia.tsv").write_text("".join(ia_lines))
    (d / "gt.tsv").write_text("".join(gt))
    (d / "pred").mkdir(exist_ok=True)
    (d / "pred" / "m.tsv").write_text("".join(pred))
    return d


def test_equals_cafaeval_weighted_f_on_50_proteins(scorer, rows, tmp_path):
    cafa = pytest.importorskip("cafaeval.evaluation")
    import logging
    logging.getLogger().setLevel(logging.WARNING)
    onto, ia = scorer.onto, scorer.ia
    rng = random.Random(2026)
    cases = [(row, _random_prediction(rng, onto, row)) for row in rng.sample(rows, 50)]
    d = _oracle_files(tmp_path / "oracle", onto, ia, cases)
    _, best = cafa.cafa_eval(str(d / "sub.obo"), str(d / "pred"), str(d / "gt.tsv"), ia=str(d / "ia.tsv"), n_cpu=1)
    theirs = {ns: float(r["f_w"]) for (_, ns, _), r in best["f_w"].iterrows()}
    compared = {"pooled": 0, "MF": 0, "BP": 0, "CC": 0}
    nonzero = 0
    for k, (row, pred) in enumerate(cases):
        completion = f"<think>\nstep\n</think>\n\nAnswer: {', '.join(pred)}"
        got = go_reward([completion], [row])[0]
        assert got == pytest.approx(theirs.get(f"c{k}|pooled", 0.0), abs=1e-9), (row["protein_id"], pred)
        compared["pooled"] += f"c{k}|pooled" in theirs
        nonzero += got > 0
        details = scorer.details(parse_go_answer(completion), row)
        for ns, col in NS_COLUMN.items():
            aspect = {"go_mf": "MF", "go_bp": "BP", "go_cc": "CC"}[col]
            mine = go_reward([completion], [row], mode=aspect)[0]
            if f"c{k}|{ns}" in theirs:
                assert mine == pytest.approx(theirs[f"c{k}|{ns}"], abs=1e-9), (row["protein_id"], aspect, pred)
                compared[aspect] += 1
            else:  # cafaeval does not evaluate: no gold there, or no prediction there
                assert mine == 0.0
                assert not row[col] or details[aspect][0] == 0.0
        fs = [theirs.get(f"c{k}|{ns}", 0.0) for ns, col in NS_COLUMN.items() if row[col]]
        assert go_reward([completion], [row], mode="mean")[0] == pytest.approx(np.mean(fs), abs=1e-9)
    assert compared["pooled"] >= 45 and min(compared.values()) >= 15, compared
    assert nonzero >= 30


def test_reward_speed(scorer, rows):
    rng = random.Random(0)
    batch = [(f"<think>\nx\n</think>\n\nAnswer: {', '.join(_random_prediction(rng, scorer.onto, r))}", r)
             for r in rows[:100]]
    comps, rs = [c for c, _ in batch], [r for _, r in batch]
    go_reward(comps[:5], rs[:5])
    t0 = time.perf_counter()
    go_reward(comps, rs)
    ms = (time.perf_counter() - t0) * 1000 / len(comps)
    assert ms < 5.0, f"{ms:.2f} ms per completion"

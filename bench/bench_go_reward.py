"""Milliseconds per completion of the GO reward (bioreason_pro.go_reward.go_reward), ontology
and IA loaded once.

    python bench/bench_go_reward.py [--n 2000]

Completions: a think block, then an answer line with 5-40 GO ids (gold terms, their parents,
random terms, alt and obsolete ids) for the 150 human proteins of
tests/fixtures/go/truth_human_exp.tsv (gold from go_mf / go_bp / go_cc).
"""
import argparse
import os
import random
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRUTH = ROOT / "tests/fixtures/go/truth_human_exp.tsv"
COL = {"molecular_function": "go_mf", "biological_process": "go_bp", "cellular_component": "go_cc"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    os.environ.setdefault("BIOPOST_CACHE_DIR", tempfile.mkdtemp())
    from bioreason_pro.go_reward import go_reward, go_scorer

    t = time.perf_counter()
    scorer = go_scorer()
    print(f"go_scorer() first call (ontology parse + IA file): {time.perf_counter() - t:.2f} s")
    go_scorer.cache_clear()
    t = time.perf_counter()
    scorer = go_scorer()
    print(f"go_scorer() with the ontology cache warm: {(time.perf_counter() - t) * 1000:.0f} ms")
    onto = scorer.onto
    rows = {}
    for line in TRUTH.read_text().splitlines():
        p, term = line.split()[:2]
        if term in onto.index:
            rows.setdefault(p, {"protein_id": p, "go_mf": [], "go_bp": [], "go_cc": []})[
                COL[onto.namespace(onto.index[term])]].append(term)
    rows = list(rows.values())
    rng = random.Random(0)
    alts, obsolete = sorted(onto.alt), sorted(onto.obsolete)
    comps, rs = [], []
    for k in range(args.n):
        row = rows[k % len(rows)]
        gold = row["go_mf"] + row["go_bp"] + row["go_cc"]
        ids = [g for g in gold if rng.random() < 0.6]
        ids += [onto.ids[rng.randrange(len(onto))] for _ in range(rng.randint(3, 30))]
        ids += [rng.choice(alts), rng.choice(obsolete)]
        comps.append("<think>\n" + "The protein has a domain. " * 40 + "\n</think>\n\n"
                     f"Molecular function: {', '.join(ids[:len(ids) // 2])}\nBiological process: "
                     f"{', '.join(ids[len(ids) // 2:])}\nCellular component: none")
        rs.append(row)
    n_ids = sum(c.count("GO:") for c in comps) / len(comps)
    go_reward(comps[:10], rs[:10])
    for mode in ("pooled", "mean", "MF"):
        t = time.perf_counter()
        go_reward(comps, rs, mode=mode)
        ms = (time.perf_counter() - t) * 1000 / len(comps)
        print(f"mode={mode}: {ms:.3f} ms per completion ({len(comps)} completions, {n_ids:.1f} GO ids each)")


if __name__ == "__main__":
    main()

"""`biopost eval go` equals cafaeval 1.3.0's `cafa_eval` on the real GO, a realistic IA file and
three prediction sets of different character, for every namespace (one cafaeval call: about
45 s on an idle 2-core machine, 140 s under load; it builds dense term x term matrices)."""
import gzip
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bioreason_pro.go_cli import main as go_main
from bioreason_pro.ontology import DEFAULT_OBO, load_ontology

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "go"))
from oracle_sets import write_prediction_sets  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "go"
TRUTH = FIXTURES / "truth_human_exp.tsv"
IA_GZ = DEFAULT_OBO.parent / "ia_human_exp.tsv.gz"
NAMESPACES = ("biological_process", "molecular_function", "cellular_component")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    cafa = pytest.importorskip("cafaeval.evaluation")
    d = tmp_path_factory.mktemp("go_oracle")
    onto = load_ontology()
    files = write_prediction_sets(onto, TRUTH, d / "preds")
    obo = d / "go-basic.obo"                       # cafaeval reads plain text only
    obo.write_bytes(gzip.decompress(DEFAULT_OBO.read_bytes()))
    ia = d / "ia.tsv"
    ia.write_bytes(gzip.decompress(IA_GZ.read_bytes()))
    logging.getLogger().setLevel(logging.WARNING)
    t0 = time.perf_counter()
    df, best = cafa.cafa_eval(str(obo), str(d / "preds"), str(TRUTH), ia=str(ia), n_cpu=1)
    seconds = time.perf_counter() - t0
    print(f"\ncafaeval 1.3.0 cafa_eval: {seconds:.1f} s")
    out = d / "out"
    t0 = time.perf_counter()
    assert go_main(["--obo", str(DEFAULT_OBO), "--truth", str(TRUTH), "--pred", str(d / "preds"),
                    "--ia", str(IA_GZ), "--out", str(out)]) == 0
    ours_seconds = time.perf_counter() - t0
    print(f"biopost eval go: {ours_seconds:.2f} s")
    assert ours_seconds < 10, "the project's evaluation must take seconds on the full GO"
    ours = json.loads((out / "go_metrics.json").read_text())
    return best, ours, files, df.sort_index()


def _rows(best, metric):
    return {(r["filename"], r["ns"]): r for _, r in best[metric].reset_index().iterrows()}


def test_every_method_and_namespace_is_compared(oracle):
    best, ours, files, _ = oracle
    keys = set(_rows(best, "f"))
    assert keys == {(f"{m}.tsv", ns) for m in ("near_perfect", "noisy", "sparse_all1") for ns in NAMESPACES}
    assert set(ours["methods"]) == {f"{m}.tsv" for m in ("near_perfect", "noisy", "sparse_all1")}


@pytest.mark.parametrize("metric,key,columns", [
    ("f", "fmax", [("f", "fmax"), ("pr", "precision"), ("rc", "recall"), ("tau", "threshold"),
                   ("cov", "coverage"), ("cov_max", "coverage_max"), ("n", "n_covered")]),
    ("f_w", "weighted_fmax", [("f_w", "fmax"), ("pr_w", "precision"), ("rc_w", "recall"), ("tau", "threshold"),
                              ("cov_w", "coverage"), ("cov_max", "coverage_max"), ("n_w", "n_covered")]),
    ("s", "smin", [("s", "smin"), ("ru", "ru"), ("mi", "mi"), ("tau", "threshold"), ("cov", "coverage")]),
    ("f_micro", "micro", [("f_micro", "fmax_micro"), ("pr_micro", "precision_micro"), ("tau", "threshold")]),
    ("f_micro_w", "weighted_micro", [("f_micro_w", "fmax_micro"), ("pr_micro_w", "precision_micro"),
                                     ("tau", "threshold")]),
])
def test_equals_cafaeval(oracle, metric, key, columns):
    best, ours, _, _ = oracle
    for (method, ns), row in _rows(best, metric).items():
        got = ours["methods"][method]["namespaces"][ns]
        assert got["evaluated"], (method, ns)
        for theirs, mine in columns:
            assert got[key][mine] == pytest.approx(float(row[theirs]), abs=1e-6), (method, ns, metric, theirs)


def test_weighted_smin_is_the_minimum_of_cafaevals_s_w_column(oracle):
    """cafaeval reports the unweighted Smin; the IA-weighted S is its `s_w` column, whose minimum
    over the same thresholds (coverage > 0, first of equal values) is `weighted_smin`."""
    best, ours, _, df = oracle
    differs = 0
    for (method, ns), row in _rows(best, "s").items():
        got = ours["methods"][method]["namespaces"][ns]
        sub = df.loc[(method, ns)]
        tau = sub["s_w"].idxmin()
        assert got["weighted_smin"]["smin"] == pytest.approx(float(sub["s_w"].min()), abs=1e-6), (method, ns)
        assert got["weighted_smin"]["threshold"] == pytest.approx(float(tau), abs=1e-9), (method, ns)
        differs += abs(got["weighted_smin"]["smin"] - got["smin"]["smin"]) > 0.1
    assert differs >= 3  # the two Smin are different numbers


def test_the_three_sets_differ_in_character(oracle):
    _, ours, _, _ = oracle
    m = ours["methods"]
    for ns in NAMESPACES:
        near, noisy = m["near_perfect.tsv"]["namespaces"][ns], m["noisy.tsv"]["namespaces"][ns]
        assert near["fmax"]["fmax"] > 0.9 and near["scored"] and noisy["scored"]
        assert noisy["fmax"]["fmax"] < near["fmax"]["fmax"] - 0.2
        sparse = m["sparse_all1.tsv"]["namespaces"][ns]
        assert not sparse["scored"] and sparse["fmax"]["threshold"] == pytest.approx(0.01)
        assert sparse["fmax"]["coverage"] < 0.6
    c = m["sparse_all1.tsv"]["counts"]
    assert c["obsolete"] > 10 and c["unknown"] > 10 and c["alt_replaced"] > 10 and c["no_truth_in_namespace"] > 10
    assert m["noisy.tsv"]["counts"]["short_lines"] == 3  # AUTHOR, MODEL, END
    assert ours["truth_counts"]["alt_replaced"] == 4 and ours["truth_counts"]["obsolete"] == 4
    assert ours["truth_counts"]["unknown"] == 4
    cafa5 = m["near_perfect.tsv"]["cafa5"]
    assert cafa5["value"] == pytest.approx(np.mean([m["near_perfect.tsv"]["namespaces"][ns]["weighted_fmax"]["fmax"]
                                                    for ns in NAMESPACES]))

"""`biopost eval go`: called as bioreason_pro.go_cli.main and through the biopost console script."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bioreason_pro.go_cli import main
from bioreason_pro.ontology import load_ontology

ROOT = Path(__file__).resolve().parents[1]
IA = ROOT / "BioReason-Pro/bioreason_pro/resources/go/ia_human_exp.tsv.gz"
P2_GOLD = "GO:0004252"  # serine-type endopeptidase activity (MF)


@pytest.fixture(scope="module")
def go():
    return load_ontology()


def _setup(tmp_path):
    (tmp_path / "truth.tsv").write_text("P1\tGO:0005515\nP1\tGO:0005737\nP2\t" + P2_GOLD + "\n")
    preds = tmp_path / "preds"
    (preds / "sub").mkdir(parents=True)
    # m1: P1 exactly right (MF and CC); P2 only the MF root
    (preds / "m1.tsv").write_text("P1\tGO:0005515\t1.0\nP1\tGO:0005737\t1.0\nP2\tGO:0003674\t1.0\n")
    # m2 (in a sub-folder): P1's MF term at 0.5, a wrong MF term at 0.8; nothing in CC
    (preds / "sub" / "m2.tsv").write_text("P1\tGO:0005515\t0.5\nP1\tGO:0003824\t0.8\n")
    return tmp_path


def test_metrics_file_and_table(go, tmp_path, capsys):
    d = _setup(tmp_path)
    rc = main(["--truth", str(d / "truth.tsv"), "--pred", str(d / "preds"), "--ia", str(IA), "--out", str(d / "out")])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["method", "aspect", "n_truth", "Fmax"]
    res = json.loads((d / "out" / "go_metrics.json").read_text())
    assert res["schema"] == "biopost.go_metrics/v1" and "cafaeval 1.3.0" in res["computed"]
    assert set(res["methods"]) == {"m1.tsv", "sub_m2.tsv"}  # cafaeval's names for files in folders
    mf = res["methods"]["m1.tsv"]["namespaces"]["molecular_function"]
    g2 = go.propagate([go.index[P2_GOLD]]).size
    # P1: P = R = 1; P2: predicts the root only: precision 1/1, recall 1/|gold of P2 propagated|
    assert mf["n_truth"] == 2 and mf["fmax"]["precision"] == pytest.approx(1.0)
    assert mf["fmax"]["recall"] == pytest.approx((1 + 1 / g2) / 2)
    assert mf["fmax"]["threshold"] == pytest.approx(0.01) and mf["scored"] is False
    # weighted: the root weighs 0, so P2 is not covered; precision over P1 alone, recall (1 + 0) / 2
    assert mf["weighted_fmax"]["coverage"] == pytest.approx(0.5)
    assert mf["weighted_fmax"]["precision"] == pytest.approx(1.0) and mf["weighted_fmax"]["recall"] == pytest.approx(0.5)
    cc = res["methods"]["m1.tsv"]["namespaces"]["cellular_component"]
    assert cc["fmax"]["fmax"] == pytest.approx(1.0) and cc["n_truth"] == 1
    assert res["methods"]["m1.tsv"]["namespaces"]["biological_process"] == {
        "aspect": "BP", "evaluated": False, "reason": "no truth in this namespace"}
    assert res["methods"]["m1.tsv"]["cafa5"]["value"] is None
    m2 = res["methods"]["sub_m2.tsv"]["namespaces"]
    assert m2["cellular_component"]["evaluated"] is False and "no prediction" in m2["cellular_component"]["reason"]
    # m2, MF: at tau <= 0.5 P1 predicts {binding branch, catalytic branch}; above 0.5 only the wrong one
    f = m2["molecular_function"]["fmax"]
    assert f["threshold"] == pytest.approx(0.01) and f["coverage"] == pytest.approx(0.5) and m2["molecular_function"]["scored"]
    assert "CAFA5" not in out


def test_user_errors_name_file_line_and_field(tmp_path, capsys):
    d = _setup(tmp_path)
    (d / "bad_truth.tsv").write_text("P1\tGO:0005515\nP2\n")
    assert main(["--truth", str(d / "bad_truth.tsv"), "--pred", str(d / "preds"), "--out", str(d / "o")]) == 1
    assert f"{d / 'bad_truth.tsv'}, line 2" in capsys.readouterr().err
    (d / "bad.tsv").write_text("P1\tGO:0005515\t0.4\nP1\tGO:0003824\thigh\n")
    assert main(["--truth", str(d / "truth.tsv"), "--pred", str(d / "bad.tsv"), "--out", str(d / "o")]) == 1
    assert "bad.tsv, line 2, field 3 (score): 'high' is not a number" in capsys.readouterr().err
    assert main(["--truth", str(d / "truth.tsv"), "--pred", str(d / "nowhere"), "--out", str(d / "o")]) == 1
    assert "neither a file nor a folder" in capsys.readouterr().err
    assert not (d / "o" / "go_metrics.json").exists()
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "biopost eval go" in capsys.readouterr().out


def test_through_the_biopost_console_script(tmp_path):
    d = _setup(tmp_path)
    cmd = [sys.executable, "-m", "biopost.cli", "eval", "go", "--truth", str(d / "truth.tsv"),
           "--pred", str(d / "preds" / "m1.tsv"), "--out", str(d / "out")]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert "m1.tsv" in p.stdout and (d / "out" / "go_metrics.json").exists()
    res = json.loads((d / "out" / "go_metrics.json").read_text())
    assert res["ia"] is None and res["methods"]["m1.tsv"]["namespaces"]["molecular_function"]["weighted_fmax"] is None
    h = subprocess.run([sys.executable, "-m", "biopost.cli", "eval", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert h.returncode == 0 and "go" in h.stdout


def test_set_metrics_equal_the_files_path_on_all_one_scores(go, tmp_path):
    """go_metrics.set_metrics (parsed model answers) = the prediction-file path (= cafaeval) with
    every score 1.0; a namespace nobody predicted scores 0 instead of being left out."""
    import random

    from bioreason_pro.go_cli import build_parser, run
    from bioreason_pro.go_metrics import set_metrics
    truth = ROOT / "tests/fixtures/go/truth_human_exp.tsv"
    cols = {"molecular_function": "go_mf", "biological_process": "go_bp", "cellular_component": "go_cc"}
    rows = {}
    for line in truth.read_text().splitlines():
        p, t = line.split()[:2]
        terms, _ = go.resolve(t)  # alt ids stay alt ids in the rows: the scorer maps them
        if terms:
            rows.setdefault(p, {"go_mf": [], "go_bp": [], "go_cc": []})[cols[go.namespace(terms[0])]].append(t)
    rng = random.Random(5)
    proteins = sorted(rows)
    preds = []
    for p in proteins:
        gold = rows[p]["go_mf"] + rows[p]["go_bp"]
        preds.append(None if rng.random() < 0.1 else
                     [g for g in gold if rng.random() < 0.6] + [go.ids[rng.randrange(len(go))] for _ in range(3)])
    (tmp_path / "p.tsv").write_text("".join(f"{p}\t{t}\t1.0\n" for p, ids in zip(proteins, preds) for t in ids or []))
    args = build_parser().parse_args(["--truth", str(truth), "--pred", str(tmp_path / "p.tsv"), "--ia", str(IA),
                                      "--out", str(tmp_path)])
    files = run(args)["methods"]["p.tsv"]["namespaces"]
    mine = set_metrics([rows[p] for p in proteins], preds)
    assert mine["n_unparsed"] == sum(p is None for p in preds) > 0
    for ns, aspect in (("molecular_function", "MF"), ("biological_process", "BP"), ("cellular_component", "CC")):
        f = files[ns]
        if not f["evaluated"]:
            continue
        m = mine[aspect]
        assert m["n"] == f["n_truth"]
        assert (m["precision"], m["recall"], m["f1"], m["coverage"]) == pytest.approx(
            (f["fmax"]["precision"], f["fmax"]["recall"], f["fmax"]["fmax"], f["fmax"]["coverage"]), abs=1e-9)
        w = f["weighted_fmax"]
        assert (m["weighted_precision"], m["weighted_recall"], m["weighted_f1"], m["weighted_coverage"]) == \
            pytest.approx((w["precision"], w["recall"], w["fmax"], w["coverage"]), abs=1e-9)
    assert files["molecular_function"]["evaluated"] and files["biological_process"]["evaluated"]
    assert mine["MF"]["f1"] > 0.3
    # a namespace where no protein has a prediction scores 0 (the files path leaves it out)
    none = set_metrics([rows[p] for p in proteins], [[] for _ in proteins])
    assert none["MF"]["f1"] == 0.0 and none["pooled"]["recall"] == 0.0

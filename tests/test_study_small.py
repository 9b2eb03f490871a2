"""docs/study_small.md's tables come from the committed results tree: harvesting study/small again
gives every table row of the doc verbatim (a table edited by hand, or a tree changed without
re-harvesting, fails here), and the doc's counts of what ran agree with the tree."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "study_small.md"
TREE = ROOT / "study" / "small"
SPECS = [ROOT / "sweeps" / "study_small_dna.yaml", ROOT / "sweeps" / "study_small_protein.yaml"]


def _table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ")]


def test_harvest_of_the_committed_tree_reproduces_every_table_of_the_doc(tmp_path):
    specs = [arg for spec in SPECS for arg in ("--spec", str(spec))]
    proc = subprocess.run([sys.executable, "harvest_results.py", "--root", str(TREE), "--out", str(tmp_path), *specs],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    harvested = set(_table_rows((tmp_path / "results_id_ood.md").read_text()))
    rows = _table_rows(DOC.read_text())
    assert len(rows) >= 30
    missing = [r for r in rows if r not in harvested]
    assert not missing, missing
    # the committed harvest beside the doc is the same one
    committed = set(_table_rows((ROOT / "docs" / "study_small" / "results_id_ood.md").read_text()))
    assert committed == harvested


def test_the_tree_holds_metrics_and_status_only():
    files = [p for p in TREE.rglob("*") if p.is_file()]
    assert files and {p.name for p in files} <= {"status.json", "metrics.json", "config.yaml",
                                                 "train_summary.json", "final_eval_metrics.json"}
    assert not any("checkpoints" in p.parts for p in files)
    metrics = [json.loads(p.read_text()) for p in files if p.name == "metrics.json"]
    assert all(m["schema"] == "biopost.metrics/v1" for m in metrics)
    # DNA: the first 250 rows of each test split; protein: the synthetic GO test splits whole (90)
    assert {(m["sweep"], m["n"]) for m in metrics} == {("study_small_dna", 250), ("study_small_protein", 90)}
    assert all(m["headline"] == "fmax" and m["scored"] for m in metrics if m["sweep"] == "study_small_protein")

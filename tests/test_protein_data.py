"""GO protein rows: the loader's two validation passes, every input format, and bad inputs
through the loader and `biopost data split-go` (a named error or a counted skip)."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT

from biopost.data.io import DataError
from bioreason_pro.ontology import load_ontology
from bioreason_pro.protein_data import load_protein_rows, validate_go

ALT, PRIMARY = "GO:0019952", "GO:0000003"      # reproduction (BP): alt_id -> primary
OBSOLETE = "GO:0140276"
MF, CC = "GO:0003824", "GO:0005737"            # catalytic activity, cytoplasm


@pytest.fixture(scope="module")
def onto():
    return load_ontology()


def good(pid="P1", **kw):
    row = {"protein_id": pid, "sequence": "MKTAYIAKQR", "organism": "Homo sapiens (Human)",
           "go_mf": [MF], "go_bp": [], "go_cc": [CC]}
    row.update(kw)
    return row


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


BAD = {
    "unknown GO id": (dict(go_mf=["GO:9999999"]), "go_mf", "unknown GO id GO:9999999"),
    "non-amino-acid character": (dict(sequence="MKT1AY"), "sequence", "outside the protein alphabet"),
    "empty sequence": (dict(sequence="  "), "sequence", "empty sequence"),
    "only go_pred labels": (dict(go_mf=[], go_cc=[], go_pred="GO:0003824 GO:0005737"), "go_pred",
                            "only GO labels are in go_pred"),
    "malformed GO id": (dict(go_cc=["GO:12345"]), "go_cc", "malformed GO id"),
}


def test_ontology_ids_used_here(onto):
    assert onto.resolve(ALT)[1] == "alt" and onto.ids[onto.resolve(ALT)[0][0]] == PRIMARY
    assert onto.resolve(OBSOLETE)[1] == "obsolete"


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_row_is_a_named_error_or_a_counted_skip(tmp_path, onto, case):
    change, field, message = BAD[case]
    path = write_jsonl(tmp_path / "rows.jsonl", [good("P1"), good("P2", **change), good("P3")])
    with pytest.raises(DataError) as e:
        load_protein_rows(str(path), onto=onto)
    text = str(e.value)
    assert f"{path}: line 2: field {field!r}" in text and message in text and "--skip_invalid" in text
    rows, reports = load_protein_rows(str(path), onto=onto, skip_invalid=True)
    assert [r["protein_id"] for r in rows["all"]] == ["P1", "P3"]
    assert reports["all"].n_rows == 3 and reports["all"].n_valid == 2 and sum(reports["all"].skipped.values()) == 1


@pytest.mark.parametrize("char", ["ß", "ı", "ﬁ", "é", "*"])
def test_unicode_case_folding_tricks_are_not_residues(tmp_path, onto, char):
    # 'ß'.upper() == 'SS', 'ı'.upper() == 'I', 'ﬁ'.upper() == 'FI': none may pass as residues
    path = write_jsonl(tmp_path / "rows.jsonl", [good(sequence=f"MK{char}AY")])
    with pytest.raises(DataError, match="outside the protein alphabet"):
        load_protein_rows(str(path), onto=onto)


def test_lower_case_and_rare_letters_pass_upper_cased(tmp_path, onto):
    path = write_jsonl(tmp_path / "rows.jsonl", [good(sequence="mkBZXUOay")])
    rows, _ = load_protein_rows(str(path), onto=onto)
    assert rows["all"][0]["sequence"] == "MKBZXUOAY"


def test_alt_ids_mapped_obsolete_dropped_duplicates_and_truncation_counted(tmp_path, onto):
    path = write_jsonl(tmp_path / "rows.jsonl", [
        good("P1", go_bp=[ALT, OBSOLETE, PRIMARY], sequence="M" * 50),
        good("P2", go_bp=[ALT])])
    rows, reports = load_protein_rows(str(path), onto=onto, max_length=20)
    r = reports["all"]
    assert rows["all"][0]["go_bp"] == [PRIMARY] and rows["all"][1]["go_bp"] == [PRIMARY]
    assert (r.alt_mapped, r.obsolete_dropped, r.duplicate_ids, r.truncated) == (2, 1, 1, 1)
    assert len(rows["all"][0]["sequence"]) == 20
    assert r.to_dict()["gold_terms"] == 6


def test_only_obsolete_ids_is_a_row_without_gold(tmp_path, onto):
    path = write_jsonl(tmp_path / "rows.jsonl", [good(go_mf=[], go_cc=[OBSOLETE.replace("0140276", "0140276")],
                                                       go_bp=[OBSOLETE])])
    with pytest.raises(DataError, match="no gold GO term"):
        load_protein_rows(str(path), onto=onto)


def test_gold_never_from_go_pred(onto):
    row = dict(good(), go_pred=["GO:0005634"], go_pred_mf=["GO:0016787"], _source="x: line 1")
    out = validate_go(row, onto)
    assert out["go_mf"] == [MF] and out["go_cc"] == [CC] and out["go_bp"] == []


def test_wrong_namespace_is_named(tmp_path, onto):
    path = write_jsonl(tmp_path / "rows.jsonl", [good(go_mf=[CC])])
    with pytest.raises(DataError, match="field 'go_mf': GO:0005737 is a cellular_component term"):
        load_protein_rows(str(path), onto=onto)


def test_every_local_format_reads_the_same_rows(tmp_path, onto):
    import pandas as pd
    rows = [good("P1"), good("P2", go_bp=[PRIMARY])]
    write_jsonl(tmp_path / "a.jsonl", rows)
    (tmp_path / "a.json").write_text(json.dumps(rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "a.parquet")
    csv_rows = [dict(r, go_mf=";".join(r["go_mf"]), go_bp=";".join(r["go_bp"]), go_cc=";".join(r["go_cc"]))
                for r in rows]
    pd.DataFrame(csv_rows).to_csv(tmp_path / "a.csv", index=False)
    want = [(r["protein_id"], r["go_mf"], r["go_bp"], r["go_cc"]) for r in rows]
    for name in ("a.jsonl", "a.json", "a.parquet", "a.csv"):
        got, _ = load_protein_rows(str(tmp_path / name), onto=onto)
        assert [(r["protein_id"], r["go_mf"], r["go_bp"], r["go_cc"]) for r in got["all"]] == want, name


def test_directory_of_splits_and_saved_hf_dataset(tmp_path, onto):
    datasets = pytest.importorskip("datasets")
    d = tmp_path / "dir"
    d.mkdir()
    write_jsonl(d / "train.jsonl", [good("P1")])
    write_jsonl(d / "ood_test.jsonl", [good("P2")])
    got, _ = load_protein_rows(str(d), onto=onto)
    assert {s: [r["protein_id"] for r in v] for s, v in got.items()} == {"train": ["P1"], "ood_test": ["P2"]}
    ds = datasets.DatasetDict({"train": datasets.Dataset.from_list([good("P1")]),
                               "test": datasets.Dataset.from_list([good("P2", go_cc=["GO:9999999"])])})
    ds.save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(DataError, match=r"hf\[test\]: row 1: field 'go_cc': unknown GO id"):
        load_protein_rows(str(tmp_path / "hf"), onto=onto)


def test_hf_dataset_name_with_config(monkeypatch, onto):
    datasets = pytest.importorskip("datasets")
    seen = {}

    def fake_load(name, config=None):
        seen["args"] = (name, config)
        return datasets.DatasetDict({"train": datasets.Dataset.from_list([good("P1")])})
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    got, _ = load_protein_rows("wanglab/cafa5:experiment_data", onto=onto)
    assert seen["args"] == ("wanglab/cafa5", "experiment_data") and got["train"][0]["protein_id"] == "P1"


def _split_cli(*args):
    return subprocess.run([sys.executable, "-m", "biopost.cli", "data", "split-go", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, env=_env())


def _env():
    import os
    return dict(os.environ, OMP_NUM_THREADS="1")


@pytest.mark.parametrize("case", sorted(BAD))
def test_split_command_bad_input_is_a_named_error(tmp_path, case):
    change, field, message = BAD[case]
    rows = [good(f"P{i}", organism=f"Org{i % 4}") for i in range(12)] + [good("B1", **change)]
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    r = _split_cli("--data", path, "--out", tmp_path / "out", "--rule", "organism",
                   "--ood_val_organisms", "Org1", "--ood_test_organisms", "Org2")
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("error:") == 1 and f"rows.jsonl: line 13: field {field!r}" in r.stderr, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_split_command_skip_invalid_counts_each_reason(tmp_path):
    rows = [good(f"P{i}", organism=f"Org{i % 4}") for i in range(12)]
    bad = [good(f"B{i}", **BAD[case][0]) for i, case in enumerate(sorted(BAD))]
    path = write_jsonl(tmp_path / "rows.jsonl", rows + bad)
    r = _split_cli("--data", path, "--out", tmp_path / "out", "--rule", "organism", "--skip_invalid", "true",
                   "--ood_val_organisms", "Org1", "--ood_test_organisms", "Org2")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "out/split_report.json").read_text())
    v = report["validation"]["all"]
    assert v["n_rows"] == 17 and v["n_valid"] == 12 and sum(v["skipped"].values()) == 5
    assert len(v["skipped"]) == 5, v["skipped"]  # five distinct reasons, each counted once
    assert sum(c["proteins"] for c in report["counts"].values()) == 12

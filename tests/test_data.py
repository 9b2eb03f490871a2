"""Loaders, validation with errors that name file/row/field, skip-and-count, truncation, subsets,
and the synthetic KEGG generator's guarantees."""
import csv
import gzip
import json
from collections import Counter

import pytest

from biopost.data.examples import load_task_data
from biopost.data.io import DataError, load_split_rows
from biopost.data.schema import Truncation, fraction_subset, validate_rows
from bioreason.synth_kegg import DISEASES, MOTIFS, SynthConfig, generate
from biopost.tasks import get_task

KEGG = get_task("kegg")


def kegg_row(**over):
    row = {"question": "What disease?", "answer": "Parkinson disease",
           "reference_sequence": "ACGTACGTAC", "variant_sequence": "ACGTTCGTAC",
           "reasoning": {"reasoning_steps": ["step one", "step two"], "labels": {}}}
    row.update(over)
    return row


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_csv_parquet_and_network_split_names(tmp_path):
    rows = [kegg_row(), kegg_row(answer="Prion disease")]
    d1 = tmp_path / "jsonl"
    d1.mkdir()
    write_jsonl(d1 / "train.jsonl", rows)
    write_jsonl(d1 / "ood_test.jsonl", rows[:1])
    got = load_split_rows(str(d1), ("train", "ood_test"))
    assert [r["answer"] for r, _ in got["train"]] == ["Parkinson disease", "Prion disease"]

    d2 = tmp_path / "csv"
    d2.mkdir()
    for name in ("train_network_split.csv", "id_test_network_split.csv", "ood_test_network_split.csv"):
        with open(d2 / name, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            for r in rows:
                w.writerow({**r, "reasoning": json.dumps(r["reasoning"])})
    got = load_split_rows(str(d2), ("train", "id_test", "ood_test"))
    assert got["train"][0][0]["reasoning"]["reasoning_steps"] == ["step one", "step two"]
    assert got["id_test"][1][1].where() == f"{d2 / 'id_test_network_split.csv'}: row 2"

    import pyarrow as pa
    import pyarrow.parquet as pq
    d3 = tmp_path / "pq"
    d3.mkdir()
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "reasoning"} for r in rows]),
                   d3 / "train.parquet")
    assert len(load_split_rows(str(d3), ("train",))["train"]) == 2

    gz = tmp_path / "gz"
    gz.mkdir()
    with gzip.open(gz / "train.jsonl.gz", "wt") as fh:
        fh.write(json.dumps(rows[0]) + "\n")
    assert load_split_rows(str(gz), ("train",))["train"][0][1].where() == f"{gz / 'train.jsonl.gz'}: line 1"


def test_saved_hf_dataset_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [kegg_row(reasoning="a plain string"), kegg_row()]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:1]),
                               "test": datasets.Dataset.from_list(rows[:1])})
    dd.save_to_disk(str(tmp_path / "hf"))
    got = load_split_rows(str(tmp_path / "hf"), ("train", "id_test"))
    assert got["id_test"][0][0]["question"] == "What disease?"


def test_missing_split_names_what_exists(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [kegg_row()])
    with pytest.raises(DataError, match=r"ood_test.*found: train"):
        load_split_rows(str(tmp_path), ("train", "ood_test"))


def test_missing_field_error_names_file_row_and_field(tmp_path):
    bad = kegg_row()
    del bad["answer"]
    path = write_jsonl(tmp_path / "train.jsonl", [kegg_row(), bad])
    with pytest.raises(DataError) as e:
        load_task_data(KEGG, str(tmp_path), ("train",), log=lambda *_: None)
    msg = str(e.value)
    assert str(path) in msg and "line 2" in msg and "'answer'" in msg and "missing" in msg


def test_bad_dna_characters_error_and_skip_invalid_counts(tmp_path):
    rows = [kegg_row(), kegg_row(variant_sequence="ACGTXACGU"), kegg_row(reference_sequence="acgtn"),
            kegg_row(reference_sequence="  ")]
    write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(DataError) as e:
        load_task_data(KEGG, str(tmp_path), ("train",), log=lambda *_: None)
    msg = str(e.value)
    assert "line 2" in msg and "'variant_sequence'" in msg and "'U', 'X'" in msg and "position 5" in msg
    kept, reports = load_task_data(KEGG, str(tmp_path), ("train",), skip_invalid=True, log=lambda *_: None)
    assert len(kept["train"]) == 2  # lower case is fine, upper-cased
    assert kept["train"][1]["reference_sequence"] == "ACGTN"
    report = reports["train"]
    assert report.n_rows == 4 and report.n_valid == 2 and sum(report.skipped.values()) == 2
    assert any("empty sequence" in k for k in report.skipped)


def test_variant_alias_and_reasoning_only_required_for_training(tmp_path):
    row = kegg_row()
    row["mutated_sequence"] = row.pop("variant_sequence")
    del row["reasoning"]
    write_jsonl(tmp_path / "train.jsonl", [row])
    write_jsonl(tmp_path / "id_test.jsonl", [row])
    rows, _ = load_task_data(KEGG, str(tmp_path), ("id_test",), log=lambda *_: None)
    assert rows["id_test"][0]["variant_sequence"] == "ACGTTCGTAC"
    with pytest.raises(DataError, match="'reasoning'"):
        load_task_data(KEGG, str(tmp_path), ("train",), log=lambda *_: None)


def test_truncation_is_centred_and_counted(tmp_path):
    long = "A" * 10 + "CCCC" + "G" * 10
    write_jsonl(tmp_path / "train.jsonl", [kegg_row(reference_sequence=long, variant_sequence="ACGT")])
    raw = load_split_rows(str(tmp_path), ("train",))["train"]
    rows, report = validate_rows(raw, KEGG.train_schema, "train", {"dna": Truncation(max_length=8)})
    assert rows[0]["reference_sequence"] == "AACCCCGG"
    assert report.truncated == Counter({"reference_sequence": 1})
    rows, _ = validate_rows(raw, KEGG.train_schema, "train", {"dna": Truncation(per_side=3)})
    assert rows[0]["reference_sequence"] == "ACCCCG"


def test_fraction_subsets_are_nested_and_deterministic():
    rows = list(range(100))
    s20, s40 = fraction_subset(rows, 0.2, seed=0), fraction_subset(rows, 0.4, seed=0)
    assert len(s20) == 20 and len(s40) == 40 and set(s20) <= set(s40)
    assert fraction_subset(rows, 0.2, seed=0) == s20 and fraction_subset(rows, 0.2, seed=1) != s20
    assert len(fraction_subset(list(range(7)), 0.5)) == 4  # ceil
    with pytest.raises(ValueError):
        fraction_subset(rows, 0.0)


def test_synthetic_kegg_label_is_decided_by_the_variant_dna():
    data = generate(SynthConfig(seed=3))
    motif_to_disease = {MOTIFS[d]: d for d in DISEASES}
    for split, rows in data.items():
        for row in rows:
            ref, var = row["reference_sequence"], row["variant_sequence"]
            assert len(ref) == len(var) == 300
            assert sum(a != b for a, b in zip(ref, var)) == 1
            hits = [(i, var[i:i + 6]) for i in range(295) if var[i:i + 6] in motif_to_disease]
            assert len(hits) == 1 and hits[0][0] % 6 == 0  # one motif, on the 6-mer grid
            assert motif_to_disease[hits[0][1]] == row["answer"]
            assert not [i for i in range(295) if ref[i:i + 6] in motif_to_disease]
            assert not any(d in row["question"] for d in DISEASES)  # the text does not leak it


def test_synthetic_ood_networks_are_held_out_and_disjoint():
    data = generate(SynthConfig(seed=0))
    nets = {s: {r["network"] for r in rows} for s, rows in data.items()}
    genes = {s: {r["gene"] for r in rows} for s, rows in data.items()}
    assert nets["id_val"] <= nets["train"] and nets["id_test"] <= nets["train"]
    for ood in ("ood_val", "ood_test"):
        assert not nets[ood] & nets["train"] and not genes[ood] & genes["train"]
    assert not nets["ood_val"] & nets["ood_test"]
    counts = Counter(r["answer"] for r in data["train"])
    assert set(counts) == set(DISEASES[:6]) and max(counts.values()) < 0.3 * len(data["train"])


def test_synthetic_generator_is_deterministic_per_seed(tmp_path):
    a, b, c = generate(SynthConfig(seed=5)), generate(SynthConfig(seed=5)), generate(SynthConfig(seed=6))
    assert a == b and a != c


def test_synth_kegg_cli_writes_loadable_splits(tmp_path):
    from biopost.cli import main
    assert main(["data", "synth-kegg", "--out", str(tmp_path), "--seed", "1", "--compress",
                 "--sizes", '{"train": 12, "id_val": 2, "ood_val": 2, "id_test": 3, "ood_test": 3}']) == 0
    rows, reports = load_task_data(KEGG, str(tmp_path), ("train", "id_val", "ood_val", "id_test", "ood_test"),
                                   log=lambda *_: None)
    assert [len(rows[s]) for s in rows] == [12, 2, 2, 3, 3]


def test_variant_effect_task_rows():
    data = generate(SynthConfig(seed=0, task="vep", sizes={"train": 200}))
    answers = Counter(r["answer"].split(";")[0] for r in data["train"])
    assert set(answers) == {"pathogenic", "benign"} and answers["benign"] > 40

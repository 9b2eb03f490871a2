"""Acceptance tests of the harvester (`biopost harvest` / harvest_results.py).

One small results tree holds every case the harvester must handle: complete cells over seeds,
a cell with ID only, a truncated file, a file missing its headline, a foreign schema, failed /
running / requeued cells, a standalone run, and a two-key sweep with string-valued numbers.
"""
import csv
import io
import json
import math
import os
import runpy
import statistics
import sys

import pytest
import yaml

from biopost.harvest import collect, write
from biopost.harvest.cli import main

SFT = "dna_sft_epochs"
KL = "dna_kl_beta"


def _write(path, doc):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def metrics_doc(run_id, split, value, *, sweep=SFT, stage="sft", cell=None, seed=0,
                ci=None, metrics=None, headline="accuracy", n=146):
    doc = {"schema": "biopost.metrics/v1", "run_id": run_id, "sweep": sweep,
           "cell": cell if cell is not None else {}, "stage": stage, "checkpoint": "last",
           "modality": "dna", "task": "kegg", "split": split, "headline": headline, "n": n,
           "n_unparsed": 2, "metrics": {headline: value, **(metrics or {})}, "seed": seed}
    if ci is not None:
        doc["ci95"] = {headline: ci}
    return doc


def put_metrics(root, doc):
    run_dir = os.path.join(root, doc["sweep"] or "standalone", doc["stage"], doc["run_id"])
    return _write(os.path.join(run_dir, "eval", doc["split"], "metrics.json"), doc)


def put_status(root, sweep, stage, run_id, state, *, target=None, cell=None, seed=0, **extra):
    run_dir = os.path.join(root, sweep, target[0] if target else stage, run_id)
    path = os.path.join(run_dir, "eval", "status.json") if target else \
        os.path.join(run_dir, "status.json")
    doc = {"schema": "biopost.status/v1", "sweep": sweep, "stage": stage, "run_id": run_id,
           "cell": cell or {}, "seed": seed, "state": state, "job_id": "77_3", "host": "n1",
           "target": None if target is None else dict(zip(("stage", "run_id", "checkpoint"),
                                                           target)),
           "started": "2026-01-01T00:00:00Z", "updated": "2026-01-01T01:00:00Z",
           "ended": None, "exit_code": None, "reason": None, **extra}
    return _write(path, doc)


def sft_cell(epochs):
    return {"sft.num_train_epochs": epochs}


# Three seeds of the 1-epoch cell: the seed aggregate must be their mean and sample sd.
SEED_ID = [0.5, 0.7, 0.9]
SEED_OOD = [0.4, 0.4, 0.7]
# Values whose decimal form is long or unusual: they must come out of json and csv unchanged.
TRICKY = {"e2-s0": (0.1 + 0.2, 1 / 3), "e2-s1": (0.8123456789012345, None),
          "e4-s0": (1e-05, None), "e8-s0": (2 / 3, None)}


@pytest.fixture
def tree(tmp_path):
    root = str(tmp_path / "runs")
    files = {"metrics": [], "paths": {}}

    def add(doc):
        path = put_metrics(root, doc)
        files["metrics"].append((path, doc))
        files["paths"][(doc["run_id"], doc["split"])] = path

    for seed, (i, o) in enumerate(zip(SEED_ID, SEED_OOD)):
        rid = f"e1-s{seed}"
        add(metrics_doc(rid, "id", i, cell=sft_cell(1), seed=seed, ci=[i - 0.05, i + 0.04],
                        metrics={"macro_f1": i / 2, "per_class": {"benign": {"f1": 0.25}}}))
        add(metrics_doc(rid, "ood", o, cell=sft_cell(1), seed=seed, ci=[o - 0.06, o + 0.05],
                        n=120))
    # Probe splits: extra columns, never the headline.
    add(metrics_doc("e1-s0", "id_val", 0.55, cell=sft_cell(1)))
    add(metrics_doc("e1-s0", "ood_val", 0.45, cell=sft_cell(1)))
    files["train_done"] = put_status(root, SFT, "sft", "e1-s0", "done", cell=sft_cell(1),
                                     exit_code=0)

    idv, oodv = TRICKY["e2-s0"]
    add(metrics_doc("e2-s0", "id", idv, cell=sft_cell(2), ci=[0.25, 0.35]))
    add(metrics_doc("e2-s0", "ood", oodv, cell=sft_cell(2), ci=[0.3, 0.4]))
    # Partial: ID only.
    add(metrics_doc("e2-s1", "id", TRICKY["e2-s1"][0], cell=sft_cell(2), seed=1))
    # Corrupt: the OOD file of 4 epochs was cut off mid-write.
    add(metrics_doc("e4-s0", "id", TRICKY["e4-s0"][0], cell=sft_cell(4)))
    files["truncated"] = _write(
        os.path.join(root, SFT, "sft", "e4-s0", "eval", "ood", "metrics.json"),
        json.dumps(metrics_doc("e4-s0", "ood", 0.5, cell=sft_cell(4)))[:57])
    # Evaluation of 8 epochs still running: ID written, OOD not yet.
    add(metrics_doc("e8-s0", "id", TRICKY["e8-s0"][0], cell=sft_cell(8)))
    files["eval_running"] = put_status(root, SFT, "eval", "e8-s0", "running",
                                       target=("sft", "e8-s0", "last"), cell=sft_cell(8))
    # Training of 16 epochs failed: a status file and nothing else.
    files["train_failed"] = put_status(root, SFT, "sft", "e16-s0", "failed", cell=sft_cell(16),
                                       exit_code=1, reason="CUDA out of memory")
    # 32 epochs: the ID file lacks its headline metric; the OOD file is fine.
    bad = metrics_doc("e32-s0", "id", 0.5, cell=sft_cell(32))
    bad["metrics"] = {"macro_f1": 0.5}
    files["no_headline"] = put_metrics(root, bad)
    add(metrics_doc("e32-s0", "ood", 0.25, cell=sft_cell(32)))
    # Another tool's metrics.json somewhere in the tree.
    files["foreign"] = _write(os.path.join(root, "other_tool", "run1", "metrics.json"),
                              {"schema": "wandb.summary/v2", "accuracy": 0.99})
    # A log that looks like results: never read.
    _write(os.path.join(root, SFT, "sft", "e1-s0", "logs", "slurm-77_3.out"),
           "accuracy: 0.123\n")

    # Two swept keys; beta is a string (YAML reads 1e-4 as one) and must sort numerically.
    for beta, init, i, o in [("1e-3", "sft", 0.62, 0.41), ("1e-4", "sft", 0.6, 0.5),
                             ("1e-3", "base", 0.52, 0.31), ("1e-4", "base", 0.5, 0.4)]:
        cell = {"grpo.beta": beta, "grpo.init": init}
        rid = f"b{beta}-{init}"
        add(metrics_doc(rid, "id", i, sweep=KL, stage="grpo", cell=cell, ci=[i - .1, i + .1]))
        add(metrics_doc(rid, "ood", o, sweep=KL, stage="grpo", cell=cell, ci=[o - .1, o + .1]))
    files["requeued"] = put_status(root, KL, "grpo", "b1e-2-sft", "requeued",
                                   cell={"grpo.beta": "1e-2", "grpo.init": "sft"})

    # A standalone run: sweep null, no cell.
    add(metrics_doc("my_run", "id", 0.71, sweep=None, cell={}, seed=None))
    add(metrics_doc("my_run", "ood", 0.52, sweep=None, cell={}, seed=None))
    files["root"] = root
    return files


def harvest_to(tree, tmp_path, *args):
    out = str(tmp_path / "figures")
    assert main(["--root", tree["root"], "--out", out, *args]) == 0
    with open(os.path.join(out, "results_id_ood.json")) as f:
        doc = json.load(f)
    with open(os.path.join(out, "results_id_ood.csv"), newline="") as f:
        table = list(csv.DictReader(f))
    with open(os.path.join(out, "results_id_ood.md"), encoding="utf-8") as f:
        md = f.read()
    return out, doc, table, md


EXPECTED_ROWS = [
    # (sweep, stage, run_id, checkpoint): sweeps by name, standalone last; numeric sort
    (KL, "grpo", "b1e-4-base", "last"), (KL, "grpo", "b1e-4-sft", "last"),
    (KL, "grpo", "b1e-3-base", "last"), (KL, "grpo", "b1e-3-sft", "last"),
    (KL, "grpo", "b1e-2-sft", None),
    (SFT, "sft", "e1-s0", "last"), (SFT, "sft", "e1-s1", "last"), (SFT, "sft", "e1-s2", "last"),
    (SFT, "sft", "e2-s0", "last"), (SFT, "sft", "e2-s1", "last"), (SFT, "sft", "e4-s0", "last"),
    (SFT, "sft", "e8-s0", "last"), (SFT, "sft", "e16-s0", None), (SFT, "sft", "e32-s0", "last"),
    (None, "sft", "my_run", "last"),
]


def expected_problems(tree):
    return [
        ("corrupt", tree["truncated"], None),
        ("invalid", tree["no_headline"], "e32-s0"),
        ("foreign", tree["foreign"], None),
        ("failed", tree["train_failed"], "e16-s0"),
        ("requeued", tree["requeued"], "b1e-2-sft"),
        ("running", tree["eval_running"], "e8-s0"),
        ("missing_split", tree["paths"][("e2-s1", "id")], "e2-s1"),
        ("missing_split", tree["paths"][("e32-s0", "ood")], "e32-s0"),
        ("missing_split", tree["paths"][("e4-s0", "id")], "e4-s0"),
    ]


def test_rows_and_problems(tree, tmp_path):
    out, doc, table, md = harvest_to(tree, tmp_path)
    keys = [(r["sweep"], r["stage"], r["run_id"], r["checkpoint"]) for r in doc["rows"]]
    assert keys == EXPECTED_ROWS
    assert [(r["sweep"] or None, r["run_id"]) for r in table] == \
        [(k[0], k[2]) for k in EXPECTED_ROWS]
    problems = [(p["kind"], p["path"], p["run_id"]) for p in doc["problems"]]
    assert problems == expected_problems(tree)
    assert doc["files"] == {"metrics": len(tree["metrics"]) + 3, "status": 4}
    assert [s["sweep"] for s in doc["sweeps"]] == [KL, SFT, None]
    assert doc["sweeps"][0]["axes"] == ["grpo.beta", "grpo.init"]

    rows = {r["run_id"]: r for r in doc["rows"]}
    # Headline, ci, gap, n, probes and other metrics of a complete cell.
    e1 = rows["e1-s0"]
    assert (e1["id"], e1["ood"], e1["n_id"], e1["n_ood"]) == (0.5, 0.4, 146, 120)
    assert (e1["id_ci95_lo"], e1["id_ci95_hi"]) == (0.5 - 0.05, 0.5 + 0.04)
    assert e1["gap"] == 0.5 - 0.4
    assert (e1["id_val"], e1["ood_val"]) == (0.55, 0.45)
    assert e1["id/macro_f1"] == 0.25 and e1["id/per_class.benign.f1"] == 0.25
    assert e1["sft.num_train_epochs"] == 1 and e1["cell"] == sft_cell(1)
    assert (e1["train_state"], e1["eval_state"], e1["notes"]) == ("done", None, None)
    # Partial, failed, running and requeued cells stay in the table, marked.
    assert rows["e2-s1"]["ood"] is None and rows["e2-s1"]["gap"] is None
    assert rows["e2-s1"]["notes"] == "no ood"
    assert rows["e4-s0"]["notes"] == "no ood"
    assert rows["e8-s0"]["eval_state"] == "running" and rows["e8-s0"]["notes"] == "eval running"
    assert rows["e16-s0"]["train_state"] == "failed" and rows["e16-s0"]["id"] is None
    assert rows["e16-s0"]["sft.num_train_epochs"] == 16  # cell taken from the status file
    assert rows["b1e-2-sft"]["notes"] == "train requeued"
    assert rows["e32-s0"]["ood"] == 0.25 and rows["e32-s0"]["notes"] == "no id"
    assert rows["my_run"]["sweep"] is None and rows["my_run"]["gap"] == 0.71 - 0.52

    # The md: one section per sweep, rows in the same order, problems with their paths.
    sections = md.split("\n## ")
    titles = [s.splitlines()[0] for s in sections[1:]]
    assert titles == [f"sweep `{KL}`", f"sweep `{SFT}`", "standalone", "Problems"]
    sft_section = sections[2]
    md_run_ids = [line.split("`")[1] for line in sft_section.splitlines()
                  if line.startswith("| sft |") and "`" in line]
    assert md_run_ids[:9] == [k[2] for k in EXPECTED_ROWS if k[0] == SFT]
    assert "| sft | 2 | 0 | last | 0.300 [0.250, 0.350] | 0.333 [0.300, 0.400] | -0.033 | " \
           "146 | 146 | `e2-s0` |  |" in sft_section
    for kind, path, _ in expected_problems(tree):
        assert f"| {kind} |" in sections[4] and f"`{path}`" in sections[4]
    assert "slurm-77_3.out" not in md and "0.123" not in json.dumps(doc)


def test_numbers_round_trip_from_metrics_to_json_and_csv(tree, tmp_path):
    out, doc, table, _ = harvest_to(tree, tmp_path)
    rows = {r["run_id"]: r for r in doc["rows"]}
    csv_rows = {r["run_id"]: r for r in table}
    checked = 0
    for path, m in tree["metrics"]:
        split, value = m["split"], m["metrics"][m["headline"]]
        row, csv_row = rows[m["run_id"]], csv_rows[m["run_id"]]
        assert row[split] == value and type(row[split]) is type(value)
        assert csv_row[split] == repr(value)  # shortest round-trip form, no rounding
        assert float(csv_row[split]) == value
        assert row[f"n_{split}"] == m["n"] and csv_row[f"n_{split}"] == str(m["n"])
        assert row[f"path_{split}"] == path
        if "ci95" in m:
            lo, hi = m["ci95"][m["headline"]]
            assert (row[f"{split}_ci95_lo"], row[f"{split}_ci95_hi"]) == (lo, hi)
            assert (float(csv_row[f"{split}_ci95_lo"]), float(csv_row[f"{split}_ci95_hi"])) \
                == (lo, hi)
        checked += 1
    assert checked == len(tree["metrics"])
    assert rows["e2-s0"]["id"] == 0.30000000000000004
    assert csv_rows["e2-s0"]["id"] == "0.30000000000000004"
    assert csv_rows["e1-s0"]["id/per_class.benign.f1"] == "0.25"
    assert csv_rows["e16-s0"]["id"] == "" and csv_rows["e16-s0"]["train_state"] == "failed"


def test_seed_aggregation_mean_and_sample_sd(tree, tmp_path):
    out, doc, _, md = harvest_to(tree, tmp_path)
    aggs = {(a["sweep"], json.dumps(a["cell"], sort_keys=True)): a
            for a in doc["seed_aggregates"]}
    a = aggs[(SFT, json.dumps(sft_cell(1)))]
    assert a["n_seeds"] == 3 and a["seeds"] == [0, 1, 2]
    assert a["run_ids"] == ["e1-s0", "e1-s1", "e1-s2"]
    assert a["id_mean"] == pytest.approx(0.7, abs=1e-15)
    assert a["id_sd"] == pytest.approx(0.2, abs=1e-15)  # sample sd (ddof=1), not 0.163
    assert a["ood_mean"] == pytest.approx(statistics.mean(SEED_OOD), abs=1e-15)
    assert a["ood_sd"] == pytest.approx(statistics.stdev(SEED_OOD), abs=1e-15)
    gaps = [i - o for i, o in zip(SEED_ID, SEED_OOD)]
    assert a["gap_sd"] == pytest.approx(statistics.stdev(gaps), abs=1e-15)
    assert a["id_val_n"] == 1 and a["id_val_sd"] is None
    # Two seeds of 2 epochs, one without OOD: ID over both, OOD over the one.
    b = aggs[(SFT, json.dumps(sft_cell(2)))]
    assert b["n_seeds"] == 2 and b["id_n"] == 2 and b["ood_n"] == 1
    assert b["id_sd"] == pytest.approx(statistics.stdev([0.1 + 0.2, 0.8123456789012345]))
    assert b["ood_mean"] == 1 / 3 and b["ood_sd"] is None  # one seed: no sd
    # Failed cells are not seeds.
    assert (SFT, json.dumps(sft_cell(16))) not in aggs
    assert "| sft | 1 | last | 0.700 ± 0.200 | 0.500 ± 0.173 | +0.200 ± 0.100 | 3 ([0, 1, 2]) |" \
        in md
    with open(os.path.join(out, "results_id_ood_seeds.csv"), newline="") as f:
        seeds_csv = {(r["sweep"], r["sft.num_train_epochs"]): r for r in csv.DictReader(f)}
    assert float(seeds_csv[(SFT, "1")]["id_sd"]) == a["id_sd"]
    assert seeds_csv[(SFT, "2")]["ood_sd"] == ""


def test_plotted_series_match_metrics_and_pngs_are_images(tree, tmp_path):
    from matplotlib.image import imread
    out, doc, _, md = harvest_to(tree, tmp_path)
    values = {}  # (run_id, split) -> metrics doc
    for _, m in tree["metrics"]:
        values[(m["run_id"], m["split"])] = m

    with open(os.path.join(out, f"{SFT}__sft.num_train_epochs.json")) as f:
        spec = json.load(f)
    assert spec["scale"] == "log2" and spec["headline"] == "accuracy"
    (s,) = spec["series"]
    assert s["x"] == [1, 2, 4, 8, 32]  # 16 failed: no point
    # 1 epoch: mean and sd over three seeds.
    assert s["id_mean"][0] == pytest.approx(statistics.mean(SEED_ID), abs=1e-15)
    assert s["id_err_lo"][0] == s["id_err_hi"][0] == pytest.approx(statistics.stdev(SEED_ID))
    assert s["id_err_kind"][0] == "sd" and s["n_seeds"][0] == 3
    # 8 epochs: one seed, ID only: the value itself with its bootstrap ci (none here).
    assert s["id_mean"][3] == values[("e8-s0", "id")]["metrics"]["accuracy"]
    assert s["ood_mean"][3] is None and s["id_err_kind"][3] is None
    # 32 epochs: OOD only.
    assert s["id_mean"][4] is None and s["ood_mean"][4] == 0.25

    with open(os.path.join(out, f"{KL}__grpo.beta.json")) as f:
        kl = json.load(f)
    assert kl["scale"] == "linear"
    assert [x["fixed"] for x in kl["series"]] == [{"grpo.init": "base"}, {"grpo.init": "sft"}]
    for series in kl["series"]:
        init = series["fixed"]["grpo.init"]
        assert series["x"] == ["1e-4", "1e-3"]  # numeric order; requeued 1e-2 has no value
        for x, id_mean, id_lo, ood_mean, ood_hi in zip(series["x"], series["id_mean"],
                                                       series["id_err_lo"], series["ood_mean"],
                                                       series["ood_err_hi"]):
            mid = values[(f"b{x}-{init}", "id")]
            mood = values[(f"b{x}-{init}", "ood")]
            assert id_mean == mid["metrics"]["accuracy"]
            assert id_lo == id_mean - mid["ci95"]["accuracy"][0]
            assert ood_mean == mood["metrics"]["accuracy"]
            assert ood_hi == mood["ci95"]["accuracy"][1] - ood_mean
    with open(os.path.join(out, f"{KL}__grpo.init.json")) as f:
        assert json.load(f)["scale"] == "categorical"

    pngs = sorted(p for p in os.listdir(out) if p.endswith(".png"))
    assert pngs == [f"{KL}__grpo.beta.png", f"{KL}__grpo.init.png",
                    f"{SFT}__sft.num_train_epochs.png"]
    assert [p["png"] for p in doc["plots"]] == pngs
    for png in pngs:
        with open(os.path.join(out, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        pixels = imread(os.path.join(out, png))
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert pixels[..., :3].var() > 1e-3  # not a blank canvas
        assert f"]({png})" in md


SPEC_EPOCHS = """\
name: mini_sft_epochs
modality: dna
task: kegg
stages:
  sft:
    script: BioReason/train_dna_qwen.py
    grid: {num_train_epochs: [4, 1, 2]}
eval: {splits: [id, ood], stages: [sft]}
seeds: [0, 1]
"""
# Evaluates ID only, at another checkpoint label: complete without an OOD file.
SPEC_PROBE = """\
name: mini_probe
modality: dna
stages:
  sft:
    script: BioReason/train_dna_qwen.py
    grid: {num_train_epochs: [3]}
eval: {splits: [id], stages: [sft], checkpoint: best_ood_val}
"""


def test_spec_lists_cells_that_never_ran(tmp_path):
    from biopost.sweeps.spec import expected_evaluations
    root = str(tmp_path / "runs")
    os.makedirs(root)
    spec_epochs = _write(str(tmp_path / "sweeps" / "mini_sft_epochs.yaml"), SPEC_EPOCHS)
    spec_probe = _write(str(tmp_path / "sweeps" / "mini_probe.yaml"), SPEC_PROBE)
    cells = {(e["cell"]["sft.num_train_epochs"], e["seed"]): e
             for e in expected_evaluations(spec_epochs, root)}
    assert len(cells) == 6

    def result(epochs, seed, split, value):
        e = cells[(epochs, seed)]
        put_metrics(root, metrics_doc(e["run_id"], split, value, sweep=e["sweep"],
                                      cell=e["cell"], seed=seed))
    for seed in (0, 1):
        result(1, seed, "id", 0.6 + seed / 10)
        result(1, seed, "ood", 0.4)
    result(2, 0, "id", 0.7)  # OOD never written
    failed = put_status(root, "mini_sft_epochs", "sft", cells[(2, 1)]["run_id"], "failed",
                        cell=cells[(2, 1)]["cell"], seed=1, exit_code=137, reason="OOM")
    (probe,) = expected_evaluations(spec_probe, root)
    doc = metrics_doc(probe["run_id"], "id", 0.5, sweep="mini_probe", cell=probe["cell"])
    doc["checkpoint"] = "best_ood_val"
    put_metrics(root, doc)

    out, doc, table, md = harvest_to({"root": root}, tmp_path, "--spec", spec_epochs,
                                     "--spec", spec_probe)
    assert doc["specs"] == [spec_epochs, spec_probe]
    run_id = {key: e["run_id"] for key, e in cells.items()}
    problems = [(p["kind"], p["run_id"]) for p in doc["problems"]]
    assert sorted(problems) == sorted([("failed", run_id[(2, 1)]),
                                       ("never_ran", run_id[(4, 0)]),
                                       ("never_ran", run_id[(4, 1)]),
                                       ("missing_split", run_id[(2, 0)])])
    assert failed in [p["path"] for p in doc["problems"]]
    rows = [(r["run_id"], r["checkpoint"], r["notes"]) for r in doc["rows"]]
    assert rows == [(probe["run_id"], "best_ood_val", None)] + [
        (run_id[(1, 0)], "last", None), (run_id[(1, 1)], "last", None),
        (run_id[(2, 0)], "last", "no ood"), (run_id[(2, 1)], "last", "train failed"),
        (run_id[(4, 0)], "last", "never ran"), (run_id[(4, 1)], "last", "never ran")]
    assert f"| never_ran | mini_sft_epochs | sft | `{run_id[(4, 0)]}` | last |" in md


def test_spec_that_cannot_be_expanded_is_a_problem_not_a_crash(tree, tmp_path):
    spec = _write(str(tmp_path / "bad.yaml"), SPEC_EPOCHS.replace("grid:", "grdi:"))
    out, doc, table, _ = harvest_to(tree, tmp_path, "--spec", spec)
    errors = [p for p in doc["problems"] if p["kind"] == "spec_error"]
    assert [p["path"] for p in errors] == [spec]
    assert "grdi" in errors[0]["detail"] and errors[0]["detail"].startswith("SpecError")
    assert len(doc["problems"]) == len(expected_problems(tree)) + 1
    assert len(table) == len(EXPECTED_ROWS)  # the results that exist still come out


def test_cli_exit_codes_help_and_wrapper(tree, tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--root", "--out", "--spec", "results_id_ood.md", "Exit status"):
        assert flag in help_text
    assert main(["--root", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o")
    assert main(["--root", tree["root"], "--out", str(tmp_path / "o"),
                 "--spec", str(tmp_path / "missing.yaml")]) == 2

    # harvest_results.py at the repo root is the same command.
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "harvest_results.py")
    out = str(tmp_path / "via_script")
    monkeypatch.setattr(sys, "argv", [script, "--root", tree["root"], "--out", out])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(script, run_name="__main__")
    assert e.value.code == 0  # problems were found, and reported, not fatal
    printed = capsys.readouterr().out
    assert "9 problem(s)" in printed and tree["truncated"] in printed
    assert os.path.isfile(os.path.join(out, "results_id_ood.md"))


def test_collect_api_and_empty_tree(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    h = collect(str(root))
    assert h.rows == [] and h.problems == [] and h.aggregates == []
    paths = write(h, str(tmp_path / "out"))
    with open(paths["md"], encoding="utf-8") as f:
        assert "No problems found." in f.read()
    with open(paths["json"]) as f:
        assert json.load(f)["rows"] == []


def test_duplicate_and_nan_metrics(tmp_path):
    root = str(tmp_path / "runs")
    doc = metrics_doc("r", "id", 0.5, metrics={"macro_f1": math.nan}, cell=sft_cell(1))
    first = put_metrics(root, doc)
    copy = _write(os.path.join(root, "zz_copy", "metrics.json"), dict(doc, metrics={
        "accuracy": 0.9}))
    put_metrics(root, metrics_doc("r", "ood", 0.4, cell=sft_cell(1)))
    h = collect(root)
    (row,) = h.rows
    assert row["id"] == 0.5  # the first file in path order wins
    assert [(p.kind, p.path) for p in h.problems] == [("duplicate", copy)]
    assert first in h.problems[0].detail
    paths = write(h, str(tmp_path / "out"))
    with open(paths["json"]) as f:  # NaN is not JSON: written as null
        assert json.load(f)["rows"][0]["id/macro_f1"] is None
    with open(paths["csv"]) as f:
        assert list(csv.DictReader(io.StringIO(f.read())))[0]["id/macro_f1"] == ""


def test_sweep_runner_status_conventions(tmp_path):
    root = str(tmp_path / "runs")
    # A 0-epoch stage of a fixed-budget sweep: skipped, done, never evaluated: not a problem.
    put_status(root, "budget", "sft", "e0", "done", cell={"sft.num_train_epochs": 0},
               skipped=True)
    # One evaluation job covered two checkpoint labels and failed after the first.
    cell = {"sft.num_train_epochs": 0, "grpo.num_train_epochs": 8}
    for split, value in (("id", 0.5), ("ood", 0.25)):
        put_metrics(root, metrics_doc("g8", split, value, sweep="budget", stage="grpo",
                                      cell=cell))
    eval_status = put_status(root, "budget", "eval", "g8", "failed",
                             target=("grpo", "g8", "last,best_ood_val"), cell=cell,
                             exit_code=1)
    # The splits of a cell disagree on the headline metric.
    put_metrics(root, metrics_doc("g2", "id", 0.5, sweep="budget", stage="grpo",
                                  cell={**cell, "grpo.num_train_epochs": 2}))
    put_metrics(root, metrics_doc("g2", "ood", 0.5, sweep="budget", stage="grpo",
                                  cell={**cell, "grpo.num_train_epochs": 2}, headline="f1"))
    h = collect(root)
    assert [(r["run_id"], r["checkpoint"], r["eval_state"]) for r in h.rows] == [
        ("g2", "last", None), ("g8", "best_ood_val", "failed"), ("g8", "last", "failed")]
    assert [(p.kind, p.run_id, p.checkpoint) for p in h.problems] == [
        ("inconsistent", "g2", "last"), ("failed", "g8", "best_ood_val"),
        ("failed", "g8", "last")]
    assert h.problems[1].path == eval_status
    assert "headline differs" in h.problems[0].detail


def test_stages_without_id_ood_evaluation_are_not_missing(tmp_path):
    """A CPT stage is judged by its held-out loss (final_eval_metrics.json), not by ID/OOD
    metrics: done, it is neither a row nor a problem; failed, it is listed. With a spec, only
    the stages its `eval.stages` names are expected to have metrics."""
    root = str(tmp_path / "runs")
    done = put_status(root, "chain", "cpt", "lr1e-4", "done", cell={"cpt.learning_rate": 1e-4})
    _write(os.path.join(os.path.dirname(done), "final_eval_metrics.json"), {"eval_loss": 2.0})
    put_status(root, "chain", "cpt", "lr1e-3", "failed", cell={"cpt.learning_rate": 1e-3}, exit_code=1)
    put_status(root, "chain", "sft", "e2", "done", cell={"sft.num_train_epochs": 2})  # not evaluated yet
    h = collect(root)
    assert [(r["stage"], r["run_id"], r["notes"]) for r in h.rows] == [
        ("cpt", "lr1e-3", "train failed"), ("sft", "e2", "no id/ood")]
    assert sorted((p.kind, p.run_id) for p in h.problems) == [("failed", "lr1e-3"), ("missing_split", "e2")]

    # with a spec: stages outside eval.stages are not expected, whatever files they wrote
    spec = _write(str(tmp_path / "demo.yaml"), yaml.safe_dump({
        "name": "demo2", "modality": "dna", "task": "kegg",
        "stages": {"warm": {"script": "BioReason/train_finefineweb_midtrain.py", "kind": "cpt"},
                   "sft": {"script": "BioReason/train_dna_qwen.py", "after": "warm"}},
        "eval": {"splits": ["id", "ood"], "stages": ["sft"]}}))
    from biopost.sweeps.spec import expected_evaluations
    (sft,) = expected_evaluations(spec, root)
    put_status(root, "demo2", "warm", "warm-0", "done")
    for split in ("id", "ood"):
        put_metrics(root, metrics_doc(sft["run_id"], split, 0.5, sweep="demo2", cell=sft["cell"]))
    h = collect(root, [spec])
    assert [(r["sweep"], r["stage"]) for r in h.rows if r["sweep"] == "demo2"] == [("demo2", "sft")]
    assert not [p for p in h.problems if p.sweep == "demo2"]

"""The synthetic GO benchmark: schema, the documented ID/OOD shift, and (the acceptance test) a
tiny protein model trained through the real SFT that is worse OOD than ID and better OOD than
the most-frequent-terms baseline, with non-overlapping bootstrap ci95."""
import json
import time
from collections import Counter

import pytest

from bioreason_pro.synth_go import (COMPARTMENTS, FAMILIES, ID_ORGANISMS, OOD_TEST_ORGANISMS, OOD_VAL_ORGANISMS,
                                    SPLITS, SynthGoConfig, generate, most_frequent_terms, write)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_go")
    cfg = SynthGoConfig(seed=0)
    splits = generate(cfg)
    write(out, splits, cfg)
    return out, splits


def test_deterministic_and_valid_in_the_real_schema(synth):
    from bioreason_pro.protein_data import load_protein_rows
    from bioreason_pro.tasks import GO
    out, splits = synth
    again = generate(SynthGoConfig(seed=0))
    assert again == splits and generate(SynthGoConfig(seed=1)) != splits
    rows, reports = load_protein_rows(str(out))
    assert {s: len(v) for s, v in rows.items()} == {"train": 480, "id_val": 40, "ood_val": 40, "id_test": 90,
                                                    "ood_test": 90}
    assert all(r.n_valid == r.n_rows and r.alt_mapped == 0 and r.obsolete_dropped == 0 for r in reports.values())
    row = rows["train"][0]
    assert GO.parse(GO.target_text(row)) == row["go_mf"] + row["go_cc"]
    meta = json.loads((out / "synth_go.json").read_text())
    assert meta["config"]["counts"]["ood_test"]["proteins"] == 90


def test_signals_and_the_organism_shortcut(synth):
    _, splits = synth
    mf_of = {v[0]: k for k, v in FAMILIES.items()}
    cc_of = {v[0]: k for k, v in COMPARTMENTS.items()}
    for split, rows in splits.items():
        for r in rows:
            family, compartment = mf_of[r["go_mf"][0]], cc_of[r["go_cc"][0]]
            assert r["sequence"].count(FAMILIES[family][2]) >= 3               # strong MF signal
            assert COMPARTMENTS[compartment][2] in r["sequence"]               # weak CC signal
            other = set("WYCH") - set(FAMILIES[family][2])
            assert not other & set(r["sequence"])                              # only its family's rare letters
            if split.startswith("ood"):
                assert r["organism"] in (OOD_VAL_ORGANISMS if split == "ood_val" else OOD_TEST_ORGANISMS)
            else:
                assert ID_ORGANISMS[r["organism"]] == compartment              # the shortcut holds in ID
    # OOD organisms: unseen, disjoint between val and test, and CC independent of the organism
    id_orgs = {r["organism"] for s in ("train", "id_val", "id_test") for r in splits[s]}
    val_orgs, test_orgs = {r["organism"] for r in splits["ood_val"]}, {r["organism"] for r in splits["ood_test"]}
    assert not val_orgs & test_orgs and not (val_orgs | test_orgs) & id_orgs
    by_org = Counter((r["organism"], r["go_cc"][0]) for r in splits["ood_test"])
    assert all(len({cc for (o, cc) in by_org if o == org}) >= 2 for org in test_orgs)


def test_cli_writes_the_splits(tmp_path):
    from biopost.cli import main
    assert main(["data", "synth-go", "--out", str(tmp_path), "--n_train", "20", "--n_ood_test", "7"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{s}.jsonl" for s in SPLITS] + ["synth_go.json"])
    assert len((tmp_path / "ood_test.jsonl").read_text().splitlines()) == 7


# The acceptance test: the same recipe as BioReason-Pro/data/synth_go/README.md.
SFT = dict(task="go", text_model_name="biopost-tiny/qwen3", protein_model_name="biopost-tiny/esm-protein",
           projector="linear", lora_rank=0, max_length_text=256, learning_rate=1e-3, lr_scheduler_type="constant",
           warmup_ratio=0.05, num_train_epochs=3, per_device_train_batch_size=8, gradient_accumulation_steps=1,
           save_steps=100000, logging_steps=10, seed=0, resume="never", device="cpu")


@pytest.mark.slow
def test_tiny_model_is_worse_ood_than_id_and_better_than_the_baseline(synth, tmp_path, one_torch_thread):
    from biopost.config import from_dict
    from biopost.eval.run import EvalConfig, run_eval
    from biopost.train.sft import SFTConfig, train_sft
    from bioreason_pro.go_scored import naive_predictions, scored_metrics
    from bioreason_pro.tasks import GO

    data, splits = synth
    t0 = time.time()
    assert train_sft(from_dict(SFTConfig, dict(SFT, data_path=str(data), output_dir=str(tmp_path / "run")))) == 0
    assert run_eval(from_dict(EvalConfig, dict(run_dir=str(tmp_path / "run"), eval_split="id,ood", batch_size=45,
                                               max_new_tokens=96, device="cpu"))) == 0
    elapsed = time.time() - t0
    m = {s: json.loads((tmp_path / f"run/eval/{s}/metrics.json").read_text()) for s in ("id", "ood")}
    assert m["ood"]["headline"] == "f1" and m["ood"]["n"] == 90 and m["ood"]["n_unparsed"] == 0
    base_answer = most_frequent_terms(splits["train"])
    base = GO.metrics([GO.gold(r) for r in splits["ood_test"]], [base_answer] * 90)
    id_f1, ood_f1, base_f1 = m["id"]["metrics"]["f1"], m["ood"]["metrics"]["f1"], base.metrics["f1"]
    id_ci, ood_ci, base_ci = m["id"]["ci95"]["f1"], m["ood"]["ci95"]["f1"], base.ci95["f1"]
    print(f"id f1 {id_f1:.3f} {id_ci}, ood f1 {ood_f1:.3f} {ood_ci}, baseline ood f1 {base_f1:.3f} {base_ci}, "
          f"{elapsed:.0f} s")
    assert ood_f1 <= id_f1 - 0.10 and ood_ci[1] < id_ci[0]
    assert ood_f1 >= base_f1 + 0.10 and base_ci[1] < ood_ci[0]
    # the model reads the sequence: MF (decided by the family motif only) transfers to OOD organisms
    assert m["ood"]["metrics"]["MF_f1"] >= 0.9 > base.metrics["MF_f1"] + 0.5

    # scored answers: 4 sampled answers per protein, each GO id scored by its frequency -> true Fmax,
    # against CAFA's naive baseline (every training term, scored by its training frequency)
    assert run_eval(from_dict(EvalConfig, dict(run_dir=str(tmp_path / "run"), eval_split="id,ood", batch_size=45,
                                               max_new_tokens=96, device="cpu", num_samples=4, temperature=1.0,
                                               output_dir=str(tmp_path / "scored")))) == 0
    f = {s: json.loads((tmp_path / f"scored/eval/{s}/metrics.json").read_text()) for s in ("id", "ood")}
    assert f["ood"]["headline"] == "fmax"
    naive = scored_metrics([GO.gold(r) for r in splits["ood_test"]], [naive_predictions(splits["train"])] * 90)
    id_fmax, ood_fmax, naive_fmax = f["id"]["metrics"]["fmax"], f["ood"]["metrics"]["fmax"], naive.metrics["fmax"]
    id_ci, ood_ci, naive_ci = f["id"]["ci95"]["fmax"], f["ood"]["ci95"]["fmax"], naive.ci95["fmax"]
    print(f"id fmax {id_fmax:.3f} {id_ci}, ood fmax {ood_fmax:.3f} {ood_ci}, naive ood fmax {naive_fmax:.3f} "
          f"{naive_ci}, {time.time() - t0:.0f} s in all")
    assert ood_fmax <= id_fmax - 0.10 and ood_ci[1] < id_ci[0]
    assert ood_fmax >= naive_fmax + 0.10 and naive_ci[1] < ood_ci[0]

"""The synthetic GO benchmark: schema, the documented ID/OOD shift, and (the acceptance test) a
tiny protein model trained through the real SFT that is worse OOD than ID and better OOD than
the most-frequent-terms baseline, with non-overlapping bootstrap ci95."""
import json
import time
from collections import Counter

import pytest

from bioreason_pro.synth_go import (COMPARTMENTS, FAMILIES, ID_ORGANISMS, NO_SHORTCUT_BACKGROUND, OOD_TEST_ORGANISMS,
                                    OOD_VAL_ORGANISMS, SPLITS, STRONG_CC_COPIES, STRONG_CC_MOTIFS, SynthGoConfig,
                                    generate, most_frequent_terms, write)

# sha256 of the default (seed 0) files as written before `organism_shortcut` existed: the demo's
# cached data/go_synth and every test trained on it depend on these bytes
DEFAULT_SHA256 = {
    "train.jsonl": "6c12e041f2d2d1fa0ad4c77a2e3b208d3db9a08b5d65d61b40bf72c6aad89569",
    "id_val.jsonl": "45b78f341914156fd6d851210cf70da7fc746b117bda43a3182683fa53302959",
    "ood_val.jsonl": "ba65dff16adf7806a841adca9132d91c25dbe9b5ac36bbff905d1c5c781f1e0b",
    "id_test.jsonl": "7e83210d0aca43b8403f32be16a40013b8c178954d0b1cb65866aef7ca18c47e",
    "ood_test.jsonl": "656ac7f43bdaffa8f2c767cbd466284f9e8e095444933d0695f23f4c7b3acda4",
    "synth_go.json": "1d1158f3e3eeb87d5606c72d4d8765208c70b61c6cc2bfab51eae6186bbe850c",
}


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


def test_default_files_are_unchanged(synth):
    import hashlib
    out, _ = synth
    assert {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in DEFAULT_SHA256} == DEFAULT_SHA256


@pytest.fixture(scope="module")
def no_shortcut():
    return generate(SynthGoConfig(seed=0, organism_shortcut=False))


def test_no_shortcut_keeps_the_splits_and_schema(synth, no_shortcut, tmp_path):
    from bioreason_pro.protein_data import load_protein_rows
    _, default = synth
    assert generate(SynthGoConfig(seed=0, organism_shortcut=False)) == no_shortcut
    for split in SPLITS:
        assert len(no_shortcut[split]) == len(default[split])
        assert {r["organism"] for r in no_shortcut[split]} == {r["organism"] for r in default[split]}, split
        assert [set(r) for r in no_shortcut[split]] == [set(r) for r in default[split]], split
        assert all(56 <= len(r["sequence"]) <= 72 and r["sequence"][0] == "M" for r in no_shortcut[split])
    cfg = SynthGoConfig(seed=0, organism_shortcut=False)
    write(tmp_path, no_shortcut, cfg)
    rows, reports = load_protein_rows(str(tmp_path))
    assert all(r.n_valid == r.n_rows and r.alt_mapped == 0 and r.obsolete_dropped == 0 for r in reports.values())
    meta = json.loads((tmp_path / "synth_go.json").read_text())
    assert meta["config"]["organism_shortcut"] is False and meta["strong_cc_motifs"] == STRONG_CC_MOTIFS


def test_no_shortcut_the_sequence_decides_every_term_and_the_organism_none(synth, no_shortcut):
    _, default = synth
    mf_of = {v[0]: k for k, v in FAMILIES.items()}
    cc_of = {v[0]: k for k, v in COMPARTMENTS.items()}
    rare_cc = {m: set(m) - set(NO_SHORTCUT_BACKGROUND) for m in STRONG_CC_MOTIFS.values()}
    assert all(len(r) == 1 for r in rare_cc.values())                          # one reserved residue each
    rare = set("WYCH") | set().union(*rare_cc.values())
    for split, rows in no_shortcut.items():
        for r in rows:
            family, compartment = mf_of[r["go_mf"][0]], cc_of[r["go_cc"][0]]
            seq = r["sequence"]
            assert seq.count(FAMILIES[family][2]) >= 3                         # strong MF signal
            assert seq.count(STRONG_CC_MOTIFS[compartment]) >= STRONG_CC_COPIES  # strong CC signal
            # the rare residues name exactly the protein's family and compartment
            mine = (set(FAMILIES[family][2]) | set(STRONG_CC_MOTIFS[compartment])) & rare
            assert set(seq) & rare == mine, (split, r["protein_id"])
    # the organism is independent of every term: each organism of each split sees every MF and every
    # CC term, and (pooled over the ID splits) no organism's CC or MF distribution is far from uniform
    for split, rows in no_shortcut.items():
        for org in {r["organism"] for r in rows}:
            mine = [r for r in rows if r["organism"] == org]
            if len(mine) >= 20:
                assert {r["go_cc"][0] for r in mine} == {v[0] for v in COMPARTMENTS.values()}, (split, org)
                assert {r["go_mf"][0] for r in mine} == {v[0] for v in FAMILIES.values()}, (split, org)
    id_rows = [r for s in ("train", "id_val", "id_test") for r in no_shortcut[s]]
    for col, terms in (("go_cc", COMPARTMENTS), ("go_mf", FAMILIES)):
        for org in ID_ORGANISMS:
            c = Counter(r[col][0] for r in id_rows if r["organism"] == org)
            n = sum(c.values())
            assert max(c.values()) / n < 1 / len(terms) + 0.15, (col, org, c)
    # the text predicts nothing: the best organism -> term rule, fitted on train, is right on id_val + id_test
    # about as often as the most frequent training term (in the default it is right on every CC)
    def rule_gain(splits, col):
        by_org = Counter((r["organism"], r[col][0]) for r in splits["train"])
        rule = {o: max((n, t) for (o2, t), n in by_org.items() if o2 == o)[1] for o, _ in by_org}
        majority = Counter(r[col][0] for r in splits["train"]).most_common(1)[0][0]
        test = splits["id_val"] + splits["id_test"]
        right = sum(rule[r["organism"]] == r[col][0] for r in test)
        return (right - sum(majority == r[col][0] for r in test)) / len(test)
    for col in ("go_cc", "go_mf"):
        assert rule_gain(no_shortcut, col) < 0.1, col
    assert rule_gain(default, "go_cc") > 0.5


def test_no_shortcut_short_proteins_are_a_named_error():
    from biopost.errors import UserError
    with pytest.raises(UserError, match="min_length"):
        generate(SynthGoConfig(seed=0, organism_shortcut=False, min_length=30, max_length=30))


def test_cli_writes_the_splits(tmp_path):
    from biopost.cli import main
    assert main(["data", "synth-go", "--out", str(tmp_path), "--n_train", "20", "--n_ood_test", "7"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{s}.jsonl" for s in SPLITS] + ["synth_go.json"])
    assert len((tmp_path / "ood_test.jsonl").read_text().splitlines()) == 7
    assert "organism_shortcut" not in json.loads((tmp_path / "synth_go.json").read_text())["config"]
    ctl = tmp_path / "control"
    assert main(["data", "synth-go", "--out", str(ctl), "--n_train", "20", "--no_organism_shortcut"]) == 0
    assert json.loads((ctl / "synth_go.json").read_text())["config"]["organism_shortcut"] is False
    want = generate(SynthGoConfig(seed=0, n_train=20, organism_shortcut=False))["train"]
    assert [json.loads(line) for line in (ctl / "train.jsonl").read_text().splitlines()] == want


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

"""Synthetic KEGG v2 (bioreason/synth_kegg_v2.py): the mechanism of its ID/OOD shift, the committed
copy in data/kegg_synth_v2, v1 left as it was, and (slow) a trained tiny model that shows the shift.

Unit tests elsewhere keep v1 (conftest.synth_data): its one-motif-per-disease rows are what the
SFT / GRPO machinery tests were tuned on. v2 is the data of the demo and the study.
"""
import gzip
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_script

from bioreason.synth_kegg import MOTIF_LEN, SPLITS, SynthConfig, generate as generate_v1
from bioreason.synth_kegg_v2 import SynthConfigV2, generate, motif_families, write

COMMITTED = ROOT / "data" / "kegg_synth_v2"


def _any_motifs(seq, motifs):
    return [i for i in range(len(seq) - MOTIF_LEN + 1) if seq[i:i + MOTIF_LEN] in motifs]


def _read_split(directory, split):
    path = Path(directory) / f"{split}.jsonl.gz"
    return [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]


@pytest.fixture(scope="module")
def v2():
    cfg = SynthConfigV2(seed=0)
    return cfg, *generate(cfg)


def test_motifs_decide_the_label_and_families_split_id_from_ood(v2):
    cfg, data, facts = v2
    families = motif_families(cfg.n_diseases, cfg.motifs_per_disease)
    everything = {m for fam in motif_families(12, cfg.motifs_per_disease).values() for m in fam}
    id_members = {m for fam in families.values() for m in fam[:cfg.id_motifs]}
    for split, rows in data.items():
        novel = 0
        for row in rows:
            ref, var, disease = row["reference_sequence"], row["variant_sequence"], row["answer"]
            assert len(ref) == len(var) == cfg.seq_len and sum(a != b for a, b in zip(ref, var)) == 1
            # exactly one motif anywhere in the variant, on the 6-mer grid, of the label's family;
            # none in the reference: the variant's one base creates it
            hits = _any_motifs(var, everything)
            assert len(hits) == 1 and hits[0] % MOTIF_LEN == 0, row["id"]
            motif = var[hits[0]:hits[0] + MOTIF_LEN]
            assert motif in families[disease] and not _any_motifs(ref, everything)
            assert row["reasoning"]["labels"]["motif"] == motif
            novel += motif not in id_members
            assert row["reasoning"]["labels"]["novel_motif"] == (motif not in id_members)
        if split.startswith("ood"):
            assert 0.4 <= novel / len(rows) <= 0.6, (split, novel)
        else:
            assert novel == 0, split  # held-out family members never reach training networks
        assert facts[split]["n"] == len(rows) == cfg.sizes[split]


def test_text_shortcut_holds_in_training_networks_and_breaks_in_held_out_ones(v2):
    cfg, data, facts = v2
    networks = {s: {r["network"] for r in rows} for s, rows in data.items()}
    assert networks["train"] >= networks["id_test"] and networks["train"] >= networks["id_val"]
    assert not networks["train"] & (networks["ood_val"] | networks["ood_test"])
    assert not networks["ood_val"] & networks["ood_test"]
    for split, rows in data.items():
        # the network's name carries a disease, and only in training networks it agrees with the label
        agree = sum(r["reasoning"]["labels"]["network_disease"] in r["network"]
                    and r["reasoning"]["labels"]["network_disease"] == r["answer"] for r in rows) / len(rows)
        assert agree == facts[split]["shortcut_agreement"]
        if split.startswith("ood"):
            assert agree < 0.3, (split, agree)
        else:
            assert abs(agree - cfg.shortcut_agreement) < 0.06, (split, agree)
    for split in ("id_test", "ood_test"):
        assert len(data[split]) >= 500  # a ci95 of about +-4 points


def test_same_seed_same_bytes_and_the_committed_copy_is_current(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    r = run_script(["-m", "biopost.cli", "data", "synth-kegg", "--version", "2", "--seed", "0", "--compress",
                    "--out", a])
    assert r.returncode == 0, r.stderr
    cfg = SynthConfigV2(seed=0)
    write(b, *generate(cfg), cfg, compress=True)
    for split in SPLITS:
        assert (a / f"{split}.jsonl.gz").read_bytes() == (b / f"{split}.jsonl.gz").read_bytes()
        # the committed data is what the documented command writes (data/kegg_synth_v2/README.md);
        # compared decompressed: another zlib build may compress the same rows to other bytes
        assert _read_split(COMMITTED, split) == _read_split(a, split), split
    assert json.loads((COMMITTED / "synth_meta.json").read_text()) == json.loads((a / "synth_meta.json").read_text())


def test_v1_is_unchanged():
    """v1 rows still equal the committed data/kegg_synth (what the unit tests and older runs used)."""
    data = generate_v1(SynthConfig(seed=0))
    for split in SPLITS:
        assert data[split] == _read_split(ROOT / "data" / "kegg_synth", split), split


def test_bad_settings_give_clear_errors(tmp_path):
    r = run_script(["-m", "biopost.cli", "data", "synth-kegg", "--version", "2", "--task", "vep", "--out", tmp_path])
    assert r.returncode == 2 and "--version 2 writes the kegg task only" in r.stderr
    r = run_script(["-m", "biopost.cli", "data", "synth-kegg", "--version", "2", "--id_motifs", "4",
                    "--out", tmp_path])
    assert r.returncode == 2 and "id_motifs < motifs_per_disease" in r.stderr
    r = run_script(["-m", "biopost.cli", "data", "synth-kegg", "--version", "2", "--ood_shared_fraction", "1.5",
                    "--out", tmp_path])
    assert r.returncode == 2 and "ood_shared_fraction must be a fraction" in r.stderr


# ------------------------------------------------------------------ a trained tiny model shows the shift
# The CI-sized variant of v2: the same generator and mechanism, 120 bp windows (20 encoder tokens per
# sequence instead of 50, so the motif is found in 700 steps) and a one-line reasoning (a short target
# and a short greedy answer to generate). Measured on CI's stack (torch 2.13 CPU, 2026-12-02; CPU runs
# are deterministic, so these are what CI gets): seeds 0/1/2 -> ID 0.934/0.934/0.844, OOD
# 0.512/0.446/0.382, random-DNA OOD 0.184/0.170/0.078, majority 0.174 (OOD ceiling 0.58); the
# tightest margin is seed 2's OOD - (majority + 0.15) = 0.058. data/kegg_synth_v2/README.md has more.
# Cost: 359 CPU s in the stages (train 3 x 700 steps, evaluate 3 x 1500 rows), about 3 minutes on 2
# idle cores; 590 s wall on this machine under a load average of 9 (four engineers on 2 cores).
SEEDS = (0, 1, 2)
RECIPE = ROOT / "BioReason/configs/sft_tiny_v2.yaml"
SHORT_REASONING = "The variant creates a regulatory motif."


def _write_jsonl(directory, split, rows):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _metrics(run_dir, split):
    m = json.loads((Path(run_dir) / "eval" / split / "metrics.json").read_text())
    return m["metrics"]["accuracy"], m["ci95"]["accuracy"], m["majority_rate"], m["n"]


def _run_all(commands, env, timeout, logs: Path):
    """Start every command at once (one torch thread each: 2 cores run 3 seeds in ~2x the time
    of one) and wait; a failure shows its output. Output goes to files, not pipes: a pipe that is
    not read while another process is waited for fills up and blocks its writer."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i, c in enumerate(commands):
        with open(logs / f"{i}.log", "w") as out:
            procs.append(subprocess.Popen([sys.executable, *map(str, c)], cwd=ROOT, env=env, stdout=out,
                                          stderr=subprocess.STDOUT))
    for i, (c, p) in enumerate(zip(commands, procs)):
        p.wait(timeout=timeout)
        assert p.returncode == 0, f"{c}: exit {p.returncode}\n{(logs / f'{i}.log').read_text()[-3000:]}"


@pytest.mark.slow
def test_trained_tiny_model_is_worse_ood_than_id_and_better_than_text_only(tmp_path, biopost_cache):
    """OOD accuracy >= max(majority, text-only OOD) + 0.15 and <= ID - 0.15, with non-overlapping
    bootstrap ci95, for each of 3 seeds on 500-row test splits. Text-only = the same trained model
    with both DNA sequences replaced by random DNA (the text, shortcut included, unchanged)."""
    cfg = SynthConfigV2(seed=0, seq_len=120, sizes={"train": 1000, "id_test": 500, "ood_test": 500})
    data, _ = generate(cfg)
    for rows in data.values():
        for row in rows:
            row["reasoning"] = SHORT_REASONING
    rng = random.Random(1)
    rnd = [dict(r, reference_sequence="".join(rng.choice("ACGT") for _ in range(cfg.seq_len)),
                variant_sequence="".join(rng.choice("ACGT") for _ in range(cfg.seq_len))) for r in data["ood_test"]]
    for split, rows in data.items():
        if rows:
            _write_jsonl(tmp_path / "data", split, rows)
    _write_jsonl(tmp_path / "random_dna", "ood_test", rnd)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", BIOPOST_CACHE_DIR=str(biopost_cache))
    runs = {s: tmp_path / f"seed{s}" for s in SEEDS}
    t0 = time.perf_counter()
    _run_all([["BioReason/train_dna_qwen.py", "--config", RECIPE, "--data_path", tmp_path / "data",
               "--output_dir", runs[s], "--seed", s, "--resume", "never"] for s in SEEDS], env, 600,
             tmp_path / "logs" / "train")
    t1 = time.perf_counter()
    ev = ["--max_new_tokens", 24, "--batch_size", 100, "--device", "cpu"]
    _run_all([["BioReason/eval_kegg_dna_vllm.py", "--run_dir", runs[s], "--eval_split", "id,ood", *ev] for s in SEEDS]
             + [["BioReason/eval_kegg_dna_vllm.py", "--run_dir", runs[s], "--eval_split", "ood", *ev,
                 "--data_path", tmp_path / "random_dna", "--output_dir", runs[s] / "random_dna"] for s in SEEDS],
             env, 600, tmp_path / "logs" / "eval")
    t2 = time.perf_counter()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds say what the wall time would be on 2 idle cores (about cpu / 2), whatever the load
    print(f"\ntrain {t1 - t0:.0f} s, evaluate {t2 - t1:.0f} s wall (3 seeds in parallel); "
          f"{ru.ru_utime + ru.ru_stime:.0f} CPU s in the stages")
    print("seed | ID [ci95] | OOD [ci95] | random-DNA OOD [ci95] | majority (OOD)")
    for s in SEEDS:
        id_acc, id_ci, _, n_id = _metrics(runs[s], "id")
        ood, ood_ci, majority, n_ood = _metrics(runs[s], "ood")
        text_only, text_ci, _, _ = _metrics(runs[s] / "random_dna", "ood")
        print(f"{s} | {id_acc:.3f} {id_ci} | {ood:.3f} {ood_ci} | {text_only:.3f} {text_ci} | {majority:.3f}")
        assert n_id == n_ood == 500
        assert ood >= max(majority, text_only) + 0.15, (s, ood, majority, text_only)
        assert ood <= id_acc - 0.15, (s, ood, id_acc)
        assert ood_ci[0] > text_ci[1] and ood_ci[1] < id_ci[0], (s, id_ci, ood_ci, text_ci)

"""BioReason-Pro/eval.py: GO evaluation of the tiny two-stage protein model, scored predictions
(`--num_samples k`: term frequency over k sampled answers -> Fmax), the synthetic GO splits and
the Swiss-Prot mini benchmark, and the harvester reading the metrics files."""
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import protein_runs  # noqa: E402
from conftest import ROOT, run_script  # noqa: E402

from bioreason_pro.go_scored import (majority_answer, naive_predictions, pooled_curves_reference,  # noqa: E402
                                     pooled_fmax, score_samples, scored_metrics)
from bioreason_pro.synth_go import most_frequent_terms  # noqa: E402

K = 4


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _golds(rows):
    return [{c: r[c] for c in ("go_mf", "go_bp", "go_cc")} for r in rows]


@pytest.fixture(scope="module")
def stage2(biopost_cache):
    return protein_runs.two_stage()[1]


@pytest.fixture(scope="module")
def scored_id(stage2, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_scored")
    assert protein_runs.evaluate(["--config", str(protein_runs.EVAL_CONFIG), "--run_dir", str(stage2),
                                  "--eval_split", "id", "--num_samples", str(K), "--output_dir", str(out)]) == 0
    return json.loads((out / "eval" / "id" / "metrics.json").read_text()), out


def _baseline(data):
    terms = most_frequent_terms(_rows(data / "train.jsonl"))
    golds = _golds(_rows(data / "id_test.jsonl"))
    return scored_metrics(golds, [{t: 1.0 for t in terms}] * len(golds), bootstrap_resamples=1000, seed=0)


@pytest.fixture(scope="module")
def baseline():
    """The most-frequent-terms baseline (the most frequent training term of each aspect, for every
    protein), scored like the model's answers."""
    return _baseline(protein_runs.go_synth())


def _shuffled_split(rows, out, permutations):
    """id_test.jsonl under `out` with the sequences permuted among the proteins (same text): one
    copy of the split per permutation seed, so that a pooled metric averages over the permutations."""
    lines = []
    for seed in permutations:
        seqs = [r["sequence"] for r in rows]
        random.Random(seed).shuffle(seqs)
        lines += [json.dumps(dict(r, protein_id=f"{r['protein_id']}-p{seed}", sequence=s)) + "\n"
                  for r, s in zip(rows, seqs)]
    out.mkdir()
    (out / "id_test.jsonl").write_text("".join(lines))
    return out


# ------------------------------------------------------------------ scored predictions, unit level

def test_score_samples_is_the_frequency_over_k_answers():
    assert score_samples([["GO:1", "GO:2"], ["GO:1"], None, ["GO:1", "GO:1"]]) == {"GO:1": 0.75, "GO:2": 0.25}
    assert score_samples([None, None]) is None
    assert majority_answer({"GO:1": 0.5, "GO:2": 0.25}) == ["GO:1"]


def test_pooled_fmax_equals_threshold_curves():
    """The per-protein curves behind the bootstrap give exactly multilabel.threshold_curves' Fmax."""
    from biopost.metrics.multilabel import best_index
    from bioreason_pro.go_reward import go_scorer
    scorer = go_scorer()
    data = protein_runs.go_synth()
    rows = _rows(data / "id_test.jsonl")[:40]
    golds = _golds(rows)
    rng = random.Random(0)
    terms = sorted({t for r in rows for c in ("go_mf", "go_cc") for t in r[c]}) + ["GO:0003824", "GO:0005737"]
    scored = [{t: rng.choice([0.25, 0.5, 0.75, 1.0]) for t in rng.sample(terms, 3)} for _ in rows]
    for weights in (scorer.ia, np.ones(len(scorer.onto))):
        point, threshold, ci = pooled_fmax(golds, scored, scorer, weights, bootstrap_resamples=200)
        ref = pooled_curves_reference(golds, scored, scorer, weights)
        i = best_index(ref.f, ref.cov > 0)
        assert point == pytest.approx(float(ref.f[i]), abs=1e-12)
        assert threshold == pytest.approx(float(ref.thresholds[i]))
        assert ci[0] <= point <= ci[1]


def test_naive_baseline_is_cafa_naive():
    rows = [{"go_mf": ["GO:1"], "go_bp": [], "go_cc": ["GO:2"]}, {"go_mf": ["GO:1"], "go_bp": [], "go_cc": []}]
    assert naive_predictions(rows) == {"GO:1": 1.0, "GO:2": 0.5}


# ------------------------------------------------------------------ the tiny model, end to end

def test_scored_metrics_file(scored_id):
    m, out = scored_id
    assert m["headline"] == "fmax" and m["scored"] is True and m["task"] == "go" and m["split"] == "id"
    assert m["decoding"]["num_samples"] == K and m["decoding"]["do_sample"] is True
    for key in ("fmax", "plain_fmax", "MF_fmax", "CC_fmax", "MF_plain_fmax", "MF_smin", "f1", "MF_f1"):
        assert key in m["metrics"], key
    assert "fmax" in m["ci95"] and "Fmax" in m["computed"] and "fraction of the k sampled answers" in m["computed"]
    assert m["per_aspect"]["MF"]["evaluated"] and m["cafa5"]["value"] is None  # synthetic GO has no BP terms
    preds = _rows(out / "eval" / "id" / "predictions.jsonl")
    assert len(preds) == m["n"] == 90
    assert all(len(p["samples"]) == K and isinstance(p["parsed"], dict) for p in preds)
    assert all(set(v for v in p["parsed"].values()) <= {0.25, 0.5, 0.75, 1.0} for p in preds)


def test_fmax_beats_the_most_frequent_terms_baseline(scored_id, baseline):
    """Acceptance: on the synthetic ID split the Fmax is >= 0.15 above the most-frequent-terms
    baseline, with non-overlapping ci95."""
    m, _ = scored_id
    fmax, (lo, _) = m["metrics"]["fmax"], m["ci95"]["fmax"]
    base, (_, base_hi) = baseline.metrics["fmax"], baseline.ci95["fmax"]
    assert fmax >= base + 0.15, (fmax, base)
    assert lo > base_hi, (m["ci95"]["fmax"], baseline.ci95["fmax"])


def test_shuffled_sequences_fall_to_the_baseline(stage2, tmp_path, baseline, scored_id):
    """Same text, same checkpoint, sequences permuted among the proteins: what the sequence decides
    (MF: the family motif) falls to within 0.05 of the baseline. CC keeps its score: in the ID
    organisms the organism named in the prompt decides CC (the generator's designed text
    shortcut, bioreason_pro.synth_go), so the pooled Fmax stays above the baseline by that much.
    The pooled control, on data without the shortcut, is
    test_no_shortcut_model_reads_the_sequence_for_every_term."""
    data = protein_runs.go_synth()
    rows = _rows(data / "id_test.jsonl")
    seqs = [r["sequence"] for r in rows]
    random.Random(0).shuffle(seqs)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    (shuffled / "id_test.jsonl").write_text("".join(json.dumps(dict(r, sequence=s)) + "\n" for r, s in zip(rows, seqs)))
    out = tmp_path / "eval"
    assert protein_runs.evaluate(["--config", str(protein_runs.EVAL_CONFIG), "--run_dir", str(stage2),
                                  "--eval_split", "id", "--num_samples", str(K), "--data_path", str(shuffled),
                                  "--output_dir", str(out)]) == 0
    m = json.loads((out / "eval" / "id" / "metrics.json").read_text())
    assert abs(m["metrics"]["MF_fmax"] - baseline.metrics["MF_fmax"]) <= 0.05, (m["metrics"]["MF_fmax"],
                                                                                baseline.metrics["MF_fmax"])
    real, _ = scored_id
    assert real["metrics"]["MF_fmax"] - m["metrics"]["MF_fmax"] > 0.4
    assert m["metrics"]["CC_fmax"] > 0.9


def test_no_shortcut_model_reads_the_sequence_for_every_term(biopost_cache, tmp_path):
    """Acceptance, pooled: the same two-stage recipe trained on the synthetic GO control without
    the text shortcut (`synth-go --no_organism_shortcut`: the organism carries no information,
    the sequence decides MF and CC). On its ID test split the Fmax is >= 0.15 above the
    most-frequent-terms baseline with non-overlapping ci95; with the sequences permuted among
    the proteins (same text, same checkpoint) the pooled Fmax is within 0.05 of the baseline.

    The shuffled split pools 3 permutations: one permutation's own noise is about 0.03 in Fmax
    (sd over permutations of the right answers themselves). What is left is the gap between two
    chance answers: a model that reads the sequence answers another protein's terms (a draw from
    the term frequencies), the baseline one fixed answer, and the IA-weighted propagated Fmax of
    a fixed answer depends on which terms it names (0.27 to 0.40 here: shared ancestors such as
    catalytic activity earn partial credit)."""
    _, s2 = protein_runs.two_stage(organism_shortcut=False)
    data = protein_runs.go_synth(organism_shortcut=False)
    base = _baseline(data)
    m = {}
    for name, path in (("real", data), ("shuffled", _shuffled_split(_rows(data / "id_test.jsonl"),
                                                                     tmp_path / "shuffled", (0, 1, 2)))):
        out = tmp_path / name
        assert protein_runs.evaluate(["--config", str(protein_runs.EVAL_CONFIG), "--run_dir", str(s2),
                                      "--eval_split", "id", "--num_samples", str(K), "--data_path", str(path),
                                      "--output_dir", str(out)]) == 0
        m[name] = json.loads((out / "eval" / "id" / "metrics.json").read_text())
    real, shuffled = m["real"], m["shuffled"]
    assert real["n"] == 90 and shuffled["n"] == 270
    summary = {k: (round(metrics["fmax"], 3), [round(x, 3) for x in ci95["fmax"]],
                   round(metrics["MF_fmax"], 3), round(metrics["CC_fmax"], 3))
               for k, metrics, ci95 in (("real", real["metrics"], real["ci95"]),
                                        ("shuffled", shuffled["metrics"], shuffled["ci95"]),
                                        ("baseline", base.metrics, base.ci95))}
    print("fmax (ci95), MF_fmax, CC_fmax:", summary)
    assert real["metrics"]["fmax"] >= base.metrics["fmax"] + 0.15, summary
    assert real["ci95"]["fmax"][0] > base.ci95["fmax"][1], summary
    # every aspect is read from the sequence: both are well above the baseline with the real sequences
    for aspect in ("MF", "CC"):
        assert real["metrics"][f"{aspect}_fmax"] >= base.metrics[f"{aspect}_fmax"] + 0.3, (aspect, summary)
    assert abs(shuffled["metrics"]["fmax"] - base.metrics["fmax"]) <= 0.05, summary


def test_swissprot_benchmark_and_harvest(stage2, tmp_path):
    """Greedy evaluation on the real Swiss-Prot mini benchmark (unscored: headline f1), then the
    harvester reads both metrics files: headline and per-aspect columns in csv / json."""
    from bioreason_pro.swissprot_benchmark import build
    bench = tmp_path / "swissprot"
    build(bench)
    out = tmp_path / "run"
    assert protein_runs.evaluate(["--config", str(protein_runs.EVAL_CONFIG), "--run_dir", str(stage2),
                                  "--eval_split", "id,ood", "--data_path", str(bench), "--output_dir", str(out)]) == 0
    for split in ("id", "ood"):
        m = json.loads((out / "eval" / split / "metrics.json").read_text())
        assert m["headline"] == "f1" and m["scored"] is False and m["n"] > 0
    figs = tmp_path / "figs"
    r = run_script([ROOT / "harvest_results.py", "--root", out, "--out", figs])
    assert r.returncode == 0, r.stderr
    doc = json.loads((figs / "results_id_ood.json").read_text())
    row = next(x for x in doc["rows"] if x["task"] == "go")
    assert row["headline"] == "f1" and row["id"] is not None and row["ood"] is not None
    assert any(k.startswith("id/MF_") for k in row) and "id/plain_f1" in row
    header = (figs / "results_id_ood.csv").read_text().splitlines()[0].split(",")
    assert "id" in header and any(h.startswith("ood/CC_") or h.startswith("ood/MF_") for h in header)


def test_scored_harvest_headline_fmax(scored_id, tmp_path):
    _, out = scored_id
    figs = tmp_path / "figs"
    r = run_script([ROOT / "harvest_results.py", "--root", out, "--out", figs])
    assert r.returncode == 0, r.stderr
    row = next(x for x in json.loads((figs / "results_id_ood.json").read_text())["rows"] if x["task"] == "go")
    assert row["headline"] == "fmax" and row["id"] is not None
    assert "id/MF_fmax" in row and "id/CC_fmax" in row and "id/fmax_threshold" in row


def test_num_samples_needs_a_scored_task(stage2, tmp_path):
    r = run_script([ROOT / "BioReason-Pro" / "eval.py", "--run_dir", stage2, "--task", "kegg", "--num_samples", "3",
                    "--output_dir", tmp_path])
    assert r.returncode == 1 and "has no scored metrics" in r.stderr


def test_predict_fasta_jsonl_and_one_sequence(stage2, tmp_path):
    """predict.py: a FASTA file (UniProt header: accession and OS= organism), a jsonl file and one
    --sequence -> reasoning + GO terms with their ontology names and aspects."""
    from bioreason_pro.predict_util import describe_terms, read_fasta, term_names
    rows = _rows(protein_runs.go_synth() / "id_test.jsonl")[:2]
    fasta = tmp_path / "p.fa"
    fasta.write_text(f">sp|P99999|TEST_HUMAN Test OS=Homo sapiens OX=9606\n{rows[0]['sequence'][:30]}\n"
                     f"{rows[0]['sequence'][30:]}\n>second\n{rows[1]['sequence']}\n")
    recs = read_fasta(fasta)
    assert recs[0] == {"protein_id": "P99999", "sequence": rows[0]["sequence"], "organism": "Homo sapiens"}
    assert term_names()["GO:0016787"] == "hydrolase activity"
    assert describe_terms(["GO:0019952"])[0]["primary"] == ["GO:0000003"]   # an alt id, named
    out = tmp_path / "pred.jsonl"
    script = ROOT / "BioReason-Pro" / "predict.py"
    ckpt = stage2 / "checkpoints" / "last"
    r = run_script([script, "--checkpoint", ckpt, "--fasta", fasta, "--organism", rows[1]["organism"],
                    "--max_new_tokens", "96", "--output_jsonl", out])
    assert r.returncode == 0, r.stderr
    got = _rows(out)
    assert [g["protein_id"] for g in got] == ["P99999", "second"]
    for g, row in zip(got, rows):
        ids = {t["id"] for t in g["go_terms"]}
        assert set(row["go_mf"]) <= ids                                # the family motif's MF term
        assert all(t["name"] and t["aspect"] in ("MF", "BP", "CC") for t in g["go_terms"])
    assert "hydrolase activity" in r.stdout or "kinase" in r.stdout or "transport" in r.stdout \
        or "transcription" in r.stdout
    jl = tmp_path / "in.jsonl"
    jl.write_text(json.dumps({"protein_id": "J1", "sequence": rows[0]["sequence"], "organism": "Mus musculus"}) + "\n")
    r = run_script([script, "--checkpoint", ckpt, "--input_jsonl", jl, "--num_samples", "2", "--max_new_tokens", "96"])
    assert r.returncode == 0 and "=== J1" in r.stdout and "score" in r.stdout
    r = run_script([script, "--checkpoint", ckpt, "--sequence", "MKT1AY"])
    assert r.returncode == 1 and "outside the protein alphabet" in r.stderr

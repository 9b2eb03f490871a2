"""Answer parsing, KEGG / variant-effect metrics (sklearn is the oracle), bootstrap intervals,
and the metrics files: validated atomic writing, reading back, and the harvester reading them."""
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from biopost.eval import metrics_file
from biopost.metrics.classification import (_encode, _resampled_scores, bootstrap_ci,
                                         classification_metrics, exact_match, majority_rate)
from biopost.eval.metrics_file import (MetricsFileError, eval_dir, provenance, read_metrics,
                                       read_predictions, recompute_from_predictions,
                                       write_eval_outputs)
from biopost.metrics.parse import extract_answer, normalize_label, split_reasoning
from biopost.tasks import think_then_answer

UNPARSED = "<unparsed>"  # the sentinel the sklearn oracle gets for an unparsed answer


# --- parsing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("completion, answer", [
    # the SFT target format, think block over several lines (DOTALL)
    ("<think>\nStep 1: the variant hits PINK1.\nStep 2: mitophagy fails.\n</think>\n\n"
     "Answer: Parkinson's disease", "Parkinson's disease"),
    # an `Answer:` inside the reasoning is not the answer
    ("<think>\nAnswer: Huntington disease? No:\nit is PINK1.\n</think>\nAnswer: Parkinson disease",
     "Parkinson disease"),
    # no `Answer:` after </think>: the first non-empty line
    ("<think>\nreasoning\n</think>\n\n\n  Parkinson disease\nbecause PINK1", "Parkinson disease"),
    # no think block at all: the `Answer:` tag makes it an answer
    ("Answer: Prion disease", "Prion disease"),
    # several `Answer:`: the last one; case-insensitive; the answer on the next line
    ("Answer: maybe ALS\nOn reflection,\nANSWER:\n\n  Spinocerebellar ataxia  \nmore text",
     "Spinocerebellar ataxia"),
    ("<think>x</think>\nfinal answer: Prion disease", "Prion disease"),
    # stop tokens at the end
    ("<think>\nr\n</think>\n\nAnswer: Prion disease<|im_end|>", "Prion disease"),
    ("Answer: Prion disease\n<|im_end|><|endoftext|><|endoftext|>\n", "Prion disease"),
    # markdown, quotes, trailing punctuation, nested
    ("**Answer:** Prion disease.", "Prion disease"),
    ("**Answer**: `Prion disease`", "Prion disease"),
    ('Answer: "Prion disease."', "Prion disease"),
    ("Answer: **\u201cPrion disease\u201d**!", "Prion disease"),
    ("Answer: 'Alzheimer disease';", "Alzheimer disease"),
    ("Answer: pathogenic; Parkinson's disease.", "pathogenic; Parkinson's disease"),
    # a closing </think> without <think> (the template opened the block in the prompt)
    ("reasoning\nover lines</think>\n\nAnswer: benign", "benign"),
    # the last </think> counts
    ("<think>a</think> Answer: wrong <think>b</think>\nAnswer: right", "right"),
])
def test_extract_answer(completion, answer):
    assert extract_answer(completion) == answer


@pytest.mark.parametrize("completion", [
    None, "", "   \n\n", "<|im_end|>",
    "<think>\nstill thinking... Answer: Prion disease\n",  # never closed: no answer
    "<think>a</think>\n\n<think>\nAnswer: Prion disease",   # reopened, never closed
    "<think>\nreasoning\n</think>\n\n<|im_end|>",          # closed, but nothing after it
    "<think>\nreasoning\n</think>\nAnswer:",                # empty answer
    "Answer: **.**",                                        # only wrappers and punctuation
    "Prion disease",                                        # neither </think> nor Answer:
    "Parkinson disease\nbecause the variant...",           # a truncated ramble's first line
])
def test_extract_answer_unparsed(completion):
    assert extract_answer(completion) is None


@pytest.mark.parametrize("answer", ["Parkinson's disease", "pathogenic; Long QT syndrome",
                                    "benign", "Diabetes mellitus (type 2)", "3'"])
def test_extract_answer_reads_the_sft_target_format(answer):
    completion = think_then_answer("Step 1.\nStep 2: Answer: not this.", answer) + "<|im_end|>"
    assert extract_answer(completion) == answer


def test_split_reasoning():
    assert split_reasoning("<think>\na\nb\n</think>\n\nAnswer: X<|im_end|>") == ("a\nb", "Answer: X")
    assert split_reasoning("Answer: X") == (None, "Answer: X")
    assert split_reasoning("a\nb</think>X") == ("a\nb", "X")
    assert split_reasoning("<think>\nunfinished\nthought") == ("unfinished\nthought", "")
    assert split_reasoning("<think>a</think>b</think>\nX") == ("a</think>b", "X")


@pytest.mark.parametrize("a, b", [
    ("Parkinson's disease.", "parkinson\u2019s  disease"),
    ("  Parkinson's\tdisease ", "PARKINSON'S DISEASE"),
    ("Creutzfeldt\u2013Jakob disease", "creutzfeldt-jakob disease"),
    ("Creutzfeldt\u2014Jakob disease", "Creutzfeldt-Jakob disease"),
    ("\u201cquoted\u201d", '"quoted"'),
    ("Stra\u00dfe", "STRASSE"),  # case-folding, not just lower()
    ("\uff21\uff2c\uff33", "als"),  # full-width letters (NFKC)
    ("pathogenic; Parkinson's disease.", "Pathogenic ;parkinson\u2019s disease"),
    ("pathogenic;Long QT  syndrome", "pathogenic; long qt syndrome."),
    ("benign;", "benign"),
])
def test_normalize_label_equal(a, b):
    assert normalize_label(a) == normalize_label(b)


def test_normalize_label_values():
    assert normalize_label("Parkinson's disease.") == "parkinson's disease"
    assert normalize_label("Pathogenic ;  Parkinson\u2019s   Disease.") == \
        "pathogenic; parkinson's disease"


@pytest.mark.parametrize("a, b", [
    ("benign", "pathogenic"),
    ("pathogenic", "pathogenic; Parkinson disease"),
    ("Parkinson disease", "Parkinson's disease"),
    ("Diabetes type 1", "Diabetes type 2"),
])
def test_normalize_label_different(a, b):
    assert normalize_label(a) != normalize_label(b)


# --- classification metrics -------------------------------------------------------------------

def _oracle(golds, preds):
    """sklearn on normalized strings, unparsed mapped to a sentinel, classes = the gold set."""
    y_true = [normalize_label(g) for g in golds]
    y_pred = [UNPARSED if p is None else normalize_label(p) for p in preds]
    labels = sorted(set(y_true))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return dict(accuracy=accuracy_score(y_true, y_pred),
                macro_f1=f1_score(y_true, y_pred, labels=labels, average="macro",
                                  zero_division=0),
                per_class={lab: dict(precision=p[i], recall=r[i], f1=f[i], support=s[i])
                           for i, lab in enumerate(labels)})


def _random_case(rng: random.Random, n_classes: int, n: int):
    classes = [f"Disease {i}" for i in range(n_classes)]
    outside = ["Disease 99", "benign", ""]
    weights = [rng.random() ** 3 + 0.01 for _ in classes]  # some classes rare or absent
    golds = rng.choices(classes, weights, k=n)
    preds = []
    for g in golds:
        u = rng.random()
        if u < 0.4:
            preds.append(rng.choice([g, g.upper() + ".", " " + g.lower()]))  # right, respelled
        elif u < 0.7:
            preds.append(rng.choice(classes))
        elif u < 0.85:
            preds.append(rng.choice(outside))
        else:
            preds.append(None)
    return golds, preds


def _assert_matches_oracle(ours, oracle):
    assert ours["accuracy"] == pytest.approx(oracle["accuracy"], rel=1e-12, abs=1e-15)
    assert ours["macro_f1"] == pytest.approx(oracle["macro_f1"], rel=1e-12, abs=1e-15)
    assert list(ours["per_class"]) == list(oracle["per_class"])
    for label, theirs in oracle["per_class"].items():
        mine = ours["per_class"][label]
        for k in ("precision", "recall", "f1"):
            assert mine[k] == pytest.approx(theirs[k], rel=1e-12, abs=1e-15), (label, k)
        assert mine["support"] == theirs["support"]


@pytest.mark.parametrize("seed", range(150))
def test_classification_metrics_equal_sklearn(seed):
    rng = random.Random(seed)
    golds, preds = _random_case(rng, n_classes=rng.randint(1, 12), n=rng.randint(1, 80))
    ours = classification_metrics(golds, preds)
    _assert_matches_oracle(ours, _oracle(golds, preds))
    assert ours["n"] == len(golds)
    assert ours["n_unparsed"] == sum(p is None for p in preds)


def test_classification_metrics_37_classes():
    """A majority-class guesser on a 37-class task: high accuracy, macro-F1 near 0 -- what a
    binary positive/negative metric would hide."""
    classes = [f"pathway disease {i:02d}" for i in range(37)]
    golds = [classes[0]] * 144 + [c for c in classes[1:] for _ in range(4)]  # n = 288
    preds = [classes[0]] * len(golds)
    m = classification_metrics(golds, preds)
    assert m["accuracy"] == 0.5
    # class 0: precision 144/288, recall 1, F1 = 2/3; the 36 others 0
    assert m["macro_f1"] == pytest.approx((2 / 3) / 37, rel=1e-12)
    assert len(m["per_class"]) == 37
    _assert_matches_oracle(m, _oracle(golds, preds))

    rng = random.Random(37)
    golds = [rng.choice(classes) for _ in range(500)]
    preds = [g if rng.random() < 0.6 else rng.choice(classes + [None, "healthy"]) for g in golds]
    _assert_matches_oracle(classification_metrics(golds, preds), _oracle(golds, preds))


def test_classification_metrics_by_hand():
    golds = ["A", "A", "B", "C", "C"]
    preds = ["a.", "B", None, "D", "C"]
    m = classification_metrics(golds, preds)
    assert m["accuracy"] == pytest.approx(2 / 5)
    assert m["n"] == 5 and m["n_unparsed"] == 1
    # A: tp 1, predicted 1, support 2; B: tp 0, predicted 1; C: tp 1, predicted 1, support 2.
    # "D" and None are no classes: false negatives of C and B only.
    assert m["per_class"]["a"] == dict(precision=1.0, recall=0.5, f1=pytest.approx(2 / 3),
                                       support=2)
    assert m["per_class"]["b"] == dict(precision=0.0, recall=0.0, f1=0.0, support=1)
    assert m["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert set(m["per_class"]) == {"a", "b", "c"}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0 + 2 / 3) / 3)


def test_classification_metrics_errors():
    with pytest.raises(ValueError, match="2 gold labels but 1 predictions"):
        classification_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no examples"):
        classification_metrics([], [])


def test_exact_match_and_majority_rate():
    assert exact_match("Parkinson's disease", "parkinson\u2019s disease.")
    assert not exact_match("benign", None)
    assert not exact_match("pathogenic; X", "pathogenic")
    assert majority_rate(["A", "a.", "B", "C"]) == 0.5
    assert majority_rate(["x"]) == 1.0


# --- bootstrap --------------------------------------------------------------------------------

def _case(n, accuracy=0.7, n_classes=5, seed=0):
    rng = random.Random(seed)
    golds = [f"c{rng.randrange(n_classes)}" for _ in range(n)]
    preds = [g if rng.random() < accuracy else rng.choice([f"c{rng.randrange(n_classes)}", None])
             for g in golds]
    return golds, preds


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_bootstrap_is_deterministic_and_contains_the_estimate(metric):
    golds, preds = _case(300)
    a = bootstrap_ci(golds, preds, metric=metric, seed=3)
    assert a == bootstrap_ci(golds, preds, metric=metric, seed=3)
    # the seed is used: other seeds give other intervals (accuracy quantiles are multiples of
    # 1/300, so two seeds can coincide; five cannot plausibly all do)
    others = {tuple(bootstrap_ci(golds, preds, metric=metric, seed=s)) for s in range(4, 9)}
    assert len(others | {tuple(a)}) > 1
    point = classification_metrics(golds, preds)[metric]
    assert a[0] < point < a[1]
    assert 0 < a[1] - a[0] < 0.25
    # a 50% interval lies inside the 95% one
    inner = bootstrap_ci(golds, preds, metric=metric, seed=3, alpha=0.5)
    assert a[0] <= inner[0] < inner[1] <= a[1]


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_bootstrap_narrows_with_more_examples(metric):
    small = bootstrap_ci(*_case(60), metric=metric)
    large = bootstrap_ci(*_case(3000), metric=metric)
    assert (large[1] - large[0]) < 0.4 * (small[1] - small[0])  # about sqrt(60/3000) = 0.14


def test_bootstrap_degenerate_data():
    golds = ["a", "b", "a", "c"] * 10
    assert bootstrap_ci(golds, golds, metric="accuracy") == [1.0, 1.0]
    assert bootstrap_ci(golds, golds, metric="macro_f1") == [1.0, 1.0]
    assert bootstrap_ci(golds, [None] * 40, metric="accuracy") == [0.0, 0.0]


def test_bootstrap_accuracy_interval_matches_the_binomial_width():
    golds, preds = ["a"] * 1000, ["a"] * 700 + ["b"] * 300
    lo, hi = bootstrap_ci(golds, preds, n_resamples=2000)
    half = 1.96 * math.sqrt(0.7 * 0.3 / 1000)  # 0.0284
    assert lo == pytest.approx(0.7 - half, abs=0.006)
    assert hi == pytest.approx(0.7 + half, abs=0.006)


def test_resampled_macro_f1_equals_sklearn_on_each_resample():
    """The vectorized per-resample counts: macro-F1 over the classes present in the resample."""
    golds, preds = _case(40, accuracy=0.5, n_classes=6, seed=5)
    labels, y_true, y_pred = _encode(golds, preds)
    rows = np.random.default_rng(0).integers(0, len(golds), size=(30, len(golds)))
    scores = _resampled_scores(y_true, y_pred, len(labels), "macro_f1", rows)
    for r, idx in enumerate(rows):
        oracle = _oracle([golds[i] for i in idx], [preds[i] for i in idx])["macro_f1"]
        assert scores[r] == pytest.approx(oracle, rel=1e-12, abs=1e-15)


def test_bootstrap_errors():
    with pytest.raises(ValueError, match="metric"):
        bootstrap_ci(["a"], ["a"], metric="f1")
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci(["a"], ["a"], n_resamples=0)


# --- metrics files ----------------------------------------------------------------------------

def _evaluation(n=40, seed=0, split="id", checkpoint="last", run_id="e2-s0", cell=None):
    """A record and predictions as the evaluation script builds them."""
    golds, parsed = _case(n, seed=seed)
    m = classification_metrics(golds, parsed)
    preds = [{"id": f"ex{i}", "prompt_hash": f"{i:016x}",
              "generation": f"<think>\nr\n</think>\n\nAnswer: {p}" if p else "<think>\nr",
              "parsed": p, "gold": g, "correct": exact_match(g, p), "truncated": p is None}
             for i, (g, p) in enumerate(zip(golds, parsed))]
    record = {"schema": "biopost.metrics/v1", "run_id": run_id, "sweep": "dna_sft_epochs",
              "cell": cell if cell is not None else {"sft.num_train_epochs": 2},
              "stage": "sft", "checkpoint": checkpoint, "modality": "dna", "task": "kegg",
              "split": split, "headline": "accuracy", "n": n, "n_unparsed": m["n_unparsed"],
              "metrics": {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]},
              "ci95": {k: bootstrap_ci(golds, parsed, metric=k, n_resamples=200)
                       for k in ("accuracy", "macro_f1")},
              "per_class": m["per_class"], "seed": 0}
    return record, preds


def test_write_round_trip(tmp_path):
    record, preds = _evaluation()
    out = eval_dir(tmp_path / "run", "id")
    path = write_eval_outputs(out, record, preds)
    assert path == out / "metrics.json"
    assert sorted(os.listdir(out)) == ["metrics.json", "predictions.jsonl"]  # no temp files

    doc = read_metrics(out)
    assert doc == read_metrics(path)
    created = doc.pop("created")
    assert doc == record  # every field unchanged, floats included
    stamp = datetime.fromisoformat(created)
    assert stamp.tzinfo is not None and stamp.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - stamp).total_seconds()) < 60

    rows = read_predictions(out)
    assert rows == preds
    assert len((out / "predictions.jsonl").read_text().splitlines()) == record["n"]
    again = recompute_from_predictions(out / "predictions.jsonl")
    assert again == recompute_from_predictions(rows)
    assert {k: again[k] for k in ("accuracy", "macro_f1")} == doc["metrics"]
    assert again["per_class"] == doc["per_class"]
    assert again["n"] == doc["n"] and again["n_unparsed"] == doc["n_unparsed"]
    assert sum(r["correct"] for r in rows) / len(rows) == doc["metrics"]["accuracy"]


def test_write_fills_schema_and_keeps_the_callers_record(tmp_path):
    record, preds = _evaluation()
    del record["schema"]
    before = json.dumps(record, sort_keys=True)
    write_eval_outputs(tmp_path, record, preds)
    assert json.dumps(record, sort_keys=True) == before
    doc = read_metrics(tmp_path)
    assert doc["schema"] == "biopost.metrics/v1"
    record["created"] = "2026-01-01T00:00:00Z"  # a given `created` is kept
    write_eval_outputs(tmp_path, record, preds)
    assert read_metrics(tmp_path)["created"] == "2026-01-01T00:00:00Z"


@pytest.mark.parametrize("field", ["run_id", "stage", "task", "split", "headline", "n",
                                   "metrics"])
def test_write_requires_fields(tmp_path, field):
    record, preds = _evaluation()
    del record[field]
    with pytest.raises(MetricsFileError, match=f"missing required field.*{field}"):
        write_eval_outputs(tmp_path / "out", record, preds)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, message", [
    (dict(metrics={"macro_f1": 0.5}), "headline 'accuracy' missing from metrics"),
    (dict(metrics={"accuracy": float("nan")}), "not a finite number"),
    (dict(metrics={"accuracy": True}), "not a finite number"),
    (dict(split="test"), "split 'test' is not one of"),
    (dict(run_id=""), "'run_id' must be a non-empty string"),
    (dict(n=41), "n is 41 but there are 40 predictions"),
    (dict(n=-1), "'n' must be a non-negative integer"),
    (dict(schema="biopost.metrics/v0"), "schema 'biopost.metrics/v0'"),
    (dict(ci95={"accuracy": [0.9, 0.1]}), r"ci95\['accuracy'\]"),
    (dict(seed="0"), "'seed' must be an integer"),
    (dict(cell=[1]), "'cell' must be an object"),
])
def test_write_rejects_invalid_records(tmp_path, change, message):
    record, preds = _evaluation()
    record.update(change)
    with pytest.raises(MetricsFileError, match=message):
        write_eval_outputs(tmp_path / "out", record, preds)
    assert not (tmp_path / "out").exists()


def test_write_rejects_invalid_predictions(tmp_path):
    record, preds = _evaluation()
    del preds[3]["correct"]
    with pytest.raises(MetricsFileError, match="prediction 3 misses correct or score"):
        write_eval_outputs(tmp_path / "out", record, preds)
    preds[3]["correct"] = 1
    with pytest.raises(MetricsFileError, match="'correct' must be true/false"):
        write_eval_outputs(tmp_path / "out", record, preds)
    preds[3]["correct"] = False
    preds[5]["gold"] = float("nan")  # not JSON: refused before anything is written
    with pytest.raises(MetricsFileError, match="not JSON"):
        write_eval_outputs(tmp_path / "out", record, preds)
    assert not (tmp_path / "out").exists()
    preds[5]["gold"] = "c1"
    del preds[5]["correct"]
    preds[5]["score"] = 0.25  # a scored row instead of a correct flag is accepted
    write_eval_outputs(tmp_path / "out", record, preds)


def test_write_order_and_failure_leave_no_stale_metrics(tmp_path, monkeypatch):
    out = tmp_path / "eval" / "id"
    old, old_preds = _evaluation(seed=1)
    write_eval_outputs(out, old, old_preds)

    written = []
    real = metrics_file._write_atomic
    monkeypatch.setattr(metrics_file, "_write_atomic",
                        lambda path, text: (written.append(path.name), real(path, text)))
    new, new_preds = _evaluation(seed=2)
    write_eval_outputs(out, new, new_preds)
    assert written == ["predictions.jsonl", "metrics.json"]
    assert read_metrics(out)["metrics"] == new["metrics"]

    # The rename of the new predictions fails: the old metrics must not stay beside the old
    # predictions as if they were the new evaluation's, and no temp file stays behind.
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("predictions.jsonl"):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_eval_outputs(out, old, old_preds)
    assert sorted(os.listdir(out)) == ["predictions.jsonl"]
    with pytest.raises(FileNotFoundError):
        read_metrics(out)


def test_read_metrics_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        read_metrics(tmp_path / "nope" / "metrics.json")
    path = tmp_path / "metrics.json"
    record, _ = _evaluation()
    path.write_text(json.dumps(record)[:-20])
    with pytest.raises(MetricsFileError, match="not valid JSON"):
        read_metrics(path)
    path.write_text(json.dumps([record]))
    with pytest.raises(MetricsFileError, match="not an object"):
        read_metrics(path)
    path.write_text(json.dumps(dict(record, schema="biopost.status/v1")))
    with pytest.raises(MetricsFileError, match="schema 'biopost.status/v1'; expected"):
        read_metrics(path)
    path.write_text(json.dumps({k: v for k, v in record.items() if k != "schema"}))
    with pytest.raises(MetricsFileError, match="no 'schema' field"):
        read_metrics(path)
    path.write_text(json.dumps({k: v for k, v in record.items() if k != "n"}))
    with pytest.raises(MetricsFileError, match="missing required field.*n"):
        read_metrics(path)


def test_eval_dir(tmp_path):
    assert eval_dir(tmp_path, "id") == tmp_path / "eval" / "id"
    assert eval_dir(tmp_path, "ood", "last") == tmp_path / "eval" / "ood"
    assert eval_dir(tmp_path, "ood", None) == tmp_path / "eval" / "ood"
    assert eval_dir(str(tmp_path), "ood_val", "best_ood_val") == \
        tmp_path / "eval" / "ood_val@best_ood_val"
    with pytest.raises(ValueError, match="split"):
        eval_dir(tmp_path, "test")
    with pytest.raises(ValueError, match="label"):
        eval_dir(tmp_path, "id", "../x")


def test_schema_constants_agree_with_the_harvester():
    from biopost.harvest import read
    assert metrics_file.SPLITS == read.SPLITS
    assert metrics_file.SCHEMA == read.METRICS_SCHEMA
    assert metrics_file.DEFAULT_LABEL == read.DEFAULT_CHECKPOINT


def test_harvester_reads_what_we_write(tmp_path):
    """`biopost harvest` on a tree of written evaluations: no problems, numbers unchanged."""
    from biopost.cli import main
    root, out = tmp_path / "runs", tmp_path / "figures"
    written = {}
    for epochs in (1, 2):
        run_id = f"e{epochs}-s0"
        run_dir = root / "dna_sft_epochs" / "sft" / run_id
        for label in ("last", "best_ood_val"):
            for i, split in enumerate(("id", "ood")):
                record, preds = _evaluation(n=30 + 7 * epochs, seed=10 * epochs + i, split=split,
                                            checkpoint=label, run_id=run_id,
                                            cell={"sft.num_train_epochs": epochs})
                write_eval_outputs(eval_dir(run_dir, split, label), record, preds)
                written[(run_id, label, split)] = record
    assert main(["harvest", "--root", str(root), "--out", str(out)]) == 0

    doc = json.loads((out / "results_id_ood.json").read_text())
    assert doc["problems"] == []
    rows = {(r["run_id"], r["checkpoint"]): r for r in doc["rows"]}
    assert len(rows) == 4
    for (run_id, label, split), record in written.items():
        row = rows[(run_id, label)]
        assert row["sft.num_train_epochs"] == record["cell"]["sft.num_train_epochs"]
        assert row[split] == record["metrics"]["accuracy"]
        assert [row[f"{split}_ci95_lo"], row[f"{split}_ci95_hi"]] == record["ci95"]["accuracy"]
        assert row[f"n_{split}"] == record["n"]
        assert row[f"{split}/macro_f1"] == record["metrics"]["macro_f1"]
        assert row[f"n_unparsed_{split}"] == record["n_unparsed"]
    md = (out / "results_id_ood.md").read_text()
    first = written[("e1-s0", "last", "id")]["metrics"]["accuracy"]
    assert f"{first:.3f}" in md


# --- provenance -------------------------------------------------------------------------------

def test_provenance(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("stage: sft\nseed: 0\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "id_test.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    (data / "ood_test.jsonl").write_text('{"question": "q", "answer": "b"}\n')
    files = sorted(data.iterdir())

    p = provenance(config_path=config, data_paths=files, device="cpu")
    assert set(p) == {"git_commit", "git_dirty", "config_sha256", "data_sha256", "python",
                      "torch", "transformers", "device"}
    assert p["config_sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    assert p["python"] == ".".join(map(str, sys.version_info[:3]))
    assert p["device"] == "cpu"
    for package in ("torch", "transformers"):
        try:
            assert p[package] == version(package)
        except PackageNotFoundError:
            assert p[package] is None
    json.dumps(p, allow_nan=False)

    # the data hash: order-free, location-free, content- and name-sensitive
    assert provenance(data_paths=files[::-1])["data_sha256"] == p["data_sha256"]
    assert provenance(data_paths=[data])["data_sha256"] == p["data_sha256"]
    moved = tmp_path / "elsewhere" / "data"
    shutil.copytree(data, moved)
    assert provenance(data_paths=sorted(moved.iterdir()))["data_sha256"] == p["data_sha256"]
    (moved / "ood_test.jsonl").rename(moved / "ood_val.jsonl")  # same bytes, other split
    assert provenance(data_paths=[moved])["data_sha256"] != p["data_sha256"]
    (moved / "ood_val.jsonl").rename(moved / "ood_test.jsonl")
    assert provenance(data_paths=[moved])["data_sha256"] == p["data_sha256"]
    (moved / "ood_test.jsonl").write_text('{"question": "q", "answer": "c"}\n')
    assert provenance(data_paths=[moved])["data_sha256"] != p["data_sha256"]

    empty = provenance()
    assert empty["config_sha256"] is None and empty["data_sha256"] is None
    assert empty["device"] is None
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        provenance(data_paths=[data / "missing.jsonl"])


def test_provenance_git_state_of_this_checkout():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(metrics_file.__file__)))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not running from a git checkout")
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True,
                            text=True).stdout
    p = provenance()
    assert p["git_commit"] == head.stdout.strip()
    assert p["git_dirty"] is bool(status.strip())


def test_provenance_without_git(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git binary to be found
    p = provenance(device="cuda:0")
    assert p["git_commit"] is None and p["git_dirty"] is None
    assert p["device"] == "cuda:0"


def test_eval_modules_import_no_heavy_packages():
    """The harvester and login-node tools import these: no torch, transformers or sklearn."""
    script = ("import sys, json\n"
              "import biopost.metrics.parse, biopost.metrics.classification, biopost.eval.metrics_file\n"
              "biopost.eval.metrics_file.provenance()\n"
              "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    modules = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert "numpy" in modules
    assert not modules & {"torch", "transformers", "sklearn"}

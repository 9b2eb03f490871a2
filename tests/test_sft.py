"""SFT end to end on the tiny model: the entry script, preemption + bit-identical resume,
over-fitting, and proof that the model reads the DNA."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_script, trained_tensors

from biopost.data.examples import collate, encode_training_example
from biopost.model.batch import Batch
from biopost.data.io import load_split_rows
from bioreason.synth_kegg import DISEASES
from biopost.encoders.cache import EmbeddingCache
from biopost.model.bio_model import BioReasoningModel
from biopost.tasks import get_task
from biopost.train.log import read_log
from biopost.signals import REQUEUE_EXIT_CODE

SCRIPT = ROOT / "BioReason/train_dna_qwen.py"
TINY = ROOT / "BioReason/configs/sft_tiny.yaml"
KEGG = get_task("kegg")


def test_tiny_config_trains_and_loss_falls(tiny_sft_run):
    entries = read_log(tiny_sft_run / "train_log.jsonl")
    losses = [e["loss"] for e in entries]
    assert entries[-1]["step"] == 750 and len(losses) >= 50
    assert sum(losses[-5:]) / 5 < 0.25 * sum(losses[:5]) / 5
    cfg = json.loads(json.dumps(__import__("yaml").safe_load((tiny_sft_run / "config.yaml").read_text())))
    assert cfg["stage"] == "sft" and cfg["run_id"] == tiny_sft_run.name and cfg["sweep"] is None
    assert (tiny_sft_run / "checkpoints/last/bio_modules.safetensors").is_file()


def test_entry_script_cli_records_flags(tmp_path, synth_data):
    out = tmp_path / "run"
    r = run_script([SCRIPT, "--config", TINY, "--data_path", synth_data, "--output_dir", out,
                    "--max_steps", "3", "--gradient_checkpointing", "false", "--lora_rank", "4",
                    "--lr_scheduler_type", "constant"])
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = __import__("yaml").safe_load((out / "config.yaml").read_text())
    assert cfg["gradient_checkpointing"] is False and cfg["lora_rank"] == 4 and cfg["max_steps"] == 3
    assert (out / "checkpoints/last/adapter/adapter_model.safetensors").is_file()
    assert read_log(out / "train_log.jsonl")[-1]["step"] == 3


def _resume_args(synth_data, out):
    # LoRA with dropout: resume must restore the RNG too. 96 rows / batch 4 / accum 2 = 12 steps per epoch.
    return [SCRIPT, "--config", TINY, "--data_path", synth_data, "--output_dir", out,
            "--train_data_fraction", "0.16", "--per_device_train_batch_size", "4",
            "--gradient_accumulation_steps", "2", "--max_steps", "18", "--save_steps", "4",
            "--lora_rank", "4", "--lora_dropout", "0.1", "--learning_rate", "1e-3", "--logging_steps", "1"]


# Bit-exact resume is asserted with one torch thread per process, as the packed and DDP resume tests
# do. With torch's default two threads this test passed in every clean-clone CI run and 4 of 4 tries
# by hand, then failed once in CI (stop 28: the final LoRA tensors of the resumed run differed from
# the uninterrupted one); two-thread fp32 reductions are not guaranteed to repeat between processes,
# so that run says nothing about the resume logic, which is what this test is for.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_sigterm_mid_epoch_requeues_and_resume_is_bit_identical(tmp_path, synth_data):
    straight = tmp_path / "straight"
    r = run_script(_resume_args(synth_data, straight), env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-2000:]

    interrupted = tmp_path / "interrupted"
    env = dict(os.environ, PYTHONUNBUFFERED="1", **ONE_THREAD)
    proc = subprocess.Popen([sys.executable, *map(str, _resume_args(synth_data, interrupted))], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = interrupted / "train_log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and any(e.get("step", 0) >= 2 for e in read_log(log)):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == REQUEUE_EXIT_CODE, err[-2000:]
    state = json.loads((interrupted / "checkpoints/last/trainer_state.json").read_text())
    assert 2 <= state["step"] < 12 and state["epoch"] == 0 and state["micro"] > 0  # mid-epoch, mid-run
    r = run_script(_resume_args(synth_data, interrupted), env=ONE_THREAD)  # same command: --resume auto
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from" in r.stderr
    a, b = trained_tensors(straight), trained_tensors(interrupted)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the resumed log reads like the uninterrupted one
    la, lb = read_log(straight / "train_log.jsonl"), read_log(interrupted / "train_log.jsonl")
    assert [e["step"] for e in la] == [e["step"] for e in lb] == list(range(1, 19))
    assert [e["loss"] for e in la] == [e["loss"] for e in lb]


def test_overfits_sixteen_examples(tmp_path, synth_data):
    from biopost.config import from_dict, load_yaml
    from biopost.train.sft import SFTConfig, train_sft
    data = load_yaml(TINY)
    data.update(output_dir=str(tmp_path / "overfit"), data_path=str(synth_data), train_data_fraction=16 / 600,
                max_steps=60, per_device_train_batch_size=8, learning_rate=3e-3, warmup_ratio=0.0,
                lr_scheduler_type="constant", save_steps=1000, resume="never")
    assert train_sft(from_dict(SFTConfig, data)) == 0
    model = BioReasoningModel.load(tmp_path / "overfit/checkpoints/last").eval()
    from biopost.data.schema import fraction_subset
    rows = fraction_subset([r for r, _ in load_split_rows(str(synth_data), ("train",))["train"]], 16 / 600, 0)
    assert len(rows) == 16
    cache = EmbeddingCache(model.encoders["dna"])
    exs = [encode_training_example(model, KEGG, r, 512) for r in rows]
    b = collate(exs, model.tokenizer.pad_token_id, lambda m, s: cache.get(s))
    with torch.no_grad():
        out = model(Batch(**b))
    assert out.loss_sum.item() / out.n_tokens < 0.1


def _candidate_accuracy(model, rows, cache):
    """Which disease does the model find most likely (reasoning and answer rewritten per candidate)?"""
    labels = DISEASES[:6]
    correct = 0
    for row in rows:
        gold, scores = row["answer"], []
        for cand in labels:
            alt = dict(row, answer=cand, reasoning={"reasoning_steps": [s.replace(gold, cand) for s in
                                                                        row["reasoning"]["reasoning_steps"]]})
            ex = encode_training_example(model, KEGG, alt, 0)
            b = collate([ex], model.tokenizer.pad_token_id, lambda m, s: cache.get(s))
            with torch.no_grad():
                loss_sum = model(Batch(**b)).loss_sum
            scores.append(-loss_sum.item())
        correct += labels[max(range(len(labels)), key=scores.__getitem__)] == gold
    return correct / len(rows)


def test_model_reads_the_dna(tiny_sft_run, synth_data):
    model = BioReasoningModel.load(tiny_sft_run / "checkpoints/last").eval()
    cache = EmbeddingCache(model.encoders["dna"])
    rows = [r for r, _ in load_split_rows(str(synth_data), ("id_test",))["id_test"]][:90]
    rng = random.Random(0)
    shuffled = [dict(r, reference_sequence="".join(rng.choice("ACGT") for _ in range(300)),
                     variant_sequence="".join(rng.choice("ACGT") for _ in range(300))) for r in rows]
    real, random_dna = _candidate_accuracy(model, rows, cache), _candidate_accuracy(model, shuffled, cache)
    majority = max(sum(r["answer"] == d for r in rows) for d in DISEASES[:6]) / len(rows)
    print(f"candidate accuracy: real DNA {real:.3f}, random DNA {random_dna:.3f}, majority {majority:.3f}")
    assert real >= majority + 0.25
    # chance level: within two binomial standard errors of the majority rate (n = 90)
    assert random_dna <= majority + 2 * (majority * (1 - majority) / len(rows)) ** 0.5


def test_bad_inputs_give_clear_errors(tmp_path, synth_data):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text() + "num_train_epoch: 3\n")
    r = run_script([SCRIPT, "--config", bad, "--output_dir", tmp_path / "x"])
    assert r.returncode == 2 and "num_train_epoch" in r.stderr and "Traceback" not in r.stderr

    data = tmp_path / "data"
    data.mkdir()
    rows = [json.loads(line) for line in __import__("gzip").open(synth_data / "train.jsonl.gz", "rt")][:4] \
        if (synth_data / "train.jsonl.gz").exists() else \
        [json.loads(line) for line in open(synth_data / "train.jsonl")][:4]
    rows[2]["variant_sequence"] = rows[2]["variant_sequence"][:50] + "XZ" + rows[2]["variant_sequence"][52:]
    del rows[3]["question"]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = run_script([SCRIPT, "--config", TINY, "--data_path", data, "--output_dir", tmp_path / "y", "--max_steps", "1"])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{data / 'train.jsonl'}: line 3: field 'variant_sequence'" in r.stderr
    r = run_script([SCRIPT, "--config", TINY, "--data_path", data, "--output_dir", tmp_path / "z", "--max_steps", "1",
                    "--skip_invalid", "true", "--per_device_train_batch_size", "2"])
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "z/data_report.json").read_text())["splits"]["train"]
    assert report["n_rows"] == 4 and report["n_valid"] == 2 and sum(report["skipped"].values()) == 2


def test_gradient_checkpointing_gives_the_same_losses(tmp_path, synth_data):
    runs = {}
    for flag in ("false", "true"):
        out = tmp_path / flag
        r = run_script([SCRIPT, "--config", TINY, "--data_path", synth_data, "--output_dir", out, "--max_steps", "3",
                        "--gradient_checkpointing", flag, "--train_data_fraction", "0.05"])
        assert r.returncode == 0, r.stderr[-2000:]
        runs[flag] = [e["loss"] for e in read_log(out / "train_log.jsonl")]
    assert runs["true"] == pytest.approx(runs["false"], rel=1e-5)

"""Continued pre-training: learns, exports a loadable model, resumes bit-identically, rejects bad input.

One short tiny-backbone run (the entry script, as the sweep runner starts it) is shared by the
module. Subprocesses run with one intra-op thread: that keeps them fast on a busy 2-core machine,
and a bitwise comparison needs every run to use the same thread count.
"""
import collections
import gzip
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from biopost.data.text import BlockStream, TextSource, make_encoder, pack, read_documents, separator_id
from biopost.train.checkpoint import latest_checkpoint, read_trainer_state
from biopost.train.log import read_log
from biopost.signals import REQUEUE_EXIT_CODE

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "BioReason" / "train_finefineweb_midtrain.py"
TINY = REPO / "BioReason" / "configs" / "cpt_tiny.yaml"
STEPS = 60
# The tiny config, made shorter: 60 steps of 2 micro-batches x 4 blocks x 128 tokens.
ARGS = ["--config", str(TINY), "--max_steps", str(STEPS), "--per_device_train_batch_size", "4",
        "--gradient_accumulation_steps", "2", "--eval_docs", "100", "--eval_steps", "30", "--save_steps", "20",
        "--logging_steps", "1"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "biopost_cache_cpt"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIOPOST_CACHE_DIR", str(cache))
        from biopost.tiny import resolve_model_path
        resolve_model_path("biopost-tiny/qwen3")  # once, before subprocesses race to build it
        yield dict(os.environ, BIOPOST_CACHE_DIR=str(cache), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


@pytest.fixture
def in_process(env):
    """For train_cpt called in this process: the test cache, and one thread as in the subprocesses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIOPOST_CACHE_DIR", env["BIOPOST_CACHE_DIR"])
        yield
    torch.set_num_threads(threads)


def run_script(env, *args, timeout=600):
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def reference_run(env, tmp_path_factory):
    out = tmp_path_factory.mktemp("cpt") / "cpt_tiny_ref"
    proc = run_script(env, *ARGS, "--output_dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def tokenizer_for(run):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(run / "final")


def test_cpt_beats_unigram_model_on_held_out_text(reference_run):
    run = reference_run
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    metrics = json.loads((run / "final_eval_metrics.json").read_text())
    tok = tokenizer_for(run)
    encode, sep, T = make_encoder(tok), separator_id(tok), cfg["max_length"]
    # The exact blocks training consumed, rebuilt with the same packer.
    per_step = cfg["per_device_train_batch_size"] * cfg["gradient_accumulation_steps"]
    stream, train_blocks = BlockStream(TextSource(cfg["data_path"]), encode, sep, T), []
    while len(train_blocks) < STEPS * per_step:
        train_blocks += stream.take(per_step) or []
    counts = collections.Counter(t for b in train_blocks for t in b)
    n, vocab = sum(counts.values()), len(tok)
    # The same evaluation tokens: every block position after the first is predicted.
    texts = read_documents(TextSource(cfg["eval_data_path"]), cfg["eval_docs"])[0]
    full, remainder = pack(encode(texts), T, sep)
    targets = [t for b in full + [remainder] for t in b[1:]]
    assert metrics["eval_tokens"] == len(targets) and metrics["eval_docs"] == 100
    unigram_nll = -sum(math.log((counts[t] + 1) / (n + vocab)) for t in targets) / len(targets)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    assert metrics["perplexity"] < 0.85 * math.exp(unigram_nll), (metrics, math.exp(unigram_nll))
    log = read_log(run / "train_log.jsonl")
    evals = [e for e in log if "eval_loss" in e]
    assert [e["step"] for e in evals] == [30, 60] and evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    assert [e["step"] for e in log if "loss" in e] == list(range(1, STEPS + 1))


def test_final_is_a_plain_hf_model_of_the_trained_weights(reference_run):
    from transformers import AutoModelForCausalLM

    run = reference_run
    model = AutoModelForCausalLM.from_pretrained(run / "final", dtype=torch.float32).eval()
    tok = tokenizer_for(run)
    assert tok.convert_tokens_to_ids("<|endoftext|>") is not None and tok.chat_template
    assert not (run / "final" / "adapter_config.json").exists()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["stage"] == "cpt" and cfg["sweep"] is None and cfg["cell"] == {}
    assert cfg["run_id"] == run.name and cfg["text_model_name"] == "biopost-tiny/qwen3"
    # Its held-out loss, recomputed from final/, is the one reported: the export is the trained model.
    texts = read_documents(TextSource(cfg["eval_data_path"]), cfg["eval_docs"])[0]
    full, remainder = pack(make_encoder(tok)(texts), cfg["max_length"], separator_id(tok))
    total, n = 0.0, 0
    with torch.no_grad():
        for block in full + [remainder]:
            ids = torch.tensor([block])
            total += model(input_ids=ids, labels=ids).loss.item() * (len(block) - 1)
            n += len(block) - 1
    metrics = json.loads((run / "final_eval_metrics.json").read_text())
    assert total / n == pytest.approx(metrics["eval_loss"], rel=1e-4)
    assert metrics["step"] == STEPS and read_trainer_state(latest_checkpoint(run))["step"] == STEPS


def test_final_loads_in_sft_as_the_text_model(reference_run, env, tmp_path):
    """CPT's final/ is what a later stage gets as --text_model_name: SFT builds on it and trains."""
    from transformers import AutoModelForCausalLM

    from biopost.model.bio_model import BioReasoningModel
    out = tmp_path / "sft_on_cpt"
    proc = subprocess.run([sys.executable, str(REPO / "BioReason" / "train_dna_qwen.py"),
                           "--config", str(REPO / "BioReason" / "configs" / "sft_tiny.yaml"),
                           "--text_model_name", str(reference_run / "final"), "--max_steps", "3",
                           "--train_data_fraction", "0.05", "--learning_rate", "0", "--warmup_ratio", "0",
                           "--output_dir", str(out)], env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["text_model_name"] == str(reference_run / "final")
    losses = [e["loss"] for e in read_log(out / "train_log.jsonl") if "loss" in e]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    # learning rate 0: the SFT model's language model is exactly the CPT model
    cpt = AutoModelForCausalLM.from_pretrained(reference_run / "final", dtype=torch.float32)
    sft = BioReasoningModel.load(out / "checkpoints" / "last").base_llm()
    for name, p in cpt.named_parameters():
        if "embed_tokens" in name or "lm_head" in name:
            continue  # resized for the added special tokens
        assert torch.equal(sft.get_parameter(name), p), name


def test_sigterm_checkpoints_exits_75_and_resume_is_bit_identical(env, reference_run, tmp_path):
    out = tmp_path / "cpt_tiny_interrupted"
    err = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *ARGS, "--output_dir", str(out)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=err)
    # Wait for the first periodic checkpoint (step 20 of 60), then preempt as SLURM would.
    deadline = time.time() + 300
    while not (out / "checkpoints" / "last").exists():
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-3000:]
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == REQUEUE_EXIT_CODE, (tmp_path / "stderr.txt").read_text()[-3000:]
    err.close()
    step = read_trainer_state(latest_checkpoint(out))["step"]
    assert 20 <= step < STEPS
    assert not (out / "final").exists()
    assert read_log(out / "train_log.jsonl")[-1] == {"step": step, "event": "preempted", "signal": signal.SIGTERM}

    # Resuming with a different block size would silently misread the data position: refused.
    config_before = (out / "config.yaml").read_text()
    wrong = run_script(env, *ARGS, "--output_dir", str(out), "--max_length", "64")
    assert wrong.returncode == 1 and "max_length: 128 -> 64" in wrong.stderr, wrong.stderr[-2000:]
    assert "Traceback" not in wrong.stderr
    assert (out / "config.yaml").read_text() == config_before

    resumed = run_script(env, *ARGS, "--output_dir", str(out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and f"at step {step}" in resumed.stderr
    ref, got = load_file(reference_run / "final" / "model.safetensors"), load_file(out / "final" / "model.safetensors")
    assert ref.keys() == got.keys()
    different = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not different, f"weights differ after resume: {different}"
    # The log reads as if the run had never stopped (same losses at every step, no stale entries).
    # (The preemption stays on record as an event line.)
    strip = lambda log: [{k: v for k, v in e.items() if k != "elapsed_s"} for e in log if "event" not in e]  # noqa
    log = read_log(out / "train_log.jsonl")
    assert strip(log) == strip(read_log(reference_run / "train_log.jsonl"))
    assert [e for e in log if "event" in e] == [{"step": step, "event": "preempted", "signal": signal.SIGTERM}]
    assert json.loads((out / "final_eval_metrics.json").read_text())["eval_loss"] == \
        json.loads((reference_run / "final_eval_metrics.json").read_text())["eval_loss"]


def test_finished_run_is_not_redone(env, reference_run):
    before = (reference_run / "final" / "model.safetensors").stat().st_mtime_ns
    proc = run_script(env, *ARGS, "--output_dir", str(reference_run))
    assert proc.returncode == 0 and "already finished" in proc.stderr, proc.stderr[-2000:]
    assert (reference_run / "final" / "model.safetensors").stat().st_mtime_ns == before


def test_entry_point_rejects_unknown_keys(env, tmp_path):
    proc = run_script(env, *ARGS, "--output_dir", str(tmp_path / "x"), "--learning_rat", "1e-4")
    assert proc.returncode == 2 and "--learning_rat" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text() + "block_size: 128\n")
    proc = run_script(env, "--config", str(bad), "--output_dir", str(tmp_path / "y"))
    assert proc.returncode == 2 and "unknown key(s) 'block_size'" in proc.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_bad_row_stops_the_run_naming_file_line_and_field(env, tmp_path):
    data = tmp_path / "corpus.jsonl"
    data.write_text('{"text": "DNA repair"}\n{"text": "nucleus"}\n{"body": "no text here"}\n')
    proc = run_script(env, *ARGS, "--output_dir", str(tmp_path / "run"), "--data_path", str(data),
                      "--eval_data_path", "null", "--eval_docs", "1")
    assert proc.returncode == 1, proc.stderr[-2000:]          # bad input (2 is a bad command line)
    assert f"{data}, line 3, field 'text': missing" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_epochs_size_the_run_and_held_out_documents_come_from_the_stream_start(in_process, tmp_path):
    from transformers import AutoTokenizer

    from biopost.config import parse_config
    from biopost.data.text import count_tokens
    from biopost.tiny import resolve_model_path
    from biopost.train.cpt import CPTConfig, train_cpt

    data = tmp_path / "corpus.jsonl.gz"
    with gzip.open(REPO / "biopost" / "resources" / "bio_text" / "heldout.jsonl.gz", "rt") as src, \
            gzip.open(data, "wt") as dst:
        for line, _ in zip(src, range(15)):
            dst.write(line)
    out = tmp_path / "run"
    cfg = parse_config(CPTConfig, ["--config", str(TINY), "--output_dir", str(out), "--data_path", str(data),
                                   "--eval_data_path", "none", "--eval_docs", "3", "--max_steps", "-1",
                                   "--num_train_epochs", "2", "--max_length", "32",
                                   "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
                                   "--save_steps", "1000", "--eval_steps", "0", "--logging_steps", "1"])
    assert train_cpt(cfg) == 0
    tok = AutoTokenizer.from_pretrained(resolve_model_path("biopost-tiny/qwen3"))
    source = TextSource(str(data))
    tokens = count_tokens(source, make_encoder(tok), start=(0, 3))["tokens"]  # after the 3 held-out docs
    per_pass = tokens // 32 // 2
    assert per_pass >= 5
    log = read_log(out / "train_log.jsonl")
    assert max(e["step"] for e in log) == 2 * per_pass
    assert {e["epoch"] for e in log if "loss" in e} == {0, 1}
    # A checkpoint was written at the end of the first pass (as well as at the end).
    steps = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*"))
    assert steps == [per_pass, 2 * per_pass]
    assert json.loads((out / "final_eval_metrics.json").read_text())["eval_docs"] == 3


def test_lora_cpt_merges_the_adapter_into_final(in_process, tmp_path):
    from transformers import AutoModelForCausalLM

    from biopost.config import parse_config
    from biopost.tiny import resolve_model_path
    from biopost.train.cpt import CPTConfig, train_cpt

    out = tmp_path / "lora"
    cfg = parse_config(CPTConfig, ["--config", str(TINY), "--output_dir", str(out), "--lora_rank", "4",
                                   "--learning_rate", "1e-2", "--max_steps", "3", "--eval_docs", "5",
                                   "--max_length", "32", "--validate_data", "false", "--save_steps", "2"])
    assert train_cpt(cfg) == 0
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path("biopost-tiny/qwen3"))
    assert (out / "checkpoints" / "step-00000002" / "adapter_model.safetensors").exists()
    final = AutoModelForCausalLM.from_pretrained(out / "final")
    assert not (out / "final" / "adapter_config.json").exists()
    assert not any("lora" in k for k in final.state_dict())
    b, f = base.state_dict(), final.state_dict()
    assert not torch.equal(b["model.layers.0.self_attn.q_proj.weight"], f["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(b["model.norm.weight"], f["model.norm.weight"])  # only adapted modules changed

"""CPT (full fine-tuning of the plain causal LM) under torchrun, with DDP and with FSDP2 (the default
for full fine-tuning), on CPU with gloo: a 2-process run is the 1-process run with the accumulation
doubled (losses, held-out loss and final weights); a SIGTERM to the launcher checkpoints once and
exits 75, and the sharded run's checkpoint resumes with 1 process to the weights of the
uninterrupted run. Every run on one torch thread (tests/test_sft_ddp.py: ONE_THREAD_WHY).

Tolerances: DDP's update equals one process's to the bit here. FSDP2's differs at fp32 noise: the
clipping norm is summed shard by shard (step 1's norm 2.3648908 vs 2.3648949), and through the
clip and Adam the final weights move up to 9e-6, at most 2.2e-5 of a tensor's update L2 norm (two
runs here), so sharded runs are held to 1e-4 of each tensor's update norm, the GRPO oracle's
criterion."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import signal_when

from biopost.signals import REQUEUE_EXIT_CODE
from biopost.train.log import read_log

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "BioReason" / "train_finefineweb_midtrain.py"
TINY = REPO / "BioReason" / "configs" / "cpt_tiny.yaml"
LAUNCH = [sys.executable, "-m", "biopost.launch", "--standalone", "--nproc_per_node", "2"]
STEPS = 16


def _args(out, accum: int):
    return [SCRIPT, "--config", TINY, "--output_dir", out, "--max_steps", STEPS, "--per_device_train_batch_size", 2,
            "--gradient_accumulation_steps", accum, "--eval_docs", 40, "--eval_steps", 8, "--save_steps", 4,
            "--logging_steps", 1, "--warmup_steps", 2]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "biopost_cache_cpt_ddp"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIOPOST_CACHE_DIR", str(cache))
        from biopost.tiny import resolve_model_path
        resolve_model_path("biopost-tiny/qwen3")  # once, before the ranks race to build it
    return dict(os.environ, BIOPOST_CACHE_DIR=str(cache), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _run(env, prefix, args, **kw):
    return subprocess.run([*prefix, *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, **kw)


@pytest.fixture(scope="module")
def one_process(env, tmp_path_factory):
    out = tmp_path_factory.mktemp("cpt_ddp") / "one"
    proc = _run(env, [sys.executable], _args(out, 2))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _losses(run):
    return [e["loss"] for e in read_log(run / "train_log.jsonl") if "loss" in e]


def _base_weights(env):
    from biopost.tiny import resolve_model_path
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIOPOST_CACHE_DIR", env["BIOPOST_CACHE_DIR"])
        base_dir = Path(resolve_model_path("biopost-tiny/qwen3"))
    return load_file(str(next(base_dir.glob("*.safetensors"))))


def _compare_final(a, b, base=None):
    """Final weights elementwise (rtol 1e-4, atol 1e-6), or with `base` (a sharded run) each tensor's
    difference within 1e-4 of the 1-process update's L2 norm (see the module docstring)."""
    wa, wb = load_file(str(a / "final" / "model.safetensors")), load_file(str(b / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    w_abs = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    if base is None:
        print(f"max final weight diff {w_abs:.3g}")
        for k in wa:
            assert torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6), k
        return w_abs
    rel = {k: float((wa[k] - wb[k]).norm() / (wb[k] - base[k]).norm()) for k in wa if k in base}
    assert rel and all((wb[k] - base[k]).norm() > 0 for k in rel)
    print(f"max final weight diff {w_abs:.3g}; largest difference / update norm {max(rel.values()):.3g}")
    assert max(rel.values()) <= 1e-4, max(rel, key=rel.get)
    return w_abs


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_equal_one_with_doubled_accumulation(env, one_process, tmp_path, parallel):
    out = tmp_path / "two"
    proc = _run(env, LAUNCH, [*_args(out, 1), "--parallel", parallel])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"world size 2, {parallel}" in proc.stderr
    la, lb = _losses(out), _losses(one_process)
    assert len(la) == len(lb) == STEPS
    rel = max(abs(x - y) / abs(y) for x, y in zip(la, lb))
    print(f"max rel loss diff {rel:.3g}")
    assert rel <= 1e-5
    base = _base_weights(env)
    _compare_final(out, one_process, base if parallel == "fsdp" else None)
    # ... and the comparison means something: training moved every compared tensor well past it
    final = load_file(str(out / "final" / "model.safetensors"))
    moved = min(float((final[k] - base[k]).abs().max()) for k in base if k in final)
    assert moved > 1e-4, moved
    ea = json.loads((out / "final_eval_metrics.json").read_text())
    eb = json.loads((one_process / "final_eval_metrics.json").read_text())
    assert ea["eval_loss"] == pytest.approx(eb["eval_loss"], rel=1e-5)
    assert ea["train_tokens"] == eb["train_tokens"]
    # rank 0 alone wrote: one log line per step, one eval line at step 8 and the final one
    log = read_log(out / "train_log.jsonl")
    assert [e["step"] for e in log if "loss" in e] == list(range(1, STEPS + 1))
    assert [e["step"] for e in log if "eval_loss" in e] == [8, STEPS]
    config = (out / "config.yaml").read_text()
    assert "world_size: 2" in config and "global_batch_blocks: 4" in config


def test_sigterm_under_two_processes_checkpoints_once_and_resumes_with_one(env, one_process, tmp_path):
    out = tmp_path / "interrupted"
    err = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen([*LAUNCH, *map(str, _args(out, 1))], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=err)
    signal_when(proc, (out / "checkpoints" / "last").exists, signal.SIGTERM, "a checkpoint")
    assert proc.wait(timeout=300) == REQUEUE_EXIT_CODE, (tmp_path / "stderr.txt").read_text()[-3000:]
    err.close()
    log = read_log(out / "train_log.jsonl")
    events = [e for e in log if "event" in e]
    assert len(events) == 1 and events[0]["event"] == "preempted", events   # one checkpoint, one record
    step = events[0]["step"]
    assert 4 <= step < STEPS and not (out / "final").exists()
    state = json.loads((out / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["step"] == step and state["world_size"] == 2

    # the same global batch on one process (accumulation 2): resumes and ends as the uninterrupted run
    resumed = _run(env, [sys.executable], _args(out, 2))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {step}" in resumed.stderr
    _compare_final(out, one_process, _base_weights(env))   # the interrupted run was sharded (auto: fsdp)
    strip = lambda lg: [e["loss"] for e in lg if "loss" in e]  # noqa: E731
    assert strip(read_log(out / "train_log.jsonl")) == pytest.approx(strip(read_log(one_process / "train_log.jsonl")),
                                                                      rel=1e-5)


def test_resume_under_another_global_batch_is_refused_by_name(env, one_process, tmp_path):
    import shutil
    out = tmp_path / "other"
    shutil.copytree(one_process / "checkpoints", out / "checkpoints")
    wrong = _run(env, [sys.executable], [*_args(out, 1), "--max_steps", STEPS + 4])
    assert wrong.returncode == 1 and "blocks_per_step: 4 -> 2" in wrong.stderr, wrong.stderr[-2000:]

"""SFT under torchrun with DDP (LoRA), on CPU with gloo: a 2-process run is the 1-process run with
the accumulation doubled (losses and weights), a signal checkpoints once and exits 75, resume works
with 2 and with 1 process, the monitor stops both ranks at the same step, rank 0 alone writes the
run directory and each sequence is encoded once."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from conftest import ROOT, run_script, trained_tensors

from biopost.signals import REQUEUE_EXIT_CODE
from biopost.train.log import read_log

SCRIPT = ROOT / "BioReason/train_dna_qwen.py"
TINY = ROOT / "BioReason/configs/sft_tiny.yaml"
LAUNCH = [sys.executable, "-m", "biopost.launch", "--standalone", "--nproc_per_node", "2"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# ONE_THREAD_WHY: every run here (the workers and the 1-process references) uses one torch thread.
# The thread count changes fp32 reduction orders, and Adam turns the resulting ~1e-8 gradient
# differences on near-zero-gradient elements into ~4e-6 weight differences (a clean-clone CI run
# whose 1-process reference had two threads: weights 4.4e-6 apart, losses 3.7e-8); with the same
# thread count everywhere they agree to 1.6e-7.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
MAX_STEPS = 12


def _args(synth_data, out, accum: int, *extra):
    # 90 rows / batch 4 = 23 micro-batches per epoch (the last of 2 rows); 4 per optimizer step: 6 steps,
    # the last window of 3, so one rank runs a zero-weight filler there. 12 steps cross into epoch 1.
    # No LoRA dropout: ranks draw their own dropout masks, one process draws them in another order.
    return [SCRIPT, "--config", TINY, "--data_path", synth_data, "--output_dir", out,
            "--train_data_fraction", "0.15", "--per_device_train_batch_size", "4",
            "--gradient_accumulation_steps", str(accum), "--max_steps", str(MAX_STEPS), "--save_steps", "4",
            "--lora_rank", "4", "--lora_dropout", "0", "--learning_rate", "1e-3", "--logging_steps", "1",
            "--distributed_timeout_minutes", "1", *map(str, extra)]


def _launch(prefix, args, **kw):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")  # ONE_THREAD_WHY (above)
    return subprocess.run([*prefix, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240, **kw)


def _losses(run):
    return [e["loss"] for e in read_log(run / "train_log.jsonl") if "loss" in e]


def _grad_norms(run):
    return [e["grad_norm"] for e in read_log(run / "train_log.jsonl") if "loss" in e]


def _full_tensors(run) -> dict:
    """The tensors of a full fine-tuning checkpoint (bio modules + the whole language model)."""
    from safetensors.torch import load_file
    ckpt = Path(run) / "checkpoints/last"
    tensors = load_file(str(ckpt / "bio_modules.safetensors"))
    tensors.update({f"llm.{k}": v for k, v in load_file(str(ckpt / "llm/model.safetensors")).items()})
    return tensors


def _compare(a_run, b_run, label, tensors=trained_tensors, steps=MAX_STEPS):
    """Per-step losses within 1e-5 relative (gradient norms 1e-4), trainable tensors allclose(rtol 1e-4,
    atol 1e-6); prints the max diffs."""
    la, lb = _losses(a_run), _losses(b_run)
    assert len(la) == len(lb) == steps
    loss_rel = max(abs(x - y) / abs(x) for x, y in zip(la, lb))
    ga, gb = _grad_norms(a_run), _grad_norms(b_run)          # DDP averages: an unscaled loss halves these
    norm_rel = max(abs(x - y) / abs(x) for x, y in zip(ga, gb))
    a, b = tensors(a_run), tensors(b_run)
    assert a.keys() == b.keys()
    w_abs = max(float((a[k] - b[k]).abs().max()) for k in a)
    w_rel = max(float(((a[k] - b[k]).abs() / b[k].abs().clamp(min=1e-12)).max()) for k in a)
    print(f"{label}: max rel diff of losses {loss_rel:.3g}, of grad norms {norm_rel:.3g}; "
          f"max weight diff abs {w_abs:.3g}, rel {w_rel:.3g}")
    assert loss_rel <= 1e-5 and norm_rel <= 1e-4
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synth_data):
    """One process with accumulation 4, and two processes with 2 each (a fresh embedding cache)."""
    root = tmp_path_factory.mktemp("ddp")
    one, two = root / "one", root / "two"
    t0 = time.perf_counter()
    r = run_script(_args(synth_data, one, 4), env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-3000:]
    t1 = time.perf_counter()
    r2 = _launch(LAUNCH, _args(synth_data, two, 2, "--cache_dir", root / "fresh_cache"))
    assert r2.returncode == 0, r2.stderr[-3000:]
    print(f"1-process run {t1 - t0:.1f}s, 2-process run {time.perf_counter() - t1:.1f}s")
    return {"one": one, "two": two, "two_stderr": r2.stderr, "cache": root / "fresh_cache"}


# ---------------------------------------------------------------- (a) 2 processes == 1 process, accumulation x 2

def test_two_processes_equal_one_with_doubled_accumulation(runs):
    _compare(runs["one"], runs["two"], "2 proc vs 1 proc")
    cfg = yaml.safe_load((runs["two"] / "config.yaml").read_text())
    assert cfg["world_size"] == 2 and cfg["micro_batches_per_step"] == 4 and cfg["global_batch_size"] == 16
    one_cfg = yaml.safe_load((runs["one"] / "config.yaml").read_text())
    assert one_cfg["world_size"] == 1 and one_cfg["global_batch_size"] == 16
    assert "world size 2 (ddp), global batch" in runs["two_stderr"]
    # the same steps saw the same supervised tokens: the data split is the 1-process window's
    assert [e["n_tokens"] for e in read_log(runs["two"] / "train_log.jsonl")] == \
           [e["n_tokens"] for e in read_log(runs["one"] / "train_log.jsonl")]


def test_packed_two_processes_equal_one_with_doubled_accumulation(synth_data, tmp_path):
    """Packed micro-batches (one packed row each) are dealt out the same way: the 1-process plan's windows."""
    one, two = tmp_path / "one", tmp_path / "two"
    r = run_script(_args(synth_data, one, 4, "--tokens_per_micro_batch", "900"), env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _launch(LAUNCH, _args(synth_data, two, 2, "--tokens_per_micro_batch", "900"))
    assert r.returncode == 0, r.stderr[-3000:]
    _compare(one, two, "packed: 2 proc vs 1 proc")
    assert yaml.safe_load((two / "config.yaml").read_text())["global_batch_max_tokens"] == 3600


# ---------------------------------------------------------------- (d) rank 0 writes, sequences encoded once

def test_only_rank_zero_writes_and_each_sequence_is_encoded_once(runs):
    def tree(run):
        return sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    # the same files as one process writes (no .tmp / .partial / second log), plus rank 1's random state
    # in each checkpoint, which rank 0 gathered and wrote
    extra = sorted(set(tree(runs["two"])) - set(tree(runs["one"])))
    assert extra and all(Path(e).name == "rng-rank1.pt" for e in extra) and set(tree(runs["one"])) <= set(tree(runs["two"]))
    steps = [e["step"] for e in read_log(runs["two"] / "train_log.jsonl")]
    assert steps == list(range(1, MAX_STEPS + 1))            # one line per step: one writer
    assert runs["two_stderr"].count("[sft] done:") == 1      # progress lines from rank 0 only
    shards = sorted(runs["cache"].rglob("shard-*.safetensors"))
    keys = [k for s in shards for k in safe_open(str(s), framework="pt").keys()]
    assert keys and len(keys) == len(set(keys))             # no sequence in two shards: encoded once
    n_unique = len(keys)
    assert f"dna: {n_unique} unique sequences, {n_unique} newly encoded" in runs["two_stderr"]
    assert len({s.name.split("-")[2] for s in shards}) == 2  # both ranks encoded (disjoint) slices


# ---------------------------------------------------------------- (b) signal, checkpoint once, resume with 2 and 1

def _interrupt(args, out, sig=signal.SIGTERM):
    """Start a 2-process run, signal the launcher's process group (as SLURM would) once step 2 is
    logged; (exit code, stderr). The workers run in sessions of their own: the signal reaches them
    only through the launcher."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")  # ONE_THREAD_WHY (above)
    proc = subprocess.Popen([*LAUNCH, *map(str, args)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = out / "train_log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and any(e.get("step", 0) >= 2 for e in read_log(log)):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=240)
    return proc.returncode, err


def test_sigterm_checkpoints_once_exits_75_and_resumes_under_two_and_one_process(runs, synth_data, tmp_path):
    interrupted = tmp_path / "interrupted"
    code, err = _interrupt(_args(synth_data, interrupted, 2), interrupted)
    assert code == REQUEUE_EXIT_CODE, err[-3000:]
    state = json.loads((interrupted / "checkpoints/last/trainer_state.json").read_text())
    stop_step = state["step"]
    assert 2 <= stop_step < MAX_STEPS and state["world_size"] == 2
    assert err.count("received a stop signal (rank 0: SIGTERM)") == 1 and f"checkpointed step {stop_step}/" in err
    saved = sorted(p.name for p in (interrupted / "checkpoints").iterdir() if not p.is_symlink())
    # saves every 4 steps and at the epoch end (step 6), plus the stop's; the newest 2 are kept
    expected = sorted(f"step-{s:08d}" for s in range(1, stop_step + 1) if s % 4 == 0 or s in (6, stop_step))
    assert saved == expected[-2:]                            # the stop's checkpoint, once; nothing partial
    copy = tmp_path / "copy"
    shutil.copytree(interrupted, copy, symlinks=True)

    r = _launch(LAUNCH, _args(synth_data, interrupted, 2))   # same command: --resume auto, 2 processes
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from" in r.stderr
    a, b = trained_tensors(runs["two"]), trained_tensors(interrupted)
    assert all(torch.equal(a[k], b[k]) for k in a)           # 2 -> 2: bit-identical to the uninterrupted run
    assert _losses(interrupted) == _losses(runs["two"])

    # 1 process must keep 4 micro-batches per step: accumulation 2 is refused by name
    r = run_script(_args(synth_data, copy, 2), env=ONE_THREAD)
    assert r.returncode == 1 and "--gradient_accumulation_steps" in r.stderr and "= 4" in r.stderr, r.stderr[-2000:]
    r = run_script(_args(synth_data, copy, 4), env=ONE_THREAD)    # 1 process, accumulation doubled
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from" in r.stderr
    _compare(runs["one"], copy, "2-proc checkpoint resumed by 1 proc vs 1 proc")


def test_two_process_resume_with_lora_dropout_is_bit_identical(synth_data, tmp_path):
    """Each rank draws its own dropout masks: a checkpoint keeps every rank's random state. The stop
    here is SIGUSR1 (SLURM's warning before the time limit), which plain torchrun would die of."""
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    r = _launch(LAUNCH, _args(synth_data, straight, 2, "--lora_dropout", "0.1"))
    assert r.returncode == 0, r.stderr[-3000:]
    code, err = _interrupt(_args(synth_data, interrupted, 2, "--lora_dropout", "0.1"), interrupted, signal.SIGUSR1)
    assert code == REQUEUE_EXIT_CODE, err[-3000:]
    assert "stop signal (rank 0: SIGUSR1)" in err and (interrupted / "checkpoints/last/rng-rank1.pt").is_file()
    r = _launch(LAUNCH, _args(synth_data, interrupted, 2, "--lora_dropout", "0.1"))
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = trained_tensors(straight), trained_tensors(interrupted)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(interrupted) == _losses(straight)


# ---------------------------------------------------------------- (c) the monitor stops both ranks at one step

def test_monitor_stop_is_taken_by_both_ranks_at_the_same_step(tmp_path, synth_data):
    out = tmp_path / "mon"
    args = _args(synth_data, out, 1, "--eval_every", "2", "--stop_on_ood_peak", "1", "--probe_size", "4",
                 "--max_new_tokens", "4", "--eval_batch_size", "4")
    r = _launch(TORCHRUN, args)      # plain torchrun: a normal end is exit 0 there too
    # a rank that missed the decision would wait in the next all-reduce: gloo's 1-minute timeout fails it
    assert r.returncode == 0, r.stderr[-3000:]
    entries = read_log(out / "train_log.jsonl")
    probes = [e["step"] for e in entries if e.get("event") == "probe"]
    train_steps = [e["step"] for e in entries if "loss" in e]
    stop = probes[-1]
    assert stop < MAX_STEPS and train_steps == list(range(1, stop + 1))
    assert r.stderr.count(f"stopping at step {stop}") == 1
    assert json.loads((out / "train_done.json").read_text())["step"] == stop
    assert (out / "checkpoints/best_ood_val").is_symlink()


# ---------------------------------------------------------------- pieces

def test_window_share_keeps_every_row_in_its_window():
    from biopost.distributed import window_share
    window = [[0, 1], [2, 3], [4]]
    assert window_share(window, 2, 0) == [([0, 1], 1.0), ([4], 1.0)]
    assert window_share(window, 2, 1) == [([2, 3], 1.0), ([0, 1], 0.0)]   # a zero-weight filler, no split
    assert window_share(window, 1, 0) == [(mb, 1.0) for mb in window]
    for world in (1, 2, 3, 5):
        shares = [window_share(window, world, r) for r in range(world)]
        assert len({len(s) for s in shares}) == 1
        assert sorted(map(tuple, (mb for s in shares for mb, w in s if w))) == sorted(map(tuple, window))


def test_launcher_exit_codes():
    from biopost.launch import exit_code_of
    assert exit_code_of([75, 75]) == 75
    assert exit_code_of([75, -signal.SIGTERM]) == 75       # the other rank stopped by torchrun after the first
    assert exit_code_of([1, 75]) == 1 and exit_code_of([-signal.SIGKILL]) == 1 and exit_code_of([2]) == 2


def test_stages_without_ddp_refuse_several_processes(monkeypatch):
    from types import SimpleNamespace

    from biopost.config import ConfigError
    from biopost.train.recipe import prepare_device
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ConfigError, match="one process only"):
        prepare_device(SimpleNamespace(device="cpu", seed=0))


# ---------------------------------------------------------------- FSDP2: full fine-tuning, sharded

def test_fsdp_full_finetuning_equals_one_process_and_its_checkpoint_resumes_under_two_and_one(synth_data, tmp_path):
    """--lora_rank 0 under 2 processes shards by default (--parallel auto -> fsdp). A sharded run is
    stopped by SIGTERM; its checkpoint (written from the shards in the 1-process format) resumes
    sharded under 2 processes and whole under 1, and both end with the losses and weights of one
    process with the accumulation doubled."""
    full, n = ("--lora_rank", "0", "--max_steps", "8"), 8   # 8 steps: past the epoch end (step 6)
    one, interrupted = tmp_path / "one", tmp_path / "interrupted"
    r = run_script(_args(synth_data, one, 4, *full), env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-3000:]
    code, err = _interrupt(_args(synth_data, interrupted, 2, *full), interrupted)
    assert code == REQUEUE_EXIT_CODE, err[-3000:]
    assert "world size 2 (fsdp)" in err
    state = json.loads((interrupted / "checkpoints/last/trainer_state.json").read_text())
    assert 2 <= state["step"] < n and state["parallel"] == "fsdp" and state["world_size"] == 2
    # the checkpoint holds whole tensors, as one process writes them
    shapes = lambda run: {k: v.shape for k, v in _full_tensors(run).items()}  # noqa: E731
    assert shapes(interrupted) == shapes(one)
    copy = tmp_path / "copy"
    shutil.copytree(interrupted, copy, symlinks=True)
    r = _launch(LAUNCH, _args(synth_data, interrupted, 2, *full))       # sharded again: 2 -> 2
    assert r.returncode == 0 and "resuming from" in r.stderr, r.stderr[-3000:]
    _compare(one, interrupted, "fsdp: 2 proc, resumed under 2, vs 1 proc", _full_tensors, n)
    r = run_script(_args(synth_data, copy, 4, *full), env=ONE_THREAD)    # whole: 2 -> 1
    assert r.returncode == 0 and "resuming from" in r.stderr, r.stderr[-3000:]
    _compare(one, copy, "fsdp: 2 proc, resumed under 1, vs 1 proc", _full_tensors, n)


def test_parallel_modes():
    from biopost.config import ConfigError
    from biopost.distributed import parallel_mode
    assert parallel_mode("auto", full_finetune=True) == "fsdp" and parallel_mode("auto", full_finetune=False) == "ddp"
    assert parallel_mode("ddp", full_finetune=True) == "ddp"
    with pytest.raises(ConfigError, match=r"--parallel fsdp shards full fine-tuning \(--lora_rank 0\)"):
        parallel_mode("fsdp", full_finetune=False)
    with pytest.raises(ConfigError, match="parallel must be one of auto, ddp, fsdp"):
        parallel_mode("zero3", full_finetune=True)


def test_fsdp_refuses_the_rank_zero_monitor_by_name(synth_data, tmp_path):
    r = _launch(LAUNCH, _args(synth_data, tmp_path / "monitor", 2, "--lora_rank", "0", "--eval_every", "4"))
    assert r.returncode == 1 and "--eval_every" in r.stderr and "--parallel ddp" in r.stderr, r.stderr[-2000:]

"""GRPO under torchrun with DDP (LoRA), on CPU with gloo: a 2-process run is the 1-process run with
the accumulation and steps_per_generation doubled and the per-rank rollout chunk as
--rollout_batch_size (the same samples, rewards, losses, KL, clip fractions and weights); a signal
checkpoints once and exits 75; the resumed 2-process run ends bit-identical to an uninterrupted one
and the checkpoint resumes under 1 process; rank 0 alone writes the run directory.

Every process runs one torch thread (ONE_THREAD_WHY in test_sft_ddp.py)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from conftest import ROOT, run_script, trained_tensors

from biopost.signals import REQUEUE_EXIT_CODE
from biopost.train.log import read_log

SCRIPT = ROOT / "tests/fixtures/grpo_test_reward.py"
TINY = ROOT / "BioReason/configs/grpo_tiny.yaml"
LAUNCH = [sys.executable, "-m", "biopost.launch", "--standalone", "--nproc_per_node", "2"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
MAX_STEPS = 6
# every logged number that must agree (timings and per-process counters aside)
COMPARED = ("loss", "reward", "reward_std", "rewards/test_length", "frac_reward_zero_std", "kl", "entropy",
            "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "ratio_max_abs_dev",
            "completion_length", "truncated_frac", "grad_norm")


def _args(synth_data, out, per_rank_micro: int, *extra):
    # cold start, fresh LoRA (DDP's case), KL against the initial policy (a reference pass), two
    # iterations per generation batch (a real old-policy pass: the ratio moves), dapo (the
    # normalizer counts the tokens of every rank's completions). Per rank: micro-batches of 4
    # completions, `per_rank_micro` per step and per generation batch; a generation batch lasts
    # 2 optimizer steps.
    return [SCRIPT, "--config", TINY, "--data_path", synth_data, "--output_dir", out, "--init", "base",
            "--lora_rank", "4", "--lora_alpha", "8", "--lora_dropout", "0", "--beta", "0.04",
            "--num_iterations", "2", "--loss_type", "dapo", "--num_generations", "4",
            "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", str(per_rank_micro),
            "--steps_per_generation", str(per_rank_micro), "--max_completion_length", "24",
            "--reward_funcs", "test_length", "--reward_weights", "1.0", "--learning_rate", "3e-3",
            "--max_steps", str(MAX_STEPS), "--save_steps", "2", "--logging_steps", "1",
            "--distributed_timeout_minutes", "1", *map(str, extra)]


def _one(synth_data, out, *extra):
    """The 1-process equivalent of the 2-process run: 2 micro-batches per step and per generation
    batch, sampled in two chunks of 4 completions as the two ranks sample them."""
    return run_script(_args(synth_data, out, 2, "--rollout_batch_size", "4", *extra), env=ONE_THREAD, timeout=300)


def _launch(args):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **ONE_THREAD)
    return subprocess.run([*LAUNCH, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _log(run):
    return [e for e in read_log(run / "train_log.jsonl") if "loss" in e]


def _compare(a_run, b_run, label):
    """Per-step logged numbers within 1e-6 + 1e-5 |value|; trainable tensors allclose(rtol 1e-4, atol 1e-6)."""
    la, lb = _log(a_run), _log(b_run)
    assert [e["step"] for e in la] == [e["step"] for e in lb] == list(range(1, MAX_STEPS + 1))
    worst = 0.0
    for ea, eb in zip(la, lb):
        for k in COMPARED:
            assert (ea[k] is None) == (eb[k] is None), (k, ea["step"])
            if ea[k] is not None:
                d = abs(ea[k] - eb[k])
                worst = max(worst, d / (1e-6 + 1e-5 * abs(ea[k])))
                assert d <= 1e-6 + 1e-5 * abs(ea[k]), (label, ea["step"], k, ea[k], eb[k])
    a, b = trained_tensors(a_run), trained_tensors(b_run)
    assert a.keys() == b.keys()
    w_abs = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"{label}: worst logged difference {worst:.3g} of its tolerance; max weight diff {w_abs:.3g}")
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k
    return la


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synth_data):
    root = tmp_path_factory.mktemp("grpo_ddp")
    one, two = root / "one", root / "two"
    r = _one(synth_data, one)
    assert r.returncode == 0, r.stderr[-3000:]
    r2 = _launch(_args(synth_data, two, 1))
    assert r2.returncode == 0, r2.stderr[-3000:]
    return {"one": one, "two": two, "two_stderr": r2.stderr}


def test_two_processes_equal_one_with_doubled_accumulation(runs):
    log = _compare(runs["one"], runs["two"], "GRPO 2 proc vs 1 proc")
    # the comparison is not vacuous: rewards vary, the policy moved, the reused batch's ratio left 1, KL grew
    assert all(e["reward_std"] > 0 for e in log)
    assert max(e["ratio_max_abs_dev"] for e in log[1::2]) > 1e-3 and log[-1]["kl"] > 0
    trained = trained_tensors(runs["two"])
    assert any(float(v.abs().max()) > 0 for k, v in trained.items() if "lora_B" in k)   # B starts at 0
    cfg = yaml.safe_load((runs["two"] / "config.yaml").read_text())
    assert cfg["world_size"] == 2 and cfg["micro_batches_per_step"] == 2 and cfg["global_batch_size"] == 8
    assert cfg["generation"]["generation_batch_completions"] == 8 and cfg["generation"]["prompts_per_generation"] == 2
    one_cfg = yaml.safe_load((runs["one"] / "config.yaml").read_text())
    assert one_cfg["world_size"] == 1 and one_cfg["global_batch_size"] == 8
    assert "world size 2" in runs["two_stderr"]


def test_only_rank_zero_writes(runs):
    def tree(run):
        return sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    extra = sorted(set(tree(runs["two"])) - set(tree(runs["one"])))
    # the same files as one process writes, plus rank 1's random state in each checkpoint
    assert extra and all(e.endswith("rng-rank1.pt") for e in extra) and set(tree(runs["one"])) <= set(tree(runs["two"]))
    assert [e["step"] for e in read_log(runs["two"] / "train_log.jsonl")] == list(range(1, MAX_STEPS + 1))
    assert runs["two_stderr"].count("[grpo] done:") == 1


def _interrupt(args, out):
    """Start a 2-process run and SIGTERM the launcher's process group (as SLURM would) once step 1
    is logged; (exit code, stderr)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **ONE_THREAD)
    proc = subprocess.Popen([*LAUNCH, *map(str, args)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = out / "train_log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and any(e.get("step", 0) >= 1 for e in read_log(log)):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    return proc.returncode, err


def test_sigterm_checkpoints_once_exits_75_and_resumes_under_two_and_one_process(runs, synth_data, tmp_path):
    interrupted = tmp_path / "interrupted"
    code, err = _interrupt(_args(synth_data, interrupted, 1), interrupted)
    assert code == REQUEUE_EXIT_CODE, err[-3000:]
    state = json.loads((interrupted / "checkpoints/last/trainer_state.json").read_text())
    stop_step = state["step"]
    # checkpoints only where a generation batch is used up: every 2nd step
    assert stop_step in (2, 4) and state["world_size"] == 2 and state["micro_batches_per_step"] == 2
    assert err.count("received a stop signal (rank 0: SIGTERM)") == 1 and f"checkpointed step {stop_step}/" in err
    saved = sorted(p.name for p in (interrupted / "checkpoints").iterdir() if not p.is_symlink())
    assert saved == [f"step-{s:08d}" for s in range(2, stop_step + 1, 2)][-2:]   # once each; nothing partial
    copy = tmp_path / "copy"
    shutil.copytree(interrupted, copy, symlinks=True)

    r = _launch(_args(synth_data, interrupted, 1))          # the same command resumes (--resume auto)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from" in r.stderr
    a, b = trained_tensors(runs["two"]), trained_tensors(interrupted)
    assert all(torch.equal(a[k], b[k]) for k in a)          # 2 -> 2: bit-identical to the uninterrupted run
    timing = {"generation_s", "update_s", "step_time_s"}
    strip = lambda run: [{k: v for k, v in e.items() if k not in timing} for e in _log(run)]  # noqa: E731
    assert strip(interrupted) == strip(runs["two"])

    # one process must keep 2 micro-batches per step and per generation batch (test below); with them
    # it continues the 2-process checkpoint to the 1-process run's end
    r = _one(synth_data, copy)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from" in r.stderr
    _compare(runs["one"], copy, "GRPO 2-proc checkpoint resumed by 1 proc vs 1 proc")


def test_resume_under_another_layout_is_refused_by_name():
    from biopost.errors import CheckpointError
    from biopost.train.grpo_step import check_resume_layout
    saved = {"world_size": 2, "micro_batches_per_step": 2, "steps_per_generation": 2}
    check_resume_layout(saved, {"world_size": 1, "micro_batches_per_step": 2, "steps_per_generation": 2}, "ckpt")
    check_resume_layout({}, {"world_size": 1, "micro_batches_per_step": 1, "steps_per_generation": 1}, "ckpt")
    with pytest.raises(CheckpointError, match=r"took 2 micro-batches per step and 2 per generation batch \(world size "
                                              r"2\); this one would take 1 and 1 \(world size 1\)\. Keep world size x "
                                              r"--gradient_accumulation_steps"):
        check_resume_layout(saved, {"world_size": 1, "micro_batches_per_step": 1, "steps_per_generation": 1}, "ckpt")

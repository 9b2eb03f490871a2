"""`biopost sweep` against a real one-node SLURM cluster (scripts/local_slurm.sh: Debian's munge,
slurmctld, slurmd; no systemd).

The stages are the real BioReason/train_dna_qwen.py (tiny models, a few optimizer steps) and
BioReason/eval_kegg_dna_vllm.py (a few examples): tests/fixtures/sweep_helpers.py (REAL) names them.

Needs root and apt (or the packages installed). Outside CI it skips, printing why, where it
cannot have them; with CI=true it never skips. The cluster is stopped at the end unless it was
already running before.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from sweep_helpers import (REAL, REPO, WEIRD, cli_env, read_json, status_rows, sweep, two_stage_spec,  # noqa: E402
                           wait_for, write_spec)

import yaml  # noqa: E402

STAGE = REAL

pytestmark = pytest.mark.slurm

LOCAL_SLURM = REPO / "scripts" / "local_slurm.sh"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to run munged, slurmctld and slurmd"
    if not all(shutil.which(c) for c in ("slurmctld", "slurmd", "sbatch", "munged")) and not shutil.which("apt-get"):
        return "SLURM is not installed and apt-get is unavailable to install it"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running one-node cluster; yields the environment in which to call the sweep CLI."""
    reason = _why_not()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true but the SLURM integration test cannot run: {reason}")
        print(f"\nskipping the SLURM integration test: {reason}")
        pytest.skip(reason)
    state = Path(os.environ.get("SLURM_LOCAL_DIR") or Path(os.environ.get("TMPDIR", "/tmp")) / "biopost-slurm")
    env = {**os.environ, "SLURM_LOCAL_DIR": str(state)}
    was_running = subprocess.run([str(LOCAL_SLURM), "status"], env=env, capture_output=True).returncode == 0
    if not was_running:
        # 2 cores: advertise 8 CPUs so that both cells and their evaluations can run at once
        proc = subprocess.run([str(LOCAL_SLURM), "start"], env={**env, "SLURM_CPUS": "8"}, capture_output=True,
                              text=True, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"scripts/local_slurm.sh start failed:\n{proc.stdout}\n{proc.stderr}")
    env["SLURM_CONF"] = str(state / "etc" / "slurm.conf")
    try:
        yield env
    finally:
        if not was_running:
            subprocess.run([str(LOCAL_SLURM), "stop"], env=env, capture_output=True, timeout=120)


def all_settled(spec, work, env, labels=None):
    rows = status_rows(spec, work, env)
    wanted = [r for k, r in rows.items() if labels is None or k in labels]
    return rows if all(r["state"] not in ("pending", "running") for r in wanted) else None


def test_submit_resubmit_and_rerun_of_a_failed_cell(cluster, tmp_path):
    env = cli_env(tmp_path, SLURM_CONF=cluster["SLURM_CONF"])
    work = tmp_path / "work root"  # a space: the #SBATCH lines and the script quote it
    # a value full of shell metacharacters travels to the stage through sbatch as a literal string
    spec = write_spec(tmp_path / "spec.yaml", two_stage_spec(
        "it_basic", grid={"num_train_epochs": [1, 2]}, overrides={"system_prompt": WEIRD}, stage=STAGE))
    out = sweep("submit", spec, "--work_root", work, env=env).stdout
    assert "2 array job(s), 4 cell(s) submitted" in out and "aftercorr:" in out

    rows = status_rows(spec, work, env)  # right after submit: nothing can have finished
    assert {r["state"] for r in rows.values() if r["stage"] == "eval"} == {"pending"}
    assert {r["state"] for r in rows.values() if r["stage"] == "sft"} <= {"pending", "running"}

    rows = wait_for(lambda: all_settled(spec, work, env), 600, "the sweep to finish")
    assert {r["state"] for r in rows.values()} == {"done"}, rows
    sft = {r["run_id"]: r for r in rows.values() if r["stage"] == "sft"}
    for run_id in sft:
        config = yaml.safe_load((work / "it_basic" / "sft" / run_id / "config.yaml").read_text())
        assert config["system_prompt"] == WEIRD and config["stage"] == "sft" and config["run_id"] == run_id
        assert (work / "it_basic" / "sft" / run_id / "checkpoints" / "last" / "trainer_state.json").is_file()
        for split in ("id", "ood"):
            m = read_json(work / "it_basic" / "sft" / run_id / "eval" / split / "metrics.json")
            assert m["run_id"] == run_id and m["split"] == split
    assert "done" in sweep("status", spec, "--work_root", work, env=env).stdout

    # a second submit submits nothing
    assert "nothing to submit" in sweep("submit", spec, "--work_root", work, env=env).stdout

    # one training cell marked failed: only it and its (now stale) evaluation re-run
    e1, e2 = sorted(sft)
    st_path = work / "it_basic" / "sft" / e1 / "status.json"
    st = read_json(st_path)
    st_path.write_text(__import__("json").dumps({**st, "state": "failed", "reason": "marked failed by the test"}))
    untouched = {p: p.read_text() for p in (work / "it_basic" / "sft" / e2).rglob("status.json")}
    rows = status_rows(spec, work, env)
    assert rows[f"sft/{e1}"]["state"] == "failed" and rows[f"eval/sft/{e1}"]["state"] == "stale"
    text = sweep("status", spec, "--work_root", work, env=env).stdout
    assert "marked failed by the test" in text
    out = sweep("submit", spec, "--work_root", work, env=env).stdout
    assert "2 array job(s), 2 cell(s) submitted" in out
    rows = wait_for(lambda: all_settled(spec, work, env), 600, "the re-run to finish")
    assert {r["state"] for r in rows.values()} == {"done"}, rows
    assert rows[f"sft/{e1}"]["job_id"] != st["job_id"]
    assert read_json(st_path)["attempt"] == 2
    assert {p: p.read_text() for p in (work / "it_basic" / "sft" / e2).rglob("status.json")} == untouched
    assert not list(tmp_path.rglob("PWNED*")) and not list(REPO.rglob("PWNED*"))


def test_failure_cancels_only_its_dependants_and_a_signalled_job_requeues(cluster, tmp_path):
    env = cli_env(tmp_path, SLURM_CONF=cluster["SLURM_CONF"])
    work = tmp_path / "runs"
    failing = {f"sft.{k}": v for k, v in STAGE["fail"].items()}
    slow = {f"sft.{k}": v for k, v in STAGE["slow"].items()}
    spec = write_spec(tmp_path / "spec.yaml", two_stage_spec("it_fail", cells=[failing, slow], stage=STAGE))
    sweep("submit", spec, "--work_root", work, env=env)
    rows = status_rows(spec, work, env)
    fail_key = next(iter(failing))
    bad = next(r for r in rows.values() if r["stage"] == "sft" and fail_key in r["cell"])
    good = next(r for r in rows.values() if r["stage"] == "sft" and fail_key not in r["cell"])
    good_dir = work / "it_fail" / "sft" / good["run_id"]

    # signal the slow cell mid-training, as SLURM does before the time limit
    wait_for(lambda: (good_dir / "train_log.jsonl").is_file() and (good_dir / "train_log.jsonl").stat().st_size,
             300, "the slow cell's first optimizer step", interval=0.1)
    job = read_json(good_dir / "status.json")["job_id"]
    assert subprocess.run(["scancel", "--signal=USR1", job], env=env).returncode == 0

    # the failed cell's evaluation is cancelled at once; the other chain goes on
    rows = wait_for(lambda: (r := status_rows(spec, work, env))[f"eval/sft/{bad['run_id']}"]["state"] == "cancelled"
                    and r, 300, "the failed cell's evaluation to be cancelled")
    assert rows[f"sft/{bad['run_id']}"]["state"] == "failed"
    assert rows[f"eval/sft/{good['run_id']}"]["state"] == "pending"
    text = sweep("status", spec, "--work_root", work, env=env).stdout
    assert STAGE["fail_text"] in text  # the failed cell's log tail
    assert "DependencyNeverSatisfied" in text

    rows = wait_for(lambda: all_settled(spec, work, env, {f"sft/{good['run_id']}", f"eval/sft/{good['run_id']}"}),
                    600, "the signalled cell and its evaluation to finish")
    assert rows[f"sft/{good['run_id']}"]["state"] == "done" and rows[f"eval/sft/{good['run_id']}"]["state"] == "done"
    st = read_json(good_dir / "status.json")
    assert st["attempt"] == 2 and st["job_id"] == job  # the same array task, requeued
    log = (good_dir / "logs" / f"slurm-{job}.out").read_text()
    assert STAGE["signalled_text"] in log and STAGE["resumed_text"] in log

    # the interrupted run ends exactly as an uninterrupted one
    ref = tmp_path / "uninterrupted"
    sweep("submit", spec, "--work_root", ref, "--executor", "local", env=env, check=False, timeout=600)
    ref_dir = ref / "it_fail" / "sft" / good["run_id"]
    last = "checkpoints/last/trainer_state.json"
    assert read_json(good_dir / last) == read_json(ref_dir / last)
    for split in ("id", "ood"):
        assert read_json(good_dir / "eval" / split / "metrics.json")["metrics"] == \
            read_json(ref_dir / "eval" / split / "metrics.json")["metrics"]


def test_cancel_then_resubmit(cluster, tmp_path):
    env = cli_env(tmp_path, SLURM_CONF=cluster["SLURM_CONF"])
    work = tmp_path / "runs"
    slow = {f"sft.{k}": v for k, v in STAGE["slow"].items()}
    spec = write_spec(tmp_path / "spec.yaml", two_stage_spec("it_cancel", cells=[slow], stage=STAGE))
    sweep("submit", spec, "--work_root", work, env=env)
    rows = status_rows(spec, work, env)
    sft = next(r for r in rows.values() if r["stage"] == "sft")
    run_dir = work / "it_cancel" / "sft" / sft["run_id"]
    wait_for(lambda: (run_dir / "train_log.jsonl").is_file() and (run_dir / "train_log.jsonl").stat().st_size,
             300, "the cell's first optimizer step", interval=0.1)
    out = sweep("cancel", spec, "--work_root", work, env=env).stdout
    assert "cancelled 2 array task(s)" in out
    # SIGTERM: the stage checkpoints and asks to be requeued, but its job is cancelled: lost.
    # Its evaluation never started: cancelled.
    rows = wait_for(lambda: all_settled(spec, work, env), 120, "the cancelled jobs to leave the queue")
    assert rows[f"sft/{sft['run_id']}"]["state"] == "lost"
    assert rows[f"eval/sft/{sft['run_id']}"]["state"] == "cancelled"
    assert "no queued or running jobs" in sweep("cancel", spec, "--work_root", work, env=env).stdout
    # lost and cancelled cells re-run on the next submit; the stage resumes from its checkpoint
    assert "2 cell(s) submitted" in sweep("submit", spec, "--work_root", work, env=env).stdout
    rows = wait_for(lambda: all_settled(spec, work, env), 600, "the resubmitted cells to finish")
    assert {r["state"] for r in rows.values()} == {"done"}, rows


def test_a_two_rank_cell_runs_through_srun_and_torchrun_and_requeues_on_a_signal(cluster, tmp_path):
    """resources {procs_per_node: 2}: the runner starts `srun ... biopost.launch --nnodes=1
    --nproc-per-node=2 --rdzv-backend=c10d ...` (two gloo ranks on the one node); SIGUSR1 to the job
    reaches both ranks through the srun step, the cell checkpoints once, requeues and ends done, with
    the weights of an uninterrupted two-rank run."""
    env = cli_env(tmp_path, SLURM_CONF=cluster["SLURM_CONF"])
    work = tmp_path / "runs"
    spec_dict = two_stage_spec("it_ranks", cells=[{f"sft.{k}": v for k, v in STAGE["slow"].items()}], stage=STAGE,
                               resources={"cpus": 2, "procs_per_node": 2}, splits=("id",))
    spec_dict["eval"]["resources"] = {"cpus": 1, "procs_per_node": 1}
    spec = write_spec(tmp_path / "spec.yaml", spec_dict)
    sweep("submit", spec, "--work_root", work, env=env)
    rows = status_rows(spec, work, env)
    sft = next(r for r in rows.values() if r["stage"] == "sft")
    run_dir = work / "it_ranks" / "sft" / sft["run_id"]
    wait_for(lambda: (run_dir / "train_log.jsonl").is_file() and (run_dir / "train_log.jsonl").stat().st_size,
             300, "the two-rank cell's first optimizer step", interval=0.1)
    job = read_json(run_dir / "status.json")["job_id"]
    assert subprocess.run(["scancel", "--signal=USR1", job], env=env).returncode == 0
    rows = wait_for(lambda: all_settled(spec, work, env), 600, "the two-rank cell and its evaluation")
    assert {r["state"] for r in rows.values()} == {"done"}, rows
    st = read_json(run_dir / "status.json")
    assert st["attempt"] == 2 and st["job_id"] == job
    log = (run_dir / "logs" / f"slurm-{job}.out").read_text()
    assert "--nproc-per-node=2" in log and "--rdzv-backend=c10d" in log and log.count("srun --nodes=1") == 2
    assert STAGE["signalled_text"] in log and STAGE["resumed_text"] in log
    state = read_json(run_dir / "checkpoints" / "last" / "trainer_state.json")
    assert state["world_size"] == 2

    ref = tmp_path / "uninterrupted"
    sweep("submit", spec, "--work_root", ref, "--executor", "local", "--no-eval", env=env, check=False, timeout=600)
    ref_state = read_json(ref / "it_ranks" / "sft" / sft["run_id"] / "checkpoints" / "last" / "trainer_state.json")
    assert state == ref_state  # same step, same fingerprint of the trained tensors

"""Plans: derived cell states (lost, stale, pending, cancelled), what re-runs, how cells group into
aftercorr-chained array jobs, the GPU-hour estimate, and the sbatch scripts of `plan --dry-run`."""
import json
import re
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from sweep_helpers import REPO, STAGE, cli_env, sweep, write_spec  # noqa: E402

from biopost.sweeps import slurm  # noqa: E402
from biopost.sweeps.ledger import Ledger  # noqa: E402
from biopost.sweeps.plan import Options, Plan  # noqa: E402
from biopost.sweeps.spec import load_spec  # noqa: E402
from biopost.sweeps.status import derive, write_json_atomic  # noqa: E402

SCRIPT = STAGE["script"]


def make_plan(tmp_path, spec: dict, queue=None, executor="slurm", **opts) -> Plan:
    path = write_spec(tmp_path / "spec.yaml", spec)
    options = Options(work_root=tmp_path / "runs", repo_root=REPO, executor=executor, python=sys.executable,
                      cluster_env=str(tmp_path / "cluster_env.sh"), **opts)
    return Plan(load_spec(path), options, queue=queue if queue is not None else {})


def chain_spec(**resources) -> dict:
    return {"name": "chain", "modality": "dna",
            "stages": {"sft": {"script": SCRIPT, "grid": {"num_train_epochs": [1, 2]}},
                       "grpo": {"script": SCRIPT, "after": "sft", "grid": {"learning_rate": [1e-4, 3e-4]}}},
            "eval": {"stages": ["sft", "grpo"], "script": SCRIPT},
            "resources": {"gpus": 0, **resources}}


def mark(cell, state="done", **extra):
    status = {"schema": "biopost.status/v1", "state": state, "run_id": cell.run_id, "job_id": "1_0",
              "output_hash": "h-" + cell.run_id, "elapsed_s": 3600.0, **extra}
    write_json_atomic(cell.status_path, status)


def mark_chain_done(plan):
    """Every cell done, each downstream recording its upstream's current output hash."""
    for cell in plan.cells:
        up = cell.target if cell.kind == "eval" else cell.effective_upstream()
        mark(cell, upstream={"run_id": up.run_id, "checkpoint_hash": "h-" + up.run_id} if up else None)


# ------------------------------------------------------------------ derived states
def test_derive_states():
    running = {"state": "running", "job_id": "7_1", "attempt": 1}
    assert derive(running, queue={"7_1": ("RUNNING", "None")}).state == "running"
    lost = derive(running, queue={"7_1": ("FAILED", "NonZeroExitCode")})
    assert lost.state == "lost" and "7_1" in lost.reason
    assert derive(running, queue={}).state == "lost"
    assert derive(running, queue=None).state == "running"  # no squeue: not verifiable, not lost
    requeued = {"state": "requeued", "job_id": "7_1"}
    assert derive(requeued, queue={"7_1": ("PENDING", "BeginTime")}).state == "pending"
    assert derive(None, ledger_job="8_0", queue={"8_0": ("PENDING", "Dependency")}).state == "pending"
    cancelled = derive(None, ledger_job="8_0", queue={"8_0": ("CANCELLED", "DependencyNeverSatisfied")})
    assert cancelled.state == "cancelled" and "DependencyNeverSatisfied" in cancelled.reason
    assert derive(None, ledger_job="8_0", queue={"8_0": ("FAILED", "None")}).state == "failed"  # setup failed
    assert derive(None).state == "new"
    assert derive(None, ledger_job="8_0", queue={}).state == "lost"  # submitted, gone, never started
    assert derive(None, ledger_job="8_0", queue=None).state == "new"  # (no squeue: cannot tell)
    # a resubmitted cell: the old status says failed, the new job is queued
    assert derive({"state": "failed", "job_id": "7_1"}, ledger_job="9_1", queue={"9_1": ("PENDING", "Priority")}).state == "pending"
    done = {"state": "done", "job_id": "7_1", "upstream": {"run_id": "u", "checkpoint_hash": "abc"}}
    assert derive(done, has_upstream=True, upstream_hash_now="abc").state == "done"
    assert derive(done, has_upstream=True, upstream_hash_now="xyz").state == "stale"
    assert derive(done, has_upstream=True, upstream_hash_now=None).state == "stale"  # upstream not done
    assert derive(None, skipped=True).state == "skipped"


def test_local_process_gone_is_lost():
    dead = {"state": "running", "job_id": f"local:{socket.gethostname()}:999999999"}
    assert derive(dead, queue=None).state == "lost"
    alive = {"state": "running", "job_id": f"local:{socket.gethostname()}:{__import__('os').getpid()}"}
    assert derive(alive, queue=None).state == "running"


def test_unreadable_status_reads_as_failed(tmp_path):
    plan = make_plan(tmp_path, chain_spec())
    cell = plan.exp.stages["sft"][0]
    cell.status_path.parent.mkdir(parents=True)
    cell.status_path.write_text("{not json")
    plan = make_plan(tmp_path, chain_spec())
    p = plan.plans[cell.label]
    assert p.derived.state == "failed" and "unreadable" in p.derived.reason and p.action == "run"


# ------------------------------------------------------------------ what runs, and job grouping
def test_fresh_sweep_jobs_are_aftercorr_chained_lanes(tmp_path):
    plan = make_plan(tmp_path, chain_spec())
    assert len(plan.to_run()) == 2 + 4 + 2 + 4
    jobs = {j.label: j for j in plan.jobs}
    assert set(jobs) == {"sft.0", "eval-sft.0", "grpo.0", "grpo.1", "eval-grpo.0", "eval-grpo.1"}
    assert jobs["sft.0"].dependency() is None and jobs["sft.0"].task_ids == [0, 1]
    # fan-out: one grpo array per grid value, each aligned with the sft array
    for label in ("grpo.0", "grpo.1", "eval-sft.0"):
        assert jobs[label].dependency(symbolic=True) == "aftercorr:@sft.0" and jobs[label].task_ids == [0, 1]
    assert jobs["eval-grpo.1"].dependency(symbolic=True) == "aftercorr:@grpo.1"
    for job in plan.jobs:  # every task of an array is the cell aligned with the same upstream task
        for cell in job.cells:
            up = cell.target if cell.kind == "eval" else cell.upstream
            if up is not None:
                assert up.task_id == cell.task_id
    jobs["sft.0"].job_id = "41"
    assert jobs["grpo.0"].dependency() == "aftercorr:41"


def test_resubmission_runs_only_failed_and_stale_cells(tmp_path):
    plan = make_plan(tmp_path, chain_spec())
    mark_chain_done(plan)
    again = make_plan(tmp_path, chain_spec())
    assert again.to_run() == [] and again.jobs == []
    sft1 = plan.exp.stages["sft"][1]
    mark(sft1, "failed", reason="boom")
    again = make_plan(tmp_path, chain_spec())
    labels = {c.label for c in again.to_run()}
    # the failed cell, its eval, its two grpo cells (stale: upstream not done) and their evals
    assert labels == {sft1.label, f"eval/sft/{sft1.run_id}"} | \
        {g.label for g in again.exp.stages["grpo"] if g.upstream.run_id == sft1.run_id} | \
        {f"eval/grpo/{g.run_id}" for g in again.exp.stages["grpo"] if g.upstream.run_id == sft1.run_id}
    assert again.plans[f"eval/sft/{sft1.run_id}"].derived.state == "stale"
    jobs = {j.label: j for j in again.jobs}
    assert jobs["sft.0"].task_ids == [1]
    assert jobs["grpo.0"].dependency(symbolic=True) == "aftercorr:@sft.0" and jobs["grpo.0"].task_ids == [1]


def test_upstream_rerun_with_new_output_makes_downstream_stale(tmp_path):
    plan = make_plan(tmp_path, chain_spec())
    mark_chain_done(plan)
    sft0 = plan.exp.stages["sft"][0]
    mark(sft0, output_hash="a-new-output")  # sft0 re-ran and produced something else
    again = make_plan(tmp_path, chain_spec())
    stale = {c.label for c in again.to_run()}
    assert stale == {f"eval/sft/{sft0.run_id}"} | \
        {g.label for g in again.exp.stages["grpo"] if g.upstream is not None and g.upstream.run_id == sft0.run_id} | \
        {f"eval/grpo/{g.run_id}" for g in again.exp.stages["grpo"] if g.upstream.run_id == sft0.run_id}
    assert all(again.plans[label].derived.state == "stale" for label in stale)


def test_queued_cells_are_not_duplicated_and_downstream_waits_on_them(tmp_path):
    plan = make_plan(tmp_path, chain_spec())
    sft = plan.exp.stages["sft"]
    ledger = Ledger(tmp_path / "runs", "chain")
    ledger.record("50", "sft.0", {0: sft[0].label, 1: sft[1].label}, {0: "l0", 1: "l1"}, "m.json")
    queue = {"50_0": ("RUNNING", "None"), "50_1": ("PENDING", "Resources")}
    again = make_plan(tmp_path, chain_spec(), queue=queue)
    assert [again.plans[c.label].derived.state for c in sft] == ["running", "pending"]
    assert not [c for c in again.to_run() if c.stage == "sft"]
    jobs = {j.label: j for j in again.jobs}
    assert "sft.0" not in jobs
    assert jobs["grpo.0"].dependency() == "aftercorr:50" and jobs["eval-sft.0"].dependency() == "aftercorr:50"


def test_upstream_queued_under_another_task_id_gets_afterok_on_that_task(tmp_path):
    plan = make_plan(tmp_path, chain_spec())
    sft1 = plan.exp.stages["sft"][1]
    ledger = Ledger(tmp_path / "runs", "chain")
    ledger.record("60", "sft.0", {3: sft1.label}, {3: "log"}, "m.json")  # an older spec ordered it 4th
    mark(plan.exp.stages["sft"][0])
    again = make_plan(tmp_path, chain_spec(), queue={"60_3": ("PENDING", "Priority")})
    deps = {j.dependency() for j in again.jobs if any(c.upstream is not None and c.upstream.label == sft1.label
                                                      for c in j.cells)}
    assert deps == {"afterok:60_3"}
    free = [j for j in again.jobs if all(c.upstream is not None and c.upstream.run_id != sft1.run_id
                                         for c in j.cells) and j.resources_key == "grpo"]
    assert free and all(j.dependency() is None for j in free)  # sft0 is done: nothing to wait for


def test_skipped_cells_get_no_job_and_their_downstream_waits_for_the_effective_upstream(tmp_path):
    spec = {"name": "skip", "stages": {"sft": {"script": SCRIPT}, "grpo": {"script": SCRIPT, "after": "sft"}},
            "zip": {"sft.num_train_epochs": [0, 2], "grpo.num_train_epochs": [2, 0]},
            "resources": {"gpus": 0}}
    plan = make_plan(tmp_path, spec)
    sft, grpo = plan.exp.stages["sft"], plan.exp.stages["grpo"]
    assert plan.plans[sft[0].label].action == "skip" and plan.plans[grpo[1].label].action == "skip"
    jobs = {j.label: j for j in plan.jobs}
    assert [c.label for c in jobs["sft.0"].cells] == [sft[1].label]
    assert [c.label for c in jobs["grpo.0"].cells] == [grpo[0].label] and jobs["grpo.0"].dependency() is None


def test_only_eval_and_no_eval(tmp_path):
    plan = make_plan(tmp_path, chain_spec())
    for cell in plan.exp.stages["sft"]:
        mark(cell)
    only = make_plan(tmp_path, chain_spec(), only_eval=True)
    assert {c.kind for c in only.to_run()} == {"eval"}
    assert {c.target.stage for c in only.to_run()} == {"sft"}  # the grpo cells never ran: blocked
    assert all(only.plans[f"eval/grpo/{g.run_id}"].action == "blocked" for g in plan.exp.stages["grpo"])
    none = make_plan(tmp_path, chain_spec(), no_eval=True)
    assert {c.kind for c in none.to_run()} == {"grpo"}


# ------------------------------------------------------------------ GPU hours
def test_gpu_hours_from_est_hours_then_from_measured_times(tmp_path):
    plan = make_plan(tmp_path, chain_spec(gpus=2, est_hours=3))
    rows = {r["stage"]: r for r in plan.estimate()}
    assert rows["sft"]["gpu_hours"] == pytest.approx(2 * 3 * 2)
    assert rows["grpo"]["gpu_hours"] == pytest.approx(4 * 3 * 2)
    assert rows["sft"]["source"] == "resources.est_hours"
    sft = plan.exp.stages["sft"]
    mark(sft[0], elapsed_s=1800.0)
    plan = make_plan(tmp_path, chain_spec(gpus=2, est_hours=3))
    rows = {r["stage"]: r for r in plan.estimate()}
    assert rows["sft"]["hours_per_cell"] == pytest.approx(0.5) and "median of 1" in rows["sft"]["source"]
    assert rows["sft"]["gpu_hours"] == pytest.approx(2 * 0.5 * 2) and rows["sft"]["gpu_hours_to_run"] == pytest.approx(1 * 0.5 * 2)
    assert rows["grpo"]["hours_per_cell"] == pytest.approx(3)  # no grpo cell finished yet
    # eval cells: resources.est_hours too; sft 2 + grpo 24 + eval-sft 12 + eval-grpo 24
    assert sum(r["gpu_hours"] for r in rows.values()) == pytest.approx(62)


def test_gpu_hours_total_in_plan_output(tmp_path):
    spec = chain_spec(gpus=1, est_hours=2)
    spec["eval"]["resources"] = {"est_hours": 0.5}
    out = sweep("plan", write_spec(tmp_path / "spec.yaml", spec), "--work_root", tmp_path / "runs",
                env=cli_env(tmp_path)).stdout
    # sft 2 x 2 h + grpo 4 x 2 h + eval 6 x 0.5 h, 1 GPU each
    assert "total 15.0 GPU-h, 15.0 GPU-h to run" in out


# ------------------------------------------------------------------ the scripts of plan --dry-run
def dry_run(tmp_path, spec, *flags) -> str:
    path = write_spec(tmp_path / "spec.yaml", spec)
    return sweep("plan", path, "--work_root", tmp_path / "work root", "--dry-run", *flags, env=cli_env(tmp_path)).stdout


def scripts_of(out: str) -> dict:
    """{job label: script text} from plan --dry-run output."""
    parts = re.split(r"^# ===== job (\S+): sbatch .*$", out, flags=re.M)
    return {parts[i]: parts[i + 1].split("# ===== tasks of")[0] for i in range(1, len(parts), 2)}


def test_dry_run_scripts(tmp_path):
    spec = chain_spec(signal_seconds=120, cpus=4, mem="8G", time="02:00:00", array_limit=3,
                      setup=["module load cuda/12.4", 'export FOO="bar baz"'])
    out = dry_run(tmp_path, spec)
    scripts = scripts_of(out)
    assert set(scripts) == {"sft.0", "eval-sft.0", "grpo.0", "grpo.1", "eval-grpo.0", "eval-grpo.1"}
    sft, grpo = scripts["sft.0"], scripts["grpo.1"]
    for text in scripts.values():
        for line in ("#SBATCH --kill-on-invalid-dep=yes", "#SBATCH --requeue", "#SBATCH --open-mode=append",
                     "#SBATCH --signal=USR1@120", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=8G",
                     "#SBATCH --time=02:00:00", "module load cuda/12.4", 'export FOO="bar baz"',
                     'me="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"', 'scontrol requeue "$me"',
                     'scontrol update JobId="$me" StartTime=now+5'):
            assert line in text, line
        assert "gpu" not in text and "--gres" not in text  # gpus: 0 -> no GPU request at all
        assert "--partition" not in text and "--account" not in text  # null -> no line
        assert re.search(r"^srun --ntasks=1 --cpus-per-task=4 \S+ -m biopost\.sweeps\.runner --manifest .* "
                         r'--index "\$SLURM_ARRAY_TASK_ID"$', text, re.M)
        assert "srun" in text and "B:USR1" not in text
        assert "requeue $SLURM_JOB_ID" not in text and 'requeue "$SLURM_JOB_ID"' not in text
    assert "#SBATCH --dependency" not in sft and "#SBATCH --array=0-1%3" in sft
    assert "#SBATCH --dependency=aftercorr:@sft.0" in grpo
    assert "#SBATCH --dependency=aftercorr:@grpo.1" in scripts["eval-grpo.1"]
    # the work root has a space: every path the script interpolates is quoted
    assert f"#SBATCH --output='{tmp_path}/work root/chain/logs/chain.sft.0-%A_%a.out'" in sft
    assert re.search(r"--manifest '[^']*/work root/chain/\.biopost/jobs/[^']*sft\.0-[0-9a-f]{8}\.json'", sft)
    # setup lines come after cluster_env.sh, under set -e, before the stage
    assert sft.index("cluster_env.sh") < sft.index("module load cuda/12.4") < sft.index("srun")
    # the cells' command lines are listed after each script
    assert "--num_train_epochs 2" in out and "--init sft --sft_checkpoint" in out


def test_dry_run_gpus_partition_account_and_quoted_overrides(tmp_path):
    spec = chain_spec(gpus=2, partition="gpu", account="lab")
    out = dry_run(tmp_path, spec, "--partition", "big gpu", "--time", "1-00:00:00")
    sft = scripts_of(out)["sft.0"]
    assert "#SBATCH --gres=gpu:2" in sft and "#SBATCH --account=lab" in sft
    assert "#SBATCH --partition='big gpu'" in sft  # the command line wins, quoted
    assert "#SBATCH --time=1-00:00:00" in sft


def test_signal_never_exceeds_half_the_time_limit(tmp_path):
    out = dry_run(tmp_path, chain_spec(time="4"))  # 4 minutes, default signal 300 s
    assert "#SBATCH --signal=USR1@120" in scripts_of(out)["sft.0"]


def test_bad_command_line_override_is_an_error(tmp_path):
    path = write_spec(tmp_path / "spec.yaml", chain_spec())
    proc = sweep("plan", path, "--time", "tomorrow", env=cli_env(tmp_path), check=False)
    assert proc.returncode == 2 and "command line.time" in proc.stderr


def test_array_spec_and_log_patterns():
    assert slurm.array_spec([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert slurm.array_spec([3], 8) == "3%8"
    assert slurm.log_pattern("/a/100%/x") == "/a/100%%/x"
    assert slurm.expand_log_pattern("/a/100%%/x-%A_%a.out", 12, 3) == "/a/100%/x-12_3.out"
    assert slurm.parse_squeue("12_0|RUNNING|None\n12_1|PENDING|Dependency\n13|COMPLETED|None\n") == \
        {"12_0": ("RUNNING", "None"), "12_1": ("PENDING", "Dependency"), "13": ("COMPLETED", "None")}


def test_plan_and_status_cli_on_a_fresh_sweep(tmp_path):
    path = write_spec(tmp_path / "spec.yaml", chain_spec())
    out = sweep("plan", path, "--work_root", tmp_path / "runs", env=cli_env(tmp_path)).stdout
    assert "sft: 2 cell(s), 2 to run" in out and "grpo: 4 cell(s), 4 to run" in out
    assert "jobs: 6 array job(s)" in out
    status = sweep("status", path, "--work_root", tmp_path / "runs", env=cli_env(tmp_path)).stdout
    assert "sft: new 2" in status
    rows = [json.loads(x) for x in sweep("status", path, "--work_root", tmp_path / "runs", "--json",
                                         env=cli_env(tmp_path)).stdout.splitlines()]
    assert len(rows) == 12 and {r["state"] for r in rows} == {"new"}
    assert not (tmp_path / "runs").exists()  # plan and status write nothing

"""The local executor (a real 2-stage sweep, SFT -> evaluation, in dependency order, idempotent), values with shell
metacharacters reaching the stage literally (through the local executor and through the generated
sbatch script run by bash), the launchers."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from sweep_helpers import (PYTHON, REAL, REPO, WEIRD, cli_env, read_json, status_rows, sweep,  # noqa: E402
                           two_stage_spec, write_spec)

from biopost.sweeps import cli as sweep_cli  # noqa: E402
from biopost.sweeps import slurm  # noqa: E402
from biopost.sweeps.plan import Options, Plan, default_cluster_env  # noqa: E402
from biopost.sweeps.spec import load_spec  # noqa: E402
from biopost.sweeps.status import write_json_atomic  # noqa: E402



def test_two_stage_sweep_runs_locally_in_dependency_order_and_idempotently(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", two_stage_spec("local2", grid={"num_train_epochs": [1, 2]}, stage=REAL))
    work = tmp_path / "runs"
    env = cli_env(tmp_path)
    out = sweep("submit", spec, "--executor", "local", "--work_root", work, env=env).stdout
    assert "running 4 cell(s) locally" in out
    order = [line.split("] ")[1].split(" ")[0] for line in out.splitlines() if line.startswith("[")]
    assert [x.split("/")[0] for x in order] == ["sft", "sft", "eval", "eval"]
    rows = status_rows(spec, work, env)
    assert {r["state"] for r in rows.values()} == {"done"}
    for label, row in rows.items():
        if row["stage"] == "sft":
            for split in ("id", "ood"):
                m = read_json(work / "local2" / "sft" / row["run_id"] / "eval" / split / "metrics.json")
                assert m["run_id"] == row["run_id"] and m["sweep"] == "local2"
    # each eval started after its stage cell ended
    for row in rows.values():
        if row["stage"] == "eval":
            ev = read_json(work / "local2" / "sft" / row["run_id"] / "eval" / "status.json")
            st = read_json(work / "local2" / "sft" / row["run_id"] / "status.json")
            assert ev["started"] >= st["ended"] and ev["upstream"]["checkpoint_hash"] == st["output_hash"]
    before = {p: p.read_text() for p in work.rglob("status.json")}
    again = sweep("submit", spec, "--executor", "local", "--work_root", work, env=env).stdout
    assert "nothing to run" in again
    assert {p: p.read_text() for p in work.rglob("status.json")} == before


def test_local_failure_leaves_its_eval_unrun_and_the_rest_runs(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", two_stage_spec(
        "localfail", cells=[{f"sft.{k}": v for k, v in REAL["fail"].items()}, {"sft.num_train_epochs": 1}],
        stage=REAL))
    work = tmp_path / "runs"
    env = cli_env(tmp_path)
    proc = sweep("submit", spec, "--executor", "local", "--work_root", work, env=env, check=False)
    assert proc.returncode == 1
    assert "not run, upstream not done" in proc.stdout
    rows = status_rows(spec, work, env)
    states = sorted((r["stage"], r["state"]) for r in rows.values())
    assert states == [("eval", "done"), ("eval", "new"), ("sft", "done"), ("sft", "failed")]
    text = sweep("status", spec, "--work_root", work, env=env).stdout
    assert REAL["fail_text"] in text  # the log tail of the failed cell
    # fixing nothing and resubmitting re-runs only the failed cell (and fails again)
    proc = sweep("submit", spec, "--executor", "local", "--work_root", work, env=env, check=False)
    assert "running 2 cell(s) locally" in proc.stdout


def weird_spec(tmp_path) -> Path:
    spec = two_stage_spec("quoting", cells=[{"sft.note": WEIRD, "sft.num_train_epochs": 1},
                                            {"sft.note": "requeue me", "sft.exit_with": 75},
                                            {"sft.note": "fail me", "sft.fail": True}])
    spec["data"] = {"path": WEIRD}
    return write_spec(tmp_path / "spec.yaml", spec)


def assert_literal(argv: list) -> None:
    assert argv[argv.index("--note") + 1] == WEIRD
    assert argv[argv.index("--data_path") + 1] == WEIRD


def assert_nothing_ran(*dirs) -> None:
    for d in dirs:
        assert not list(Path(d).rglob("PWNED*")), f"a value was executed by a shell under {d}"


def test_values_reach_the_stage_literally_through_the_local_executor(tmp_path):
    work = tmp_path / "w r;$(touch PWNED),'q\"x"
    spec = weird_spec(tmp_path)
    proc = sweep("submit", spec, "--executor", "local", "--work_root", work, "--no-eval",
                 env=cli_env(tmp_path), check=False)
    plan = Plan(load_spec(spec), Options(work_root=work, repo_root=REPO, executor="local"), read_queue=False)
    cell = plan.exp.stages["sft"][0]
    assert (cell.run_dir / "argv.json").is_file(), proc.stdout + proc.stderr
    assert_literal(read_json(cell.run_dir / "argv.json"))
    assert_nothing_ran(tmp_path, REPO)


def fake_bin(tmp_path) -> Path:
    """srun that runs its command (dropping its options), scontrol that logs its arguments."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nwhile [ $# -gt 0 ]; do case "$1" in --*) shift;; *) break;; esac; done\n'
                                  'exec "$@"\n')
    (bin_dir / "scontrol").write_text('#!/bin/sh\nprintf "%s\\n" "$*" >> "$SCONTROL_LOG"\n')
    for f in bin_dir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def test_generated_sbatch_script_hands_values_over_literally_and_requeues_its_own_task(tmp_path, monkeypatch):
    work = tmp_path / "w r;$(touch PWNED),'q\"x"
    spec = weird_spec(tmp_path)
    env_file = tmp_path / "cluster env;$(touch PWNED).sh"
    env_file.write_text('export FROM_CLUSTER_ENV="yes it was sourced"\n')
    options = Options(work_root=work, repo_root=REPO, executor="slurm", python=PYTHON, cluster_env=str(env_file),
                      resources={"partition": "p q"})
    plan = Plan(load_spec(spec), options, queue={})
    submitted = []
    monkeypatch.setattr(slurm, "sbatch", lambda path: submitted.append(Path(path)) or str(900 + len(submitted)))
    assert sweep_cli.submit_slurm(plan, out=lambda *a: None) == 0
    script = submitted[0]
    text = script.read_text()
    assert "#SBATCH --partition='p q'" in text
    bin_dir = fake_bin(tmp_path)
    scontrol_log = tmp_path / "scontrol.log"
    base_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SCONTROL_LOG": str(scontrol_log),
                "SLURM_ARRAY_JOB_ID": "901"}
    codes = {}
    for cell in plan.exp.stages["sft"]:
        proc = subprocess.run(["bash", str(script)], env={**base_env, "SLURM_ARRAY_TASK_ID": str(cell.task_id)},
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        codes[cell.task_id] = proc.returncode
    assert codes == {0: 0, 1: 0, 2: 1}  # done; requeued (the script exits 0 after requeueing); failed
    cells = plan.exp.stages["sft"]
    assert_literal(read_json(cells[0].run_dir / "argv.json"))
    st = read_json(cells[0].status_path)
    assert st["state"] == "done" and st["job_id"] == "901_0"
    assert (cells[0].run_dir / "logs" / "slurm-901_0.out").is_file()
    assert read_json(cells[1].status_path)["state"] == "requeued"
    # only task 1 asked to be requeued, by its own array task id (never the bare job id)
    assert scontrol_log.read_text().splitlines() == ["requeue 901_1", "update JobId=901_1 StartTime=now+5"]
    assert_nothing_ran(tmp_path, REPO)


def test_setup_lines_and_cluster_env_run_before_the_stage(tmp_path, monkeypatch):
    spec = two_stage_spec("setup", grid={"num_train_epochs": [1]},
                          resources={"setup": ['echo "setup ran with $FROM_CLUSTER_ENV" > "$SETUP_PROOF"']})
    path = write_spec(tmp_path / "spec.yaml", spec)
    env_file = tmp_path / "cluster_env.sh"
    env_file.write_text('export FROM_CLUSTER_ENV="the cluster env"\n')
    plan = Plan(load_spec(path), Options(work_root=tmp_path / "runs", repo_root=REPO, executor="slurm",
                                         python=PYTHON, cluster_env=str(env_file)), queue={})
    scripts = []
    monkeypatch.setattr(slurm, "sbatch", lambda p: scripts.append(Path(p)) or "700")
    sweep_cli.submit_slurm(plan, out=lambda *a: None)
    proof = tmp_path / "proof.txt"
    env = {**os.environ, "PATH": f"{fake_bin(tmp_path)}:{os.environ['PATH']}", "SCONTROL_LOG": str(tmp_path / "s"),
           "SLURM_ARRAY_JOB_ID": "700", "SLURM_ARRAY_TASK_ID": "0", "SETUP_PROOF": str(proof)}
    assert subprocess.run(["bash", str(scripts[0])], env=env, cwd=tmp_path, timeout=60).returncode == 0
    assert proof.read_text() == "setup ran with the cluster env\n"
    # a failing setup line fails the job before the stage starts
    env_file.write_text("false\n")
    rc = subprocess.run(["bash", str(scripts[0])], env={**env, "SLURM_ARRAY_TASK_ID": "0"}, cwd=tmp_path,
                        timeout=60, capture_output=True).returncode
    assert rc != 0


def test_cluster_env_path_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOPOST_CLUSTER_ENV", "/site/env.sh")
    assert default_cluster_env(REPO) == "/site/env.sh"
    monkeypatch.delenv("BIOPOST_CLUSTER_ENV")
    assert default_cluster_env(REPO) == str(REPO / "cluster_env.sh")


# ------------------------------------------------------------------ launchers
LAUNCHERS = ["BioReason/cpt_job.sh", "BioReason/submit_drive_genomics_sweeps.sh",
             "BioReason/submit_drive_genomics_data_sweeps.sh", "BioReason/submit_id_ood_eval.sh",
             "BioReason-Pro/scripts/sweep_protein_sft.sh", "BioReason-Pro/scripts/sweep_protein_grpo.sh",
             "BioReason-Pro/scripts/submit_id_ood_eval_rl.sh"]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_launchers_dry_run_with_quoted_overrides(tmp_path, launcher):
    spec = write_spec(tmp_path / "spec.yaml", two_stage_spec("launch", grid={"num_train_epochs": [1]}))
    env = cli_env(tmp_path, DRY_RUN=1, PARTITION="gpu $(touch PWNED)", ACCOUNT="lab;x", TIME="01:00:00",
                  PYTHON=PYTHON, BIOPOST_WORK_ROOT=tmp_path / "runs")
    only_eval = launcher.endswith(("submit_id_ood_eval.sh", "submit_id_ood_eval_rl.sh"))
    if only_eval:  # evaluation is submitted for stage cells that are done
        plan = Plan(load_spec(spec), Options(work_root=tmp_path / "runs", repo_root=REPO), queue={})
        cell = plan.exp.stages["sft"][0]
        write_json_atomic(cell.status_path, {"schema": "biopost.status/v1", "state": "done", "output_hash": "h"})
    proc = subprocess.run([str(REPO / launcher), str(spec)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "#SBATCH --partition='gpu $(touch PWNED)'" in out and "#SBATCH --account='lab;x'" in out
    assert "#SBATCH --time=01:00:00" in out
    assert "# ===== job eval-sft.0" in out
    if only_eval:
        assert "# ===== job sft.0" not in out
    else:
        assert "# ===== job sft.0" in out
        assert not (tmp_path / "runs").exists()  # a dry run writes nothing
    assert_nothing_ran(tmp_path, REPO)


def test_launchers_use_no_eval():
    for launcher in LAUNCHERS + ["scripts/local_slurm.sh", "scripts/submit_specs.sh"]:
        text = (REPO / launcher).read_text()
        assert not [line for line in text.splitlines() if line.strip().startswith("eval ") or " eval " in line
                    and not line.strip().startswith("#")], launcher

"""The in-job runner: status.json through a cell's life, requeue on exit 75, signals forwarded to
the stage, fresh start when the upstream's output changed, select-best, atomic writes."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from sweep_helpers import PYTHON, REPO, STAGE, read_json, two_stage_spec, wait_for, write_spec  # noqa: E402

from biopost.sweeps.plan import Options, Plan  # noqa: E402
from biopost.sweeps.runner import run_task  # noqa: E402
from biopost.sweeps.spec import load_spec  # noqa: E402
from biopost.sweeps.status import read_status, write_json_atomic  # noqa: E402


def plan_for(tmp_path, spec) -> Plan:
    path = write_spec(tmp_path / "spec.yaml", spec)
    return Plan(load_spec(path), Options(work_root=tmp_path / "runs", repo_root=REPO, executor="local",
                                         python=PYTHON), queue=None, read_queue=False)


def fingerprint(run_dir) -> str:
    return read_json(Path(run_dir) / "checkpoints" / "last" / "trainer_state.json")["fingerprint"]


@pytest.fixture(autouse=True)
def no_slurm_env(monkeypatch):
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)


def test_status_through_a_cells_life(tmp_path):
    plan = plan_for(tmp_path, two_stage_spec("life", grid={"num_train_epochs": [2]}))
    cell = plan.exp.stages["sft"][0]
    rc = run_task(plan.manifest_entry(cell), str(REPO))
    assert rc == 0
    st = read_status(cell.status_path)
    assert st["state"] == "done" and st["exit_code"] == 0 and st["attempt"] == 1
    assert st["schema"] == "biopost.status/v1" and st["stage"] == "sft" and st["run_id"] == cell.run_id
    assert st["cell"] == {"sft.num_train_epochs": 2} and st["seed"] == 0 and st["target"] is None
    assert st["job_id"].startswith("local:") and st["elapsed_s"] >= 0 and st["ended"]
    assert len(st["output_hash"]) == 64 and st["upstream"] is None
    log = Path(st["log"]).read_text()
    assert "sweep_stage: step 4/4" in log and "exit code 0" in log
    assert not list(cell.run_dir.glob(".status.json.*"))  # no temp file left behind

    ev = plan.exp.evals["sft"][0]
    assert run_task(plan.manifest_entry(ev), str(REPO)) == 0
    est = read_status(ev.status_path)
    assert ev.status_path == cell.run_dir / "eval" / "status.json"
    assert est["stage"] == "eval" and est["target"] == {"stage": "sft", "run_id": cell.run_id, "checkpoint": "last"}
    assert est["upstream"] == {"run_id": cell.run_id, "checkpoint_hash": st["output_hash"]}
    for split in ("id", "ood"):
        m = read_json(cell.run_dir / "eval" / split / "metrics.json")
        assert m["run_id"] == cell.run_id and m["split"] == split and m["cell"] == {"sft.num_train_epochs": 2}


def test_failure_and_requeue_exit_codes(tmp_path):
    spec = two_stage_spec("codes", cells=[{"sft.fail": True}, {"sft.exit_with": 75}])
    plan = plan_for(tmp_path, spec)
    failing, requeue = plan.exp.stages["sft"]
    assert run_task(plan.manifest_entry(failing), str(REPO)) == 1
    st = read_status(failing.status_path)
    assert st["state"] == "failed" and st["exit_code"] == 1 and st["reason"] == "exit code 1"
    assert run_task(plan.manifest_entry(requeue), str(REPO)) == 75
    st = read_status(requeue.status_path)
    assert st["state"] == "requeued" and st["ended"] is None
    first = st["elapsed_s"]
    run_task(plan.manifest_entry(requeue), str(REPO))
    st = read_status(requeue.status_path)
    assert st["attempt"] == 2 and st["elapsed_s"] >= first  # time adds up across requeues


def test_eval_refuses_to_run_before_its_stage_is_done(tmp_path):
    plan = plan_for(tmp_path, two_stage_spec("order", grid={"num_train_epochs": [1]}))
    ev = plan.exp.evals["sft"][0]
    assert run_task(plan.manifest_entry(ev), str(REPO)) == 1
    st = read_status(ev.status_path)
    assert st["state"] == "failed" and "upstream not done" in st["reason"]


def test_signal_to_the_runner_checkpoints_and_the_rerun_matches_an_uninterrupted_run(tmp_path):
    spec = two_stage_spec("sig", cells=[{"sft.step_seconds": 0.4, "sft.num_train_epochs": 3}])
    plan = plan_for(tmp_path, spec)
    cell = plan.exp.stages["sft"][0]
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"repo_root": str(REPO), "tasks": {"0": plan.manifest_entry(cell)}}))
    cmd = [PYTHON, "-m", "biopost.sweeps.runner", "--manifest", str(manifest), "--index", "0"]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True)  # only the runner gets the signal
    wait_for(lambda: (cell.run_dir / "checkpoints" / "last").exists(), 30, "the first checkpoint")
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=30) == 75
    st = read_status(cell.status_path)
    assert st["state"] == "requeued"
    stopped_at = read_json(cell.run_dir / "checkpoints" / "last" / "trainer_state.json")["step"]
    assert 1 <= stopped_at < 6
    assert subprocess.run(cmd, cwd=REPO).returncode == 0
    assert read_status(cell.status_path)["state"] == "done"
    assert "resumed from step" in Path(st["log"]).read_text()

    other = plan_for(tmp_path / "uninterrupted", spec)
    ref = other.exp.stages["sft"][0]
    assert ref.run_id == cell.run_id
    assert run_task(other.manifest_entry(ref), str(REPO)) == 0
    assert fingerprint(cell.run_dir) == fingerprint(ref.run_dir)
    assert read_json(cell.run_dir / "checkpoints/last/trainer_state.json")["step"] == 6


def test_outputs_from_another_upstream_are_removed_before_a_rerun(tmp_path):
    spec = {"name": "fresh", "stages": {"sft": {"script": STAGE["script"], "overrides": {"steps_per_epoch": 2}},
                                        "grpo": {"script": STAGE["script"], "after": "sft",
                                                 "overrides": {"steps_per_epoch": 2}}}}
    plan = plan_for(tmp_path, spec)
    sft, grpo = plan.exp.stages["sft"][0], plan.exp.stages["grpo"][0]
    assert run_task(plan.manifest_entry(sft), str(REPO)) == 0
    assert run_task(plan.manifest_entry(grpo), str(REPO)) == 0
    before = fingerprint(grpo.run_dir)

    # grpo re-runs with an unchanged upstream: it resumes (nothing to do) and keeps its result
    st = read_status(grpo.status_path)
    write_json_atomic(grpo.status_path, {**st, "state": "failed"})
    assert run_task(plan.manifest_entry(grpo), str(REPO)) == 0
    assert fingerprint(grpo.run_dir) == before
    assert "resumed from step 2" in Path(read_status(grpo.status_path)["log"]).read_text()

    # sft re-ran from scratch with another outcome: grpo must not resume from its old checkpoint
    sft_st = read_status(sft.status_path)
    (sft.run_dir / "checkpoints/last/trainer_state.json").write_text(json.dumps(
        {"step": 2, "epoch": 1.0, "fingerprint": "0" * 64}))
    write_json_atomic(sft.status_path, {**sft_st, "output_hash": "changed"})
    assert run_task(plan.manifest_entry(grpo), str(REPO)) == 0
    log = Path(read_status(grpo.status_path)["log"]).read_text()
    assert "upstream output changed since the last run: removed" in log
    assert fingerprint(grpo.run_dir) != before
    assert read_status(grpo.status_path)["upstream"]["checkpoint_hash"] == "changed"


def fake_cpt_run(run_dir: Path, model: str, loss: float) -> None:
    (run_dir / "final").mkdir(parents=True)
    (run_dir / "final" / "config.json").write_text("{}")
    (run_dir / "config.yaml").write_text(json.dumps({"text_model_name": model, "stage": "cpt"}))
    (run_dir / "final_eval_metrics.json").write_text(json.dumps({"eval_loss": loss, "perplexity": 2.0}))
    write_json_atomic(run_dir / "status.json", {"schema": "biopost.status/v1", "state": "done",
                                                "output_hash": f"h{loss}", "job_id": "1_0"})


def test_select_best_runs_the_cpt_command_and_hands_the_pick_on(tmp_path):
    spec = {"name": "sb", "stages": {
        "cpt": {"script": STAGE["script"], "select_best": True, "grid": {"learning_rate": [1e-5, 1e-4]}},
        "sft": {"script": STAGE["script"], "after": "cpt", "overrides": {"steps_per_epoch": 1}}}}
    plan = plan_for(tmp_path, spec)
    cpt = plan.exp.stages["cpt"]
    fake_cpt_run(cpt[0].run_dir, "base/model", 2.5)
    fake_cpt_run(cpt[1].run_dir, "base/model", 1.5)  # the best
    sft = plan.exp.stages["sft"][0]
    entry = plan.manifest_entry(sft)
    assert run_task(entry, str(REPO)) == 0, Path(read_status(sft.status_path)["log"]).read_text()
    argv = read_json(sft.run_dir / "argv.json")
    assert argv[argv.index("--text_model_name") + 1] == str(cpt[1].run_dir / "final")
    assert (cpt[0].run_dir.parent / "select_best.json").is_file()
    st = read_status(sft.status_path)
    assert st["upstream"]["run_id"] == cpt[1].run_id and len(st["upstream"]["checkpoint_hash"]) == 64

    # a newer pick file (written after every cpt status) is read, not recomputed
    pick = cpt[0].run_dir.parent / "select_best.json"
    data = json.loads(pick.read_text())
    for record in data["best"].values():
        record["final"] = "/somewhere/else/final"
    pick.write_text(json.dumps(data))
    write_json_atomic(sft.status_path, {**st, "state": "failed"})
    assert run_task(entry, str(REPO)) == 0
    argv = read_json(sft.run_dir / "argv.json")
    assert argv[argv.index("--text_model_name") + 1] == "/somewhere/else/final"


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "status.json"
    write_json_atomic(path, {"state": "done"})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"state": object()})
    assert json.loads(path.read_text()) == {"state": "done"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_failure_reason_tells_a_crash_from_bad_input(tmp_path):
    """Both exit 1; status.json's reason says which (read from the end of the stage's log)."""
    from biopost.sweeps.runner import failure_reason
    log = tmp_path / "stage.log"
    log.write_text("[biopost runner 2026] run x\nloading\nerror: data/train.jsonl, row 3, field 'answer': missing\n")
    assert failure_reason(1, log) == "user error (exit 1): error: data/train.jsonl, row 3, field 'answer': missing"
    log.write_text("loading\nTraceback (most recent call last):\n  File \"x.py\", line 1\n"
                   "ZeroDivisionError: division by zero\n[biopost runner 2026] exit code 1\n")
    assert failure_reason(1, log) == "crashed (exit 1): ZeroDivisionError: division by zero"
    log.write_text("usage: train.py [-h]\ntrain.py: error: unrecognized arguments: --lr\n")
    assert failure_reason(2, log) == "usage error (exit 2): train.py: error: unrecognized arguments: --lr"
    assert failure_reason(137, log) == "killed by signal 9 (exit 137)"
    assert failure_reason(3, tmp_path / "missing.log") == "exit code 3"

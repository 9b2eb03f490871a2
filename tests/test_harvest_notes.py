"""Degenerate cells made visible: a GRPO run with zero reward spread in every group and an
evaluation that parsed almost nothing get a note in the harvest, instead of reading like results.

The chain under test: GRPO's train_log.jsonl -> train_summary.json (biopost/train/grpo_summary.py)
-> the sweep runner copies it into status.json's `summary` -> the harvester's notes column.
"""
import json
import os

from conftest import ROOT, run_script

from biopost.harvest import collect
from biopost.sweeps.runner import run_task
from biopost.train.grpo_summary import SUMMARY_FILE, grpo_summary, write_grpo_summary

SWEEP = "demo"


def _write(path, doc):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(json.dumps(doc))


def _log_entries(rewards, zero_std):
    return [{"step": i + 1, "reward": r, "frac_reward_zero_std": z, "rewards/correctness": r}
            for i, (r, z) in enumerate(zip(rewards, zero_std))]


def test_summary_of_a_run_without_signal():
    s = grpo_summary(_log_entries([0.0] * 12, [1.0] * 12) + [{"step": 12, "eval/ood_val": 0.1}])
    assert s["steps"] == 12 and s["last_step"] == 12
    assert s["frac_steps_zero_std"] == 1.0 and s["mean_reward"] == 0.0 and s["no_learning_signal"] is True
    assert s["mean_rewards"] == {"correctness": 0.0}


def test_summary_of_a_run_with_signal():
    s = grpo_summary(_log_entries([0.2, 0.4, 0.6, 0.8], [1.0, 0.5, 0.25, 1.0]))
    assert s["steps"] == 4 and s["frac_steps_zero_std"] == 0.5
    assert abs(s["mean_reward"] - 0.5) < 1e-9 and s["final_reward"] == 0.8 and s["no_learning_signal"] is False
    empty = grpo_summary([])
    assert empty["steps"] == 0 and empty["no_learning_signal"] is False and empty["mean_reward"] is None


def test_write_summary_skips_a_line_cut_by_a_kill(tmp_path):
    lines = [json.dumps(e) for e in _log_entries([0.0, 0.0], [1.0, 1.0])] + ['{"step": 3, "rew']
    (tmp_path / "train_log.jsonl").write_text("\n".join(lines) + "\n")
    s = write_grpo_summary(tmp_path)
    assert s["steps"] == 2 and s["no_learning_signal"] is True
    assert json.loads((tmp_path / SUMMARY_FILE).read_text()) == s


def test_runner_copies_the_stage_summary_into_status(tmp_path):
    run_dir = tmp_path / "runs" / SWEEP / "grpo" / "cold"
    stage = tmp_path / "stage.py"
    # a stand-in stage: logs like GRPO and writes its summary, as train_grpo does at its end
    stage.write_text(
        "import json, sys\n"
        "from biopost.train.grpo_summary import write_grpo_summary\n"
        f"open(sys.argv[1] + '/train_log.jsonl', 'w').write(''.join(json.dumps(e) + '\\n' for e in "
        f"{_log_entries([0.0] * 3, [1.0] * 3)!r}))\n"
        "write_grpo_summary(sys.argv[1])\n")
    run_dir.mkdir(parents=True)
    entry = {"sweep": SWEEP, "stage": "grpo", "run_id": "cold", "cell": {"grpo.init": "base"}, "seed": 0,
             "target": None, "kind": "train", "label": "grpo/cold", "run_dir": str(run_dir),
             "status_path": str(run_dir / "status.json"), "commands": [[str(stage), str(run_dir)]]}
    assert run_task(entry, str(tmp_path)) == 0, (run_dir / "logs" / "local.out").read_text()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "done"
    assert status["summary"]["no_learning_signal"] is True and status["summary"]["steps"] == 3
    # a stage that leaves no summary (SFT) gets none, and a malformed one is ignored
    (run_dir / SUMMARY_FILE).write_text("[1, 2]")
    entry["commands"] = [[str(tmp_path / "noop.py")]]
    (tmp_path / "noop.py").write_text("pass\n")
    assert run_task(entry, str(tmp_path)) == 0
    assert "summary" not in json.loads((run_dir / "status.json").read_text())


def _metrics(root, stage, run_id, split, acc, n=60, n_unparsed=0, cell=None):
    _write(os.path.join(root, SWEEP, stage, run_id, "eval", split, "metrics.json"),
           {"schema": "biopost.metrics/v1", "run_id": run_id, "sweep": SWEEP, "cell": cell or {}, "stage": stage,
            "checkpoint": "last", "modality": "dna", "task": "kegg", "split": split, "headline": "accuracy",
            "n": n, "n_unparsed": n_unparsed, "metrics": {"accuracy": acc}, "seed": 0})


def _status(root, stage, run_id, summary=None, cell=None):
    doc = {"schema": "biopost.status/v1", "sweep": SWEEP, "stage": stage, "run_id": run_id, "cell": cell or {},
           "seed": 0, "state": "done", "target": None, "exit_code": 0}
    if summary is not None:
        doc["summary"] = summary
    _write(os.path.join(root, SWEEP, stage, run_id, "status.json"), doc)


def test_harvest_notes_zero_variance_grpo_and_unparsed_evaluations(tmp_path):
    root = str(tmp_path / "runs")
    cold, warm = {"grpo.init": "base"}, {"grpo.init": "sft"}
    _status(root, "grpo", "cold", grpo_summary(_log_entries([0.0] * 12, [1.0] * 12)), cold)
    _status(root, "grpo", "warm", grpo_summary(_log_entries([0.5] * 12, [0.25] * 12)), warm)
    _status(root, "grpo", "odd", {"no_learning_signal": "yes", "steps": "many"})  # malformed: no note
    _status(root, "sft", "e2")  # no summary at all (SFT)
    for run_id, cell in (("cold", cold), ("warm", warm), ("odd", None)):
        for split in ("id", "ood"):
            _metrics(root, "grpo", run_id, split, 0.0 if run_id == "cold" else 0.5, cell=cell,
                     n_unparsed=60 if run_id == "cold" else 0)
    _metrics(root, "sft", "e2", "id", 0.2, n_unparsed=30)   # exactly half: no note
    _metrics(root, "sft", "e2", "ood", 0.1, n_unparsed=31)  # above half: noted
    rows = {(r["stage"], r["run_id"]): r for r in collect(root).rows}

    cold_note = rows[("grpo", "cold")]["notes"]
    assert "no learning signal (zero reward std in every group of all 12 steps)" in cold_note
    assert "id: 60/60 unparsed" in cold_note and "ood: 60/60 unparsed" in cold_note
    assert rows[("grpo", "warm")]["notes"] is None
    assert rows[("grpo", "odd")]["notes"] is None
    assert rows[("sft", "e2")]["notes"] == "ood: 31/60 unparsed"


def test_grpo_writes_its_summary_at_the_end(tmp_path, synth_data):
    """The one call at the end of train_grpo: a finished run leaves train_summary.json, computed from
    its train_log.jsonl (a cold start from the random tiny base: nothing it writes earns a reward)."""
    out = tmp_path / "cold"
    r = run_script([ROOT / "BioReason/train_grpo.py", "--config", ROOT / "BioReason/configs/grpo_tiny.yaml",
                    "--init", "base", "--data_path", synth_data, "--output_dir", out, "--max_steps", "2",
                    "--max_completion_length", "8", "--per_device_train_batch_size", "8"],
                   env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / SUMMARY_FILE).read_text())
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert summary == grpo_summary(log) and summary["steps"] == 2 and summary["last_step"] == 2
    if summary["no_learning_signal"]:
        assert "no learning signal" in r.stderr

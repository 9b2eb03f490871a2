"""`biopost cpt select-best`: per backbone, the finished CPT run with the lowest held-out loss."""
import json
import subprocess
import sys

import pytest
import yaml

from biopost.cli import main as biopost_main
from biopost.train.cpt_cli import main, select_best


def fake_run(root, name, backbone, eval_loss=None, metrics_text=None, final=True, stage="cpt"):
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"stage": stage, "text_model_name": backbone, "run_id": name,
                                                     "sweep": "cpt_lr", "cell": {}}))
    if final:
        (run / "final").mkdir()
        (run / "final" / "config.json").write_text("{}")
    if metrics_text is None and eval_loss is not None:
        metrics_text = json.dumps({"eval_loss": eval_loss, "perplexity": 2.718281828 ** eval_loss, "step": 100})
    if metrics_text is not None:
        (run / "final_eval_metrics.json").write_text(metrics_text)
    return run


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "cpt"
    runs = {
        "lr1e-5": fake_run(root, "lr1e-5", "Qwen/Qwen3-1.7B", 2.31),
        "lr2e-5": fake_run(root, "lr2e-5", "Qwen/Qwen3-1.7B", 2.12),   # best 1.7B
        "lr5e-5": fake_run(root, "lr5e-5", "Qwen/Qwen3-4B", 2.40),     # the only 4B: best 4B
        "missing": fake_run(root, "missing", "Qwen/Qwen3-1.7B"),        # unfinished: no metrics file
        "corrupt": fake_run(root, "corrupt", "Qwen/Qwen3-1.7B", metrics_text='{"eval_loss": 1.0'),
        "nan": fake_run(root, "nan", "Qwen/Qwen3-4B", metrics_text='{"eval_loss": NaN}'),
        "no_final": fake_run(root, "no_final", "Qwen/Qwen3-4B", 0.5, final=False),
        "sft": fake_run(root, "sft", "Qwen/Qwen3-4B", 0.1, stage="sft"),
    }
    (root / "not_a_run").mkdir()  # ignored: no config.yaml
    return root, runs


def test_select_best_picks_lowest_loss_per_backbone_and_reports_problems(sweep, tmp_path, capsys):
    root, runs = sweep
    out = tmp_path / "sel" / "best.json"
    assert main(["select-best", "--runs", str(root), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["best"]) == {"Qwen/Qwen3-1.7B", "Qwen/Qwen3-4B"}
    best17, best4 = result["best"]["Qwen/Qwen3-1.7B"], result["best"]["Qwen/Qwen3-4B"]
    assert best17["run_dir"] == str(runs["lr2e-5"].resolve()) and best17["eval_loss"] == 2.12
    assert best17["final"] == str((runs["lr2e-5"] / "final").resolve())
    assert best17["perplexity"] == pytest.approx(2.718281828 ** 2.12)
    assert best4["run_dir"] == str(runs["lr5e-5"].resolve()) and best4["eval_loss"] == 2.40
    reasons = {p["run_dir"].rsplit("/", 1)[-1]: p["reason"] for p in result["problems"]}
    assert set(reasons) == {"missing", "corrupt", "nan", "no_final", "sft"}
    assert "missing" in reasons["missing"] and "corrupt" in reasons["corrupt"]
    assert "finite eval_loss" in reasons["nan"] and "final/" in reasons["no_final"] and "not a CPT" in reasons["sft"]
    table = capsys.readouterr().out
    assert "Qwen/Qwen3-1.7B" in table and "2.1200" in table and str(runs["lr2e-5"].resolve()) in table
    assert "problems (5)" in table and "corrupt" in table


def test_select_best_accepts_run_dirs_and_the_biopost_cli(sweep, tmp_path, capsys):
    root, runs = sweep
    out = tmp_path / "best.json"
    args = ["cpt", "select-best", "--runs", str(runs["lr1e-5"]), str(runs["corrupt"]), str(root / "nowhere"),
            "--out", str(out)]
    assert biopost_main(args) == 0
    result = json.loads(out.read_text())
    assert list(result["best"]) == ["Qwen/Qwen3-1.7B"]
    assert result["best"]["Qwen/Qwen3-1.7B"]["run_dir"] == str(runs["lr1e-5"].resolve())
    assert len(result["problems"]) == 2
    # Nothing usable: exit 1, still a JSON answer listing why.
    assert main(["select-best", "--runs", str(runs["missing"]), "--out", str(out)]) == 1
    assert json.loads(out.read_text()) == {"best": {}, "problems": [
        {"run_dir": str(runs["missing"]), "reason": "final_eval_metrics.json missing (run unfinished or failed)"}]}


def test_equal_losses_break_ties_by_run_dir(tmp_path):
    a = fake_run(tmp_path, "b_run", "m", 1.5)
    b = fake_run(tmp_path, "a_run", "m", 1.5)
    assert select_best([a, b])["best"]["m"]["run_dir"] == str(b.resolve())


def test_select_best_runs_as_a_module_without_torch(sweep):
    root, _ = sweep
    code = ("import sys, runpy; sys.argv = ['cpt_cli', 'select-best', '--runs', sys.argv[1]]\n"
            "try:\n    runpy.run_module('biopost.train.cpt_cli', run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "    print('HEAVY', heavy); sys.exit(e.code)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout and "Qwen/Qwen3-4B" in proc.stdout

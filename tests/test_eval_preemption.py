"""Evaluation survives preemption: SLURM's USR1 (or SIGTERM) after some batches keeps exactly the
finished predictions, exits 75, and the rerun generates only the rest -- ending with the metrics
of an uninterrupted run, for greedy and for sampled decoding."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow
EVAL = ROOT / "BioReason/eval_kegg_dna_vllm.py"
VOLATILE = {"created", "timing", "checkpoint_path"}


def comparable(metrics: dict) -> dict:
    out = {k: v for k, v in metrics.items() if k not in VOLATILE}
    out["provenance"] = {k: v for k, v in metrics.get("provenance", {}).items() if not k.startswith("git_")}
    return out


def eval_cmd(run, out, sampled):
    cmd = [sys.executable, str(EVAL), "--run_dir", str(run), "--eval_split", "id", "--max_examples", "24",
           "--batch_size", "2", "--max_new_tokens", "48", "--bootstrap_resamples", "50", "--output_dir", str(out)]
    return cmd + (["--do_sample", "true", "--temperature", "1.0", "--top_k", "20", "--seed", "3"] if sampled else [])


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
def test_usr1_keeps_finished_predictions_and_the_rerun_generates_only_the_rest(tiny_sft_run, tmp_path, sampled):
    run = tmp_path / "run"
    shutil.copytree(tiny_sft_run, run, symlinks=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    full = tmp_path / "full"
    ref = subprocess.run(eval_cmd(run, full, sampled), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]

    part = tmp_path / "part"
    preds = part / "eval" / "id" / "predictions.jsonl"
    proc = subprocess.Popen(eval_cmd(run, part, sampled), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if preds.is_file() and preds.read_text().count("\n") >= 2:  # at least one batch written
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the evaluation ended before it could be signalled"
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err[-3000:]
    assert "exiting with 75 (requeue)" in err
    kept = [json.loads(x) for x in preds.read_text().splitlines()]
    want = [json.loads(x) for x in (full / "eval/id/predictions.jsonl").read_text().splitlines()]
    assert 2 <= len(kept) < 24 and len(kept) % 2 == 0          # whole batches only
    strip = lambda rows: [{k: v for k, v in r.items() if k != "correct"} for r in rows]  # noqa: E731
    assert strip(kept) == strip(want[:len(kept)])              # exactly the finished rows
    assert not (part / "eval/id/metrics.json").exists()         # no metrics for a partial split

    again = subprocess.run(eval_cmd(run, part, sampled), cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming after {len(kept)} of 24" in again.stderr
    resumed = json.loads((part / "eval/id/metrics.json").read_text())
    reference = json.loads((full / "eval/id/metrics.json").read_text())
    tokens_rest = sum(len(r["generation"]) > -1 for r in want[len(kept):])
    assert resumed["timing"]["generated_tokens"] < reference["timing"]["generated_tokens"] or tokens_rest == 0
    assert comparable(resumed) == comparable(reference)
    assert (part / "eval/id/predictions.jsonl").read_text() == (full / "eval/id/predictions.jsonl").read_text()
    assert not (part / "eval/id/partial.json").exists()

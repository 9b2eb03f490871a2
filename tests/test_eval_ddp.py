"""Evaluation under torchrun (gloo, CPU): rank r of 2 evaluates rows r, r+2, ...; rank 0 merges them
back into the rows' order, so greedy predictions and metrics equal one process's; a SIGUSR1 to the
launcher keeps every rank's finished predictions, exits 75, and the 2-rank rerun generates only the
rest. One torch thread everywhere (tests/test_sft_ddp.py: ONE_THREAD_WHY)."""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, signal_when
from test_eval_preemption import comparable

pytestmark = pytest.mark.slow
EVAL = ROOT / "BioReason/eval_kegg_dna_vllm.py"
LAUNCH = [sys.executable, "-m", "biopost.launch", "--standalone", "--nproc_per_node", "2"]
N = 25   # odd: the ranks hold 13 and 12 rows


def eval_args(run, out):
    return [EVAL, "--run_dir", run, "--eval_split", "id,ood", "--max_examples", N, "--batch_size", 3,
            "--max_new_tokens", 48, "--bootstrap_resamples", 50, "--output_dir", out]


def _run(prefix, args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([*prefix, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600, **kw)


@pytest.fixture(scope="module")
def reference(tiny_sft_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("eval_ddp")
    run = base / "run"
    shutil.copytree(tiny_sft_run, run, symlinks=True)
    out = base / "one"
    proc = _run([sys.executable], eval_args(run, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, out


def test_two_ranks_give_the_predictions_and_metrics_of_one(reference, tmp_path):
    run, one = reference
    two = tmp_path / "two"
    proc = _run(LAUNCH, eval_args(run, two))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for split in ("id", "ood"):
        a = json.loads((two / "eval" / split / "metrics.json").read_text())
        b = json.loads((one / "eval" / split / "metrics.json").read_text())
        assert a["n"] == N and comparable(a) == comparable(b)
        assert a["timing"]["ranks"] == 2
        assert a["timing"]["generated_tokens"] == b["timing"]["generated_tokens"]
        assert (two / "eval" / split / "predictions.jsonl").read_text() == \
            (one / "eval" / split / "predictions.jsonl").read_text()
        assert not (two / "eval" / split / "shards").exists()
    # the rows really were split: each rank logged its own 13 or 12
    assert "eval id" in proc.stderr and "13/13" in proc.stderr and "12/12" in proc.stderr


def test_usr1_under_two_ranks_keeps_both_shards_and_the_rerun_finishes_the_rest(reference, tmp_path):
    run, one = reference
    part = tmp_path / "part"
    shards = [part / "eval" / "id" / "shards" / f"rank{r}-of-2" / "predictions.jsonl" for r in (0, 1)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([*LAUNCH, *map(str, eval_args(run, part))], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # both ranks have written a batch (under load rank 1 can lag rank 0 by a batch or more)
    signal_when(proc, lambda: all(s.is_file() and s.read_text().count("\n") >= 3 for s in shards), signal.SIGUSR1,
                "a written batch of each rank")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err[-3000:]
    kept = [len(p.read_text().splitlines()) for p in sorted((part / "eval" / "id" / "shards").glob("*/predictions.jsonl"))]
    assert len(kept) == 2 and all(k % 3 == 0 for k in kept) and sum(kept) < N, kept
    assert not (part / "eval" / "id" / "metrics.json").exists()

    again = _run(LAUNCH, eval_args(run, part))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming after" in again.stderr
    for split in ("id", "ood"):
        assert (part / "eval" / split / "predictions.jsonl").read_text() == \
            (one / "eval" / split / "predictions.jsonl").read_text()
        assert comparable(json.loads((part / "eval" / split / "metrics.json").read_text())) == \
            comparable(json.loads((one / "eval" / split / "metrics.json").read_text()))

"""The in-job wrapper: `srun <python> -m biopost.sweeps.runner --manifest <json> --index <task>`.

For one cell it
  1. checks that its upstream is done and records {run_id, checkpoint_hash} of it;
  2. if the cell's earlier outputs were computed from another upstream output (the recorded
     hash differs), removes them so that the stage starts fresh instead of resuming;
  3. writes status.json `running`, runs the stage ([python, script, *argv], cwd = repo root; or,
     for several ranks per cell, srun + torchrun of it: biopost.sweeps.ranks) with its output
     appended to <run dir>/logs/, forwarding SIGUSR1 / SIGTERM to it;
  4. writes `done` (with output_hash and elapsed_s), `requeued` (exit 75: the stage
     checkpointed and the batch script requeues the task) or `failed`, and exits with the
     stage's exit code.
A requeued stage resumes from <run dir>/checkpoints/last by itself (`--resume auto`).

The stages' argv come from the manifest as JSON lists and reach the stage as an argument
list: no shell is involved, so spaces, quotes, `$()` and `;` arrive literally.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from biopost.errors import UserError
from biopost.files import ensure_dir
from biopost.sweeps import ranks
from biopost.sweeps.plan import upstream_hash_now
from biopost.sweeps.status import (SCHEMA, local_job_id, now_iso, output_hash, read_status,
                                   write_json_atomic)
from biopost.signals import REQUEUE_EXIT_CODE

# SLURM's time-limit warning (--signal=USR1@N), preemption and `scontrol requeue` (SIGTERM).
# SIGINT (Ctrl-C of the local executor) reaches the stage from the terminal by itself: only noted.
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def job_id_and_log(entry: dict) -> tuple[str, Path]:
    """This task's job id and the log its stage writes to."""
    logs = Path(entry["run_dir"]) / "logs"
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}", logs / f"slurm-{array_job}_{task}.out"
    name = "local-eval.out" if entry["kind"] == "eval" else "local.out"
    return local_job_id(), logs / name


def clear_outputs(entry: dict) -> list:
    """Remove what an earlier run of this cell produced from another upstream output."""
    run_dir = Path(entry["run_dir"])
    if entry["kind"] == "eval":
        paths = [run_dir / "eval" / d for d in entry["eval_dirs"]]
    else:
        paths = [run_dir / "checkpoints", run_dir / "final", run_dir / "train_log.jsonl",
                 run_dir / "train_summary.json"]
    removed = []
    for p in paths:
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)
        else:
            continue
        removed.append(str(p))
    return removed


def stage_summary(run_dir) -> dict | None:
    """The summary a finished stage left in <run dir>/train_summary.json (GRPO: steps, fraction of
    steps with zero reward spread, mean reward; biopost/train/grpo_summary.py), for status.json's
    `summary`; None when there is none or it is not a JSON object (the cell is still done)."""
    path = Path(run_dir) / "train_summary.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def best_text_model(data: dict, runs: list) -> str:
    """The pick of `biopost cpt select-best` (biopost/train/cpt_cli.py) for this cell's cpt group.
    Its JSON: {"best": {backbone: {"run_dir", "final", "eval_loss", ...}}, "problems": [...]};
    the entry whose run is one of `runs` wins."""
    best = data.get("best") if isinstance(data, dict) else None
    wanted = {str(Path(r).resolve()) for r in runs}
    for record in (best or {}).values() if isinstance(best, dict) else []:
        if isinstance(record, dict) and isinstance(record.get("run_dir"), str) \
                and str(Path(record["run_dir"]).resolve()) in wanted:
            return record.get("final") or str(Path(record["run_dir"]) / "final")
    problems = data.get("problems") if isinstance(data, dict) else None
    raise RuntimeError(f"select-best picked none of the {len(runs)} cpt runs; problems: {problems}")


def resolve_select_best(sb: dict, repo_root: str, log) -> str:
    """The select-best pick for this cell's cpt group: read <out> when it is newer than every
    cpt status.json, else compute it (concurrent downstream cells may do so at once: each writes
    a temp file and renames it into place)."""
    out = Path(sb["out"])
    newest = max((Path(p).stat().st_mtime for p in sb["status_paths"] if Path(p).exists()), default=0)
    if not out.is_file() or out.stat().st_mtime < newest:
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        # `biopost cpt select-best --runs DIR... --out JSON`, see biopost/train/cpt_cli.py
        cmd = [sys.executable, "-m", "biopost.train.cpt_cli", "select-best", "--runs", *sb["runs"],
               "--out", str(tmp)]
        log.write(f"[biopost runner] select-best: {' '.join(cmd)}\n".encode())
        log.flush()
        rc = subprocess.run(cmd, cwd=repo_root, stdout=log, stderr=subprocess.STDOUT).returncode
        if rc != 0 or not tmp.is_file():
            raise RuntimeError(f"select-best failed (exit {rc})")
        os.replace(tmp, out)
    return best_text_model(json.loads(out.read_text()), sb["runs"])


def read_from(path, offset: int, limit: int = 1 << 20) -> str:
    """What a log gained after `offset` (at most its last `limit` bytes), as text."""
    try:
        with open(path, "rb") as f:
            f.seek(max(offset, os.path.getsize(path) - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def failure_reason(rc: int, log_path, tail_bytes: int = 65536) -> str:
    """status.json's reason for a failed stage, read from the end of its log: a crash (a Python
    traceback: a bug to report) reads differently from bad input (the stage's one `error:` line,
    exit 1) and from a bad command line (exit 2), though a crash exits 1 too."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - tail_bytes))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        lines = []
    lines = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("[biopost runner")]
    last_traceback = max((i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)")),
                         default=None)
    if last_traceback is not None:
        return f"crashed (exit {rc}): {lines[-1][:300]}"
    errors = [ln for ln in lines if ln.startswith("error:") or ": error:" in ln]
    if rc == 1 and errors:
        return f"user error (exit 1): {errors[-1][:300]}"
    if rc == 2:
        return f"usage error (exit 2): {errors[-1][:300]}" if errors else "usage error (exit 2)"
    if rc > 128:
        return f"killed by signal {rc - 128} (exit {rc})"
    return f"exit code {rc}"


def run_task(entry: dict, repo_root: str, stop=None) -> int:
    """Run one cell; returns the stage's exit code. `stop` (a list) collects signals that
    arrived, so that the local executor can stop after the current cell."""
    received, child = [], None

    def forward(signum, frame):
        received.append(signum)
        if stop is not None:
            stop.append(signum)
        if signum in FORWARDED_SIGNALS and child is not None and child.poll() is None:
            child.send_signal(signum)

    # installed first: a signal before the stage starts is kept and handed to it once it does
    previous = {s: signal.signal(s, forward) for s in (*FORWARDED_SIGNALS, signal.SIGINT)}
    try:
        status_path = Path(entry["status_path"])
        job_id, log_path = job_id_and_log(entry)
        ensure_dir(log_path.parent)
        prev = read_status(status_path) or {}
        started_mono = time.monotonic()
        carried = float(prev.get("elapsed_s") or 0) if prev.get("state") == "requeued" else 0.0
        status = {"schema": SCHEMA, "sweep": entry["sweep"], "stage": entry["stage"], "run_id": entry["run_id"],
                  "cell": entry["cell"], "seed": entry["seed"], "target": entry["target"], "state": "running",
                  "job_id": job_id, "host": socket.gethostname(), "started": now_iso(), "updated": now_iso(),
                  "ended": None, "exit_code": None, "reason": None,
                  "attempt": int(prev.get("attempt") or 0) + 1, "upstream": None, "elapsed_s": None,
                  "log": str(log_path)}

        def finish(state, code, reason=None, **extra):
            status.update(state=state, exit_code=code, reason=reason, updated=now_iso(),
                          ended=None if state == "requeued" else now_iso(),
                          elapsed_s=round(carried + time.monotonic() - started_mono, 3), **extra)
            write_json_atomic(status_path, status)
            return code

        with open(log_path, "ab", buffering=0) as log:
            def say(msg):
                log.write(f"[biopost runner {now_iso()}] {msg}\n".encode())
            say(f"{entry['label']} job {job_id} attempt {status['attempt']}")

            members = entry.get("upstream")
            argv_extra = []
            if members:
                now = upstream_hash_now(members)
                if now is None:
                    states = {m["label"]: (read_status(m["status_path"]) or {}).get("state", "not run")
                              for m in members["members"]}
                    say(f"upstream not done: {states}")
                    return finish("failed", 1, f"upstream not done: {states}")
                picked = members["members"][0]["run_id"]
                if entry.get("select_best"):
                    try:
                        model = resolve_select_best(entry["select_best"], repo_root, log)
                    except Exception as e:  # noqa: BLE001 - any failure here is this cell's failure
                        say(f"select-best: {e}")
                        return finish("failed", 1, f"select-best: {e}")
                    argv_extra = [entry["select_best"]["flag"], model]
                    picked = next((m["run_id"] for m in members["members"] if m["run_id"] in model), picked)
                status["upstream"] = {"run_id": picked, "checkpoint_hash": now}
                before = (prev.get("upstream") or {}).get("checkpoint_hash")
                if before is not None and before != now:
                    removed = clear_outputs(entry)
                    if removed:
                        say(f"upstream output changed since the last run: removed {removed}")
            write_json_atomic(status_path, status)

            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            rc = 0
            try:
                for command in entry["commands"]:
                    script, *argv = command
                    launch = entry.get("launch")
                    slurm_job = ranks.in_slurm_job(env)
                    master = ranks.first_host(env) if launch and slurm_job else None
                    for attempt in range(ranks.RDZV_TRIES if launch and slurm_job else 1):
                        line = ranks.stage_command(launch, sys.executable, script, [*argv, *argv_extra],
                                                   slurm=slurm_job, master=master,
                                                   port=ranks.rendezvous_port(env.get("SLURM_JOB_ID"), attempt),
                                                   job_id=env.get("SLURM_JOB_ID"))
                        say(f"run {script} ({len(argv) + len(argv_extra)} arguments; see the manifest)"
                            + (f" as {shlex.join(line[:line.index(script)])}" if launch else ""))
                        start = os.path.getsize(log_path)
                        child = subprocess.Popen(line, cwd=repo_root, stdout=log, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, env=env)
                        for signum in received:  # arrived before this child existed
                            if signum in FORWARDED_SIGNALS:
                                child.send_signal(signum)
                        rc = child.wait()
                        if rc < 0:  # killed by a signal
                            rc = 128 - rc
                        if rc in (0, REQUEUE_EXIT_CODE) or received or not launch \
                                or not ranks.ADDRESS_IN_USE.search(read_from(log_path, start)):
                            break
                        say("the rendezvous port was taken (address already in use): trying the next one")
                    if rc != 0:
                        break
            except OSError as e:
                say(f"cannot start the stage: {e}")
                rc = 127

            say(f"exit code {rc}")
            if rc == 0:
                kind = "eval" if entry["kind"] == "eval" else "train"
                extra = {"summary": summary} if kind == "train" and (summary := stage_summary(entry["run_dir"])) else {}
                return finish("done", 0, output_hash=output_hash(entry["run_dir"], kind, entry.get("eval_dirs", [])),
                              **extra)
            if rc == REQUEUE_EXIT_CODE:
                return finish("requeued", rc, "checkpointed after a signal; requeued")
            return finish("failed", rc, failure_reason(rc, log_path))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m biopost.sweeps.runner",
        description="Run one cell of a sweep job (started by the sbatch script that `biopost sweep submit` "
                    "writes): status.json, upstream check, the stage as a child process, the exit code.")
    parser.add_argument("--manifest", required=True, help="the job's manifest (JSON)")
    parser.add_argument("--index", required=True, help="the array task id of the cell")
    args = parser.parse_args(argv)
    manifest = json.loads(Path(args.manifest).read_text())
    entry = manifest["tasks"].get(str(args.index))
    if entry is None:
        print(f"{args.manifest}: no task {args.index}", file=sys.stderr)
        return 2
    try:
        rc = run_task(entry, manifest["repo_root"])
    except UserError as e:  # OutputError: status.json or the log cannot be written
        print(f"biopost runner: error: {entry['label']}: {e}", file=sys.stderr)
        return 1
    if rc not in (0, REQUEUE_EXIT_CODE):
        print(f"biopost runner: {entry['label']} failed (exit {rc}); log: "
              f"{job_id_and_log(entry)[1]}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())

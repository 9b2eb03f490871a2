"""status.json: reading, atomic writing, output hashes, and the derived state of a cell.

The runner writes `status.json` (schema biopost.status/v1, docs/contracts.md) at start
(`running`), on requeue (`requeued`) and at the end (`done` / `failed`). What `sweep status`
reports is derived from it, the job ledger and `squeue`:

  done       finished, and its upstream still holds the output it started from
  stale      finished, but its upstream re-ran (output hash changed) or is not done now
  running    running in SLURM (or in a live local process)
  pending    queued in SLURM: waiting for its upstream, for resources, or to restart after a requeue
  failed     the stage failed, or the job ended before the runner started (setup, time limit, ...)
  lost       status says running but its job is gone (killed hard, node failure), or a submitted
             job left the queue without ever starting the runner: treated as failed
  cancelled  its job was cancelled before it started (e.g. its upstream failed)
  skipped    num_train_epochs 0: no job, its input passes through
  new        never submitted
`submit` re-runs failed, lost, stale, cancelled and new cells (RERUN_STATES).
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from biopost.files import write_json_atomic as _write_json_atomic

SCHEMA = "biopost.status/v1"
RERUN_STATES = ("failed", "lost", "stale", "cancelled", "new")
# squeue states in which a job still exists and will (or may) still run
ACTIVE_JOB_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED",
                     "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}
RUNNING_JOB_STATES = {"RUNNING", "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT"}


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_json_atomic(path, data) -> None:
    """Write JSON so that readers see the old file or the new one, never a partial one, with
    the mode a plain open() gives (0o666 & ~umask: other users of the tree can read it); a
    full disk or unwritable directory is an OutputError naming the path (biopost.files)."""
    _write_json_atomic(path, data, indent=1, sort_keys=True, allow_nan=True)


def read_status(path) -> dict | None:
    """The status dict, None when there is none. An unreadable file reads as a failed status
    (so the cell is re-run) whose reason says what was wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return {"schema": SCHEMA, "state": "failed", "reason": f"unreadable {path}: {e}"}
    if not isinstance(data, dict) or data.get("state") not in ("running", "done", "failed", "requeued"):
        return {"schema": SCHEMA, "state": "failed", "reason": f"unreadable {path}: no valid state"}
    return data


def eval_dir_names(splits, labels) -> list:
    """Directory names under eval/ that an evaluation writes: <split>[@<label>], no label for last."""
    return [s if label == "last" else f"{s}@{label}" for label in labels for s in splits]


def output_hash(run_dir, kind: str, eval_dirs=()) -> str | None:
    """sha256 over the small files that identify what a finished cell produced:
    checkpoints/last/trainer_state.json (it holds the fingerprint of the trained tensors),
    else final/*.json (CPT's HF model directory), and for evaluation its metrics.json files."""
    run_dir = Path(run_dir)
    if kind == "eval":
        files = [run_dir / "eval" / d / "metrics.json" for d in eval_dirs]
        files = [f for f in files if f.is_file()]
    else:
        state = run_dir / "checkpoints" / "last" / "trainer_state.json"
        final = run_dir / "final"
        if state.is_file():
            files = [state]
        else:
            files = sorted(final.glob("*.json")) if final.is_dir() else []
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(run_dir).as_posix().encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def group_hash(members: list) -> str | None:
    """Combined hash of a select-best group [(run_id, output_hash)]: changes when any re-ran."""
    if any(h is None for _, h in members):
        return None
    h = hashlib.sha256()
    for run_id, out in sorted(members):
        h.update(f"{run_id}:{out}\n".encode())
    return h.hexdigest()


def done_hash(status: dict | None) -> str | None:
    """The output hash of a finished cell; None when it is not done."""
    if not status or status.get("state") != "done":
        return None
    return status.get("output_hash") or ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def local_job_id() -> str:
    return f"local:{socket.gethostname()}:{os.getpid()}"


def local_job_alive(job_id: str) -> bool | None:
    """For a `local:<host>:<pid>` job: is it alive? None when it ran on another host."""
    _, host, pid = job_id.split(":", 2)
    if host != socket.gethostname():
        return None
    try:
        return _pid_alive(int(pid))
    except ValueError:
        return False


@dataclass
class Derived:
    state: str  # see the module docstring
    reason: str = ""
    job_id: str | None = None


def derive(status: dict | None, *, skipped: bool = False, upstream_hash_now=None, has_upstream: bool = False,
           ledger_job: str | None = None, queue: dict | None = None) -> Derived:
    """The reported state of one cell.

    status: its status.json (or None); upstream_hash_now: the output hash its upstream holds
    now (None when the upstream is not done); ledger_job: the job that was last submitted for
    it ("A_T"); queue: squeue's {job id: (state, reason)}, None when squeue is unavailable.
    """
    if skipped:
        return Derived("skipped", "num_train_epochs is 0: the input passes through")
    q = queue.get(ledger_job) if (queue is not None and ledger_job) else None
    if ledger_job and q and q[0] in ACTIVE_JOB_STATES and (status is None or status.get("job_id") != ledger_job):
        # a newer submission than what status.json describes is in the queue
        state = "running" if q[0] in RUNNING_JOB_STATES else "pending"
        return Derived(state, f"{q[0].lower()} ({q[1]})" if q[1] and q[1] != "None" else q[0].lower(), ledger_job)
    if status is None:
        if q and q[0] == "CANCELLED":
            return Derived("cancelled", f"job {ledger_job} cancelled before it started ({q[1]})", ledger_job)
        if q and q[0] not in ACTIVE_JOB_STATES:
            return Derived("failed", f"job {ledger_job} ended {q[0]} before the runner started "
                           f"(see its log)", ledger_job)
        if ledger_job and queue is not None:  # SLURM forgot it (MinJobAge) and it never started
            return Derived("lost", f"job {ledger_job} left the queue before the runner started "
                           f"(see its log)", ledger_job)
        return Derived("new", "", ledger_job)

    job = status.get("job_id")
    state = status["state"]
    if state == "done":
        if has_upstream:
            recorded = (status.get("upstream") or {}).get("checkpoint_hash")
            if upstream_hash_now is None:
                return Derived("stale", "its upstream is not done now", job)
            if recorded != upstream_hash_now:
                return Derived("stale", "its upstream re-ran: the checkpoint it started from changed", job)
        return Derived("done", "", job)
    if state in ("running", "requeued"):
        if job and job.startswith("local:"):
            alive = local_job_alive(job)
            if alive is False:
                return Derived("lost", f"status says {state} but local process {job} is gone", job)
            return Derived("running" if state == "running" else "pending", state, job)
        if queue is None:
            return Derived("running" if state == "running" else "pending",
                           f"{state} (not verified: squeue unavailable)", job)
        qj = queue.get(job)
        if qj and qj[0] in ACTIVE_JOB_STATES:
            if qj[0] in RUNNING_JOB_STATES:
                return Derived("running", f"attempt {status.get('attempt', 1)}", job)
            return Derived("pending", f"requeued, waiting to restart ({qj[1]})", job)
        ended = f" (squeue: {qj[0]})" if qj else " (no longer in squeue)"
        return Derived("lost", f"status says {state} but job {job} is gone{ended}", job)
    return Derived("failed", status.get("reason") or "failed", job)


def log_tail(path, lines: int = 15) -> list:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]

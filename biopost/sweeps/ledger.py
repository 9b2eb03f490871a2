"""The job ledger: which SLURM job was last submitted for each cell of a sweep.

status.json only exists once a job has started, so a pending cell is known only from here:
`<work_root>/<sweep>/.biopost/jobs.json` maps each cell label ("sft/<run id>",
"eval/sft/<run id>") to its array task ("<array job>_<task>") and the log that SLURM writes
before the runner starts. `submit` holds `.biopost/submit.lock` while it reads and writes it.
"""
from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from pathlib import Path

from biopost.errors import UserError
from biopost.files import OutputError, ensure_dir
from biopost.sweeps.status import now_iso, write_json_atomic

SCHEMA = "biopost.jobs/v1"


class LedgerError(UserError, RuntimeError):
    """A job ledger that cannot be read; the message names the file."""


def state_dir(work_root, sweep: str) -> Path:
    return Path(work_root) / sweep / ".biopost"


class Ledger:
    def __init__(self, work_root, sweep: str):
        self.path = state_dir(work_root, sweep) / "jobs.json"
        self.cells: dict = {}
        self.jobs: list = []
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return
        except OSError as e:
            raise LedgerError(f"unreadable job ledger {self.path}: {e.strerror or e}") from None
        except (ValueError, RecursionError) as e:  # not JSON (or not UTF-8)
            raise LedgerError(f"unreadable job ledger {self.path}: not valid JSON ({e}); "
                              "move it aside to start a fresh one") from None
        cells, jobs = (data.get("cells"), data.get("jobs")) if isinstance(data, dict) else (0, 0)
        if not isinstance(cells, (dict, type(None))) or not isinstance(jobs, (list, type(None))):
            raise LedgerError(f"unreadable job ledger {self.path}: expected an object with "
                              "'cells' (an object) and 'jobs' (a list)")
        self.cells = dict(cells or {})
        self.jobs = list(jobs or [])

    def job_for(self, label: str) -> str | None:
        entry = self.cells.get(label)
        return entry.get("job_id") if entry else None

    def entry(self, label: str) -> dict:
        return self.cells.get(label) or {}

    def record(self, array_job: str, job_label: str, tasks: dict, logs: dict, manifest: str) -> None:
        """tasks: {task id: cell label}; logs: {task id: the SLURM log of that task}. Saved at
        once, so a submit that dies half-way leaves a ledger naming every job it did submit."""
        for task_id, cell_label in tasks.items():
            self.cells[cell_label] = {"job_id": f"{array_job}_{task_id}", "submitted": now_iso(),
                                      "manifest": manifest, "log": logs[task_id]}
        self.jobs.append({"job_id": str(array_job), "label": job_label, "submitted": now_iso(),
                          "tasks": sorted(tasks), "manifest": manifest})
        write_json_atomic(self.path, {"schema": SCHEMA, "cells": self.cells, "jobs": self.jobs})

    def array_jobs(self) -> list:
        return [j["job_id"] for j in self.jobs]


@contextmanager
def submit_lock(work_root, sweep: str):
    """One `submit` of a sweep at a time (a second one waits)."""
    path = state_dir(work_root, sweep) / "submit.lock"
    ensure_dir(path.parent)
    try:
        f = open(path, "a")  # "a": never truncates; the lock is the flock, not the content
    except OSError as e:
        raise OutputError(path, e) from None
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

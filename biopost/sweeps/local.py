"""The local executor: the cells a submit would run, one after another on this machine, in
dependency order (each stage's cells, then their evaluations), through the same runner as a
SLURM job. For laptops, the demo and the tests.

Like SLURM's `--kill-on-invalid-dep`, a cell whose upstream did not finish is not started.
A stage that exits with the requeue code (it checkpointed after a signal) is run again at once
and resumes, unless this process itself was asked to stop (Ctrl-C, SIGTERM): then it stops.
"""
from __future__ import annotations

import time

from biopost.sweeps.plan import Plan, dependencies
from biopost.sweeps.runner import run_task
from biopost.sweeps.status import read_status
from biopost.signals import REQUEUE_EXIT_CODE

MAX_REQUEUES = 3


def run_local(plan: Plan, say=print) -> int:
    """Run the plan's cells; returns 0 when every one finished, 1 otherwise."""
    cells = plan.to_run()
    failed, stop = [], []
    for n, cell in enumerate(cells, 1):
        if stop:
            say(f"stopped by signal {stop[0]}: {len(cells) - n + 1} cell(s) not run")
            return 1
        not_done = [u.label for u in dependencies(cell)
                    if (read_status(u.status_path) or {}).get("state") != "done"]
        if not_done:
            say(f"[{n}/{len(cells)}] {cell.label}: not run, upstream not done: {', '.join(not_done)}")
            failed.append(cell.label)
            continue
        entry = plan.manifest_entry(cell)
        t0 = time.monotonic()
        say(f"[{n}/{len(cells)}] {cell.label} ...")
        rc = run_task(entry, str(plan.options.repo_root), stop=stop)
        requeues = 0
        while rc == REQUEUE_EXIT_CODE and not stop and requeues < MAX_REQUEUES:
            requeues += 1
            say(f"    checkpointed (exit {rc}): resuming, attempt {requeues + 1}")
            rc = run_task(entry, str(plan.options.repo_root), stop=stop)
        status = read_status(cell.status_path) or {}
        outcome = "done" if rc == 0 else f"{status.get('state', 'failed')} (exit {rc}); log: {status.get('log')}"
        say(f"    {outcome} in {time.monotonic() - t0:.1f} s")
        if rc != 0:
            failed.append(cell.label)
    if failed:
        say(f"{len(failed)} of {len(cells)} cell(s) did not finish: {', '.join(failed)}")
        return 1
    return 0

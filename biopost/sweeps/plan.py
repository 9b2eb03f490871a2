"""What a submit does: the state of every cell, which cells run now, how they group into array
jobs and what each job depends on, the manifests the runner reads, and the GPU-hour estimate.

Decisions, cell by cell in dependency order:
  skipped                      -> no job (status.json: done, skipped: true)
  done / running / pending     -> kept: never re-run, never duplicated
  failed / lost / stale / cancelled / new -> run, if its upstream is done, queued or runs now
  done, but its upstream runs now -> stale: run after it (the runner then resumes it when the
                                     upstream's output turned out unchanged, else starts fresh)

Jobs: a root stage's cells form one array whose task ids are the cell indices; a downstream
cell keeps its upstream's task id, so its array can be `aftercorr` on the upstream array. A
fan-out (several cells per upstream cell) becomes several arrays ("lanes"), each aligned with
the upstream one. A cell whose upstream is queued from an earlier submit under another task id
gets `afterok` on that exact task; a select-best group waits `afterok` on every cpt task.
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from biopost.sweeps import slurm
from biopost.sweeps.binding import eval_commands, stage_command
from biopost.sweeps.ranks import world_of
from biopost.sweeps.ledger import Ledger, state_dir
from biopost.sweeps.spec import Cell, Expansion, Spec, expand, resources_for, sanitize
from biopost.sweeps.status import (RERUN_STATES, Derived, derive, done_hash, eval_dir_names, group_hash,
                                   read_status)

MANIFEST_SCHEMA = "biopost.manifest/v1"


@dataclass
class Options:
    work_root: Path
    repo_root: Path
    executor: str = "slurm"  # or "local"
    only_eval: bool = False
    no_eval: bool = False
    resources: dict = field(default_factory=dict)  # command-line overrides (partition, account, time)
    python: str = ""
    cluster_env: str = ""


@dataclass
class CellPlan:
    cell: Cell
    derived: Derived
    action: str  # run | keep | skip | blocked
    why: str = ""


@dataclass
class Job:
    """One array job: cells of one stage (or of one stage's evaluation) with distinct task ids."""
    label: str  # "sft.0", "eval-sft.0"
    resources_key: str  # stage name, or "eval"
    cells: list = field(default_factory=list)
    dep_kind: str | None = None  # aftercorr | afterok
    dep_refs: list = field(default_factory=list)  # Job (aftercorr), (Job, task id) or "A" / "A_T" strings
    job_id: str | None = None  # once submitted

    @property
    def task_ids(self) -> list:
        return [c.task_id for c in self.cells]

    def dependency(self, symbolic: bool = False) -> str | None:
        """e.g. "aftercorr:123"; with symbolic=True, jobs of this submission appear as @label."""
        if not self.dep_kind:
            return None

        def ref(r):
            if isinstance(r, Job):
                return f"@{r.label}" if symbolic or not r.job_id else r.job_id
            if isinstance(r, tuple):
                job, task = r
                return f"@{job.label}_{task}" if symbolic or not job.job_id else f"{job.job_id}_{task}"
            return r
        return f"{self.dep_kind}:" + ":".join(ref(r) for r in self.dep_refs)


def dependencies(cell: Cell) -> list:
    """The cells a cell needs finished: its evaluated cell, its select-best group, or its
    nearest upstream that actually runs."""
    if cell.kind == "eval":
        return [cell.target]
    if cell.select_best_group:
        return list(cell.select_best_group)
    up = cell.effective_upstream()
    return [up] if up is not None else []


def upstream_members(cell: Cell) -> dict | None:
    deps = dependencies(cell)
    if not deps:
        return None
    return {"group": bool(cell.select_best_group),
            "members": [{"label": d.label, "run_id": d.run_id, "status_path": str(d.status_path)} for d in deps]}


def upstream_hash_now(members: dict | None, statuses: dict | None = None) -> str | None:
    """The output hash the upstream holds now: what a runner records at start and what a done
    cell is compared against. `statuses` caches read_status by path."""
    if not members:
        return None

    def status(path):
        if statuses is not None and path in statuses:
            return statuses[path]
        return read_status(path)
    if members["group"]:
        return group_hash([(m["run_id"], done_hash(status(m["status_path"]))) for m in members["members"]])
    return done_hash(status(members["members"][0]["status_path"]))


class Plan:
    def __init__(self, spec: Spec, options: Options, queue: dict | None = None, read_queue: bool = True):
        self.spec = spec
        self.options = options
        self.exp: Expansion = expand(spec, options.work_root, root=options.repo_root)
        self.ledger = Ledger(options.work_root, spec.name)
        if options.executor == "slurm" and queue is None and read_queue:
            queue = slurm.squeue()
        self.queue = queue
        self.cells = self.exp.all_cells()
        self.statuses = {str(c.status_path): read_status(c.status_path) for c in self.cells}
        self.plans: dict = {}
        for cell in self.cells:
            self.plans[cell.label] = self._decide(cell)
        self.jobs: list = self._group_jobs() if options.executor == "slurm" else []

    # -------------------------------------------------------------- state and action
    def status(self, cell: Cell) -> dict | None:
        return self.statuses.get(str(cell.status_path))

    def derive(self, cell: Cell) -> Derived:
        members = upstream_members(cell)
        return derive(self.status(cell), skipped=cell.skipped, has_upstream=members is not None,
                      upstream_hash_now=upstream_hash_now(members, self.statuses),
                      ledger_job=self.ledger.job_for(cell.label), queue=self.queue)

    def _decide(self, cell: Cell) -> CellPlan:
        d = self.derive(cell)
        if d.state == "skipped":
            return CellPlan(cell, d, "skip", "no job, no evaluation")
        deps = dependencies(cell)
        if d.state == "done" and any(self.plans[u.label].action == "run" for u in deps):
            d = Derived("stale", "its upstream re-runs now", d.job_id)
        if d.state not in RERUN_STATES:
            return CellPlan(cell, d, "keep")
        if self.options.only_eval and cell.kind != "eval":
            return CellPlan(cell, d, "keep", "--only-eval")
        if self.options.no_eval and cell.kind == "eval":
            return CellPlan(cell, d, "keep", "--no-eval")
        for u in deps:
            up = self.plans[u.label]
            if up.action != "run" and up.derived.state not in ("done", "running", "pending"):
                return CellPlan(cell, d, "blocked", f"upstream {u.label} is {up.derived.state}")
        return CellPlan(cell, d, "run")

    def to_run(self) -> list:
        return [c for c in self.cells if self.plans[c.label].action == "run"]

    def to_skip(self) -> list:
        return [c for c in self.cells if self.plans[c.label].action == "skip"]

    # -------------------------------------------------------------- array jobs
    def _group_jobs(self) -> list:
        jobs, lanes, job_of = [], {}, {}
        counters: dict = {}
        for cell in self.to_run():
            kind, refs = None, []
            deps = dependencies(cell)
            if cell.select_best_group:
                for u in deps:
                    if u.label in job_of:
                        refs.append((job_of[u.label], u.task_id))
                    elif self.plans[u.label].derived.state in ("running", "pending"):
                        refs.append(self.plans[u.label].derived.job_id)
                kind = "afterok" if refs else None
            elif deps:
                u = deps[0]
                if u.label in job_of:
                    kind, refs = "aftercorr", [job_of[u.label]]
                elif self.plans[u.label].derived.state in ("running", "pending") and self.plans[u.label].derived.job_id:
                    job_id = self.plans[u.label].derived.job_id
                    array_job, _, task = job_id.partition("_")
                    if task == str(cell.task_id):
                        kind, refs = "aftercorr", [array_job]
                    else:  # queued under another task id (the spec changed): wait for exactly that task
                        kind, refs = "afterok", [job_id]
            group = f"eval-{cell.target.stage}" if cell.kind == "eval" else cell.stage
            ref_key = tuple(r.label if isinstance(r, Job) else f"{r[0].label}_{r[1]}" if isinstance(r, tuple)
                            else r for r in refs)
            key = (group, kind, ref_key)
            for job in lanes.setdefault(key, []):
                if cell.task_id not in job.task_ids:
                    break
            else:
                n = counters.get(group, 0)
                counters[group] = n + 1
                job = Job(label=f"{group}.{n}", resources_key="eval" if cell.kind == "eval" else cell.stage,
                          dep_kind=kind, dep_refs=refs)
                lanes[key].append(job)
                jobs.append(job)
            job.cells.append(cell)
            job_of[cell.label] = job
        return jobs

    # -------------------------------------------------------------- manifests and scripts
    def resources(self, key: str) -> dict:
        return resources_for(self.spec, key, self.options.resources)

    def manifest_entry(self, cell: Cell) -> dict:
        spec = self.spec
        select_best, launch = None, None
        if cell.kind == "eval":
            commands = [[spec.eval.script, *argv] for argv in eval_commands(spec, cell)]
            labels = spec.eval.checkpoints
            target = {"stage": cell.target.stage, "run_id": cell.run_id,
                      "checkpoint": labels[0] if len(labels) == 1 else ",".join(labels)}
            eval_dirs = eval_dir_names(spec.eval.splits, labels)
        else:
            argv, select_best = stage_command(spec, cell)
            commands = [[spec.stages[cell.stage].script, *argv]]
            target, eval_dirs = None, []

        res = self.resources("eval" if cell.kind == "eval" else cell.stage)
        nodes, procs = world_of(res)
        if nodes * procs > 1:
            launch = {"nodes": nodes, "procs_per_node": procs, "cpus": res.get("cpus")}
        return {"label": cell.label, "sweep": cell.sweep, "stage": cell.stage, "kind": cell.kind,
                "launch": launch, "run_id": cell.run_id, "run_dir": str(cell.run_dir), "status_path": str(cell.status_path),
                "cell": cell.cell, "seed": cell.seed, "target": target, "commands": commands,
                "upstream": upstream_members(cell), "select_best": select_best, "eval_dirs": eval_dirs}

    def manifest(self, job: Job) -> dict:
        return {"schema": MANIFEST_SCHEMA, "sweep": self.spec.name, "job": job.label,
                "repo_root": str(self.options.repo_root),
                "tasks": {str(c.task_id): self.manifest_entry(c) for c in job.cells}}

    def job_files(self, job: Job, stamp: str) -> tuple[Path, Path]:
        """(manifest path, script path) of a job: named by submit time, label and content."""
        text = json.dumps(self.manifest(job), sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        folder = state_dir(self.options.work_root, self.spec.name) / "jobs"
        base = f"{stamp}-{job.label}-{digest}"
        return folder / f"{base}.json", folder / f"{base}.sh"

    def sbatch_output(self, job: Job) -> str:
        """Where SLURM writes a task's output before the runner starts (the runner then writes
        the stage's output to <run dir>/logs/)."""
        name = self.job_name(job)
        path = Path(self.options.work_root) / self.spec.name / "logs" / name
        return slurm.log_pattern(str(path)) + "-%A_%a.out"

    def job_name(self, job: Job) -> str:
        return sanitize(f"{self.spec.name}.{job.label}", limit=120)

    def script(self, job: Job, manifest_path: Path, symbolic: bool = False) -> str:
        res = self.resources(job.resources_key)
        return slurm.batch_script(
            sweep=self.spec.name, job_label=job.label, job_name=self.job_name(job), task_ids=job.task_ids,
            resources=res, dependency=job.dependency(symbolic=symbolic), repo_root=str(self.options.repo_root),
            python=res.get("python") or self.options.python, manifest=str(manifest_path),
            output=self.sbatch_output(job), cluster_env=self.options.cluster_env, n_cells=len(job.cells))

    # -------------------------------------------------------------- GPU hours
    def estimate(self) -> list:
        """Per stage (and per evaluated stage): cells, cells to run, hours per cell and where that
        number comes from, GPUs per cell, GPU-hours in all and for the cells to run."""
        rows = []
        groups = [(name, cells, name) for name, cells in self.exp.stages.items()]
        groups += [(f"eval-{name}", cells, "eval") for name, cells in self.exp.evals.items()]
        for name, cells, key in groups:
            real = [c for c in cells if not c.skipped]
            res = self.resources(key)
            measured = [s["elapsed_s"] for c in real
                        if (s := self.status(c)) and s.get("state") == "done" and s.get("elapsed_s")]
            if measured:
                hours, source = statistics.median(measured) / 3600, f"median of {len(measured)} finished"
            elif res.get("est_hours") is not None:
                hours, source = float(res["est_hours"]), "resources.est_hours"
            else:
                hours, source = None, "unknown (set resources.est_hours)"
            gpus = res.get("gpus") or 0
            gpus = int(str(gpus).rsplit(":", 1)[-1])
            n_run = sum(1 for c in real if self.plans[c.label].action == "run")
            rows.append({"stage": name, "cells": len(real), "skipped": len(cells) - len(real), "to_run": n_run,
                         "hours_per_cell": hours, "source": source, "gpus": gpus,
                         "gpu_hours": None if hours is None else len(real) * hours * gpus,
                         "gpu_hours_to_run": None if hours is None else n_run * hours * gpus})
        return rows


def default_cluster_env(repo_root: Path) -> str:
    return os.environ.get("BIOPOST_CLUSTER_ENV") or str(Path(repo_root) / "cluster_env.sh")

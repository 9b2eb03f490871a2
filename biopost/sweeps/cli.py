"""`biopost sweep plan|submit|status|cancel SPEC`: run a declarative sweep on SLURM or locally.

Run it from the repo root: paths in a spec (scripts, configs) are relative to it, and the jobs
start there. docs/sweeps.md is the user guide.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from biopost.sweeps import ranks, slurm
from biopost.sweeps.ledger import submit_lock
from biopost.sweeps.plan import Options, Plan, default_cluster_env
from biopost.errors import UserError
from biopost.files import ensure_dir, write_text_atomic
from biopost.sweeps.spec import SpecError, default_work_root, load_spec
from biopost.sweeps.status import ACTIVE_JOB_STATES, SCHEMA, log_tail, now_iso, write_json_atomic

EPILOG = """\
examples:
  biopost sweep plan sweeps/dna_sft_epochs.yaml                # cells, jobs, GPU-hours
  biopost sweep plan sweeps/dna_sft_epochs.yaml --dry-run      # + the exact sbatch scripts
  biopost sweep submit sweeps/dna_sft_epochs.yaml --partition gpu --time 12:00:00
  biopost sweep submit sweeps/demo.yaml --executor local       # run here, in dependency order
  biopost sweep status sweeps/dna_sft_epochs.yaml              # done / running / pending / failed ...
  biopost sweep submit sweeps/dna_sft_epochs.yaml              # again: re-runs failed/lost/stale only
  biopost sweep cancel sweeps/dna_sft_epochs.yaml

Outputs go to $BIOPOST_WORK_ROOT/<sweep>/<stage>/<run id>/ (default ./runs). Jobs source
$BIOPOST_CLUSTER_ENV (default <repo>/cluster_env.sh) when it exists, then resources.setup.
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="sweep spec (YAML), e.g. sweeps/dna_sft_epochs.yaml")
    p.add_argument("--work_root", "--work-root", default=None,
                   help="root of the output tree (default: $BIOPOST_WORK_ROOT, else ./runs)")


def _submit_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--executor", choices=("slurm", "local"), default="slurm",
                   help="slurm: array jobs through sbatch (default); local: run here, one cell after another")
    p.add_argument("--only-eval", "--only_eval", action="store_true",
                   help="(re-)submit only evaluation cells whose stage cell is done")
    p.add_argument("--no-eval", "--no_eval", action="store_true", help="leave evaluation cells out")
    p.add_argument("--partition", help="override resources.partition of every job")
    p.add_argument("--account", help="override resources.account of every job")
    p.add_argument("--time", help="override resources.time of every job (e.g. 12:00:00)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="biopost sweep", description=__doc__, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="{plan,submit,status,cancel}")
    sub.required = True
    p = sub.add_parser("plan", help="show cells, jobs, dependencies and the GPU-hour estimate",
                       description="Show what `submit` would do: every cell's state and action, the array "
                                   "jobs and their dependencies, and GPU-hours (cells x resources.est_hours, "
                                   "or the median measured time of finished cells of the same stage).")
    _common(p)
    _submit_flags(p)
    p.add_argument("--dry-run", "--dry_run", action="store_true", help="also print the exact sbatch scripts")
    p = sub.add_parser("submit", help="submit the cells that need to run (idempotent)",
                       description="Submit one array job per stage and fan-out lane, chained with "
                                   "--dependency=aftercorr; skips done cells, re-runs failed / lost / stale "
                                   "ones, never duplicates running or pending ones.")
    _common(p)
    _submit_flags(p)
    p.add_argument("--dry-run", "--dry_run", action="store_true", help="print the scripts, submit nothing")
    p = sub.add_parser("status", help="per stage and cell: done / running / pending / failed / lost / stale ...",
                       description="Per stage and cell: done, running, pending, failed, lost, stale, cancelled, "
                                   "skipped or new, with the log tail of failed cells.")
    _common(p)
    p.add_argument("--json", action="store_true", help="one JSON object per cell instead of the table")
    p.add_argument("--tail", type=int, default=10, help="log lines shown per failed cell (default 10)")
    p = sub.add_parser("cancel", help="cancel this sweep's queued and running jobs",
                       description="scancel every queued or running array task of this sweep.")
    _common(p)
    return parser


def _options(args, executor: str) -> Options:
    repo_root = Path.cwd().resolve()
    work_root = Path(args.work_root) if args.work_root else default_work_root()
    overrides = {k: getattr(args, k, None) for k in ("partition", "account", "time")}
    return Options(work_root=work_root.resolve() if not work_root.is_absolute() else work_root,
                   repo_root=repo_root, executor=executor,
                   only_eval=getattr(args, "only_eval", False), no_eval=getattr(args, "no_eval", False),
                   resources={k: v for k, v in overrides.items() if v is not None},
                   python=sys.executable, cluster_env=default_cluster_env(repo_root))


def _check_overrides(spec, options: Options) -> None:
    from biopost.sweeps.spec import check_resources
    check_resources(spec.path, "command line", options.resources)


def _missing_scripts(plan: Plan) -> list:
    spec, root = plan.spec, plan.options.repo_root
    scripts = {f"stages.{s.name}.script": s.script for s in spec.stages.values()}
    if spec.eval and not plan.options.no_eval:
        scripts["eval.script"] = spec.eval.script
    return [f"{key}: {path}" for key, path in scripts.items() if not (root / path).is_file()]


# ------------------------------------------------------------------------ plan
def print_plan(plan: Plan, out=print) -> None:
    spec, opts = plan.spec, plan.options
    out(f"sweep {spec.name}  spec {spec.path}  work root {opts.work_root / spec.name}")
    if opts.executor == "slurm" and plan.queue is None:
        out("  (squeue unavailable: queued and running jobs cannot be seen)")
    groups = [(name, cells) for name, cells in plan.exp.stages.items()]
    groups += [(f"eval of {name}", cells) for name, cells in plan.exp.evals.items()]
    for name, cells in groups:
        run = sum(plan.plans[c.label].action == "run" for c in cells)
        out(f"{name}: {len(cells)} cell(s), {run} to run")
        for c in cells:
            p = plan.plans[c.label]
            what = {"run": "-> run", "keep": "", "skip": "", "blocked": "-> blocked"}[p.action]
            note = "; ".join(x for x in (p.derived.reason, p.why) if x)
            out(f"  {c.run_id:<40} {p.derived.state:<9} {what:<10} {note}".rstrip())
    if opts.executor == "slurm":
        out(f"jobs: {len(plan.jobs)} array job(s)")
        for job in plan.jobs:
            dep = job.dependency(symbolic=True) or "no dependency"
            out(f"  {job.label:<14} --array={slurm.array_spec(job.task_ids)}  {len(job.cells)} cell(s)  {dep}")
    out("GPU-hours (cells x hours per cell x GPUs per cell):")
    total = todo = 0.0
    unknown = False
    for row in plan.estimate():
        if row["gpu_hours"] is None:
            unknown = True
            out(f"  {row['stage']:<14} {row['cells']} cell(s) x ? h: {row['source']}")
            continue
        total += row["gpu_hours"]
        todo += row["gpu_hours_to_run"]
        out(f"  {row['stage']:<14} {row['cells']} cell(s) x {row['hours_per_cell']:.2f} h ({row['source']}) "
            f"x {row['gpus']} GPU = {row['gpu_hours']:.1f} GPU-h ({row['gpu_hours_to_run']:.1f} to run)")
    out(f"  total {total:.1f} GPU-h, {todo:.1f} GPU-h to run" + (" (+ unknown)" if unknown else ""))


def print_scripts(plan: Plan, out=print) -> None:
    stamp = "<submit time>"
    for job in plan.jobs:
        manifest_path, script_path = plan.job_files(job, stamp)
        out("")
        out(f"# ===== job {job.label}: sbatch --parsable {shlex.quote(str(script_path))}")
        out("#       (@<job> in a dependency stands for the id sbatch returns for that job)")
        out(plan.script(job, manifest_path, symbolic=True).rstrip("\n"))
        out(f"# ===== tasks of {job.label} (manifest {manifest_path}):")
        for cell in job.cells:
            entry = plan.manifest_entry(cell)
            for script, *argv in entry["commands"]:
                line = ranks.stage_command(entry.get("launch"), "python", script, argv, slurm=True,
                                           master="<first host of the job>",
                                           port=f"<{ranks.RDZV_PORT_BASE} + job id mod {ranks.RDZV_PORT_SPAN}>",
                                           job_id="<job id>")
                out(f"#   task {cell.task_id} {cell.label}: {shlex.join(line)}")
            if entry["select_best"]:
                out(f"#     + {entry['select_best']['flag']} <best run of select-best "
                    f"-> {entry['select_best']['out']}>")


# ------------------------------------------------------------------------ submit
def write_skipped(plan: Plan) -> int:
    n = 0
    for cell in plan.to_skip():
        st = plan.status(cell)
        if st and st.get("skipped") and st.get("state") == "done":
            continue
        now = now_iso()
        write_json_atomic(cell.status_path, {
            "schema": SCHEMA, "sweep": cell.sweep, "stage": cell.stage, "run_id": cell.run_id,
            "cell": cell.cell, "seed": cell.seed, "target": None, "state": "done", "skipped": True,
            "job_id": None, "host": None, "started": now, "updated": now, "ended": now, "exit_code": 0,
            "reason": "num_train_epochs is 0: skipped, its input passes through", "attempt": 0,
            "upstream": None, "elapsed_s": 0, "output_hash": None})
        n += 1
    return n


def release_requeue_holds(plan: Plan) -> None:
    """A requeued task whose own `scontrol update StartTime=now+5` did not stick waits ~121 s
    on BeginTime; from outside, StartTime=now starts it within seconds (RECIPES)."""
    for cell in plan.cells:
        d = plan.plans[cell.label].derived
        st = plan.status(cell) or {}
        if d.state == "pending" and st.get("state") == "requeued" and "BeginTime" in d.reason and d.job_id:
            slurm.release_hold(d.job_id)


def submit_slurm(plan: Plan, out=print) -> int:
    if not plan.jobs:
        out("nothing to submit")
        return 0
    ledger = plan.ledger
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    ensure_dir(plan.options.work_root / plan.spec.name / "logs")
    for job in plan.jobs:
        manifest_path, script_path = plan.job_files(job, stamp)
        write_json_atomic(manifest_path, plan.manifest(job))
        write_text_atomic(script_path, plan.script(job, manifest_path))
        job.job_id = slurm.sbatch(script_path)
        output = plan.sbatch_output(job)
        ledger.record(job.job_id, job.label, {c.task_id: c.label for c in job.cells},
                      {c.task_id: slurm.expand_log_pattern(output, job.job_id, c.task_id) for c in job.cells},
                      str(manifest_path))
        dep = job.dependency() or "no dependency"
        out(f"submitted {job.label} as job {job.job_id}: --array={slurm.array_spec(job.task_ids)} "
            f"({len(job.cells)} cell(s)), {dep}")
    out(f"{len(plan.jobs)} array job(s), {sum(len(j.cells) for j in plan.jobs)} cell(s) submitted")
    return 0


def cmd_plan_or_submit(args, submit: bool) -> int:
    spec = load_spec(args.spec)
    options = _options(args, args.executor)
    _check_overrides(spec, options)
    dry = getattr(args, "dry_run", False)
    if not submit or dry:
        plan = Plan(spec, options)
        print_plan(plan)
        for problem in _missing_scripts(plan):
            print(f"warning: script not found: {problem}")
        if dry:
            if options.executor == "slurm":
                print_scripts(plan)
            else:
                for cell in plan.to_run():
                    for command in plan.manifest_entry(cell)["commands"]:
                        print(f"# {cell.label}: {shlex.join(['python', *command])}")
        return 0
    if options.executor == "slurm" and not slurm.available():
        print("biopost sweep submit: sbatch/squeue/scancel/scontrol not found; on a machine without SLURM "
              "use --executor local (or scripts/local_slurm.sh start for a one-node cluster)", file=sys.stderr)
        return 2
    with submit_lock(options.work_root, spec.name):
        plan = Plan(spec, options)
        missing = _missing_scripts(plan)
        if missing:
            print("biopost sweep submit: script(s) not found (paths are relative to the repo root, "
                  "the current directory):\n  " + "\n  ".join(missing), file=sys.stderr)
            return 2
        n = write_skipped(plan)
        if n:
            print(f"{n} skipped cell(s) (num_train_epochs 0) marked done")
        for cell in plan.cells:
            p = plan.plans[cell.label]
            if p.action == "blocked":
                print(f"not submitted: {cell.label}: {p.why}")
        if options.executor == "local":
            from biopost.sweeps.local import run_local
            todo = plan.to_run()
            if not todo:
                print("nothing to run")
                return 0
            print(f"running {len(todo)} cell(s) locally")
            return run_local(plan)
        release_requeue_holds(plan)
        return submit_slurm(plan)


# ------------------------------------------------------------------------ status / cancel
def cmd_status(args) -> int:
    spec = load_spec(args.spec)
    options = _options(args, "slurm")
    plan = Plan(spec, options)
    rows = []
    for cell in plan.cells:
        d = plan.plans[cell.label].derived
        st = plan.status(cell) or {}
        log = st.get("log") or plan.ledger.entry(cell.label).get("log")
        rows.append({"label": cell.label, "stage": cell.stage, "target": cell.target.stage if cell.target else None,
                     "run_id": cell.run_id, "state": d.state, "reason": d.reason, "job_id": d.job_id,
                     "elapsed_s": st.get("elapsed_s"), "log": log, "cell": cell.cell, "seed": cell.seed})
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    print(f"sweep {spec.name}  work root {options.work_root / spec.name}")
    if plan.queue is None:
        print("  (squeue unavailable: running / pending cannot be verified)")
    groups = [(name, cells) for name, cells in plan.exp.stages.items()]
    groups += [(f"eval of {name}", cells) for name, cells in plan.exp.evals.items()]
    by_label = {r["label"]: r for r in rows}
    for name, cells in groups:
        counts = {}
        for c in cells:
            counts[by_label[c.label]["state"]] = counts.get(by_label[c.label]["state"], 0) + 1
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        for c in cells:
            r = by_label[c.label]
            job = f"job {r['job_id']}" if r["job_id"] else ""
            took = ""
            if r["elapsed_s"] is not None and r["state"] in ("done", "stale"):
                took = f"{r['elapsed_s']:.1f} s" if r["elapsed_s"] < 10 else f"{r['elapsed_s']:.0f} s"
            print(f"  {c.run_id:<40} {r['state']:<9} {job:<18} {took:>8}  {r['reason']}".rstrip())
            if r["state"] in ("failed", "lost") and r["log"]:
                tail = log_tail(r["log"], args.tail)
                print(f"      log {r['log']}" + (":" if tail else " (empty or missing)"))
                for line in tail:
                    print(f"      | {line}")
    return 0


def cmd_cancel(args) -> int:
    spec = load_spec(args.spec)
    options = _options(args, "slurm")
    if not slurm.available():
        print("biopost sweep cancel: scancel not found", file=sys.stderr)
        return 2
    plan = Plan(spec, options)
    if plan.queue is None:
        print("biopost sweep cancel: squeue failed: cannot tell which jobs are queued", file=sys.stderr)
        return 1
    # every task of the ledger still in the queue (also cells an edited spec no longer has),
    # and every cell the plan sees running or pending
    ids = {entry["job_id"] for entry in plan.ledger.cells.values()
           if plan.queue.get(entry["job_id"], ("",))[0] in ACTIVE_JOB_STATES}
    ids |= {p.derived.job_id for p in plan.plans.values()
            if p.derived.state in ("running", "pending") and p.derived.job_id
            and not p.derived.job_id.startswith("local:")}
    ids = sorted(ids)
    if not ids:
        print("no queued or running jobs")
        return 0
    slurm.scancel(ids)
    print(f"cancelled {len(ids)} array task(s): {' '.join(ids)}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except BrokenPipeError:  # `biopost sweep plan ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(args) -> int:
    try:
        if args.command == "plan":
            return cmd_plan_or_submit(args, submit=False)
        if args.command == "submit":
            return cmd_plan_or_submit(args, submit=True)
        if args.command == "status":
            return cmd_status(args)
        return cmd_cancel(args)
    except SpecError as e:
        print(f"biopost sweep: {e}", file=sys.stderr)
        return 2
    except UserError as e:  # SlurmError, OutputError (full disk, read-only work root), ...
        print(f"biopost sweep: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

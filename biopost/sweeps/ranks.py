"""Several ranks per cell: the srun + torchrun command lines of a training stage.

A stage whose resources ask for more than one process (`nodes` x `procs_per_node` > 1) runs as

  srun --nodes=N --ntasks=N --ntasks-per-node=1 [--cpus-per-task=C] --kill-on-bad-exit=1 \\
      <python> -m biopost.launch --nnodes=N --nproc-per-node=P --rdzv-backend=c10d \\
      --rdzv-endpoint=<first host of the job>:<port> --rdzv-id=<job id> <script> <args>

one torchrun agent per node (biopost.launch: torchrun that keeps the requeue exit code and forwards
SIGUSR1), P ranks under each. The runner itself runs once, in the batch shell, and starts that srun
as the stage: `--signal=USR1@N` and `scancel --signal` reach job steps, so they reach every agent,
which forwards them to its ranks; the stages checkpoint on rank 0 and exit 75 on every rank.
The rendezvous port is RDZV_PORT_BASE + (job id mod RDZV_PORT_SPAN) (29500-30499), so that two
jobs sharing a node rarely pick the same one; if the rendezvous store cannot bind it (EADDRINUSE:
"address already in use" in the stage's log) the runner tries the next port, RDZV_TRIES times in
all. Under the local executor (no SLURM) the stage runs `biopost.launch --standalone` instead.
"""
from __future__ import annotations

import os
import re
import subprocess

RDZV_PORT_BASE = 29500
RDZV_PORT_SPAN = 1000
RDZV_TRIES = 3
ADDRESS_IN_USE = re.compile(r"address already in use|EADDRINUSE", re.IGNORECASE)


def world_of(resources: dict) -> tuple[int, int]:
    """(nodes, processes per node) that the resources ask for; (1, 1) is one plain process.
    procs_per_node defaults to the GPUs per node (one rank per GPU), else 1."""
    nodes = int(resources.get("nodes") or 1)
    procs = resources.get("procs_per_node")
    if procs is None:
        gpus = resources.get("gpus_per_node", resources.get("gpus")) or 0
        procs = int(str(gpus).rsplit(":", 1)[-1]) or 1
    return nodes, int(procs)


def rendezvous_port(job_id, attempt: int = 0) -> int:
    """The c10d rendezvous port of a job: fixed by its id, so every node computes the same one."""
    digits = re.sub(r"\D", "", str(job_id or ""))
    n = int(digits) if digits else 0
    return RDZV_PORT_BASE + (n + attempt) % RDZV_PORT_SPAN


def first_host(env: dict) -> str:
    """The job's first node (torchrun's rendezvous host): `scontrol show hostnames` expands the
    compressed node list (gpu[01-04] -> gpu01 ...)."""
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        return "127.0.0.1"
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=60, env=env)
        hosts = out.stdout.split()
        if out.returncode == 0 and hosts:
            return hosts[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return nodelist.split(",")[0]  # a plain single host needs no expansion


def stage_command(launch: dict | None, python: str, script: str, argv: list, *, slurm: bool,
                  master: str = "$MASTER_ADDR", port="$MASTER_PORT", job_id="$SLURM_JOB_ID") -> list[str]:
    """The command line of one stage: plain `python script args` for one process, else the srun +
    torchrun form above (`slurm=False`: torchrun --standalone on this machine)."""
    nodes, procs = (launch or {}).get("nodes", 1), (launch or {}).get("procs_per_node", 1)
    if nodes * procs <= 1:
        return [python, script, *argv]
    if not slurm:
        return [python, "-m", "biopost.launch", "--standalone", "--nnodes=1", f"--nproc-per-node={procs}",
                script, *argv]
    srun = ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    if (launch or {}).get("cpus"):
        srun.append(f"--cpus-per-task={int(launch['cpus'])}")
    return [*srun, python, "-m", "biopost.launch", f"--nnodes={nodes}", f"--nproc-per-node={procs}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={master}:{port}", f"--rdzv-id={job_id}", script, *argv]


def in_slurm_job(env=None) -> bool:
    return bool((env or os.environ).get("SLURM_JOB_ID"))

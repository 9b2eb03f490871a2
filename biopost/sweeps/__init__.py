"""Declarative sweeps: a YAML spec expands into stage cells that run as SLURM array jobs
(or locally, in dependency order), each in its own run directory with a status.json.

Modules, in the order a sweep uses them:
  spec.py     load and validate a spec; expand it into stage and eval cells with run ids
  binding.py  what each cell's stage receives on its command line (upstream binding)
  status.py   status.json (atomic writes), output hashes, the derived state of a cell
  ledger.py   which SLURM job last ran each cell
  plan.py     what to run now, how cells group into array jobs, the GPU-hour estimate
  slurm.py    sbatch script text, sbatch / squeue / scancel
  local.py    the local executor
  runner.py   the in-job wrapper that writes status.json and runs the stage
  cli.py      `biopost sweep plan|submit|status|cancel`

Nothing here imports torch or transformers: these commands run on a cluster's login node and
answer in about a second. tests/test_sweep_imports.py checks it.
"""

#!/usr/bin/env bash
# (Re-)submit only the ID/OOD evaluation of sweeps whose training cells are done, e.g. after
# changing the evaluation script or config: `biopost sweep submit --only-eval`. Evaluation cells
# that are done and not stale are left alone; to redo them, remove their eval/status.json.
#     BioReason/submit_id_ood_eval.sh SPEC...      (default: every sweeps/dna_*.yaml)
# Do not sbatch this script: it submits the array jobs itself.
#
# Environment (DRY_RUN, PARTITION, ACCOUNT, TIME, BIOPOST_WORK_ROOT, BIOPOST_CLUSTER_ENV, PYTHON):
# see scripts/submit_specs.sh, which does the submitting.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  shopt -s nullglob
  set -- sweeps/dna_*.yaml
fi
exec scripts/submit_specs.sh --only-eval "$@"

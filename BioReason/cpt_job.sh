#!/usr/bin/env bash
# Submit the DNA continued pre-training sweep (learning rate x gradient accumulation; each CPT
# run is followed by SFT and evaluated on ID/OOD). Run it on the login node, from anywhere:
#     BioReason/cpt_job.sh [SPEC...]               (default: sweeps/dna_cpt_lr_ga.yaml)
# It submits array jobs itself (`biopost sweep submit`): do not sbatch this script.
#
# Environment (DRY_RUN, PARTITION, ACCOUNT, TIME, BIOPOST_WORK_ROOT, BIOPOST_CLUSTER_ENV, PYTHON):
# see scripts/submit_specs.sh, which does the submitting.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- \
  sweeps/dna_cpt_lr_ga.yaml
exec scripts/submit_specs.sh "$@"

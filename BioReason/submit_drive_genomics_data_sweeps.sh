#!/usr/bin/env bash
# Submit the DNA data-fraction sweeps (SFT train data fraction, RL train data fraction); each
# one's evaluation runs as its own array job after it. Run it on the login node:
#     BioReason/submit_drive_genomics_data_sweeps.sh [SPEC...]     (default: the specs below)
# It submits array jobs itself (`biopost sweep submit`, idempotent). Do not sbatch this script.
#
# Environment (DRY_RUN, PARTITION, ACCOUNT, TIME, BIOPOST_WORK_ROOT, BIOPOST_CLUSTER_ENV, PYTHON):
# see scripts/submit_specs.sh, which does the submitting.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- \
  sweeps/dna_sft_data_fraction.yaml \
  sweeps/dna_rl_data_fraction.yaml
exec scripts/submit_specs.sh "$@"

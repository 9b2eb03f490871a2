#!/usr/bin/env bash
# Submit the protein SFT-only sweep (SFT data fraction 20-100%); its evaluation runs as its own
# array job after it. Run it on the login node:
#     BioReason-Pro/scripts/sweep_protein_sft.sh [SPEC...]     (default: the spec listed below)
# It submits array jobs itself (`biopost sweep submit`, idempotent: run it again to re-run only
# failed / lost / stale cells). Do not sbatch this script.
#
# Environment (DRY_RUN, PARTITION, ACCOUNT, TIME, BIOPOST_WORK_ROOT, BIOPOST_CLUSTER_ENV, PYTHON):
# see scripts/submit_specs.sh, which does the submitting.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -gt 0 ] || set -- \
  sweeps/protein_sft_data_fraction.yaml
exec scripts/submit_specs.sh "$@"

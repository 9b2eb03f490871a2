#!/usr/bin/env bash
# Submit every DNA training-axis sweep (SFT epochs, RL epochs, RL warm vs cold start, KL beta,
# the SFT/RL epoch budget, LoRA rank); each one's evaluation runs as its own array job after it.
# Run it on the login node:
#     BioReason/submit_drive_genomics_sweeps.sh [SPEC...]     (default: the specs listed below)
# It submits array jobs itself (`biopost sweep submit`, idempotent: run it again to re-run only
# failed / lost / stale cells). Do not sbatch this script.
#
# Environment (DRY_RUN, PARTITION, ACCOUNT, TIME, BIOPOST_WORK_ROOT, BIOPOST_CLUSTER_ENV, PYTHON):
# see scripts/submit_specs.sh, which does the submitting.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- \
  sweeps/dna_sft_epochs.yaml \
  sweeps/dna_rl_epochs.yaml \
  sweeps/dna_rl_warm_start.yaml \
  sweeps/dna_kl_beta.yaml \
  sweeps/dna_epoch_budget.yaml \
  sweeps/dna_lora_rank.yaml
exec scripts/submit_specs.sh "$@"

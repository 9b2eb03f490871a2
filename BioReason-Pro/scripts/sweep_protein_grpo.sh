#!/usr/bin/env bash
# Submit every protein sweep with a GRPO stage (RL data fraction, RL epochs, warm start from the SFT
# LoRA vs cold base, KL beta, the 20K SFT/RL data budget, LoRA rank); each runs its SFT, then GRPO
# (BioReason-Pro/train_protein_grpo.py: the encoder in the loop, the GO reward), then the ID/OOD
# evaluation of both as their own array jobs. Run it on the login node:
#     BioReason-Pro/scripts/sweep_protein_grpo.sh [SPEC...]     (default: the specs listed below)
# It submits array jobs itself (`biopost sweep submit`, idempotent). Do not sbatch this script.
#
# Environment (DRY_RUN, PARTITION, ACCOUNT, TIME, BIOPOST_WORK_ROOT, BIOPOST_CLUSTER_ENV, PYTHON):
# see scripts/submit_specs.sh, which does the submitting.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -gt 0 ] || set -- \
  sweeps/protein_rl_data_fraction.yaml \
  sweeps/protein_rl_epochs.yaml \
  sweeps/protein_rl_warm_start.yaml \
  sweeps/protein_kl_beta.yaml \
  sweeps/protein_data_budget.yaml \
  sweeps/protein_lora_rank.yaml
exec scripts/submit_specs.sh "$@"

#!/usr/bin/env bash
# Submit every protein sweep with a GRPO stage (RL data fraction, RL epochs, warm start from the SFT
# LoRA vs cold base, KL beta, the 20K SFT/RL data budget, LoRA rank); each runs its SFT, then GRPO
# (BioReason-Pro/train_protein_grpo.py: the encoder in the loop, the GO reward), then the ID/OOD
# evaluation of both as their own array jobs. Run it on the login node:
#     BioReason-Pro/scripts/sweep_protein_grpo.sh [SPEC...]     (default: the specs listed below)
# It submits array jobs itself (`biopost sweep submit`, idempotent). Do not sbatch this script.
#
# Environment:
#   DRY_RUN=1            print the exact sbatch scripts (`biopost sweep plan --dry-run`), submit nothing
#   PARTITION ACCOUNT TIME   override resources.partition / .account / .time of every job
#   BIOPOST_WORK_ROOT    output tree (default ./runs); BIOPOST_CLUSTER_ENV (default ./cluster_env.sh)
#   PYTHON               interpreter with bio-post installed (default: python3 on PATH after cluster_env.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
env_file=${BIOPOST_CLUSTER_ENV:-cluster_env.sh}
# shellcheck disable=SC1090
if [ -f "$env_file" ]; then . "$env_file"; fi

specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(
  sweeps/protein_rl_data_fraction.yaml
  sweeps/protein_rl_epochs.yaml
  sweeps/protein_rl_warm_start.yaml
  sweeps/protein_kl_beta.yaml
  sweeps/protein_data_budget.yaml
  sweeps/protein_lora_rank.yaml
)

flags=()
if [ -n "${PARTITION:-}" ]; then flags+=(--partition "$PARTITION"); fi
if [ -n "${ACCOUNT:-}" ]; then flags+=(--account "$ACCOUNT"); fi
if [ -n "${TIME:-}" ]; then flags+=(--time "$TIME"); fi
if [ "${DRY_RUN:-0}" = 1 ]; then action=(plan --dry-run); else action=(submit); fi

for spec in "${specs[@]}"; do
  echo "== $spec" >&2
  "${PYTHON:-python3}" -m biopost.cli sweep "${action[@]}" "$spec" ${flags[@]+"${flags[@]}"}
done

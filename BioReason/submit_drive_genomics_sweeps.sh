#!/usr/bin/env bash
# Submit every DNA training-axis sweep (SFT epochs, RL epochs, RL warm vs cold start, KL beta,
# the SFT/RL epoch budget, LoRA rank); each one's evaluation runs as its own array job after it.
# Run it on the login node:
#     BioReason/submit_drive_genomics_sweeps.sh [SPEC...]     (default: the specs listed below)
# It submits array jobs itself (`biopost sweep submit`, idempotent: run it again to re-run only
# failed / lost / stale cells). Do not sbatch this script.
#
# Environment:
#   DRY_RUN=1            print the exact sbatch scripts (`biopost sweep plan --dry-run`), submit nothing
#   PARTITION ACCOUNT TIME   override resources.partition / .account / .time of every job
#   BIOPOST_WORK_ROOT    output tree (default ./runs); BIOPOST_CLUSTER_ENV (default ./cluster_env.sh)
#   PYTHON               interpreter with bio-post installed (default: python3 on PATH after cluster_env.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
env_file=${BIOPOST_CLUSTER_ENV:-cluster_env.sh}
# shellcheck disable=SC1090
if [ -f "$env_file" ]; then . "$env_file"; fi

specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(
  sweeps/dna_sft_epochs.yaml
  sweeps/dna_rl_epochs.yaml
  sweeps/dna_rl_warm_start.yaml
  sweeps/dna_kl_beta.yaml
  sweeps/dna_epoch_budget.yaml
  sweeps/dna_lora_rank.yaml
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

#!/usr/bin/env bash
# Submit the protein SFT-only sweep (SFT data fraction 20-100%); its evaluation runs as its own
# array job after it. Run it on the login node:
#     BioReason-Pro/scripts/sweep_protein_sft.sh [SPEC...]     (default: the spec listed below)
# It submits array jobs itself (`biopost sweep submit`, idempotent: run it again to re-run only
# failed / lost / stale cells). Do not sbatch this script.
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
  sweeps/protein_sft_data_fraction.yaml
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

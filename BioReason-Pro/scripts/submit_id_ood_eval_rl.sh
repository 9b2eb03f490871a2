#!/usr/bin/env bash
# (Re-)submit only the ID/OOD evaluation of the protein RL sweeps whose training cells are done
# (their GRPO cells and the SFT cells they start from), e.g. after changing the evaluation script
# or config: `biopost sweep submit --only-eval`. Evaluation cells that are done and not stale are
# left alone; to redo them, remove their eval/status.json.
#     BioReason-Pro/scripts/submit_id_ood_eval_rl.sh [SPEC...]   (default: the specs of sweep_protein_grpo.sh)
# Do not sbatch this script: it submits the array jobs itself.
#
# Environment:
#   DRY_RUN=1            print the exact sbatch scripts (`biopost sweep plan --dry-run --only-eval`)
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

flags=(--only-eval)
if [ -n "${PARTITION:-}" ]; then flags+=(--partition "$PARTITION"); fi
if [ -n "${ACCOUNT:-}" ]; then flags+=(--account "$ACCOUNT"); fi
if [ -n "${TIME:-}" ]; then flags+=(--time "$TIME"); fi
if [ "${DRY_RUN:-0}" = 1 ]; then action=(plan --dry-run); else action=(submit); fi

for spec in "${specs[@]}"; do
  echo "== $spec" >&2
  "${PYTHON:-python3}" -m biopost.cli sweep "${action[@]}" "$spec" "${flags[@]}"
done

#!/usr/bin/env bash
# (Re-)submit only the ID/OOD evaluation of the protein RL sweeps whose training cells are done
# (their GRPO cells and the SFT cells they start from), e.g. after changing the evaluation script
# or config: `biopost sweep submit --only-eval`. Evaluation cells that are done and not stale are
# left alone; to redo them, remove their eval/status.json.
#     BioReason-Pro/scripts/submit_id_ood_eval_rl.sh [SPEC...]   (default: the specs of sweep_protein_grpo.sh)
# Do not sbatch this script: it submits the array jobs itself.
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
exec scripts/submit_specs.sh --only-eval "$@"

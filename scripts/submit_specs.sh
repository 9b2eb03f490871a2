#!/usr/bin/env bash
# The part every sweep launcher shares (BioReason/*.sh, BioReason-Pro/scripts/*.sh): read the
# cluster environment, turn PARTITION / ACCOUNT / TIME into overrides, and submit (or, with
# DRY_RUN=1, print the sbatch scripts of) each spec. The launchers only choose their default specs.
#     scripts/submit_specs.sh [--only-eval] SPEC...      (spec paths relative to the repository root)
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

flags=()
if [ "${1:-}" = --only-eval ]; then
  flags+=(--only-eval)
  shift
fi
if [ $# -eq 0 ]; then
  echo "submit_specs.sh: no sweep spec given (and no default spec matched)" >&2
  exit 2
fi
if [ -n "${PARTITION:-}" ]; then flags+=(--partition "$PARTITION"); fi
if [ -n "${ACCOUNT:-}" ]; then flags+=(--account "$ACCOUNT"); fi
if [ -n "${TIME:-}" ]; then flags+=(--time "$TIME"); fi
if [ "${DRY_RUN:-0}" = 1 ]; then action=(plan --dry-run); else action=(submit); fi

for spec in "$@"; do
  echo "== $spec" >&2
  "${PYTHON:-python3}" -m biopost.cli sweep "${action[@]}" "$spec" ${flags[@]+"${flags[@]}"}
done

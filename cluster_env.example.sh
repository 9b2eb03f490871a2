# shellcheck shell=bash
# cluster_env.sh - environment of bio-post's sweep launchers and jobs. Copy it and edit:
#     cp cluster_env.example.sh cluster_env.sh
# Sourced (when it exists) by the launchers in BioReason/ on the login node, and by every sweep
# job before its stage starts (after `cd` to the repo root, with `set -e`: a failing line fails
# the job before any GPU time is spent). Another path: export BIOPOST_CLUSTER_ENV=/path/to/file.
# Keep it to assignments, module loads and activating an environment.

# Output tree of the sweeps: $BIOPOST_WORK_ROOT/<sweep>/<stage>/<run id>/ (use a shared filesystem)
export BIOPOST_WORK_ROOT="${BIOPOST_WORK_ROOT:-$HOME/scratch/biopost/runs}"
# Embedding cache and materialized models, shared by every cell of a sweep (never inside data dirs)
export BIOPOST_CACHE_DIR="${BIOPOST_CACHE_DIR:-$HOME/scratch/biopost/cache}"
# Hugging Face downloads (models, datasets)
export HF_HOME="${HF_HOME:-$HOME/scratch/hf}"
# export HF_HUB_OFFLINE=1          # compute nodes without internet: pre-download on the login node

# Site modules and the Python environment with bio-post installed
# module load cuda/12.4
# module load gcc/12
# source "$HOME/bio-post/.venv/bin/activate"
# export PYTHON=python             # interpreter the launchers use (default python3)

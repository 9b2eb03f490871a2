"""Harvest a sweep's results into figures/results_id_ood.{md,json,csv}; same as `biopost harvest`.

    python harvest_results.py --root $BIOPOST_WORK_ROOT [--out figures] [--spec sweeps/x.yaml ...]
"""
import sys

from biopost.harvest.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="harvest_results.py"))

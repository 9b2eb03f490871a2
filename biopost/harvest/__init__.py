"""Harvest every cell's metrics.json / status.json into matched ID/OOD tables and plots.

Runs on a cluster login node: imports neither torch nor transformers.
  collect(root, specs) -> Harvest      read and merge (collect.py; reading in read.py,
                                       rows and seed aggregates in table.py)
  write(harvest, out) -> paths         md / json / csv (report.py) and plots (plots.py)
"""
from biopost.harvest.collect import Harvest, collect
from biopost.harvest.report import write

__all__ = ["Harvest", "collect", "write"]

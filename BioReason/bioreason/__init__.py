"""bio-post DNA modality: KEGG and variant-effect reasoning tasks, DNA rewards.

Importing the package registers its tasks with the core (`biopost.tasks`).
"""
from bioreason import tasks  # noqa: F401  (registers kegg and vep)

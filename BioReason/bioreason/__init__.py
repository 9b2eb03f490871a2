"""bio-post DNA modality: KEGG and variant-effect reasoning tasks, DNA rewards.

Importing the package registers its tasks (`biopost.tasks`) and its GRPO reward functions
(`biopost.train.rewards`) with the core.
"""
from bioreason import rewards, tasks  # noqa: F401  (registers kegg, vep and the DNA rewards)

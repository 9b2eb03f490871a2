"""Batched sampling for BioReasoningModel: the one generation path of evaluation, inference and
GRPO rollouts. See sampling.py."""
from biopost.generate.sampling import Generation, SamplingConfig, generate  # noqa: F401

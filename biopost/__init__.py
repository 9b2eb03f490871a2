"""bio-post: post-training of biological reasoning models and ID/OOD generalization sweeps.

The core package is shared by both modalities. Subpackages that must answer quickly on a
cluster login node (`biopost.sweeps`, `biopost.harvest`) never import torch or transformers;
keep heavy imports inside functions of the other subpackages' entry points.
"""
__version__ = "0.1.0"

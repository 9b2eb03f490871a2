"""bio-post DNA modality: KEGG and variant-effect reasoning tasks, DNA encoders, synthetic data.

Nothing needs importing: the core finds the package through its `biopost.modalities` entry point
(bioreason.modality), which registers the `dna` modality and lazy references to the tasks
(bioreason.tasks), the Evo2 encoder backend (bioreason.evo2_encoder), the tiny test encoders
(bioreason.tiny_dna) and the `biopost data synth-kegg` command (bioreason.data_cli).
"""

"""bio-post DNA modality: KEGG and variant-effect reasoning tasks, DNA rewards."""

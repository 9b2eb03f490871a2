"""bio-post protein modality (GO term prediction). Populated by the protein issue."""

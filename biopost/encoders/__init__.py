"""Encoder backends behind one interface (base.Encoder) and the embedding cache."""
from __future__ import annotations


def build_encoder(spec: dict, device="cpu", trust_remote_code: bool = False):
    """spec: {"modality", "model_name", "layer", "backend"} as stored in a checkpoint's model config."""
    backend = spec.get("backend", "hf")
    if backend == "hf":
        from biopost.encoders.hf import HFMaskedLMEncoder
        return HFMaskedLMEncoder(spec["model_name"], layer=spec.get("layer", -1), device=device,
                                 trust_remote_code=trust_remote_code)
    if backend == "evo2":  # --dna_is_evo2 true
        raise ValueError(f"{spec.get('model_name')!r}: the Evo2 encoder backend (package evo2) is not "
                         "implemented yet; use a Hugging Face masked-LM DNA encoder such as "
                         "InstaDeepAI/nucleotide-transformer-v2-500m-multi-species")
    raise ValueError(f"unknown encoder backend {backend!r} for {spec.get('model_name')!r} "
                     f"(available here: hf)")

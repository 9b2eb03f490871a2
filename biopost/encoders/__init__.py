"""Encoder backends behind one interface (base.Encoder) and the embedding cache.

Backends register by name in `BACKENDS`: a factory `build(spec, device="cpu",
trust_remote_code=False) -> Encoder`, where `spec` is what a checkpoint's model config stores for
one modality ({"modality", "model_name", "layer", "backend"}). The core keeps the generic Hugging
Face backend (`hf`: masked LMs such as Nucleotide Transformer, ESM-2, ESM C through
transformers); modality packages register theirs (BioReason: `evo2`; BioReason-Pro: `esm`) lazily
from their plug-in modules, so naming a backend imports nothing until a model is built.
"""
from __future__ import annotations

from biopost.registry import Registry

BACKENDS: Registry = Registry("encoder backend")
BACKENDS.register_lazy("hf", "biopost.encoders.hf:build",
                       help="Hugging Face masked LMs through transformers (Nucleotide Transformer, ESM-2, ...)")


def build_encoder(spec: dict, device="cpu", trust_remote_code: bool = False):
    """The encoder a model config's `spec` describes, built by its registered backend."""
    factory = BACKENDS.get(spec.get("backend", "hf"))
    return factory(spec, device=device, trust_remote_code=trust_remote_code)

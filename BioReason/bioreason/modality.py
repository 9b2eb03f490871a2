"""The DNA modality's plug-in module, named by BioReason's `biopost.modalities` entry point.

Torch-free, and importing nothing of the package but names: `biopost sweep plan` discovers it on a
login node. It registers the `dna` Modality record (bio tokens, alphabet, flags, how to pick the
encoder and truncate) and lazy references to everything that needs torch or data files: the KEGG /
variant-effect tasks, the Evo2 encoder backend, the tiny test encoders, the `synth-kegg` command.
"""
from __future__ import annotations

from biopost.commands import COMMANDS
from biopost.encoders import BACKENDS
from biopost.modality import FlagField, Modality, flag, register_modality
from biopost.registry import defer
from biopost.tasks import TASKS

NT_500M = "InstaDeepAI/nucleotide-transformer-v2-500m-multi-species"
EVO2_DEFAULT_LAYER = "blocks.20.mlp.l3"  # what every BioReason launcher used

FLAGS = (
    FlagField("dna_model_name", str, NT_500M,
              "HF name or path of the DNA encoder (Evo2: a name such as evo2_1b_base, or a checkpoint path)"),
    FlagField("dna_is_evo2", bool, False, "the DNA encoder is an Evo2 model (package evo2; pip install './BioReason[evo2]')"),
    FlagField("dna_embedding_layer", str, "-1",
              f"hidden layer of the DNA encoder to embed from (HF: an index, -1 = last; Evo2: a module name, "
              f"default {EVO2_DEFAULT_LAYER})"),
    FlagField("dna_evo2_fp8", bool, False,
              "Evo2: FP8 input projections through Transformer Engine (Hopper GPU; the evo2 README's accuracy "
              "note for evo2_1b_base); off = float32"),
    FlagField("max_length_dna", int, 2048, "longest DNA sequence in bases; longer ones are centre-cropped and counted"),
    FlagField("truncate_dna_per_side", int, 0, "keep this many bases on each side of the centre (0 = off)"),
)


def encoder_spec(cfg) -> dict:
    if flag(cfg, "dna_is_evo2"):
        layer = flag(cfg, "dna_embedding_layer")
        return {"model_name": flag(cfg, "dna_model_name"), "backend": "evo2",
                "layer": EVO2_DEFAULT_LAYER if str(layer) in ("", "-1") else str(layer),
                "fp8": bool(flag(cfg, "dna_evo2_fp8"))}
    return {"model_name": flag(cfg, "dna_model_name"), "layer": flag(cfg, "dna_embedding_layer"), "backend": "hf"}


def truncation(cfg) -> tuple[int, int]:
    return flag(cfg, "max_length_dna"), flag(cfg, "truncate_dna_per_side")


DNA = register_modality(Modality(
    name="dna",
    bio_tokens=("<|dna_start|>", "<|dna_pad|>", "<|dna_end|>"),
    alphabet="ACGTN",
    default_projector="linear",
    encoder_spec=encoder_spec,
    truncation=truncation,
    flags=FLAGS,
    eval_script="BioReason/eval_kegg_dna_vllm.py",
    backends=("hf", "evo2"),
    description="DNA encoder and sequence flags (BioReason: KEGG disease and variant-effect tasks)",
))

TASKS.register_lazy("kegg", "bioreason.tasks:KEGG", help="KEGG pathway-disease reasoning (answer: a disease)")
TASKS.register_lazy("vep", "bioreason.tasks:VEP", help="variant effect (answer: pathogenic|benign[; disease])")
BACKENDS.register_lazy("evo2", "bioreason.evo2_encoder:build",
                       help="Evo2 / StripedHyena 2 through the evo2 and vtx packages (extra: evo2)")
defer("tiny model", "nt-6mer", "bioreason.tiny_dna:build_nt_6mer",
      help="Nucleotide-Transformer-style EsmForMaskedLM on non-overlapping 6-mers")
defer("tiny model", "char-dna", "bioreason.tiny_dna:build_char_dna", help="character-level ModernBertForMaskedLM")
COMMANDS["data"].register_lazy("synth-kegg", "bioreason.data_cli:synth_kegg_main",
                               help="write synthetic KEGG-like (or variant-effect) splits; --version 2: with an ID/OOD shift")
COMMANDS["data"].register_lazy("kegg-network-split", "bioreason.kegg_network_split:main",
                               help="write the published study's KEGG pathway-network split of wanglab/kegg")

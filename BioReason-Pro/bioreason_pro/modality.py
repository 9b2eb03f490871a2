"""The protein modality's plug-in module, named by the `biopost.modalities` entry point.

Torch-free: it registers the `protein` Modality record and lazy references only (the GO metrics
command, the GO rewards), so discovering it costs an import of this file.
"""
from __future__ import annotations

from biopost.commands import COMMANDS
from biopost.modality import FlagField, Modality, flag, register_modality
from biopost.registry import defer

# The protein modality record: what the core needs to validate, render and encode protein inputs.
# Its encoders: the core's Hugging Face backend (ESM-2 / ESM C through transformers) and the `esm`
# backend registered below (ESM-3 / ESM C through the esm package, bioreason_pro.esm_encoder).
FLAGS = (
    FlagField("protein_model_name", str, "", "HF name or path of the protein encoder (protein tasks)"),
    FlagField("protein_embedding_layer", str, "auto", "hidden layer of the protein encoder to embed from "
                                                      "(auto: the last; 37 for ESM-3 small through the esm backend)"),
    FlagField("protein_encoder_backend", str, "auto", "hf (transformers: ESM-2, ESM C), esm (the esm package: "
                                                      "ESM-3, ESM C), or auto (esm for esm3_sm_open_v1 / esmc_* names "
                                                      "and esm_config.json directories, else hf)"),
    FlagField("max_length_protein", int, 0, "longest protein in residues; longer ones are centre-cropped "
                                           "and counted (0 = no limit)"),
)


def encoder_spec(cfg) -> dict:
    name = flag(cfg, "protein_model_name")
    if not name:
        from biopost.config import ConfigError
        raise ConfigError("protein tasks need --protein_model_name (an ESM-2 / ESM C model name or path)")
    from bioreason_pro.esm_names import is_esm_model
    backend = flag(cfg, "protein_encoder_backend") or "auto"
    if backend == "auto":
        backend = "esm" if is_esm_model(name) else "hf"
    layer = str(flag(cfg, "protein_embedding_layer"))
    if backend != "esm" and layer.strip().lower() in ("auto", ""):
        layer = "-1"  # transformers' hidden_states[-1]; the esm backend resolves auto itself
    return {"model_name": name, "layer": layer, "backend": backend}


def truncation(cfg) -> tuple[int, int]:
    return flag(cfg, "max_length_protein"), 0


PROTEIN = register_modality(Modality(
    name="protein",
    bio_tokens=("<|protein_start|>", "<|protein_pad|>", "<|protein_end|>"),
    alphabet="ACDEFGHIKLMNPQRSTVWY" + "BZXUO",
    default_projector="mlp",
    encoder_spec=encoder_spec,
    truncation=truncation,
    flags=FLAGS,
    id_field="protein_id",
    eval_script="BioReason-Pro/eval.py",
    backends=("hf", "esm"),
    description="protein encoder and sequence flags (BioReason-Pro: GO term prediction)",
))

# `biopost eval go`: CAFA-style GO metrics of prediction files (bioreason_pro.go_cli), imported on use.
COMMANDS["eval"].register_lazy("go", "bioreason_pro.go_cli:main",
                               help="Fmax, IA-weighted Fmax, Smin and coverage per GO namespace, as cafaeval computes them")
# GRPO rewards: IA-weighted F1 of the answer's propagated GO terms against the propagated gold.
defer("reward", "go_f1", "bioreason_pro.go_reward:go_reward",
      help="IA-weighted F1 of the answer's GO terms (propagated) against the gold go_mf/go_bp/go_cc")
defer("reward", "go_f1_per_aspect", "bioreason_pro.go_reward:go_reward_per_aspect",
      help="mean over MF/BP/CC of the IA-weighted F1 per aspect")

# The GO task, protein data commands and the tiny protein encoder (issue 15), imported on use.
from biopost.tasks import TASKS  # noqa: E402

TASKS.register_lazy("go", "bioreason_pro.tasks:GO",
                    help="GO term prediction (answer: GO ids per aspect; IA-weighted F1 of propagated sets)")
COMMANDS["data"].register_lazy("split-go", "bioreason_pro.split_go:main",
                               help="validate GO protein rows and write train/id_val/ood_val/id_test/ood_test "
                                    "by a named ID/OOD rule (organisms, families, time cut)")
COMMANDS["data"].register_lazy("synth-go", "bioreason_pro.synth_go:main",
                               help="write the synthetic GO benchmark (motif-decided terms, organism shortcut; "
                                    "--no_organism_shortcut: the sequence decides every term)")
COMMANDS["data"].register_lazy("swissprot-go", "bioreason_pro.swissprot_benchmark:main",
                               help="build the real Swiss-Prot mini GO benchmark from the committed fixture")
defer("tiny model", "esm-protein", "bioreason_pro.tiny_protein:build",
      help="character-level EsmForMaskedLM over the 25 amino-acid letters")

# The `esm` encoder backend (ESM-3 / ESM C through the esm package, an optional extra) and its
# tiny random-weight models, imported on use.
from biopost.encoders import BACKENDS  # noqa: E402

BACKENDS.register_lazy("esm", "bioreason_pro.esm_encoder:build",
                       help="ESM-3 / ESM C through the esm package (BioReason-Pro extra; weights by path or HF name)")
defer("tiny model", "esm3-protein", "bioreason_pro.esm_encoder:build_tiny_esm3",
      help="random-weight ESM3 (esm package), d_model 64, 2 blocks")
defer("tiny model", "esmc-protein", "bioreason_pro.esm_encoder:build_tiny_esmc",
      help="random-weight ESMC (esm package), d_model 64, 2 blocks")

"""Where a GRPO policy starts: cold from the base models, warm from an SFT checkpoint (its adapter
continued), or the SFT model merged into the base with a fresh adapter; and what config.yaml
records about that start so a sweep can tell warm from cold cells.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from biopost.errors import MissingCheckpointError
from biopost.train.recipe import model_spec_from_config

MERGED_SFT_DIR = "merged_sft"


def sft_provenance(sft_checkpoint) -> dict:
    """What identifies the SFT checkpoint a warm start read: its path and fingerprint."""
    from biopost.train import checkpoint as ckpt_lib
    path = Path(sft_checkpoint)
    info = {"sft_checkpoint_resolved": str(path.resolve()), "sft_fingerprint": None, "sft_step": None}
    state_file = path / "trainer_state.json"
    if state_file.is_file():
        state = ckpt_lib.read_trainer_state(path)
        info["sft_fingerprint"], info["sft_step"] = state.get("fingerprint"), state.get("step")
    elif path.is_dir():
        info["sft_fingerprint"] = ckpt_lib.fingerprint(path)
    return info


def init_source(cfg, out: Path, resumed: bool) -> dict:
    """How this run's policy started, for config.yaml. A resumed run keeps what its first start
    recorded (the SFT checkpoint may be gone by now)."""
    info = {"init": cfg.init, "sft_checkpoint": cfg.sft_checkpoint, "merge_sft": cfg.merge_sft}
    if cfg.init != "sft":
        return info
    previous = {}
    if resumed and (out / "config.yaml").is_file():
        from biopost.config import load_run_config
        previous = load_run_config(out).get("init_source") or {}
    if previous.get("sft_fingerprint") and previous.get("sft_checkpoint") == cfg.sft_checkpoint:
        return previous
    return dict(info, **sft_provenance(cfg.sft_checkpoint))


def set_lora_dropout(model, p: float) -> None:
    import torch.nn as nn
    for module in model.modules():
        drops = getattr(module, "lora_dropout", None)
        if isinstance(drops, nn.ModuleDict):
            for name in list(drops.keys()):
                drops[name] = nn.Dropout(p) if p > 0 else nn.Identity()
    model.spec.lora_dropout = p


def policy_lora_rank(cfg, resume_from) -> int:
    """The LoRA rank the policy will have (0: full fine-tuning): a resumed or continued checkpoint
    decides for itself, a fresh adapter (cold start, merged SFT) takes --lora_rank."""
    from biopost.model.bio_model import MODEL_CONFIG
    source = resume_from if resume_from is not None else (
        Path(cfg.sft_checkpoint) if cfg.init == "sft" and not cfg.merge_sft else None)
    if source is None or not (Path(source) / MODEL_CONFIG).is_file():
        return cfg.lora_rank
    spec = json.loads((Path(source) / MODEL_CONFIG).read_text())
    return 0 if spec.get("merged") else int(spec.get("lora_rank", 0))


def build_policy(cfg, modality: str, device, dtype, out: Path, main: bool = True):
    """The policy GRPO starts from (not a resume): cold from the base models, the SFT checkpoint
    itself, or the SFT model merged into the base with a fresh adapter (written by the `main`
    process, rank 0, while the other ranks wait, then read by all)."""
    import gc

    import torch
    from safetensors.torch import load_file

    from biopost.model.bio_model import BIO_MODULES, MODEL_CONFIG, BioReasoningModel, ModelSpec
    if cfg.init == "base":
        return BioReasoningModel.build(model_spec_from_config(cfg, modality), device=device, dtype=dtype)
    sft = Path(cfg.sft_checkpoint)
    if not (sft / MODEL_CONFIG).is_file():
        raise MissingCheckpointError(f"--sft_checkpoint {sft}: not a bio-post model directory (no {MODEL_CONFIG})")
    if not cfg.merge_sft:
        return BioReasoningModel.load(sft, device=device, dtype=dtype, is_trainable=True,
                                      trust_remote_code=cfg.trust_remote_code)
    from biopost import distributed
    merged, encoders = out / MERGED_SFT_DIR, None
    if main:
        sft_model = BioReasoningModel.load(sft, device=device, dtype=dtype, is_trainable=False,
                                           trust_remote_code=cfg.trust_remote_code)
        shutil.rmtree(merged, ignore_errors=True)
        sft_model.merge(merged)     # records its own absolute path as the text model: later checkpoints load it
        encoders = sft_model.encoders
        del sft_model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    distributed.barrier()
    spec = ModelSpec.from_json(json.loads((merged / MODEL_CONFIG).read_text()))
    spec.merged = False
    spec.lora_rank, spec.lora_alpha, spec.lora_dropout = cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout
    spec.lora_target_modules = list(cfg.lora_target_modules)
    return BioReasoningModel.build(spec, device=device, dtype=dtype, encoders=encoders,
                                   bio_modules=load_file(str(merged / BIO_MODULES)), tokenizer_dir=merged)




def load_policy(cfg, modality: str, device, out: Path, resume_from, log, main: bool = True):
    """The policy this run trains: resumed from its own checkpoint or built by `build_policy`, with
    the RL settings (LoRA dropout, gradient checkpointing) applied."""
    from biopost.model.bio_model import BioReasoningModel
    from biopost.runtime import base_dtype
    from biopost.train.recipe import enable_gradient_checkpointing
    # full fine-tuning keeps fp32 master weights; whether the policy is LoRA can depend on the checkpoint
    dtype = base_dtype(device, cfg.bf16 and policy_lora_rank(cfg, resume_from) > 0)
    if resume_from is not None:
        log(f"[grpo] resuming from {resume_from}")
        model = BioReasoningModel.load(resume_from, device=device, dtype=dtype, is_trainable=True,
                                       trust_remote_code=cfg.trust_remote_code)
    else:
        model = build_policy(cfg, modality, device, dtype, out, main)
    if model.is_lora and model.spec.lora_dropout != cfg.lora_dropout:
        # a continued SFT adapter brings its own dropout; in RL it would make the ratio noisy
        log(f"[grpo] LoRA dropout {model.spec.lora_dropout} -> {cfg.lora_dropout} (--lora_dropout)")
        set_lora_dropout(model, cfg.lora_dropout)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    log(f"[grpo] policy: init {cfg.init}{' (merged SFT + fresh adapter)' if cfg.merge_sft else ''}, "
        f"{'LoRA rank ' + str(model.spec.lora_rank) if model.is_lora else 'full fine-tuning'} on "
        f"{model.spec.text_model_name}")
    return model

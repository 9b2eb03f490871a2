"""Set-up shared by the training stages (SFT, GRPO; CPT where it applies), as plain functions.

Each stage reads top to bottom and calls these in order: start the run directory, pick the
device, load the rows, build the embedding caches, make the optimizer. They hold no state and
no stage-specific branches, so a stage stays one readable function plus its loop (torchtune's
recipes; no base class).
"""
from __future__ import annotations

import sys
from pathlib import Path


def log(msg: str) -> None:
    """A progress line on stderr, from rank 0 only: under torchrun every rank runs the same set-up,
    and W copies of each line would bury the one that matters."""
    from biopost.runtime import rank_info
    if rank_info().is_main:
        print(msg, file=sys.stderr, flush=True)


def write_json(path: Path, obj) -> None:
    from biopost.files import write_json_atomic
    write_json_atomic(path, obj, indent=1)


def start_run(cfg, stage: str, create: bool = True):
    """(output dir, task): the run directory exists (`create`: rank 0 makes it, the other ranks of a
    multi-process run write nothing there), `cfg.run_id` defaults to its name."""
    from biopost.tasks import get_task
    out = Path(cfg.output_dir)
    if create:
        out.mkdir(parents=True, exist_ok=True)
    if cfg.run_id is None:
        cfg.run_id = out.resolve().name
    return out, get_task(cfg.task)


def run_with_stop_flag(train, cfg) -> int:
    """`train(cfg, stop, rank)` with the stop flag installed first (a signal during set-up must not
    kill the job uncheckpointed), the handlers restored and the process group left however it ends."""
    from biopost import distributed
    from biopost.runtime import rank_info
    from biopost.signals import StopFlag
    stop = StopFlag()
    try:
        return train(cfg, stop, rank_info())
    finally:
        stop.restore()
        distributed.teardown()


def prepare_device(cfg, multi_process: bool = False):
    """The device of this process, deterministic kernels on CPU (bit-exact resume), seeds set (the
    same seed on every rank: identical fresh weights). A stage not written for DDP
    (`multi_process` False) refuses a world size above 1 instead of running W unsynchronized
    copies that write the same files."""
    from biopost.runtime import deterministic_on_cpu, pick_device, rank_info, seed_everything
    rank = rank_info()
    if rank.world > 1 and not multi_process:
        from biopost.config import ConfigError
        raise ConfigError(f"this stage runs in one process only (world size {rank.world} from {rank.source}); "
                          f"launch it without torchrun (CPT, SFT and GRPO are the stages that run under torchrun / DDP)")
    device = pick_device(cfg.device)
    deterministic_on_cpu(device)
    seed_everything(cfg.seed)
    return device


def load_training_rows(task, cfg, stage: str, extra_splits=()):
    """(rows by split, reports by split, the training subset at --train_data_fraction)."""
    from biopost.data.examples import load_task_data, truncation_for
    from biopost.data.schema import fraction_subset
    truncation = truncation_for(task.modality, cfg)
    rows, reports = load_task_data(task, cfg.data_path, ("train",) + tuple(extra_splits), truncation=truncation,
                                   skip_invalid=cfg.skip_invalid, log=log)
    train_rows = fraction_subset(rows["train"], cfg.train_data_fraction, cfg.data_seed)
    noun = "prompts" if stage == "grpo" else "rows"
    log(f"[{stage}] training on {len(train_rows)} of {len(rows['train'])} {noun} "
        f"(train_data_fraction={cfg.train_data_fraction})")
    return rows, reports, train_rows


def model_spec_from_config(cfg, modality_name: str):
    """The model a fresh run builds: the text model, the modality's encoder (from its own flags)
    and projector, the LoRA settings."""
    from biopost.model.bio_model import ModelSpec
    from biopost.modality import get_modality
    modality = get_modality(modality_name)
    encoders = {modality.name: modality.encoder_spec(cfg)}
    projectors = {modality.name: cfg.projector or modality.default_projector}
    frozen = bool(getattr(cfg, "train_projector_only", False))
    return ModelSpec(text_model_name=cfg.text_model_name, encoders=encoders, projectors=projectors,
                     lora_rank=0 if frozen else cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                     lora_target_modules=list(cfg.lora_target_modules), trust_remote_code=cfg.trust_remote_code,
                     frozen_llm=frozen)


def enable_gradient_checkpointing(model) -> None:
    model.base_llm().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def embedding_caches(model, examples, cfg, stage: str) -> dict:
    """One cache per encoder, filled with every sequence the examples use (the encoders are frozen:
    each sequence is encoded once, here, and read back by every pass). Under several ranks each
    encodes a disjoint slice of the sorted sequences into its own shards (W times faster than rank 0
    alone, still once per sequence), a barrier waits for all, and every rank then reads the others'
    shards (the second `ensure` finds nothing missing on a shared file system)."""
    from biopost.encoders.cache import EmbeddingCache
    from biopost.runtime import rank_info
    from biopost import distributed
    rank = rank_info()
    caches = {m: EmbeddingCache(enc, cfg.cache_dir) for m, enc in model.encoders.items()}
    for modality, cache in caches.items():
        seqs = sorted({s for ex in examples for m, s in ex.bio if m == modality})
        n_new = cache.ensure(seqs[rank.rank::rank.world], batch_size=cfg.encoder_batch_size, progress=rank.is_main)
        distributed.barrier()
        n_new += cache.ensure(seqs, batch_size=cfg.encoder_batch_size)
        n_new = int(distributed.sum_across(n_new))
        log(f"[{stage}] {modality}: {len(seqs)} unique sequences, {n_new} newly encoded ({cache.dir})")
    return caches


def make_optimizer(params, cfg, total_steps: int):
    """AdamW and the learning-rate schedule (warmup from --warmup_ratio of the total steps)."""
    import torch

    from biopost.train.schedule import lr_multiplier
    warmup = int(round(cfg.warmup_ratio * total_steps))
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(
        s, kind=cfg.lr_scheduler_type, warmup_steps=warmup, total_steps=total_steps, min_lr_ratio=cfg.min_lr_ratio))
    return optimizer, scheduler


def clip_and_step(params, optimizer, scheduler, max_grad_norm: float):
    """Clip (0 = no clipping, the norm is still measured), step, zero the gradients; the norm."""
    import torch
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm > 0 else float("inf"))
    if hasattr(grad_norm, "full_tensor"):   # sharded parameters (FSDP2): the norm is a DTensor
        grad_norm = grad_norm.full_tensor()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


def peak_memory(entry: dict, device) -> dict:
    if device.type == "cuda":
        import torch
        entry["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return entry


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The data order of epoch `epoch`: a permutation seeded by (seed, epoch), so a resumed run
    recomputes it instead of saving it."""
    import torch
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def record_done(out: Path, stage: str, step: int, total_steps: int) -> None:
    """The end of a finished training run (SFT or GRPO): train_done.json and the last log line."""
    from biopost.train.checkpoint import latest_checkpoint
    last = latest_checkpoint(out)
    write_json(out / "train_done.json", {"step": step, "total_steps": total_steps, "checkpoint": str(last)})
    log(f"[{stage}] done: {step} steps; checkpoint {last}")

"""Supervised fine-tuning of a BioReasoningModel on reasoning traces (both modalities).

Readable top to bottom: config, data, model, embeddings, optimizer, resume, the loop.
Loss is next-token cross-entropy on assistant tokens only, normalized by the number of
supervised tokens in the whole gradient-accumulation window (so accumulation equals one large
batch). The data order of epoch e is a permutation seeded by (seed, e); the position inside an
epoch is part of every checkpoint, so a resumed run continues exactly where the interrupted one
stopped and ends bit-identical on CPU.

Under torchrun with W processes (DDP, biopost.distributed) the plan is the 1-process one with
W x --gradient_accumulation_steps micro-batches per step; rank r runs micro-batches r, r+W, ... of
each step's window, so the losses and weights are those of one process with that accumulation, and
a checkpoint resumes under any W with the same W x accumulation. Rank 0 alone writes the run
directory; every rank loads.
"""
from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass
from typing import ClassVar, Optional

from biopost.config import ConfigError, F, save_config
from biopost.signals import REQUEUE_EXIT_CODE
from biopost.stage import run_stage
from biopost.train.recipe import epoch_order, log, model_spec_from_config, record_done, write_json


@dataclass
class SFTConfig:
    """SFT's config. The modality packages add their flags (DNA: --dna_model_name, --max_length_dna,
    ...) to it: see biopost.modality.with_modality_flags."""
    modality_flags: ClassVar[bool] = True
    # what and where
    task: str = F("kegg", "registered task name (kegg, vep; go with the protein package)")
    data_path: str = F("", "directory of split files, a single file, or a HF dataset name")
    output_dir: str = F("runs/sft", "run directory: config.yaml, checkpoints/, train_log.jsonl")
    run_id: Optional[str] = F(None, "run id recorded in config.yaml (default: the output directory's name)")
    sweep: Optional[str] = F(None, "sweep name (set by `biopost sweep`)")
    cell: dict = F({}, "the sweep cell's swept values as JSON (set by `biopost sweep`)")
    seed: int = F(0, "seed for initialization, dropout and data order")
    data_seed: int = F(0, "seed of the fixed permutation behind --train_data_fraction")
    # model
    text_model_name: str = F("Qwen/Qwen3-1.7B", "HF name or path of the Qwen3 language model")
    projector: str = F("", "linear or mlp (default: the modality's, e.g. linear for DNA, mlp for protein)")
    lora_rank: int = F(16, "LoRA rank; 0 = full fine-tuning of the language model")
    lora_alpha: int = F(32, "LoRA alpha")
    lora_dropout: float = F(0.05, "LoRA dropout")
    lora_target_modules: list = F(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                  "modules that get LoRA adapters")
    train_projector_only: bool = F(False, "train only the projectors and the added bio-token rows: the language "
                                          "model stays frozen, no LoRA (the first stage of a two-stage SFT)")
    projector_checkpoint_path: Optional[str] = F(None, "initialize the projectors and bio-token rows from this "
                                                       "checkpoint (directory or bio_modules.safetensors), e.g. "
                                                       "a projector-only first stage")
    trust_remote_code: bool = F(False, "allow models that ship their own code (off by default)")
    # data
    max_length_text: int = F(1024, "text-token budget per example (bio tokens come on top, never truncated)")
    train_data_fraction: float = F(1.0, "train on the first ceil(f*N) rows of a fixed permutation")
    skip_invalid: bool = F(False, "skip and count invalid rows instead of stopping at the first")
    system_prompt: str = F("", "optional system message")
    # optimization
    learning_rate: float = F(1e-4, "peak learning rate (AdamW)")
    weight_decay: float = F(0.0, "AdamW weight decay")
    max_grad_norm: float = F(1.0, "gradient clipping norm (0 = off)")
    lr_scheduler_type: str = F("cosine", "cosine, constant, linear or wsd")
    warmup_ratio: float = F(0.03, "fraction of the optimizer steps used for linear warmup")
    min_lr_ratio: float = F(0.0, "final learning rate as a fraction of the peak")
    num_train_epochs: int = F(1, "epochs over the training data")
    max_steps: int = F(-1, "stop after this many optimizer steps (overrides epochs when > 0)")
    per_device_train_batch_size: int = F(1, "examples per micro-batch (padded to the longest; unused when "
                                            "--tokens_per_micro_batch packs)")
    tokens_per_micro_batch: int = F(0, "pack each epoch's rows, in its order, into micro-batches of at most N "
                                       "tokens, one row each with no padding and no attention across documents "
                                       "(a longer row gets its own); 0 = off: --per_device_train_batch_size "
                                       "padded rows")
    loss_chunk_tokens: int = F(8192, "supervised positions per chunk of the LM head + cross-entropy, recomputed "
                                     "in the backward pass so no full-vocabulary logits of a large micro-batch "
                                     "stay alive (fewer positions: one plain pass; 0 = never chunk)")
    gradient_accumulation_steps: int = F(8, "micro-batches per optimizer step")
    gradient_checkpointing: bool = F(False, "recompute activations in the backward pass to save memory")
    bf16: bool = F(True, "bf16 autocast and bf16 frozen base weights on GPU (CPU always runs fp32)")
    device: str = F("auto", "auto, cpu, cuda or cuda:N")
    # checkpoints and logs
    save_steps: int = F(500, "checkpoint every N optimizer steps (and at every epoch end)")
    save_total_limit: int = F(2, "keep the newest N step checkpoints (labelled ones are kept too)")
    logging_steps: int = F(1, "write train_log.jsonl every N optimizer steps")
    resume: str = F("auto", "auto (resume from checkpoints/last if present), never, or a checkpoint path")
    # over-specialization monitor
    eval_every: int = F(0, "evaluate probe subsets of id_val and ood_val every N optimizer steps (0 = off)")
    probe_size: int = F(64, "examples per probe split")
    stop_on_ood_peak: int = F(0, "stop once OOD-val has not improved for N evaluations (0 = off)")
    max_new_tokens: int = F(256, "generation budget of the monitor's probe evaluations")
    eval_batch_size: int = F(8, "batch size of probe evaluations")
    engine: str = F("auto", "generation engine of the probe evaluations: auto (static on CUDA, hf on CPU), static or hf")
    # encoder
    encoder_batch_size: int = F(16, "sequences per encoder forward pass when filling the embedding cache")
    cache_dir: Optional[str] = F(None, "embedding cache root (default: $BIOPOST_CACHE_DIR)")
    # several processes (torchrun)
    parallel: str = F("auto", "under torchrun: ddp (every rank holds the whole model) or fsdp (FSDP2: weights, "
                              "gradients and Adam state sharded over the ranks); auto: fsdp for full fine-tuning, "
                              "ddp for LoRA and projector-only training")
    distributed_timeout_minutes: float = F(60.0, "under torchrun: how long a rank waits in a collective before "
                                                 "failing (rank 0 runs the monitor's probes while the others wait)")






def validate_config(cfg) -> None:
    problems = []
    if cfg.num_train_epochs < 0:
        problems.append("num_train_epochs must be >= 0")
    if cfg.per_device_train_batch_size < 1 or cfg.gradient_accumulation_steps < 1:
        problems.append("per_device_train_batch_size and gradient_accumulation_steps must be >= 1")
    if not 0 < cfg.train_data_fraction <= 1:
        problems.append(f"train_data_fraction must be in (0, 1], got {cfg.train_data_fraction}")
    if cfg.lora_rank < 0:
        problems.append("lora_rank must be >= 0")
    if cfg.tokens_per_micro_batch < 0 or cfg.loss_chunk_tokens < 0:
        problems.append("tokens_per_micro_batch and loss_chunk_tokens must be >= 0 (0 = off)")
    # step counts are divisors in the loop (step % N): 0 would fail only after the model loaded
    for name in ("save_steps", "logging_steps"):
        if getattr(cfg, name) < 1:
            problems.append(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.parallel not in ("auto", "ddp", "fsdp"):
        problems.append(f"parallel must be auto, ddp or fsdp, got {cfg.parallel!r}")
    if cfg.eval_every < 0:
        problems.append(f"eval_every must be >= 0 (0 = off), got {cfg.eval_every}")
    if problems:
        raise ConfigError("; ".join(problems))




def micro_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    order = epoch_order(n, seed, epoch)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def steps_per_epoch(n: int, batch_size: int, accum: int) -> int:
    return math.ceil(math.ceil(n / batch_size) / accum)


def epoch_batches(cfg, lengths: list[int], epoch: int) -> list[list[int]]:
    """The micro-batches (lists of example indices) of epoch `epoch`: packed to
    --tokens_per_micro_batch tokens, or --per_device_train_batch_size rows as without packing."""
    if cfg.tokens_per_micro_batch > 0:
        from biopost.train.packing import packed_epoch
        return packed_epoch(lengths, cfg.tokens_per_micro_batch, cfg.seed, epoch)
    return micro_batches(len(lengths), cfg.per_device_train_batch_size, cfg.seed, epoch)


def plan_steps(cfg, lengths: list[int], accum: int | None = None) -> tuple[list[int], int]:
    """(optimizer steps of each epoch, total steps for the schedule), before training, with `accum`
    micro-batches per step (over all ranks; default --gradient_accumulation_steps). Packed
    epochs differ (each packs its own order), so every epoch is packed here, from token counts
    only, and the total is their sum; --max_steps overrides it (past the last planned epoch the
    loop packs further epochs as it reaches them)."""
    accum = accum or cfg.gradient_accumulation_steps
    budget, epochs = cfg.tokens_per_micro_batch, max(cfg.num_train_epochs, 1)
    if budget > 0:
        from biopost.train.packing import steps_per_packed_epoch
        per_epoch = steps_per_packed_epoch(lengths, budget, cfg.seed, epochs, accum)
        oversize = [n for n in lengths if n > budget]
        n_micro = len(epoch_batches(cfg, lengths, 0))
        log(f"[sft] packing into micro-batches of <= {budget} tokens: epoch 0 has {n_micro} micro-batches "
            f"({sum(lengths) / (n_micro * budget):.1%} of the budget used); optimizer steps per epoch {per_epoch}")
        if oversize:
            log(f"[sft] {len(oversize)} rows are longer than --tokens_per_micro_batch {budget} (up to "
                f"{max(oversize)} tokens): each gets a micro-batch of its own, untruncated")
    else:
        per_epoch = [steps_per_epoch(len(lengths), cfg.per_device_train_batch_size, accum)] * epochs
    return per_epoch, cfg.max_steps if cfg.max_steps > 0 else sum(per_epoch[:cfg.num_train_epochs])






def global_batch(cfg, world: int) -> dict:
    """What one optimizer step takes over all ranks (written into config.yaml): per-device x world x
    accumulation, in rows (padded micro-batches) or at most that many tokens (packed)."""
    steps = world * cfg.gradient_accumulation_steps
    out = {"world_size": world, "micro_batches_per_step": steps}
    if cfg.tokens_per_micro_batch > 0:
        out["global_batch_max_tokens"] = cfg.tokens_per_micro_batch * steps
    else:
        out["global_batch_size"] = cfg.per_device_train_batch_size * steps
    return out


def check_resume_schedule(state: dict, sched: dict, resume_from) -> None:
    """A checkpoint's data position (step, epoch, micro) counts micro-batches of the 1-process plan
    with `micro_batches_per_step` of them per step, so it means the same under any world size whose
    world x accumulation is that number, and nothing under another."""
    saved = state.get("schedule")
    if saved is None or saved == sched:
        return
    raise ConfigError(f"--resume {resume_from}: that run took {saved['micro_batches_per_step']} micro-batches per "
                      f"optimizer step of --per_device_train_batch_size {saved['per_device_train_batch_size']} / "
                      f"--tokens_per_micro_batch {saved['tokens_per_micro_batch']}; this one would take "
                      f"{sched['micro_batches_per_step']} of {sched['per_device_train_batch_size']} / "
                      f"{sched['tokens_per_micro_batch']}. Keep the micro-batch flags and set "
                      f"--gradient_accumulation_steps so that world size x accumulation = "
                      f"{saved['micro_batches_per_step']}")


def run_window(net, share, examples, device, cfg, n_tokens: int, world: int, collate) -> float:
    """Forward and backward of this rank's share of one optimizer step's window; its summed loss.
    Each micro-batch's loss is scaled by world / (the whole window's supervised tokens): DDP
    averages gradients over the ranks, so after its all-reduce every rank holds the gradient one
    process would have for the whole window (world 1: exactly today's loss_sum / n_tokens).
    Gradients are synchronized at the share's last backward only."""
    from biopost.model.batch import Batch
    from biopost.runtime import autocast
    from biopost.distributed import no_sync
    total = 0.0
    for k, (mb, weight) in enumerate(share):
        batch = collate([examples[i] for i in mb])
        with no_sync(net, sync=k == len(share) - 1):
            with autocast(device, cfg.bf16):
                loss_sum = net(Batch(**batch)).loss_sum
            (loss_sum * (weight * world) / max(n_tokens, 1)).backward()
        total += weight * float(loss_sum.detach())
    return total


def encode_examples(model, task, train_rows, cfg):
    """(token-level examples, supervised tokens of each, how many had their text truncated)."""
    from biopost.data.examples import encode_training_example
    examples, n_truncated = [], 0
    for i, row in enumerate(train_rows):
        ex = encode_training_example(model, task, row, cfg.max_length_text, cfg.system_prompt or None, f"train[{i}]")
        n_truncated += ex.truncated
        examples.append(ex)
    sup_tokens = [sum(1 for t in ex.labels[1:] if t != -100) for ex in examples]
    if n_truncated:
        log(f"[sft] {n_truncated} examples had their text truncated to --max_length_text {cfg.max_length_text}")
    if not any(sup_tokens):
        raise ConfigError("no supervised tokens: every assistant turn was truncated away (raise --max_length_text)")
    return examples, sup_tokens, n_truncated


def train_sft(cfg: SFTConfig) -> int:
    from biopost.train.recipe import run_with_stop_flag
    validate_config(cfg)
    return run_with_stop_flag(_train_sft, cfg)


def _train_sft(cfg: SFTConfig, stop, rank) -> int:
    from tqdm import tqdm

    from biopost.train import checkpoint as ckpt_lib
    from biopost import distributed
    from biopost.train import recipe
    from biopost.train.log import JsonlLog, NullLog

    main_rank = rank.is_main   # the one writer of the run directory
    out, task = recipe.start_run(cfg, "sft", create=main_rank)
    batch_info = global_batch(cfg, rank.world)
    if main_rank:
        save_config(cfg, out / "config.yaml", extra={"stage": "sft", "modality": task.modality, **batch_info})
    if cfg.num_train_epochs == 0 and cfg.max_steps <= 0:
        log("[sft] num_train_epochs is 0: nothing to train")
        return 0
    if rank.world > 1 and cfg.eval_every > 0 and cfg.parallel != "ddp" and cfg.lora_rank == 0 \
            and not cfg.train_projector_only:
        refuse_sharded_monitor()   # before any rank loads a model (wrap_model checks what was loaded)
    device = recipe.prepare_device(cfg, multi_process=True)
    distributed.init(device, cfg.distributed_timeout_minutes)

    # ---------------------------------------------------------------- data
    monitor_splits = ("id_val", "ood_val") if cfg.eval_every > 0 else ()
    rows, reports, train_rows = recipe.load_training_rows(task, cfg, "sft", monitor_splits)

    # ---------------------------------------------------------------- model (every rank loads)
    resume_from = ckpt_lib.resolve_resume(cfg.resume, out)
    model = load_model(cfg, task, device, resume_from)

    examples, sup_tokens, n_truncated = encode_examples(model, task, train_rows, cfg)
    if main_rank:
        write_json(out / "data_report.json", {"splits": {s: r.to_dict() for s, r in reports.items()},
                                              "train_rows_used": len(train_rows), "text_truncated": n_truncated})
    caches = recipe.embedding_caches(model, examples, cfg, "sft")

    def embeddings(modality, seq):
        return caches[modality].get(seq)

    # ---------------------------------------------------------------- optimizer and schedule
    lengths = [len(ex.input_ids) for ex in examples]
    accum, packed = batch_info["micro_batches_per_step"], cfg.tokens_per_micro_batch > 0   # over all ranks
    per_epoch, total_steps = plan_steps(cfg, lengths, accum)
    model.loss_chunk_tokens = cfg.loss_chunk_tokens
    net, mode = wrap_model(cfg, model, device, rank)   # before the optimizer: FSDP2 replaces the parameters
    params = model.trainable_parameters()
    optimizer, scheduler = recipe.make_optimizer(params, cfg, total_steps)
    log(f"[sft] {len(examples)} examples, {per_epoch[0]} optimizer steps per epoch, {total_steps} in total; "
        f"{sum(p.numel() for p in params):,} trainable parameters; device {device}; world size {rank.world}"
        f"{' (' + mode + ')' if rank.world > 1 else ''}, "
        f"global batch {batch_info}")

    step, epoch, micro = 0, 0, 0
    monitor_state: dict = {}
    sched = {"micro_batches_per_step": accum, "per_device_train_batch_size": cfg.per_device_train_batch_size,
             "tokens_per_micro_batch": cfg.tokens_per_micro_batch}
    if resume_from is not None:
        state = ckpt_lib.load_optimizer_state(resume_from, optimizer, scheduler, rank=rank.rank, world=rank.world,
                                              load_optimizer=lambda st: distributed.load_optimizer_state(net, optimizer, st))
        check_resume_schedule(state, sched, resume_from)
        step, epoch, micro = state["step"], state["epoch"], state["micro"]
        monitor_state = state.get("monitor", {})
    resume_step = step if resume_from is not None else None
    train_log = JsonlLog(out / "train_log.jsonl", resume_step=resume_step) if main_rank else NullLog()

    monitor = None
    if cfg.eval_every > 0 and main_rank:   # rank 0 evaluates; its decisions are broadcast
        from biopost.train.monitor import ProbeMonitor
        monitor = ProbeMonitor.create(cfg, model, task, rows, caches, out, monitor_state, log)

    def save(step_now: int, labels=("last",)):
        rngs = distributed.gather_to_main(ckpt_lib.capture_rng())   # each rank's dropout stream
        opt_state = distributed.optimizer_state(net, optimizer)      # gathered from the shards under FSDP
        full = distributed.full_model_state(net)
        if main_rank:
            state = {"step": step_now, "epoch": epoch, "micro": micro, "total_steps": total_steps, "stage": "sft",
                     "monitor": monitor.state() if monitor else {}, "schedule": sched, "world_size": rank.world,
                     "parallel": mode if rank.world > 1 else None}
            ckpt_lib.save_checkpoint(out, step_now, lambda d: model.save(d, state=full), optimizer, scheduler,
                                     state, keep_last=cfg.save_total_limit, labels=labels,
                                     other_ranks_rng=rngs[1:], optimizer_state=opt_state)
        distributed.barrier()   # no rank goes on (or exits) while rank 0 writes

    def collate(rows_):
        return collate_batch(rows_, model, embeddings, device, packed)

    # ---------------------------------------------------------------- the loop
    bar = tqdm(total=total_steps, initial=step, desc="sft", unit="step", dynamic_ncols=True, disable=not main_rank,
               mininterval=1.0 if sys.stderr.isatty() else 30.0)
    batches = epoch_batches(cfg, lengths, epoch)
    exit_code = 0
    last_saved = step if resume_from is not None else -1
    while step < total_steps:
        t0 = time.perf_counter()
        group = batches[micro:micro + accum]   # the 1-process window; this rank runs its share
        n_tokens = sum(sup_tokens[i] for mb in group for i in mb)
        share = distributed.window_share(group, rank.world, rank.rank)
        loss_total = distributed.sum_across(run_window(net, share, examples, device, cfg, n_tokens, rank.world,
                                                       collate))
        grad_norm = recipe.clip_and_step(params, optimizer, scheduler, cfg.max_grad_norm)
        step += 1
        micro += len(group)
        epoch_done = micro >= len(batches)
        if epoch_done:
            epoch, micro = epoch + 1, 0
            batches = epoch_batches(cfg, lengths, epoch)
        dt = time.perf_counter() - t0
        loss = loss_total / max(n_tokens, 1)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", epoch=epoch, refresh=False)
        if step % cfg.logging_steps == 0 or step == total_steps:
            entry = dict(step=step, epoch=round(epoch + micro / max(len(batches), 1), 4), loss=loss,
                         lr=scheduler.get_last_lr()[0], grad_norm=float(grad_norm), n_tokens=n_tokens,
                         step_time_s=dt, tokens_per_s=n_tokens / dt if dt > 0 else None)
            train_log.write(**recipe.peak_memory(entry, device))
        should_stop_early, improved = False, False
        if cfg.eval_every > 0 and (step % cfg.eval_every == 0 or step == total_steps):
            if monitor is not None:
                improved, should_stop_early = monitor.evaluate(step, train_log)
                model.train()
            improved, should_stop_early = distributed.from_main((improved, should_stop_early))
        if improved or step % cfg.save_steps == 0 or epoch_done or step == total_steps or should_stop_early:
            save(step, ("last", "best_ood_val") if improved else ("last",))
            last_saved = step
        if should_stop_early:
            log(f"[sft] OOD-val has not improved for {cfg.stop_on_ood_peak} evaluations: stopping at step {step}")
            break
        if distributed.any_rank(bool(stop)) and step < total_steps:
            if last_saved != step:
                save(step)
            got = signal.Signals(stop.requested).name if stop else "none, another rank's"
            log(f"[sft] received a stop signal (rank 0: {got}): checkpointed step {step}/{total_steps}, "
                f"exiting with {REQUEUE_EXIT_CODE} (requeue)")
            exit_code = REQUEUE_EXIT_CODE
            break
    bar.close()
    train_log.close()
    if exit_code == 0 and main_rank:
        record_done(out, "sft", step, total_steps)
    distributed.barrier()   # train_done.json is written before any rank reports success
    return exit_code


def load_model(cfg, task, device, resume_from):
    """The model this run trains: its own checkpoint when resuming, else built fresh (the projectors
    and bio-token rows optionally from a first-stage run), in training mode."""
    from biopost.model.bio_model import BioReasoningModel
    from biopost.runtime import base_dtype
    from biopost.train import recipe
    # full FT keeps fp32 master weights; a frozen LLM (projector only) is never updated
    dtype = base_dtype(device, cfg.bf16 and (cfg.lora_rank > 0 or cfg.train_projector_only))
    if resume_from is not None:
        log(f"[sft] resuming from {resume_from}")
        model = BioReasoningModel.load(resume_from, device=device, dtype=dtype, is_trainable=True,
                                       trust_remote_code=cfg.trust_remote_code)
    else:
        model = BioReasoningModel.build(model_spec_from_config(cfg, task.modality), device=device, dtype=dtype)
        if cfg.projector_checkpoint_path:
            loaded = model.load_projector_checkpoint(cfg.projector_checkpoint_path)
            log(f"[sft] projectors and bio-token rows initialized from {loaded}")
    if cfg.gradient_checkpointing:
        recipe.enable_gradient_checkpointing(model)
    model.train()
    return model


def wrap_model(cfg, model, device, rank):
    """(the module the passes go through, its parallel mode): biopost.distributed.wrap."""
    from biopost import distributed
    mode = distributed.parallel_mode(cfg.parallel, full_finetune=not model.is_lora and not model.spec.frozen_llm)
    if mode == "fsdp" and rank.world > 1 and cfg.eval_every > 0:
        refuse_sharded_monitor()
    return distributed.wrap(model, device, mode), mode


def refuse_sharded_monitor():
    raise ConfigError("--eval_every: the OOD monitor generates on rank 0 alone, which a model sharded over the "
                      "ranks (--parallel fsdp, the default for full fine-tuning) cannot do; use --parallel ddp "
                      "or --eval_every 0")


def collate_batch(examples, model, embeddings, device, packed: bool = False):
    """A padded batch of rows, or (packed) one row of documents back to back."""
    from biopost.data.examples import collate, collate_packed
    if packed:
        return collate_packed(examples, embeddings, device=device)
    return collate(examples, model.tokenizer.pad_token_id, embeddings, device=device)


def main(argv=None, prog: str | None = None) -> int:
    from biopost.config import parse_config
    cfg = parse_config(SFTConfig, argv, prog=prog, description=__doc__.split("\n\n")[0])
    return run_stage(train_sft, cfg)

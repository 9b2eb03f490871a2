"""Continued pre-training (CPT, "mid-training") of a causal-LM backbone on biology text.

One file, top to bottom: the config, then `train_cpt`, which loads the tokenizer and the
held-out documents, sizes the run, builds the model and optimizer, resumes if a checkpoint exists,
runs an explicit training loop, and finally evaluates and exports `<output_dir>/final/` (a plain
HF model directory that SFT and GRPO take as `--text_model_name`).

Data: packed blocks of `max_length` tokens from jsonl shards (see biopost/data/text.py), streamed
lazily. The held-out set is the first `eval_docs` documents of `eval_data_path`, or, when that is
unset, of `data_path` itself, and then training starts after them, so they are never trained on.

Resume: a checkpoint stores the model (full weights, or the LoRA adapter), optimizer, scheduler,
RNG and the data position (next unread row + the tokens read but not yet emitted), so an
interrupted run ends bit-identical on CPU to one that was not. SIGTERM/SIGUSR1 checkpoint at the
next optimizer step and exit with REQUEUE_EXIT_CODE (75).

Under torchrun with W processes (DDP, biopost.distributed) an optimizer step takes the blocks
of one process with W times the accumulation: every rank reads the same stream, and rank r trains
micro-batches r, r + W, ... of the step; DDP's gradient mean makes the update the 1-process one.
The run's identity is that global batch, so a checkpoint resumes under any W whose W x accumulation
is the same. Rank 0 alone writes and evaluates; every rank stops at the same step.

torch and transformers are imported inside train_cpt: importing this module for CPTConfig alone
(e.g. to check a sweep's keys on a login node) stays cheap.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from biopost.config import ConfigError, F, save_config
from biopost.files import fsync_tree, output_error, write_json_atomic
from biopost.data.text import BlockStream, TextDataError
from biopost.train.cpt_data import HeldOut, size_run
from biopost.train.schedule import SCHEDULES

METRICS_FILE = "final_eval_metrics.json"
METRICS_SCHEMA = "biopost.cpt_eval/v1"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class CPTConfig:
    # model
    text_model_name: str = F("Qwen/Qwen3-1.7B", "backbone: hub name, local HF directory, or biopost-tiny/qwen3")
    trust_remote_code: bool = F(False, "allow the model/tokenizer repository to run its own code")
    gradient_checkpointing: bool = F(False, "recompute activations in the backward pass (less memory, ~25% slower)")
    bf16: bool = F(True, "bf16 autocast on CUDA over fp32 weights; CPU always runs fp32")
    device: str = F("auto", "auto, cpu, cuda or cuda:N")
    parallel: str = F("auto", "under torchrun: ddp (every rank holds the whole model) or fsdp (FSDP2: weights, "
                              "gradients and Adam state sharded over the ranks); auto: fsdp for full fine-tuning "
                              "(the CPT default), ddp for LoRA")
    lora_rank: int = F(0, "0: full fine-tuning (the CPT default); > 0: train a LoRA adapter, merged into final/")
    lora_alpha: int = F(32, "LoRA scaling numerator (used when lora_rank > 0)")
    lora_dropout: float = F(0.0, "LoRA dropout (used when lora_rank > 0)")
    lora_target_modules: list[str] = F(LORA_TARGETS, "modules that get LoRA adapters")
    # data
    data_path: str = F("biopost:bio_text/train", "training corpus: directory of *.jsonl[.gz] shards, one file, "
                       "or a HF dataset name; `biopost:` means the package's resources directory")
    eval_data_path: Optional[str] = F(None, "held-out corpus; unset: hold out the first eval_docs documents "
                                      "of data_path (never trained on)")
    eval_docs: int = F(200, "held-out documents, from the start of eval_data_path (or of data_path)")
    text_field: str = F("text", "row field holding the document text")
    hf_split: str = F("train", "split, when data_path / eval_data_path is a HF dataset name")
    hf_name: Optional[str] = F(None, "dataset config name, for a HF dataset")
    hf_data_files: Optional[str] = F(None, "data_files glob inside a HF dataset repository (e.g. a domain folder)")
    skip_invalid: bool = F(False, "skip (and count) bad rows instead of stopping with an error that names them")
    validate_data: bool = F(True, "with --max_steps, read every row of a local corpus once before training so a "
                            "bad row fails now, not hours in (without --max_steps the counting pass does this)")
    max_length: int = F(2048, "block size: tokens per packed training sequence")
    # optimization
    learning_rate: float = F(2e-5, "peak learning rate")
    weight_decay: float = F(0.1, "AdamW weight decay (matrices only; norms and biases are not decayed)")
    adam_beta1: float = F(0.9, "AdamW beta1")
    adam_beta2: float = F(0.95, "AdamW beta2")
    adam_epsilon: float = F(1e-8, "AdamW epsilon")
    max_grad_norm: float = F(1.0, "gradient clipping threshold (0: no clipping)")
    lr_scheduler_type: str = F("cosine", "cosine, constant, linear or wsd")
    warmup_steps: int = F(0, "linear warmup steps")
    warmup_ratio: float = F(0.0, "warmup as a fraction of the total steps (used when warmup_steps is 0)")
    min_lr_ratio: float = F(0.1, "final learning rate as a fraction of the peak (cosine, linear, wsd)")
    num_train_epochs: float = F(1.0, "passes over the training corpus (ignored when max_steps > 0)")
    max_steps: int = F(-1, "> 0: this many optimizer steps, cycling the corpus as needed; otherwise one "
                       "tokenizing pass over the corpus sizes the run from num_train_epochs")
    per_device_train_batch_size: int = F(8, "blocks per micro-batch")
    per_device_eval_batch_size: int = F(8, "blocks per evaluation batch")
    gradient_accumulation_steps: int = F(1, "micro-batches per optimizer step")
    # bookkeeping
    seed: int = F(0, "random seed")
    output_dir: str = F("runs/cpt", "run directory (config.yaml, checkpoints/, train_log.jsonl, final/)")
    resume: str = F("auto", "auto: from output_dir/checkpoints/last when present; never; or a checkpoint directory")
    logging_steps: int = F(10, "write a train_log.jsonl entry every N optimizer steps")
    eval_steps: int = F(0, "held-out evaluation every N optimizer steps (0: only at the end)")
    save_steps: int = F(500, "checkpoint every N optimizer steps (also at pass ends, at the end, and on "
                        "SIGTERM/SIGUSR1)")
    save_total_limit: int = F(2, "step checkpoints kept on disk")
    # identity, set by the sweep runner
    sweep: Optional[str] = F(None, "sweep name (null for a standalone run)")
    cell: dict = F({}, "the swept values of this cell, as JSON")
    run_id: Optional[str] = F(None, "run id (default: the output directory's name)")


def check_config(cfg: CPTConfig) -> None:
    positive = ["max_length", "per_device_train_batch_size", "per_device_eval_batch_size",
                "gradient_accumulation_steps", "eval_docs", "logging_steps", "save_steps"]
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}: must be at least 1, got {getattr(cfg, name)}")
    if cfg.max_length < 2:
        raise ConfigError("max_length: a block needs at least 2 tokens")
    if cfg.lr_scheduler_type not in SCHEDULES:
        raise ConfigError(f"lr_scheduler_type: {cfg.lr_scheduler_type!r} is not one of {', '.join(SCHEDULES)}")
    if cfg.max_steps <= 0 and cfg.num_train_epochs < 0:
        raise ConfigError("num_train_epochs: must be >= 0")
    if cfg.lora_rank < 0:
        raise ConfigError("lora_rank: must be >= 0")


def train_cpt(cfg: CPTConfig) -> int:
    """Run (or resume) CPT; returns 0 when finished, REQUEUE_EXIT_CODE after a preemption signal."""
    from biopost import distributed
    try:
        return _train_cpt(cfg)
    finally:
        distributed.teardown()


def _train_cpt(cfg: CPTConfig) -> int:
    import torch
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from biopost.runtime import autocast, rank_info
    from biopost.signals import REQUEUE_EXIT_CODE, StopFlag
    from biopost.tiny import resolve_model_path
    from biopost import distributed
    from biopost.train.checkpoint import load_optimizer_state, resolve_resume, save_checkpoint
    from biopost.train.log import JsonlLog, NullLog
    from biopost.train.recipe import prepare_device

    check_config(cfg)
    out = Path(cfg.output_dir)
    cfg.run_id = cfg.run_id or out.resolve().name
    ckpt = resolve_resume(cfg.resume, out)
    saved = json.loads((ckpt / "trainer_state.json").read_text()) if ckpt is not None else {}
    if saved and saved["step"] >= (cfg.max_steps if cfg.max_steps > 0 else saved["total_steps"]) \
            and (out / "final").is_dir() and _read_metrics_step(out / METRICS_FILE) == saved["step"]:
        # e.g. a job requeued after it had finished: keep the exported model untouched
        print(f"cpt: {out} already finished at step {saved['step']}; nothing to do", file=sys.stderr)
        return 0
    rank = rank_info()
    main = rank.is_main   # the one writer of the run directory
    device = prepare_device(cfg, multi_process=True)
    distributed.init(device)
    model_path = resolve_model_path(cfg.text_model_name)

    # ---- tokenizer and held-out documents
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.trust_remote_code)
    data = HeldOut.read(cfg, tokenizer)
    T = cfg.max_length
    micro_per_step = cfg.gradient_accumulation_steps * rank.world
    blocks_per_step = cfg.per_device_train_batch_size * micro_per_step   # over all ranks
    # What a checkpoint's model part and data position mean; a resumed run must agree on all of it.
    signature = {"text_model_name": cfg.text_model_name, "lora_rank": cfg.lora_rank, "data_path": cfg.data_path,
                 "eval_data_path": cfg.eval_data_path, "eval_docs": cfg.eval_docs, "text_field": cfg.text_field,
                 "max_length": T, "blocks_per_step": blocks_per_step, "separator_id": data.sep}
    if ckpt is not None:
        before = saved.get("signature", {})
        changed = {k: (before.get(k), v) for k, v in signature.items() if before.get(k) != v}
        if changed:
            detail = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise ConfigError(f"cannot resume from {ckpt}: the run changed ({detail}); "
                              "use a new --output_dir, or --resume never to start over")
    if main:
        save_config(cfg, out / "config.yaml", extra={"stage": "cpt", "modality": "text", "task": "bio_text",
                                                     "world_size": rank.world, "micro_batches_per_step": micro_per_step,
                                                     "global_batch_blocks": blocks_per_step})
    total_steps = size_run(cfg, ckpt, saved, data, blocks_per_step)
    warmup = cfg.warmup_steps if cfg.warmup_steps > 0 else round(cfg.warmup_ratio * total_steps)

    # ---- model, optimizer, data position
    lora = cfg.lora_rank > 0
    model = build_model(cfg, ckpt, model_path, device)
    amp = autocast(device, cfg.bf16)
    mode = distributed.parallel_mode(cfg.parallel, full_finetune=not lora)
    net = distributed.wrap(model, device, mode)   # before the optimizer: FSDP2 replaces the parameters
    sharded = distributed.is_sharded(net)         # then every rank takes part in each forward, evaluation too
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimizer(params, cfg, total_steps, warmup)
    step = 0
    if ckpt is not None:
        step = load_optimizer_state(ckpt, optimizer, scheduler, rank=rank.rank, world=rank.world,
                                    load_optimizer=lambda st: distributed.load_optimizer_state(net, optimizer, st)
                                    )["step"]  # + RNG
        print(f"cpt: resumed from {ckpt} at step {step}", file=sys.stderr)
    stream = BlockStream(data.train_source, data.encode, data.sep, T, start=data.train_start, state=saved.get("data"))
    n_params = sum(p.numel() for p in params)
    print(f"cpt: {cfg.text_model_name} on {device} ({'LoRA r=%d' % cfg.lora_rank if lora else 'full'}, "
          f"{n_params / 1e6:.1f}M trainable), data {data.train_source.describe()}, {total_steps} steps of "
          f"{blocks_per_step}x{T} tokens (world size {rank.world}{', ' + mode if rank.world > 1 else ''}), "
          f"held out {len(data.eval_texts)} docs = {len(data.eval_blocks)} blocks", file=sys.stderr)

    def save(step: int) -> None:
        opt_state = distributed.optimizer_state(net, optimizer)     # gathered from the shards under FSDP
        full = distributed.full_model_state(net)
        if main:
            state = {"epoch": stream.epoch, "total_steps": total_steps, "data": stream.state(),
                     "signature": signature, "run_id": cfg.run_id, "world_size": rank.world}
            save_checkpoint(out, step, lambda d: save_model(model, d, full), optimizer, scheduler, state,
                            keep_last=cfg.save_total_limit, optimizer_state=opt_state)
        distributed.barrier()   # no rank goes on (or exits) while rank 0 writes

    # ---- training loop
    log = JsonlLog(out / "train_log.jsonl", resume_step=step if ckpt is not None else None) if main else NullLog()
    stop = StopFlag()
    last_saved = step if ckpt is not None else None
    empty_passes = 0
    tty = sys.stderr.isatty()
    bar = tqdm(total=total_steps, initial=step, desc="cpt", dynamic_ncols=True, mininterval=1 if tty else 30,
               disable=not main)
    t0 = time.time()
    stopping = False
    try:
        while step < total_steps and not stopping:
            blocks = stream.take(blocks_per_step)
            if blocks is None:  # a pass over the corpus ended; the unfinished batch was dropped
                empty_passes += 1
                if empty_passes > 1:
                    raise TextDataError(f"{data.train_source.describe()}: a whole pass does not fill one optimizer "
                                        f"step ({blocks_per_step} blocks of {T} tokens)")
                if last_saved != step:
                    save(step)
                    last_saved = step
                continue
            empty_passes = 0
            batch = torch.tensor(blocks, dtype=torch.long).view(micro_per_step, cfg.per_device_train_batch_size, T)
            loss_sum, grad_norm, lr = optimizer_step(net, batch[rank.rank::rank.world], cfg, params, optimizer,
                                                     scheduler, device, amp)
            step += 1
            bar.update(1)

            if step % cfg.logging_steps == 0 or step == 1 or step == total_steps:
                loss_value = distributed.sum_across(loss_sum.item()) / rank.world
                extra = {"max_mem_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)} \
                    if device.type == "cuda" else {}
                log.write(step=step, epoch=stream.epoch, loss=loss_value, lr=lr, grad_norm=float(grad_norm),
                          tokens=step * blocks_per_step * T, elapsed_s=round(time.time() - t0, 3), **extra)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", refresh=False)
            if cfg.eval_steps > 0 and step % cfg.eval_steps == 0 and step < total_steps:
                if main or sharded:
                    metrics = evaluate(model, data.eval_blocks, cfg.per_device_eval_batch_size, device, amp)
                    log.write(step=step, eval_loss=metrics["eval_loss"], eval_ppl=metrics["perplexity"],
                              eval_tokens=metrics["eval_tokens"])
                distributed.barrier()
            stopping = distributed.any_rank(bool(stop))   # a signal may reach one rank only
            if step % cfg.save_steps == 0 or stopping:
                save(step)
                last_saved = step
        bar.close()
        if last_saved != step:
            save(step)
            last_saved = step
        if stopping:
            log.write(step=step, event="preempted", signal=int(stop.requested or 0))
            print(f"cpt: signal {stop.requested}: checkpointed step {step}, exiting {REQUEUE_EXIT_CODE} "
                  "(requeue me)", file=sys.stderr)
            return REQUEUE_EXIT_CODE
        if main or sharded:
            finish(cfg, model, tokenizer, data, out, step, blocks_per_step, stream, log, device, amp,
                   net=net, main=main)
        distributed.barrier()   # final/ exists before any rank reports success
        return 0
    finally:
        bar.close()
        stop.restore()
        log.close()


def optimizer_step(net, mine, cfg, params, optimizer, scheduler, device, amp):
    """One optimizer step over this rank's micro-batches (`mine`: accum of the step's W x accum);
    returns (this rank's loss, the gradient norm, the learning rate used)."""
    import torch

    from biopost import distributed
    loss_sum = torch.zeros((), device=device)
    for i, micro in enumerate(mine):
        micro = micro.to(device)
        with distributed.no_sync(net, i == len(mine) - 1):
            with amp:
                # Every block is full, so the mean over micro-batches is the mean over all tokens;
                # DDP's gradient mean averages the ranks.
                loss = net(input_ids=micro, labels=micro).loss / cfg.gradient_accumulation_steps
            loss.backward()
        loss_sum += loss.detach()
    if cfg.max_grad_norm > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    else:
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params
                                                               if p.grad is not None]))
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, grad_norm, lr


def build_model(cfg, ckpt, model_path, device):
    """The causal LM being trained: full weights come from the checkpoint on resume; a LoRA
    adapter is loaded over the base. CPT trains the plain HF model (no bio modules), whose own
    forward is the single entry point a DDP / FSDP wrapper takes."""
    import torch
    from transformers import AutoModelForCausalLM
    lora = cfg.lora_rank > 0
    weights = str(ckpt) if (ckpt is not None and not lora) else model_path
    model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32, trust_remote_code=cfg.trust_remote_code)
    model.config.use_cache = False  # no KV cache while training
    if cfg.gradient_checkpointing:
        _enable_gradient_checkpointing(model)
    if lora:
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
        model = get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                                                 lora_dropout=cfg.lora_dropout, task_type="CAUSAL_LM",
                                                 target_modules=list(cfg.lora_target_modules)))
        if ckpt is not None:
            from safetensors.torch import load_file
            set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
    model.to(device)
    model.train()
    return model


def make_optimizer(params, cfg, total_steps: int, warmup: int):
    """AdamW with decay on matrices only (norms and biases are not decayed), and the schedule."""
    import torch

    from biopost.train.schedule import lr_multiplier
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  eps=cfg.adam_epsilon)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(
        s, kind=cfg.lr_scheduler_type, warmup_steps=warmup, total_steps=total_steps, min_lr_ratio=cfg.min_lr_ratio))
    return optimizer, scheduler


def finish(cfg, model, tokenizer, data: HeldOut, out: Path, step: int, blocks_per_step: int, stream, log,
           device, amp, net=None, main: bool = True) -> None:
    """Final held-out evaluation, the exported model in final/, and final_eval_metrics.json. A
    sharded model (`net` under FSDP) has every rank here: the evaluation and the gathering of the
    full weights are collectives; rank 0 (`main`) writes."""
    from biopost import distributed
    metrics = evaluate(model, data.eval_blocks, cfg.per_device_eval_batch_size, device, amp)
    full = distributed.full_model_state(net) if net is not None else None
    if not main:
        return
    log.write(step=step, eval_loss=metrics["eval_loss"], eval_ppl=metrics["perplexity"],
              eval_tokens=metrics["eval_tokens"], final=True)
    export_final(model, tokenizer, out / "final", cfg.lora_rank > 0, state=full)
    result = {"schema": METRICS_SCHEMA, "run_id": cfg.run_id, "sweep": cfg.sweep, "cell": cfg.cell,
              "stage": "cpt", "text_model_name": cfg.text_model_name, "step": step,
              "eval_loss": metrics["eval_loss"], "perplexity": metrics["perplexity"],
              "eval_tokens": metrics["eval_tokens"], "eval_blocks": len(data.eval_blocks),
              "eval_docs": len(data.eval_texts), "eval_data": data.eval_source.describe(),
              "train_tokens": step * blocks_per_step * cfg.max_length, "skipped_rows": stream.skipped + data.eval_skipped,
              "separator_token": tokenizer.convert_ids_to_tokens(data.sep), "final": str((out / "final").resolve()),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    # allow_nan: a diverged run's eval loss is NaN, and its metrics file must still be written
    write_json_atomic(out / METRICS_FILE, result, indent=1, allow_nan=True)
    print(f"cpt: done at step {step}: held-out loss {metrics['eval_loss']:.4f}, perplexity "
          f"{metrics['perplexity']:.2f}; model in {out / 'final'}", file=sys.stderr)


def evaluate(model, blocks, batch_size: int, device, amp) -> dict:
    """Mean next-token loss over every predicted token of the held-out blocks, and its exp."""
    import torch
    import torch.nn.functional as F_

    model.eval()
    total, n_tokens = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(blocks), batch_size):
            group = blocks[i:i + batch_size]
            # The tail block is shorter than the others: run it as its own batch rather than pad.
            for same in ([group] if len({len(b) for b in group}) == 1 else [[b] for b in group]):
                ids = torch.tensor(same, dtype=torch.long, device=device)
                with amp:
                    logits = model(input_ids=ids).logits
                loss = F_.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                        ids[:, 1:].reshape(-1), reduction="sum")
                total += loss.item()
                n_tokens += ids[:, 1:].numel()
    model.train()
    mean = total / n_tokens
    return {"eval_loss": mean, "perplexity": math.exp(min(mean, 700.0)), "eval_tokens": n_tokens}


def save_model(model, out_dir, state: dict | None = None) -> None:
    """model.save_pretrained, from `state` (the full state dict gathered from FSDP shards) when
    given; a tied LM head, a copy of the embeddings in a gathered state, is left to the tie."""
    from biopost import distributed
    if state is not None:
        state = distributed.without_tied_head(state, model.config)
    model.save_pretrained(out_dir, state_dict=state)


def export_final(model, tokenizer, final: Path, lora: bool, state: dict | None = None) -> None:
    """Write a plain HF model directory (merging a LoRA adapter), atomically; `state`: see save_model
    (sharded runs are full fine-tuning: biopost.distributed.parallel_mode)."""
    tmp = final.with_name(final.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    export = model.merge_and_unload() if lora else model
    export.config.use_cache = True  # downstream generation wants the KV cache back
    try:
        save_model(export, tmp, state)
        tokenizer.save_pretrained(tmp)
        fsync_tree(tmp)
    except Exception as e:  # noqa: BLE001 - only file-system errors are turned into OutputError
        shutil.rmtree(tmp, ignore_errors=True)
        err = output_error(e, tmp)
        if err is None:
            raise
        raise err from None
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def _enable_gradient_checkpointing(model) -> None:
    # transformers >= 5.2x renames gradient_checkpointing_enable; the GPU image still has 5.17.
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _read_metrics_step(path: Path):
    try:
        return json.loads(path.read_text()).get("step")
    except (OSError, ValueError, AttributeError):
        return None


"""GRPO on the full multimodal model: bio encoder -> projector -> Qwen3, DNA/protein in every prompt.

Readable top to bottom: config, batch schedule, then the loop. The rest lives beside it, by
concern: grpo_loss.py (advantages, the per-token loss: pure tensor math), grpo_policy.py
(micro-batches, completion log-probs, the reference policy), warm_start.py (SFT warm / cold
start), grpo_rollouts.py (generation batches: sample, score, old / reference log-probs),
grpo_step.py (the passes of one optimizer step).

The algorithm as written (and as TRL 1.16's GRPOTrainer computes it, which a test checks):
  1. Rollouts. For each prompt, G = num_generations completions from the current policy through
     the engine picked by --engine (`biopost.generate.engine`; `hf`: bio embeddings spliced into
     the prompt, KV cache, temperature / top_p / top_k), with a torch.Generator seeded by
     (seed, generation-batch index): a run, and a resumed run, draw the same samples.
  2. Rewards: named functions (`biopost.rewards`), total = weighted sum.
  3. Advantages: A = r - mean(group); divided by std(group) + 1e-4 (`scale_rewards group`), by
     std(batch) + 1e-4 (`batch`), or not at all (`none`). Std is Bessel-corrected, as TRL's.
  4. Per-token log-probs of the completion tokens under logits / temperature, for the current
     policy (with gradient), the old policy (a real no-grad pass right after generation whenever
     the policy can change before the batch is used up: num_iterations > 1, or a generation batch
     spanning several optimizer steps; otherwise the detached current log-probs, so the ratio is
     exactly 1, as in TRL) and the reference (skipped when beta = 0).
  5. Loss per token: -min(rho*A, clip(rho, 1-eps_low, 1+eps_high)*A) + beta*k3, with
     k3 = exp(ref - logp) - (ref - logp) - 1 (times rho with `--use_bias_correction_kl true`, TRL
     1.16's default, off here: the objective as written), and rho per token or, with
     `importance_sampling_level sequence` (GSPO), exp(mean over the sequence's tokens of the log ratio).
     Optionally completions cut at max_completion_length leave the loss (`mask_truncated_completions`).
     Aggregation: `grpo` mean over each sequence's tokens then over sequences; `dr_grpo` sum over
     tokens / (sequences x max_completion_length); `dapo` sum over tokens / tokens in the whole
     generation batch (rescaled to one accumulation window) -- all divided over accumulation
     exactly as TRL does.
  The published study's GRPO took the old log-probs from the current policy on every update (ratio
  identically 1: REINFORCE), and dropped the protein encoder in RL; here neither happens. Rewards
  and what the loop measured go to train_log.jsonl each step: total and per-function reward, its
  std, the fraction of groups with zero std (no signal), KL (mean k3), entropy, clip fractions
  (low / high / region, as TRL), the largest |rho - 1|, completion lengths, the truncated fraction,
  learning rate, grad norm, and the step time split into generation (sampling, rewards, old and
  reference passes) and update.

Batch semantics (TRL's):
  per_device_train_batch_size   completions (not prompts) per micro-batch (one forward/backward)
  gradient_accumulation_steps   micro-batches per optimizer step
  steps_per_generation          micro-batches per generation batch (default: = accumulation)
  generation batch              per_device_train_batch_size x steps_per_generation completions
                                = that / num_generations prompts (must divide evenly); generated
                                once, then used num_iterations times (micro-batch i of the batch
                                is slice i mod steps_per_generation).
  So with the defaults (steps_per_generation = accumulation, num_iterations 1) one optimizer step
  = one generation batch = (batch x accumulation / G) prompts. A generation batch must span whole
  optimizer steps or an optimizer step whole generation batches (one divides the other).
  An epoch is a seeded permutation of the training prompts cut into generation batches; a last
  incomplete one is dropped (as TRL's sampler does), so each epoch sees floor(N / prompts) batches.

Checkpoints (and SIGTERM/SIGUSR1 stops) happen only at optimizer steps that end a generation
batch's last iteration, so no rollout buffer is ever saved: the data position is a function of the
step. A signal therefore takes effect at most num_iterations x steps_per_generation / accumulation
optimizer steps later. On CPU a resumed run ends bit-identical to an uninterrupted one.

The reference policy is the policy as GRPO started: frozen copies of every trainable tensor
(projector, new-token rows, and the LoRA adapter or, in full fine-tuning, the whole LLM) are
swapped in for the reference pass; a freshly added LoRA adapter is simply disabled (identical,
and cheaper). `--reference base` disables even a continued SFT adapter (the base LLM as reference).
The frozen copies are written once to `<output_dir>/reference.safetensors` so that a resumed run
has the same reference.

Several processes (torchrun, DDP; biopost.distributed): the plan is the 1-process one with W x
--gradient_accumulation_steps micro-batches per step and W x --steps_per_generation per generation
batch, so a generation batch holds W x per_device_train_batch_size x steps_per_generation
completions (TRL's per-device semantics). Rank r samples chunks r, r+W, ... of it (each chunk of
--rollout_batch_size completions, default the batch / W, with its own seeded generator) and the
ranks exchange completions, so every rank scores the whole batch and computes each group's
advantages over all of its completions; rank r then runs micro-batches r, r+W, ... of each window
(their old / reference passes too) and DDP's all-reduce makes the update the 1-process one. Logged
sums are reduced over ranks; rank 0 alone writes the run directory. A W-process run therefore
equals one process with the multiplied accumulation and steps_per_generation and a
--rollout_batch_size equal to the per-rank chunk (a test checks); a checkpoint resumes under any W
with the same products (with the default chunking another W draws other, equally valid, samples).

Nothing here imports TRL: TRL is only the test oracle.
"""
from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass
from typing import ClassVar, Optional

from biopost.config import ConfigError, F, save_config
from biopost.errors import CheckpointError
from biopost.signals import REQUEUE_EXIT_CODE
from biopost.stage import run_stage
from biopost.train.grpo_loss import IS_LEVELS, LOSS_TYPES, SCALE_REWARDS
from biopost.train.grpo_rollouts import Schedule, schedule_from_config
from biopost.train.grpo_step import check_resume_layout, optimizer_step
from biopost.train.recipe import log, record_done, write_json


@dataclass
class GRPOConfig:
    """GRPO's config. The modality packages add their flags (DNA: --dna_model_name, --max_length_dna,
    ...) to it: see biopost.modality.with_modality_flags."""
    modality_flags: ClassVar[bool] = True
    # what and where
    task: str = F("kegg", "registered task name (kegg, vep; go with the protein package)")
    data_path: str = F("", "directory of split files, a single file, or a HF dataset name (uses split train)")
    output_dir: str = F("runs/grpo", "run directory: config.yaml, checkpoints/, train_log.jsonl")
    run_id: Optional[str] = F(None, "run id recorded in config.yaml (default: the output directory's name)")
    sweep: Optional[str] = F(None, "sweep name (set by `biopost sweep`)")
    cell: dict = F({}, "the sweep cell's swept values as JSON (set by `biopost sweep`)")
    seed: int = F(0, "seed for initialization, data order and rollout sampling")
    data_seed: int = F(0, "seed of the fixed permutation behind --train_data_fraction")
    # where the policy starts
    init: str = F("base", "sft: warm start from --sft_checkpoint; base: cold start from --text_model_name "
                          "(+ fresh projector and adapter)")
    sft_checkpoint: Optional[str] = F(None, "SFT checkpoint directory (e.g. <sft run>/checkpoints/last) for --init sft")
    merge_sft: bool = F(False, "with --init sft: merge the SFT model (adapter included) into the base, written to "
                               "<output_dir>/merged_sft/, and train a fresh adapter on it; false: continue training "
                               "the SFT checkpoint itself (its adapter / its LoRA settings)")
    reference: str = F("initial", "KL reference: initial (the policy as GRPO started; a fresh adapter is disabled) "
                                  "or base (adapter disabled even when continuing an SFT adapter; LoRA only)")
    # model (used by --init base; --merge_sft uses the LoRA settings; a continued SFT checkpoint keeps its own)
    text_model_name: str = F("Qwen/Qwen3-1.7B", "HF name or path of the Qwen3 language model (--init base)")
    projector: str = F("", "linear or mlp (default: the modality's, e.g. linear for DNA, mlp for protein)")
    lora_rank: int = F(16, "LoRA rank of a fresh adapter; 0 = full fine-tuning of the language model")
    lora_alpha: int = F(32, "LoRA alpha")
    lora_dropout: float = F(0.0, "LoRA dropout (0: dropout makes the policy ratio noisy)")
    lora_target_modules: list = F(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                  "modules that get LoRA adapters")
    trust_remote_code: bool = F(False, "allow models that ship their own code (off by default)")
    # data
    max_length_text: int = F(1024, "text-token budget of a prompt (bio tokens come on top); "
                                   "longer prompts are an error")
    train_data_fraction: float = F(1.0, "train on the first ceil(f*N) rows of a fixed permutation")
    skip_invalid: bool = F(False, "skip and count invalid rows instead of stopping at the first")
    system_prompt: str = F("", "optional system message")
    # rollouts
    num_generations: int = F(8, "completions per prompt (G, the group size)")
    max_completion_length: int = F(512, "generation budget per completion, in tokens (also dr_grpo's constant)")
    temperature: float = F(1.0, "sampling temperature (log-probs are of logits / temperature, as TRL)")
    top_p: float = F(1.0, "nucleus sampling mass (1 = off)")
    top_k: int = F(0, "top-k sampling (0 = off)")
    rollout_batch_size: int = F(0, "completions per generate() call (0 = the whole generation batch at once, "
                                   "split evenly over the ranks under torchrun)")
    engine: str = F("auto", "generation engine of the rollouts: auto (static on CUDA, hf on CPU), static or hf")
    reward_funcs: list[str] = F(["correctness", "format"],
                                "registered reward functions (built in: correctness = the task's own "
                                "per-example metric, format, concise)")
    reward_weights: list[float] = F([], "one weight per reward function (empty = 1.0 each); "
                                        "total reward = weighted sum")
    # GRPO
    loss_type: str = F("dapo", "grpo (per-sequence token mean), dr_grpo (sum / (sequences x max_completion_length)) "
                               "or dapo (sum / tokens in the generation batch), as TRL")
    beta: float = F(0.0, "KL coefficient of the k3 estimator against the reference (0 = no reference pass)")
    epsilon: float = F(0.2, "lower clipping bound: rho >= 1 - epsilon")
    epsilon_high: Optional[float] = F(None, "upper clipping bound: rho <= 1 + epsilon_high "
                                            "(default: epsilon; DAPO: 0.28)")
    delta: Optional[float] = F(None, "two-sided clipping (INTELLECT-2, TRL's delta): cap the unclipped ratio at "
                                     "delta so a negative advantage cannot push it without bound "
                                     "(> 1 + epsilon_high; BioReason-Pro: 2 with the sequence-level ratio)")
    num_iterations: int = F(1, "updates per generation batch (mu); > 1 makes the ratio differ from 1")
    steps_per_generation: Optional[int] = F(None, "micro-batches per generation batch "
                                                  "(default: gradient_accumulation_steps)")
    scale_rewards: str = F("group", "group (A / group std), batch (A / batch std) or none (A = r - group mean)")
    importance_sampling_level: str = F("token", "token (PPO ratio per token) or sequence "
                                                "(GSPO: one ratio per sequence)")
    mask_truncated_completions: bool = F(False, "leave completions that hit max_completion_length out of the loss")
    use_bias_correction_kl: bool = F(False, "multiply k3 by the policy ratio (DeepSeek-V3.2's unbiased KL gradient; "
                                            "TRL 1.16's default); false: plain beta*k3 as written")
    # optimization
    learning_rate: float = F(1e-5, "peak learning rate (AdamW)")
    weight_decay: float = F(0.0, "AdamW weight decay")
    max_grad_norm: float = F(1.0, "gradient clipping norm (0 = off)")
    lr_scheduler_type: str = F("constant", "cosine, constant, linear or wsd")
    warmup_ratio: float = F(0.0, "fraction of the optimizer steps used for linear warmup")
    min_lr_ratio: float = F(0.0, "final learning rate as a fraction of the peak")
    num_train_epochs: int = F(1, "epochs over the training prompts")
    max_steps: int = F(-1, "stop after this many optimizer steps (overrides epochs when > 0)")
    per_device_train_batch_size: int = F(8, "completions (not prompts) per micro-batch")
    gradient_accumulation_steps: int = F(1, "micro-batches per optimizer step")
    gradient_checkpointing: bool = F(False, "recompute activations in the backward pass to save memory")
    logprob_chunk_tokens: int = F(4096, "completion tokens per LM-head chunk (recomputed in backward to save memory)")
    bf16: bool = F(True, "bf16 autocast and bf16 frozen base weights on GPU (CPU always runs fp32)")
    device: str = F("auto", "auto, cpu, cuda or cuda:N")
    distributed_timeout_minutes: float = F(60.0, "under torchrun: how long a rank waits in a collective before "
                                                 "failing (rank 0 writes checkpoints meanwhile)")
    # checkpoints and logs
    save_steps: int = F(100, "checkpoint every N optimizer steps (at the next generation-batch boundary) "
                             "and at epoch ends")
    save_total_limit: int = F(2, "keep the newest N step checkpoints (labelled ones are kept too)")
    logging_steps: int = F(1, "write train_log.jsonl every N optimizer steps")
    resume: str = F("auto", "auto (resume from checkpoints/last if present), never, or a checkpoint path")
    # encoder
    encoder_batch_size: int = F(16, "sequences per encoder forward pass when filling the embedding cache")
    cache_dir: Optional[str] = F(None, "embedding cache root (default: $BIOPOST_CACHE_DIR)")


def validate_config(cfg) -> None:
    problems = []
    if cfg.loss_type not in LOSS_TYPES:
        problems.append(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {cfg.loss_type!r}")
    if cfg.scale_rewards not in SCALE_REWARDS:
        problems.append(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}, got {cfg.scale_rewards!r}")
    if cfg.importance_sampling_level not in IS_LEVELS:
        problems.append(f"importance_sampling_level must be token or sequence, got {cfg.importance_sampling_level!r}")
    if cfg.init not in ("sft", "base"):
        problems.append(f"init must be sft or base, got {cfg.init!r}")
    if cfg.init == "sft" and not cfg.sft_checkpoint:
        problems.append("--init sft needs --sft_checkpoint (an SFT run's checkpoints/<label> directory)")
    if cfg.merge_sft and cfg.init != "sft":
        problems.append("--merge_sft true needs --init sft")
    if cfg.reference not in ("initial", "base"):
        problems.append(f"reference must be initial or base, got {cfg.reference!r}")
    if cfg.num_generations < 2:
        problems.append("num_generations must be >= 2 (advantages compare completions of one prompt)")
    if cfg.per_device_train_batch_size < 1 or cfg.gradient_accumulation_steps < 1:
        problems.append("per_device_train_batch_size and gradient_accumulation_steps must be >= 1")
    if cfg.num_iterations < 1 or (cfg.steps_per_generation is not None and cfg.steps_per_generation < 1):
        problems.append("num_iterations and steps_per_generation must be >= 1")
    if cfg.max_completion_length < 1:
        problems.append("max_completion_length must be >= 1")
    if cfg.temperature <= 0:
        problems.append("temperature must be > 0 (log-probs divide the logits by it)")
    if not 0 < cfg.train_data_fraction <= 1:
        problems.append(f"train_data_fraction must be in (0, 1], got {cfg.train_data_fraction}")
    if cfg.num_train_epochs < 0:
        problems.append("num_train_epochs must be >= 0")
    if cfg.lora_rank < 0:
        problems.append("lora_rank must be >= 0")
    if cfg.delta is not None:
        high = cfg.epsilon if cfg.epsilon_high is None else cfg.epsilon_high
        if not cfg.delta > 1 + high:
            problems.append(f"delta must be > 1 + epsilon_high ({1 + high:g}): at or below it the cap replaces the "
                            f"clipped ratio too, got {cfg.delta}")
    if cfg.epsilon < 0 or (cfg.epsilon_high is not None and cfg.epsilon_high < 0):
        problems.append("epsilon and epsilon_high must be >= 0")
    if cfg.save_steps < 1 or cfg.logging_steps < 1:
        problems.append("save_steps and logging_steps must be >= 1")
    if cfg.reward_weights and len(cfg.reward_weights) != len(cfg.reward_funcs):
        problems.append(f"reward_weights has {len(cfg.reward_weights)} values for {len(cfg.reward_funcs)} reward_funcs")
    if not problems:
        from biopost.runtime import rank_info
        s = schedule_from_config(cfg, rank_info().world)
        if s.generation_batch % s.num_generations:
            over = f" x world size {s.world}" if s.world > 1 else ""
            problems.append(f"the generation batch (per_device_train_batch_size {s.batch} x steps_per_generation "
                            f"{s.steps_per_generation // s.world}{over} = {s.generation_batch} completions) must be "
                            f"a multiple of num_generations {s.num_generations}")
        if s.micro_per_generation % s.accum and s.accum % s.micro_per_generation:
            problems.append(f"steps_per_generation x num_iterations ({s.micro_per_generation}) and "
                            f"gradient_accumulation_steps ({s.accum}) must divide one another, so that generation "
                            f"batches and optimizer steps share boundaries")
    if problems:
        raise ConfigError("; ".join(problems))


# ===================================================================== the loop

def run_record(task, sched: Schedule, layout: dict, init: dict) -> dict:
    """What config.yaml records beside the flags: the start, the batch layout over all ranks."""
    return {"stage": "grpo", "modality": task.modality, "init_source": init,
            "generation": {"generation_batch_completions": sched.generation_batch,
                           "prompts_per_generation": sched.prompts_per_generation,
                           "steps_per_generation": sched.steps_per_generation,
                           "old_policy_pass": sched.needs_old_logps},
            "global_batch_size": sched.batch * sched.accum, **layout}


def train_grpo(cfg: GRPOConfig) -> int:
    from biopost.train.recipe import run_with_stop_flag
    validate_config(cfg)
    return run_with_stop_flag(_train_grpo, cfg)


def _train_grpo(cfg: GRPOConfig, stop, rank) -> int:
    from tqdm import tqdm

    from biopost import distributed
    from biopost.data.examples import encode_prompt
    from biopost.eval.run import cache_lookup
    from biopost.generate.engine import ENGINES, build_engine
    from biopost.rewards import resolve_rewards
    from biopost.runtime import autocast
    from biopost.train import checkpoint as ckpt_lib
    from biopost.train import recipe
    from biopost.train.grpo_policy import make_reference
    from biopost.train.grpo_rollouts import Rollouts, SamplingSettings
    from biopost.train.log import JsonlLog, NullLog
    from biopost.train.warm_start import init_source, load_policy

    main_rank = rank.is_main   # the one writer of the run directory
    out, task = recipe.start_run(cfg, "grpo", create=main_rank)
    rewards = resolve_rewards(list(cfg.reward_funcs), [float(w) for w in cfg.reward_weights], task=task)
    ENGINES.get(cfg.engine)  # an unknown engine fails before anything loads
    sched = schedule_from_config(cfg, rank.world)
    resume_from = ckpt_lib.resolve_resume(cfg.resume, out)
    layout = {"world_size": rank.world, "micro_batches_per_step": sched.accum,
              "steps_per_generation": sched.steps_per_generation}
    extra = run_record(task, sched, layout, init_source(cfg, out, resumed=resume_from is not None))
    if main_rank:
        save_config(cfg, out / "config.yaml", extra=extra)
    if cfg.num_train_epochs == 0 and cfg.max_steps <= 0:
        log("[grpo] num_train_epochs is 0: nothing to train")
        return 0
    device = recipe.prepare_device(cfg, multi_process=True)
    distributed.init(device, cfg.distributed_timeout_minutes)

    # ---------------------------------------------------------------- data (prompts + gold; no reasoning needed)
    _, reports, train_rows = recipe.load_training_rows(task, cfg, "grpo")

    # ---------------------------------------------------------------- model, reference, prompts, embeddings
    model = load_policy(cfg, task.modality, device, out, resume_from, log, main=main_rank)
    net = distributed.wrap(model, device)   # DDP starts every rank from rank 0's weights
    extra["policy"] = {"text_model_name": model.spec.text_model_name, "encoders": model.spec.encoders,
                       "lora_rank": model.spec.lora_rank if model.is_lora else 0}
    if main_rank:
        save_config(cfg, out / "config.yaml", extra=extra)  # now with what the policy turned out to be
    reference = make_reference(cfg, model, out, resume_from, write=main_rank)
    prompts, prompt_rows = [], []
    for i, row in enumerate(train_rows):
        prompts.append(encode_prompt(model, task, row, cfg.max_length_text, cfg.system_prompt or None, f"train[{i}]"))
        prompt_rows.append(dict(row, gold=task.gold(row)))
    if main_rank:
        write_json(out / "data_report.json", {"splits": {s: r.to_dict() for s, r in reports.items()},
                                              "train_rows_used": len(train_rows)})
    embeddings = cache_lookup(recipe.embedding_caches(model, prompts, cfg, "grpo"))

    # ---------------------------------------------------------------- optimizer and schedule
    n = len(prompts)
    per_epoch = n // sched.prompts_per_generation
    if per_epoch == 0:
        raise ConfigError(f"{n} training prompts cannot fill one generation batch of {sched.prompts_per_generation} "
                          f"prompts (lower per_device_train_batch_size x steps_per_generation / num_generations)")
    if n % sched.prompts_per_generation:
        log(f"[grpo] {n % sched.prompts_per_generation} prompts per epoch do not fill a generation batch and are "
            f"skipped (a different subset each epoch)")
    total_steps = cfg.max_steps if cfg.max_steps > 0 else sched.steps_for(per_epoch * cfg.num_train_epochs)
    params = model.trainable_parameters()
    optimizer, scheduler = recipe.make_optimizer(params, cfg, total_steps)
    log(f"[grpo] {n} prompts; generation batch {sched.prompts_per_generation} prompts x G={cfg.num_generations} = "
        f"{sched.generation_batch} completions in {sched.steps_per_generation} micro-batches of {sched.batch}, "
        f"used {sched.num_iterations}x; {sched.accum} micro-batches per optimizer step; world size {rank.world}; "
        f"{per_epoch} generation batches per epoch; {total_steps} optimizer steps; old-policy pass: "
        f"{'yes' if sched.needs_old_logps else 'no (ratio is 1)'}; {sum(p.numel() for p in params):,} trainable "
        f"parameters; device {device}")

    step = 0
    if resume_from is not None:
        state = ckpt_lib.load_optimizer_state(resume_from, optimizer, scheduler, rank=rank.rank, world=rank.world)
        step = state["step"]
        check_resume_layout(state, layout, resume_from)
        if not sched.boundary(step) and step < total_steps:
            raise CheckpointError(f"{resume_from}: step {step} is not at a generation-batch boundary of this config "
                                  f"(batch settings changed since the checkpoint?)")
    resume_step = step if resume_from is not None else None
    train_log = JsonlLog(out / "train_log.jsonl", resume_step=resume_step) if main_rank else NullLog()

    def save(step_now: int):
        rngs = distributed.gather_to_main(ckpt_lib.capture_rng())   # each rank's dropout stream
        if main_rank:
            gens = step_now * sched.accum // sched.micro_per_generation
            state = {"step": step_now, "epoch": gens // per_epoch, "generation_batches": gens,
                     "total_steps": total_steps, "stage": "grpo", **layout}
            ckpt_lib.save_checkpoint(out, step_now, model.save, optimizer, scheduler, state,
                                     keep_last=cfg.save_total_limit, other_ranks_rng=rngs[1:])
        distributed.barrier()   # no rank goes on (or exits) while rank 0 writes

    amp = lambda: autocast(device, cfg.bf16)  # noqa: E731  (a fresh region per pass: see ReferencePolicy)
    engine = build_engine(cfg.engine, model, embeddings, device=device, autocast_ctx=amp)
    rollouts = Rollouts(model=model, engine=engine, prompts=prompts, rows=prompt_rows, rewards=rewards,
                        schedule=sched, per_epoch=per_epoch, settings=SamplingSettings.from_config(cfg),
                        embeddings=embeddings, reference=reference, device=device, autocast=amp, rank=rank.rank)

    # ---------------------------------------------------------------- the loop
    bar = tqdm(total=total_steps, initial=step, desc="grpo", unit="step", dynamic_ncols=True,
               disable=not main_rank, mininterval=1.0 if sys.stderr.isatty() else 30.0)
    exit_code = 0
    last_saved = step if resume_from is not None else -1
    save_due = False
    buffer = None
    while step < total_steps:
        t0 = time.perf_counter()
        buffer, result = optimizer_step(model, net, rollouts, buffer, step, sched, cfg, amp, rank.rank)
        grad_norm = recipe.clip_and_step(params, optimizer, scheduler, cfg.max_grad_norm)
        engine.sync_weights(model)  # the next rollout samples from the updated policy
        step += 1
        dt = time.perf_counter() - t0
        at_boundary = sched.boundary(step)
        epoch_done = at_boundary and (step * sched.accum // sched.micro_per_generation) % per_epoch == 0
        bar.update(1)
        bar.set_postfix(reward=f"{result['rollout']['reward']:.3f}", refresh=False)
        if step % cfg.logging_steps == 0 or step == total_steps:
            entry = dict(step=step, epoch=round(step * sched.accum / sched.micro_per_generation / per_epoch, 4),
                         loss=result["loss"], **result["rollout"], **result["means"],
                         ratio_max_abs_dev=result["ratio_dev"], lr=scheduler.get_last_lr()[0],
                         grad_norm=float(grad_norm), generated=result["generated"],
                         generation_s=result["generation_s"], update_s=dt - result["generation_s"], step_time_s=dt)
            train_log.write(**recipe.peak_memory(entry, device))
        save_due = save_due or step % cfg.save_steps == 0
        if (at_boundary and (save_due or epoch_done)) or step == total_steps:
            save(step)
            last_saved, save_due = step, False
        if at_boundary and step < total_steps and distributed.any_rank(bool(stop)):
            if last_saved != step:
                save(step)
            got = signal.Signals(stop.requested).name if stop else "none, another rank's"
            log(f"[grpo] received a stop signal (rank 0: {got}): checkpointed step {step}/{total_steps}, "
                f"exiting with {REQUEUE_EXIT_CODE} (requeue)")
            exit_code = REQUEUE_EXIT_CODE
            break
    bar.close()
    train_log.close()
    if exit_code == 0 and main_rank:
        record_done(out, "grpo", step, total_steps)
        from biopost.train.grpo_summary import write_grpo_summary
        summary = write_grpo_summary(out)  # the runner puts it in status.json; the harvester notes it
        if summary["no_learning_signal"]:
            log(f"[grpo] no learning signal: every group of all {summary['steps']} logged steps had zero "
                f"reward std (mean reward {summary['mean_reward']}), so every advantage was 0")
    distributed.barrier()   # train_done.json is written before any rank reports success
    return exit_code


def main(argv=None, prog: str | None = None) -> int:
    from biopost.config import parse_config
    cfg = parse_config(GRPOConfig, argv, prog=prog, description=__doc__.split("\n\n")[0] + "\n\n" + BATCH_HELP)
    return run_stage(train_grpo, cfg)


BATCH_HELP = ("Batches (as TRL): per_device_train_batch_size counts completions; a generation batch is "
              "per_device_train_batch_size x steps_per_generation completions (a multiple of num_generations), "
              "generated once and used num_iterations times; gradient_accumulation_steps micro-batches make one "
              "optimizer step. Under torchrun with W processes (DDP) each rank holds that per-device share: a generation "
              "batch is W times as large and one optimizer step takes W x gradient_accumulation_steps micro-batches. "
              "Exit code 75: checkpointed after SIGTERM/SIGUSR1, requeue me.")

"""GRPO on the full multimodal model: bio encoder -> projector -> Qwen3, DNA/protein in every prompt.

Readable top to bottom: config, the math (advantages, the per-token loss), the model side
(batches, completion log-probs, the reference policy), warm/cold start, then the loop.

The algorithm as written (and as TRL 1.16's GRPOTrainer computes it, which a test checks):
  1. Rollouts. For each prompt, G = num_generations completions from the current policy through
     the shared generation path (`biopost.generate.sampling.generate`: bio embeddings spliced into
     the prompt, KV cache, temperature / top_p / top_k), with a torch.Generator seeded by
     (seed, generation-batch index): a run, and a resumed run, draw the same samples.
  2. Rewards: named functions (`biopost.train.rewards`), total = weighted sum.
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

Nothing here imports TRL: TRL is only the test oracle.
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from biopost.config import ConfigError, F, save_config
from biopost.errors import CheckpointError, MissingCheckpointError
from biopost.stage import run_stage
from biopost.train.sft import epoch_order, log, model_spec_from_config, record_done, write_json
from biopost.signals import REQUEUE_EXIT_CODE

LOSS_TYPES = ("grpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")
IS_LEVELS = ("token", "sequence")
ADV_EPS = 1e-4  # TRL's: advantages / (std + 1e-4)
REFERENCE_FILE = "reference.safetensors"
MERGED_SFT_DIR = "merged_sft"


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
    rollout_batch_size: int = F(0, "completions per generate() call (0 = the whole generation batch at once)")
    engine: str = F("hf", "generation engine of the rollouts (registered: hf)")
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
    # checkpoints and logs
    save_steps: int = F(100, "checkpoint every N optimizer steps (at the next generation-batch boundary) "
                             "and at epoch ends")
    save_total_limit: int = F(2, "keep the newest N step checkpoints (labelled ones are kept too)")
    logging_steps: int = F(1, "write train_log.jsonl every N optimizer steps")
    resume: str = F("auto", "auto (resume from checkpoints/last if present), never, or a checkpoint path")
    # encoder
    encoder_batch_size: int = F(16, "sequences per encoder forward pass when filling the embedding cache")
    cache_dir: Optional[str] = F(None, "embedding cache root (default: $BIOPOST_CACHE_DIR)")


@dataclass(frozen=True)
class Schedule:
    """The batch arithmetic, in one place (see the module docstring)."""
    batch: int                   # completions per micro-batch
    accum: int                   # micro-batches per optimizer step
    steps_per_generation: int    # micro-batches per generation batch
    num_iterations: int
    num_generations: int

    @property
    def generation_batch(self) -> int:     # completions per generation batch
        return self.batch * self.steps_per_generation

    @property
    def prompts_per_generation(self) -> int:
        return self.generation_batch // self.num_generations

    @property
    def micro_per_generation(self) -> int:  # micro-steps a generation batch lives for
        return self.steps_per_generation * self.num_iterations

    @property
    def needs_old_logps(self) -> bool:
        # the policy can change while the batch is in use: a real old-policy pass is needed
        return self.num_iterations > 1 or self.accum % self.micro_per_generation != 0

    def boundary(self, step: int) -> bool:
        """After optimizer step `step`, is no generation batch partly used (a checkpointable step)?"""
        return (step * self.accum) % self.micro_per_generation == 0

    def steps_for(self, n_generation_batches: int) -> int:
        return math.ceil(n_generation_batches * self.micro_per_generation / self.accum)


def schedule_from_config(cfg) -> Schedule:
    spg = cfg.steps_per_generation or cfg.gradient_accumulation_steps
    return Schedule(cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, spg,
                    cfg.num_iterations, cfg.num_generations)


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
        s = schedule_from_config(cfg)
        if s.generation_batch % s.num_generations:
            problems.append(f"the generation batch (per_device_train_batch_size {s.batch} x steps_per_generation "
                            f"{s.steps_per_generation} = {s.generation_batch} completions) must be a multiple of "
                            f"num_generations {s.num_generations}")
        if s.micro_per_generation % s.accum and s.accum % s.micro_per_generation:
            problems.append(f"steps_per_generation x num_iterations ({s.micro_per_generation}) and "
                            f"gradient_accumulation_steps ({s.accum}) must divide one another, so that generation "
                            f"batches and optimizer steps share boundaries")
    if problems:
        raise ConfigError("; ".join(problems))


# ===================================================================== the math (pure tensor functions)

def compute_advantages(rewards, num_generations: int, scale_rewards: str = "group"):
    """(advantages, std used for scaling). `rewards` is (B,), groups of G consecutive completions.
    Exactly TRL's: A = r - group mean, then / (group std + 1e-4), / (batch std + 1e-4), or nothing."""
    import torch
    grouped = rewards.view(-1, num_generations)
    mean = grouped.mean(dim=1).repeat_interleave(num_generations)
    if scale_rewards in ("group", "none"):
        std = grouped.std(dim=1).repeat_interleave(num_generations)
    elif scale_rewards == "batch":
        std = rewards.std().expand_as(rewards)
    else:
        raise ValueError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}, got {scale_rewards!r}")
    advantages = rewards - mean
    if scale_rewards != "none":
        advantages = advantages / (std + ADV_EPS)
    return advantages, torch.as_tensor(std)


def grpo_loss(logps, old_logps, ref_logps, advantages, mask, *, loss_type: str, beta: float,
              epsilon_low: float, epsilon_high: float, importance_sampling_level: str = "token",
              max_completion_length: int, grad_accum: int = 1, num_items_in_batch=None,
              steps_per_generation: int = 1, use_bias_correction_kl: bool = False, delta: float | None = None):
    """The clipped surrogate + k3 KL of one micro-batch, aggregated as TRL 1.16 does.

    logps, old_logps, ref_logps, mask: (B, T) over completion positions (old None: detached logps,
    ratio 1; ref None: needs beta 0). advantages: (B,). num_items_in_batch: tokens in the whole
    generation batch (dapo). Returns (loss to backpropagate, stats) where stats maps a metric to a
    detached (sum, count) pair so micro-batches combine into exact global means.
    """
    import torch
    mask = mask.to(logps.dtype)
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    old = logps.detach() if old_logps is None else old_logps
    log_ratio = logps - old
    if importance_sampling_level == "token":
        log_w = log_ratio
    elif importance_sampling_level == "sequence":
        log_w = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    else:
        raise ValueError(f"importance_sampling_level must be token or sequence, got {importance_sampling_level!r}")
    coef_1 = torch.exp(log_w)
    per_token_kl = None
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta != 0 needs reference log-probs")
        per_token_kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
    kl_term = per_token_kl * coef_1 if per_token_kl is not None and use_bias_correction_kl else per_token_kl
    coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
    # capped after coef_2 is taken, as TRL: the clipped branch still sees the true ratio
    capped = coef_1 if delta is None else torch.clamp(coef_1, max=delta)
    per_token_loss = -torch.min(capped * adv, coef_2 * adv)
    if kl_term is not None:
        per_token_loss = per_token_loss + beta * kl_term

    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / grad_accum
    elif loss_type == "dr_grpo":
        loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length) / grad_accum
    elif loss_type == "dapo":
        # num_items_in_batch spans the generation batch: rescale it to one accumulation window
        n_items = torch.as_tensor(num_items_in_batch if num_items_in_batch is not None else mask.sum(),
                                  dtype=logps.dtype, device=logps.device)
        normalizer = n_items.clamp(min=1.0) * grad_accum / steps_per_generation
        loss = (per_token_loss * mask).sum() / normalizer
    else:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, got {loss_type!r}")

    def masked(x):  # (sum, count): per token, or per sequence for a sequence-level quantity
        x = x.detach()
        if x.shape[1] == 1:
            return x.sum(), torch.tensor(float(x.shape[0]))
        return (x * mask).sum(), mask.sum()

    is_low = ((coef_1 < 1 - epsilon_low) & (adv < 0)).to(logps.dtype)
    is_high = ((coef_1 > 1 + epsilon_high) & (adv > 0)).to(logps.dtype)
    stats = {"clip_ratio/low_mean": masked(is_low), "clip_ratio/high_mean": masked(is_high),
             "clip_ratio/region_mean": masked(torch.clamp(is_low + is_high, max=1.0)),
             "ratio_mean": masked(coef_1)}
    if per_token_kl is not None:
        stats["kl"] = masked(per_token_kl)
    with torch.no_grad():
        real = mask.bool() if coef_1.shape[1] > 1 else mask.sum(-1, keepdim=True) > 0
        dev = (coef_1.detach() - 1).abs()[real]
        stats["ratio_max_abs_dev"] = (dev.max() if dev.numel() else torch.tensor(0.0), None)
    return loss, stats


# ===================================================================== the model side

@dataclass
class MicroBatch:
    """Completions of one micro-batch laid out as [left-padded prompt | right-padded completion]."""
    input_ids: object          # (B, P + C)
    attention_mask: object     # (B, P + C)
    position_ids: object       # (B, P + C): count real tokens only, as in generation
    bio_features: dict
    prompt_width: int          # P
    completion_ids: object     # (B, C)
    loss_mask: object          # (B, C): completion tokens in the loss
    advantages: object         # (B,)
    old_logps: object = None   # (B, C)
    ref_logps: object = None   # (B, C)


def build_micro_batch(model, prompts, completions: list[list[int]], advantages, embeddings, device,
                      truncated=None, mask_truncated: bool = False) -> MicroBatch:
    """`prompts`: one prompt Example per completion (repeated for a group); `completions`: token ids
    (the stop token included: it is a sampled action, as in TRL)."""
    import torch

    from biopost.data.examples import collate
    pad_id = model.tokenizer.pad_token_id
    batch = collate(prompts, pad_id, embeddings, left_pad=True, device=device)
    B, P = batch["input_ids"].shape
    C = max(1, max(len(c) for c in completions))
    comp = torch.full((B, C), pad_id, dtype=torch.long)
    cmask = torch.zeros((B, C), dtype=torch.long)
    for i, c in enumerate(completions):
        comp[i, :len(c)] = torch.tensor(c, dtype=torch.long)
        cmask[i, :len(c)] = 1
    comp, cmask = comp.to(device), cmask.to(device)
    attention = torch.cat([batch["attention_mask"], cmask], dim=1)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    loss_mask = cmask
    if mask_truncated and truncated is not None:
        keep = (~torch.as_tensor(truncated, dtype=torch.bool)).to(device).long()
        loss_mask = cmask * keep.unsqueeze(1)
    return MicroBatch(input_ids=torch.cat([batch["input_ids"], comp], dim=1), attention_mask=attention,
                      position_ids=positions, bio_features=batch["bio_features"], prompt_width=P,
                      completion_ids=comp, loss_mask=loss_mask,
                      advantages=torch.as_tensor(advantages, dtype=torch.float32).to(device))


def completion_logps(model, mb: MicroBatch, temperature: float = 1.0, chunk_tokens: int = 4096):
    """(log-probs, entropies) of the completion tokens, each (B, C), zero outside the loss mask.

    Only completion positions go through the LM head (never the prompt: a 150k vocabulary makes
    full logits the largest tensor of the step); with gradient, chunks beyond `chunk_tokens` are
    recomputed in the backward pass instead of keeping their logits. Entropies are detached."""
    import torch
    from torch.utils.checkpoint import checkpoint
    hidden = model.hidden_states(mb.input_ids, mb.attention_mask, mb.bio_features, position_ids=mb.position_ids)
    P, C = mb.prompt_width, mb.completion_ids.shape[1]
    h = hidden[:, P - 1:P + C - 1]          # position t predicts token t + 1
    sel = mb.loss_mask.bool()
    zeros = h.new_zeros(sel.shape, dtype=torch.float32)
    if not bool(sel.any()):
        return zeros + hidden.sum() * 0.0, zeros.detach()
    head = model.lm_head()
    hs, targets = h[sel], mb.completion_ids[sel]

    def score(hs_chunk, t_chunk):
        logp_all = (head(hs_chunk).float() / temperature).log_softmax(-1)
        tok = logp_all.gather(-1, t_chunk.unsqueeze(-1)).squeeze(-1)
        ent = -(logp_all.exp() * logp_all).sum(-1)
        return tok, ent

    toks, ents = [], []
    recompute = torch.is_grad_enabled() and hs.shape[0] > chunk_tokens
    for start in range(0, hs.shape[0], chunk_tokens):
        args = (hs[start:start + chunk_tokens], targets[start:start + chunk_tokens])
        tok, ent = checkpoint(score, *args, use_reentrant=False) if recompute else score(*args)
        toks.append(tok)
        ents.append(ent.detach())
    logps = zeros.masked_scatter(sel, torch.cat(toks))
    entropies = zeros.detach().masked_scatter(sel, torch.cat(ents))
    return logps, entropies


class ReferencePolicy:
    """The KL reference: frozen copies of the trainable tensors, swapped in (pointer swaps under
    no_grad, no copies) for the reference pass. Run the pass in its own autocast region: autocast
    caches cast weights per tensor within a region."""

    def __init__(self, model, tensors: dict, disable_adapter: bool):
        import torch
        self.model = model
        self.disable_adapter = disable_adapter and model.is_lora
        params = dict(model.named_parameters())
        missing = sorted(set(tensors) - set(params))
        if missing:
            raise ValueError(f"reference tensors do not fit the model (unknown: {missing[:3]}...)")
        self.params = {n: params[n] for n in tensors}
        for n, p in self.params.items():
            if tuple(tensors[n].shape) != tuple(p.shape):
                raise ValueError(f"reference tensor {n} has shape {tuple(tensors[n].shape)}, "
                                 f"the model {tuple(p.shape)}")
        self.frozen = {n: tensors[n].to(device=p.device, dtype=p.dtype) for n, p in self.params.items()}
        self._torch = torch

    @staticmethod
    def capture(model) -> dict:
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    @contextlib.contextmanager
    def active(self):
        saved = {}
        with self._torch.no_grad():
            try:
                for n, p in self.params.items():
                    saved[n] = p.data
                    p.data = self.frozen[n]
                with (self.model.llm.disable_adapter() if self.disable_adapter else contextlib.nullcontext()):
                    yield
            finally:
                for n, data in saved.items():
                    self.params[n].data = data


def save_tensors(tensors: dict, path: Path) -> None:
    from safetensors.torch import save

    from biopost.files import write_bytes_atomic
    write_bytes_atomic(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


# ===================================================================== where the policy starts

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
    for module in model.llm.modules():
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


def build_policy(cfg, modality: str, device, dtype, out: Path):
    """The policy GRPO starts from (not a resume): cold from the base models, the SFT checkpoint
    itself, or the SFT model merged into the base with a fresh adapter."""
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
    sft_model = BioReasoningModel.load(sft, device=device, dtype=dtype, is_trainable=False,
                                       trust_remote_code=cfg.trust_remote_code)
    merged = out / MERGED_SFT_DIR
    shutil.rmtree(merged, ignore_errors=True)
    sft_model.merge(merged)     # records its own absolute path as the text model: later checkpoints load it
    encoders = sft_model.encoders
    del sft_model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    spec = ModelSpec.from_json(json.loads((merged / MODEL_CONFIG).read_text()))
    spec.merged = False
    spec.lora_rank, spec.lora_alpha, spec.lora_dropout = cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout
    spec.lora_target_modules = list(cfg.lora_target_modules)
    return BioReasoningModel.build(spec, device=device, dtype=dtype, encoders=encoders,
                                   bio_modules=load_file(str(merged / BIO_MODULES)), tokenizer_dir=merged)


# ===================================================================== the loop

@dataclass
class Rollout:
    """One generation batch: its micro-batches plus what gets logged about it."""
    micro: list
    num_items: int             # loss tokens in the whole generation batch (dapo's normalizer)
    stats: dict
    seconds: float


def train_grpo(cfg: GRPOConfig) -> int:
    import torch
    from tqdm import tqdm

    from biopost.data.examples import encode_prompt, load_task_data, truncation_for
    from biopost.data.schema import fraction_subset
    from biopost.encoders.cache import EmbeddingCache
    from biopost.eval.run import cache_lookup
    from biopost.generate.engine import ENGINES, build_engine
    from biopost.generate.sampling import SamplingConfig
    from biopost.rewards import resolve_rewards, score
    from biopost.model.bio_model import BioReasoningModel
    from biopost.tasks import get_task
    from biopost.train import checkpoint as ckpt_lib
    from biopost.runtime import autocast, base_dtype, deterministic_on_cpu, pick_device, seed_everything
    from biopost.train.log import JsonlLog
    from biopost.train.schedule import lr_multiplier
    from biopost.signals import StopFlag

    validate_config(cfg)
    stop = StopFlag()  # install first: a signal during set-up must not kill the job uncheckpointed
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.run_id is None:
        cfg.run_id = out.resolve().name
    task = get_task(cfg.task)
    rewards = resolve_rewards(list(cfg.reward_funcs), [float(w) for w in cfg.reward_weights], task=task)
    ENGINES.get(cfg.engine)  # an unknown engine fails before anything loads
    sched = schedule_from_config(cfg)
    eps_low = cfg.epsilon
    eps_high = cfg.epsilon if cfg.epsilon_high is None else cfg.epsilon_high
    resume_from = ckpt_lib.resolve_resume(cfg.resume, out)
    extra = {"stage": "grpo", "modality": task.modality,
             "init_source": init_source(cfg, out, resumed=resume_from is not None),
             "generation": {"generation_batch_completions": sched.generation_batch,
                            "prompts_per_generation": sched.prompts_per_generation,
                            "steps_per_generation": sched.steps_per_generation,
                            "old_policy_pass": sched.needs_old_logps}}
    save_config(cfg, out / "config.yaml", extra=extra)
    if cfg.num_train_epochs == 0 and cfg.max_steps <= 0:
        log("[grpo] num_train_epochs is 0: nothing to train")
        return 0
    device = pick_device(cfg.device)
    deterministic_on_cpu(device)
    seed_everything(cfg.seed)

    # ---------------------------------------------------------------- data (prompts + gold; no reasoning needed)
    truncation = truncation_for(task.modality, cfg)
    rows, reports = load_task_data(task, cfg.data_path, ("train",), training_splits=(), truncation=truncation,
                                   skip_invalid=cfg.skip_invalid, log=log)
    train_rows = fraction_subset(rows["train"], cfg.train_data_fraction, cfg.data_seed)
    log(f"[grpo] training on {len(train_rows)} of {len(rows['train'])} prompts "
        f"(train_data_fraction={cfg.train_data_fraction})")

    # ---------------------------------------------------------------- model
    # full fine-tuning keeps fp32 master weights; whether the policy is LoRA can depend on the checkpoint
    dtype = base_dtype(device, cfg.bf16 and policy_lora_rank(cfg, resume_from) > 0)
    if resume_from is not None:
        log(f"[grpo] resuming from {resume_from}")
        model = BioReasoningModel.load(resume_from, device=device, dtype=dtype, is_trainable=True,
                                       trust_remote_code=cfg.trust_remote_code)
    else:
        model = build_policy(cfg, task.modality, device, dtype, out)
    if model.is_lora and model.spec.lora_dropout != cfg.lora_dropout:
        # a continued SFT adapter brings its own dropout; in RL it would make the ratio noisy
        log(f"[grpo] LoRA dropout {model.spec.lora_dropout} -> {cfg.lora_dropout} (--lora_dropout)")
        set_lora_dropout(model, cfg.lora_dropout)
    if cfg.gradient_checkpointing:
        model.base_llm().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    extra["policy"] = {"text_model_name": model.spec.text_model_name, "encoders": model.spec.encoders,
                       "lora_rank": model.spec.lora_rank if model.is_lora else 0}
    save_config(cfg, out / "config.yaml", extra=extra)  # now with what the policy turned out to be
    log(f"[grpo] policy: init {cfg.init}{' (merged SFT + fresh adapter)' if cfg.merge_sft else ''}, "
        f"{'LoRA rank ' + str(model.spec.lora_rank) if model.is_lora else 'full fine-tuning'} on "
        f"{model.spec.text_model_name}")

    reference = None
    if cfg.beta != 0.0:
        if cfg.reference == "base" and not model.is_lora:
            raise ConfigError("--reference base needs a LoRA policy "
                             "(with full fine-tuning the reference is the initial model)")
        ref_path = out / REFERENCE_FILE
        if resume_from is not None:
            if not ref_path.is_file():
                raise MissingCheckpointError(f"{ref_path}: the reference tensors of this run are missing; cannot resume "
                                        f"with beta {cfg.beta} (start afresh with --resume never)")
            from safetensors.torch import load_file
            ref_tensors = load_file(str(ref_path))
        else:
            ref_tensors = ReferencePolicy.capture(model)
            save_tensors(ref_tensors, ref_path)
        fresh_adapter = cfg.init == "base" or cfg.merge_sft
        reference = ReferencePolicy(model, ref_tensors, disable_adapter=fresh_adapter or cfg.reference == "base")

    prompts, prompt_rows = [], []
    for i, row in enumerate(train_rows):
        ex = encode_prompt(model, task, row, cfg.max_length_text, cfg.system_prompt or None, f"train[{i}]")
        prompts.append(ex)
        prompt_rows.append(dict(row, gold=task.gold(row)))
    write_json(out / "data_report.json", {"splits": {s: r.to_dict() for s, r in reports.items()},
                                          "train_rows_used": len(train_rows)})

    # ---------------------------------------------------------------- embeddings (frozen encoders)
    caches = {m: EmbeddingCache(enc, cfg.cache_dir) for m, enc in model.encoders.items()}
    for modality, cache in caches.items():
        seqs = sorted({s for ex in prompts for m, s in ex.bio if m == modality})
        n_new = cache.ensure(seqs, batch_size=cfg.encoder_batch_size, progress=True)
        log(f"[grpo] {modality}: {len(seqs)} unique sequences, {n_new} newly encoded ({cache.dir})")

    embeddings = cache_lookup(caches)

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
    warmup = int(round(cfg.warmup_ratio * total_steps))
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(
        s, kind=cfg.lr_scheduler_type, warmup_steps=warmup, total_steps=total_steps, min_lr_ratio=cfg.min_lr_ratio))
    log(f"[grpo] {n} prompts; generation batch {sched.prompts_per_generation} prompts x G={cfg.num_generations} = "
        f"{sched.generation_batch} completions in {sched.steps_per_generation} micro-batches of {sched.batch}, "
        f"used {sched.num_iterations}x; {cfg.gradient_accumulation_steps} micro-batches per optimizer step; "
        f"{per_epoch} generation batches per epoch; {total_steps} optimizer steps; old-policy pass: "
        f"{'yes' if sched.needs_old_logps else 'no (ratio is 1)'}; {sum(p.numel() for p in params):,} trainable "
        f"parameters; device {device}")

    step = 0
    if resume_from is not None:
        state = ckpt_lib.load_optimizer_state(resume_from, optimizer, scheduler)
        step = state["step"]
        if not sched.boundary(step) and step < total_steps:
            raise CheckpointError(f"{resume_from}: step {step} is not at a generation-batch boundary of this config "
                             f"(batch settings changed since the checkpoint?)")
    train_log = JsonlLog(out / "train_log.jsonl", resume_step=step if resume_from is not None else None)

    def epoch_of(n_generations_done: int) -> int:
        return n_generations_done // per_epoch

    def save(step_now: int):
        gens = step_now * sched.accum // sched.micro_per_generation
        state = {"step": step_now, "epoch": epoch_of(gens), "generation_batches": gens, "total_steps": total_steps,
                 "stage": "grpo"}
        return ckpt_lib.save_checkpoint(out, step_now, model.save, optimizer, scheduler, state,
                                        keep_last=cfg.save_total_limit)

    amp = lambda: autocast(device, cfg.bf16)  # noqa: E731  (a fresh region per pass: see ReferencePolicy)
    engine = build_engine(cfg.engine, model, embeddings, device=device, autocast_ctx=amp)
    names = [name for name, _, _ in rewards]
    weights = torch.tensor([w for _, _, w in rewards], dtype=torch.float32)

    def rollout(g: int) -> Rollout:
        """Generation batch g: sample, score, compute advantages and the old / reference log-probs."""
        t0 = time.perf_counter()
        e, j = divmod(g, per_epoch)
        order = epoch_order(n, cfg.seed, e)
        idx = order[j * sched.prompts_per_generation:(j + 1) * sched.prompts_per_generation]
        G = cfg.num_generations
        group_prompts = [prompts[i] for i in idx for _ in range(G)]
        group_rows = [prompt_rows[i] for i in idx for _ in range(G)]
        model.eval()
        chunk = cfg.rollout_batch_size or len(group_prompts)
        gens = []
        for c, start in enumerate(range(0, len(group_prompts), chunk)):
            sampling = SamplingConfig(max_new_tokens=cfg.max_completion_length, do_sample=True,
                                      temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                                      seed=(cfg.seed * 1_000_003 + g) * 1_009 + c)
            gens += engine.generate(group_prompts[start:start + chunk], sampling)
        texts = [x.text for x in gens]
        per_func = torch.tensor([score(fn, name, texts, group_rows) for name, fn, _ in rewards],
                                dtype=torch.float32).T                     # (B, F)
        total = (per_func * weights.unsqueeze(0)).sum(dim=1)
        advantages, _ = compute_advantages(total, G, cfg.scale_rewards)
        group_std = total.view(-1, G).std(dim=1)
        truncated = torch.tensor([not x.stopped for x in gens])
        lengths = torch.tensor([len(x.tokens) for x in gens], dtype=torch.float32)
        micro = []
        for s in range(sched.steps_per_generation):
            sl = slice(s * sched.batch, (s + 1) * sched.batch)
            mb = build_micro_batch(model, group_prompts[sl], [x.tokens for x in gens[sl]], advantages[sl],
                                   embeddings, device, truncated=truncated[sl],
                                   mask_truncated=cfg.mask_truncated_completions)
            if sched.needs_old_logps:
                with torch.no_grad(), amp():
                    mb.old_logps = completion_logps(model, mb, cfg.temperature, cfg.logprob_chunk_tokens)[0]
            if reference is not None:
                with reference.active(), amp():
                    mb.ref_logps = completion_logps(model, mb, cfg.temperature, cfg.logprob_chunk_tokens)[0]
            micro.append(mb)
        num_items = int(sum(int(mb.loss_mask.sum()) for mb in micro))
        stats = {"reward": float(total.mean()), "reward_std": float(total.std()),
                 "frac_reward_zero_std": float(torch.isclose(group_std, torch.zeros_like(group_std)).float().mean()),
                 "completion_length": float(lengths.mean()), "completion_length_min": float(lengths.min()),
                 "completion_length_max": float(lengths.max()), "truncated_frac": float(truncated.float().mean())}
        for k, name in enumerate(names):
            stats[f"rewards/{name}"] = float(per_func[:, k].mean())
        return Rollout(micro, num_items, stats, time.perf_counter() - t0)

    # ---------------------------------------------------------------- the loop
    bar = tqdm(total=total_steps, initial=step, desc="grpo", unit="step", dynamic_ncols=True,
               mininterval=1.0 if sys.stderr.isatty() else 30.0)
    exit_code = 0
    last_saved = step if resume_from is not None else -1
    save_due = False
    buffer: Rollout | None = None
    while step < total_steps:
        t0 = time.perf_counter()
        gen_seconds, gen_stats, sums, loss_total = 0.0, [], {}, 0.0
        ratio_dev = 0.0
        for a in range(sched.accum):
            m = step * sched.accum + a                      # global micro-step
            if m % sched.micro_per_generation == 0:
                buffer = rollout(m // sched.micro_per_generation)
                gen_seconds += buffer.seconds
                gen_stats.append(buffer.stats)
            mb = buffer.micro[m % sched.steps_per_generation]
            model.train()
            with amp():
                logps, entropies = completion_logps(model, mb, cfg.temperature, cfg.logprob_chunk_tokens)
                loss, stats = grpo_loss(logps, mb.old_logps, mb.ref_logps, mb.advantages, mb.loss_mask,
                                        loss_type=cfg.loss_type, beta=cfg.beta, epsilon_low=eps_low,
                                        epsilon_high=eps_high, importance_sampling_level=cfg.importance_sampling_level,
                                        max_completion_length=cfg.max_completion_length, grad_accum=sched.accum,
                                        num_items_in_batch=buffer.num_items,
                                        steps_per_generation=sched.steps_per_generation,
                                        use_bias_correction_kl=cfg.use_bias_correction_kl, delta=cfg.delta)
            loss.backward()
            loss_total += float(loss.detach())
            stats["entropy"] = ((entropies * mb.loss_mask).sum(), mb.loss_mask.sum())
            ratio_dev = max(ratio_dev, float(stats.pop("ratio_max_abs_dev")[0]))
            for k, (s, c) in stats.items():
                acc = sums.setdefault(k, [0.0, 0.0])
                acc[0] += float(s)
                acc[1] += float(c)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        engine.sync_weights(model)  # the next rollout samples from the updated policy
        step += 1
        dt = time.perf_counter() - t0
        at_boundary = sched.boundary(step)
        gens_done = step * sched.accum // sched.micro_per_generation
        epoch_done = at_boundary and gens_done % per_epoch == 0
        n_generated = len(gen_stats)
        if not gen_stats:           # a reused generation batch: report the rollout it came from
            gen_stats = [buffer.stats]
        rollout_stats = {k: sum(s[k] for s in gen_stats) / len(gen_stats) for k in gen_stats[0]}
        bar.update(1)
        bar.set_postfix(reward=f"{rollout_stats['reward']:.3f}", refresh=False)
        if step % cfg.logging_steps == 0 or step == total_steps:
            entry = dict(step=step, epoch=round(step * sched.accum / sched.micro_per_generation / per_epoch, 4),
                         loss=loss_total, **rollout_stats,
                         **{k: (s / c if c else None) for k, (s, c) in sums.items()},
                         ratio_max_abs_dev=ratio_dev, lr=scheduler.get_last_lr()[0], grad_norm=float(grad_norm),
                         generated=n_generated, generation_s=gen_seconds,
                         update_s=dt - gen_seconds, step_time_s=dt)
            if device.type == "cuda":
                entry["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            train_log.write(**entry)
        save_due = save_due or step % cfg.save_steps == 0
        if (at_boundary and (save_due or epoch_done)) or step == total_steps:
            save(step)
            last_saved, save_due = step, False
        if stop and step < total_steps and at_boundary:
            if last_saved != step:
                save(step)
            log(f"[grpo] received signal {stop.requested}: checkpointed step {step}/{total_steps}, "
                f"exiting with {REQUEUE_EXIT_CODE} (requeue)")
            exit_code = REQUEUE_EXIT_CODE
            break
    bar.close()
    train_log.close()
    stop.restore()
    if exit_code == 0:
        record_done(out, "grpo", step, total_steps)
        from biopost.train.grpo_summary import write_grpo_summary
        summary = write_grpo_summary(out)  # the runner puts it in status.json; the harvester notes it
        if summary["no_learning_signal"]:
            log(f"[grpo] no learning signal: every group of all {summary['steps']} logged steps had zero "
                f"reward std (mean reward {summary['mean_reward']}), so every advantage was 0")
    return exit_code


def main(argv=None, prog: str | None = None) -> int:
    from biopost.config import parse_config
    cfg = parse_config(GRPOConfig, argv, prog=prog, description=__doc__.split("\n\n")[0] + "\n\n" + BATCH_HELP)
    return run_stage(train_grpo, cfg)


BATCH_HELP = ("Batches (as TRL): per_device_train_batch_size counts completions; a generation batch is "
              "per_device_train_batch_size x steps_per_generation completions (a multiple of num_generations), "
              "generated once and used num_iterations times; gradient_accumulation_steps micro-batches make one "
              "optimizer step. Exit code 75: checkpointed after SIGTERM/SIGUSR1, requeue me.")

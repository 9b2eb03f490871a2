"""GRPO's math as pure tensor functions: group advantages and the clipped surrogate + k3 KL of one
micro-batch, aggregated exactly as TRL 1.16's GRPOTrainer does (tests/test_grpo_oracle.py checks
loss and gradient against it; tests/test_grpo_e2e_oracle.py the whole loop). No model, no I/O.
"""
from __future__ import annotations

LOSS_TYPES = ("grpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")
IS_LEVELS = ("token", "sequence")
ADV_EPS = 1e-4  # TRL's: advantages / (std + 1e-4)


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



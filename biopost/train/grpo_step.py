"""One GRPO optimizer step's passes (biopost.train.grpo's loop calls `optimizer_step` once per step),
and the check that a checkpoint's batch layout fits the resuming run.
"""
from __future__ import annotations

from biopost.errors import CheckpointError
from biopost.train.grpo_loss import grpo_loss
from biopost.train.grpo_policy import completion_logps
from biopost.train.grpo_rollouts import Schedule


def check_resume_layout(saved: dict, layout: dict, resume_from) -> None:
    """A checkpoint resumes under any world size whose micro-batch counts per step and per generation
    batch (over all ranks) are the ones it was written with: its step then means the same data."""
    keys = ("micro_batches_per_step", "steps_per_generation")
    if all(saved.get(k, layout[k]) == layout[k] for k in keys):
        return
    raise CheckpointError(f"--resume {resume_from}: that run took {saved.get('micro_batches_per_step')} micro-batches "
                          f"per step and {saved.get('steps_per_generation')} per generation batch (world size "
                          f"{saved.get('world_size')}); this one would take {layout['micro_batches_per_step']} and "
                          f"{layout['steps_per_generation']} (world size {layout['world_size']}). Keep world size x "
                          f"--gradient_accumulation_steps and world size x --steps_per_generation as they were")


def optimizer_step(model, net, rollouts, buffer, step: int, sched: Schedule, cfg, amp, rank: int = 0):
    """The forward / backward passes of optimizer step `step` (gradients accumulated, no update):
    a new generation batch whenever the previous one is used up (every rank takes part), else its
    next micro-batch; this rank runs micro-batches rank, rank + W, ... of the step. Each loss is
    multiplied by W because DDP averages the ranks' gradients. Returns (the current generation
    batch, what to log, summed over ranks)."""
    from biopost import distributed
    gen_seconds, gen_stats, sums, loss_total, ratio_dev = 0.0, [], {}, 0.0, 0.0
    eps_low = cfg.epsilon
    eps_high = cfg.epsilon if cfg.epsilon_high is None else cfg.epsilon_high
    mine = [a for a in range(sched.accum) if a % sched.world == rank]
    for a in range(sched.accum):
        m = step * sched.accum + a                      # global micro-step
        if m % sched.micro_per_generation == 0:
            buffer = rollouts(m // sched.micro_per_generation)
            gen_seconds += buffer.seconds
            gen_stats.append(buffer.stats)
        if a % sched.world != rank:
            continue
        mb = buffer.micro[m % sched.steps_per_generation]
        model.train()
        with distributed.no_sync(net, sync=a == mine[-1]), amp():
            logps, entropies = completion_logps(model, mb, cfg.temperature, cfg.logprob_chunk_tokens, forward=net)
            loss, stats = grpo_loss(logps, mb.old_logps, mb.ref_logps, mb.advantages, mb.loss_mask,
                                    loss_type=cfg.loss_type, beta=cfg.beta, epsilon_low=eps_low,
                                    epsilon_high=eps_high, importance_sampling_level=cfg.importance_sampling_level,
                                    max_completion_length=cfg.max_completion_length, grad_accum=sched.accum,
                                    num_items_in_batch=buffer.num_items,
                                    steps_per_generation=sched.steps_per_generation,
                                    use_bias_correction_kl=cfg.use_bias_correction_kl, delta=cfg.delta)
            (loss * sched.world if sched.world > 1 else loss).backward()
        loss_total += float(loss.detach())
        stats["entropy"] = ((entropies * mb.loss_mask).sum(), mb.loss_mask.sum())
        ratio_dev = max(ratio_dev, float(stats.pop("ratio_max_abs_dev")[0]))
        for k, (s, c) in stats.items():
            acc = sums.setdefault(k, [0.0, 0.0])
            acc[0] += float(s)
            acc[1] += float(c)
    if sched.world > 1:   # every rank ran the same micro-batch count, so the same stat keys
        keys = sorted(sums)
        flat = distributed.sums_across([loss_total] + [x for k in keys for x in sums[k]])
        loss_total, sums = flat[0], {k: flat[1 + 2 * i:3 + 2 * i] for i, k in enumerate(keys)}
        ratio_dev = distributed.max_across(ratio_dev)
    n_generated = len(gen_stats)
    if not gen_stats:           # a reused generation batch: report the rollout it came from
        gen_stats = [buffer.stats]
    rollout_stats = {k: sum(s[k] for s in gen_stats) / len(gen_stats) for k in gen_stats[0]}
    return buffer, {"loss": loss_total, "rollout": rollout_stats, "ratio_dev": ratio_dev,
                    "means": {k: (s / c if c else None) for k, (s, c) in sums.items()},
                    "generated": n_generated, "generation_s": gen_seconds}

"""GRPO's generation batches: sample G completions per prompt through the engine, score them,
turn rewards into advantages, and lay the batch out as micro-batches with the old-policy and
reference log-probs it needs. Everything a rollout depends on is passed in explicitly, so a
generation batch is a function of (its index, the policy's weights) and nothing else: a resumed
run regenerates exactly the batch the interrupted one was using.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from biopost.train.grpo_loss import compute_advantages
from biopost.train.grpo_policy import build_micro_batch, completion_logps
from biopost.train.recipe import epoch_order


@dataclass(frozen=True)
class Schedule:
    """The batch arithmetic, in one place (see the module docstring). Counts are over all ranks:
    under W processes `accum` and `steps_per_generation` are W x the flags, and rank r runs
    micro-batches r, r+W, ... of each (biopost.train.grpo's docstring)."""
    batch: int                   # completions per micro-batch
    accum: int                   # micro-batches per optimizer step
    steps_per_generation: int    # micro-batches per generation batch
    num_iterations: int
    num_generations: int
    world: int = 1

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


def schedule_from_config(cfg, world: int = 1) -> Schedule:
    spg = cfg.steps_per_generation or cfg.gradient_accumulation_steps
    return Schedule(cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps * world, spg * world,
                    cfg.num_iterations, cfg.num_generations, world)


@dataclass
class Rollout:
    """One generation batch: its micro-batches plus what gets logged about it."""
    micro: list
    num_items: int             # loss tokens in the whole generation batch (dapo's normalizer)
    stats: dict
    seconds: float


@dataclass
class SamplingSettings:
    """The GRPOConfig fields a rollout reads (kept apart so that Rollouts does not see the config)."""
    max_completion_length: int
    temperature: float
    top_p: float
    top_k: int
    seed: int
    rollout_batch_size: int       # completions per engine call (0 = the whole generation batch)
    scale_rewards: str
    mask_truncated_completions: bool
    logprob_chunk_tokens: int

    @classmethod
    def from_config(cls, cfg) -> "SamplingSettings":
        return cls(**{f: getattr(cfg, f) for f in cls.__dataclass_fields__})


class Rollouts:
    """Generation batch g of a GRPO run (see biopost.train.grpo's module docstring)."""

    def __init__(self, *, model, engine, prompts: list, rows: list, rewards: list, schedule, per_epoch: int,
                 settings: SamplingSettings, embeddings, reference, device, autocast, rank: int = 0):
        self.model, self.engine, self.rank = model, engine, rank
        self.prompts, self.rows = prompts, rows          # encoded prompts; rows with their gold
        self.rewards = rewards                           # [(name, fn, weight)]
        self.sched, self.per_epoch, self.s = schedule, per_epoch, settings
        self.embeddings, self.reference = embeddings, reference
        self.device, self.autocast = device, autocast

    def prompt_indices(self, g: int) -> list[int]:
        """The prompts of generation batch g: slice g mod per_epoch of epoch g // per_epoch's order."""
        e, j = divmod(g, self.per_epoch)
        per = self.sched.prompts_per_generation
        return epoch_order(len(self.prompts), self.s.seed, e)[j * per:(j + 1) * per]

    def chunk_size(self, n: int) -> int:
        """Completions per engine call: --rollout_batch_size, or the whole generation batch split
        evenly over the ranks (one call per rank, as TRL's per-device generation)."""
        return self.s.rollout_batch_size or math.ceil(n / self.sched.world)

    def generate(self, group_prompts: list, g: int) -> list:
        """The generation batch's completions, in order. Chunk c (of `chunk_size` completions) is
        sampled with a generator seeded by (seed, g, c) by rank c mod W, and the ranks exchange
        theirs: every rank holds the whole batch (a group's advantages need all of its rewards),
        and each chunk's draws are those one process makes with the same --rollout_batch_size."""
        from biopost import distributed
        from biopost.generate.sampling import Generation, SamplingConfig
        s, world = self.s, self.sched.world
        chunk = self.chunk_size(len(group_prompts))
        starts = list(range(0, len(group_prompts), chunk))
        mine = {}
        for c, start in enumerate(starts):
            if c % world != self.rank:
                continue
            sampling = SamplingConfig(max_new_tokens=s.max_completion_length, do_sample=True,
                                      temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                                      seed=(s.seed * 1_000_003 + g) * 1_009 + c)
            mine[c] = self.engine.generate(group_prompts[start:start + chunk], sampling)
        if world == 1:
            return [x for c in range(len(starts)) for x in mine[c]]
        # only what the loss and the rewards read travels (extras may hold tensors)
        light = {c: [(x.tokens, x.text, x.stopped, x.prompt_length) for x in gens] for c, gens in mine.items()}
        every = {c: v for part in distributed.all_gather(light) for c, v in part.items()}
        return [Generation(list(t), text, stopped, plen) for c in range(len(starts)) for t, text, stopped, plen in every[c]]

    def __call__(self, g: int) -> Rollout:
        """Generation batch g: sample, score, compute advantages and the old / reference log-probs."""
        import torch

        from biopost.rewards import score
        t0 = time.perf_counter()
        G, sched, s = self.sched.num_generations, self.sched, self.s
        idx = self.prompt_indices(g)
        group_prompts = [self.prompts[i] for i in idx for _ in range(G)]
        group_rows = [self.rows[i] for i in idx for _ in range(G)]
        self.model.eval()
        gens = self.generate(group_prompts, g)
        texts = [x.text for x in gens]
        per_func = torch.tensor([score(fn, name, texts, group_rows) for name, fn, _ in self.rewards],
                                dtype=torch.float32).T                     # (B, F)
        weights = torch.tensor([w for _, _, w in self.rewards], dtype=torch.float32)
        total = (per_func * weights.unsqueeze(0)).sum(dim=1)
        advantages, _ = compute_advantages(total, G, s.scale_rewards)
        group_std = total.view(-1, G).std(dim=1)
        truncated = torch.tensor([not x.stopped for x in gens])
        lengths = torch.tensor([len(x.tokens) for x in gens], dtype=torch.float32)
        micro = []
        for k in range(sched.steps_per_generation):
            if k % sched.world != self.rank:    # another rank's micro-batch
                micro.append(None)
                continue
            sl = slice(k * sched.batch, (k + 1) * sched.batch)
            mb = build_micro_batch(self.model, group_prompts[sl], [x.tokens for x in gens[sl]], advantages[sl],
                                   self.embeddings, self.device, truncated=truncated[sl],
                                   mask_truncated=s.mask_truncated_completions)
            if sched.needs_old_logps:
                with torch.no_grad(), self.autocast():
                    mb.old_logps = completion_logps(self.model, mb, s.temperature, s.logprob_chunk_tokens)[0]
            if self.reference is not None:
                with self.reference.active(), self.autocast():
                    mb.ref_logps = completion_logps(self.model, mb, s.temperature, s.logprob_chunk_tokens)[0]
            micro.append(mb)
        # loss tokens of the whole batch, every rank's micro-batches included (dapo's normalizer):
        # what the micro-batches' loss masks would sum to
        num_items = sum(len(x.tokens) for x, cut in zip(gens, truncated.tolist())
                        if not (cut and s.mask_truncated_completions))
        stats = {"reward": float(total.mean()), "reward_std": float(total.std()),
                 "frac_reward_zero_std": float(torch.isclose(group_std, torch.zeros_like(group_std)).float().mean()),
                 "completion_length": float(lengths.mean()), "completion_length_min": float(lengths.min()),
                 "completion_length_max": float(lengths.max()), "truncated_frac": float(truncated.float().mean())}
        for k, (name, _, _) in enumerate(self.rewards):
            stats[f"rewards/{name}"] = float(per_func[:, k].mean())
        return Rollout(micro, num_items, stats, time.perf_counter() - t0)

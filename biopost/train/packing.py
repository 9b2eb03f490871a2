"""Token-budget packing of SFT rows into micro-batches, and the split of an epoch over ranks.

Padding to the longest row of a micro-batch wasted a quarter of the GPU's positions (DESIGN
section 10). With `--tokens_per_micro_batch N` the epoch's order (recipe.epoch_order, as without
packing) is cut greedily into micro-batches of at most N tokens; each becomes one packed row
(examples.collate_packed: documents back to back, position ids restarting, cu_seqlens for the
document mask), so no position is padding. One row rather than a few: several packed rows would be
padded to the longest of them again, and one flat row with cu_seqlens is what variable-length
attention kernels (flash-attn varlen, flex attention's document mask) take as it is; the budget
bounds the micro-batch's memory however many documents it holds. (On CPU the document mask is a
dense (T, T) boolean through SDPA: fine at test sizes, quadratic in the budget.) Only token counts
go in, so packing every epoch up front to count the optimizer steps for the schedule costs
milliseconds, and a resumed run recomputes the same plan from (seed, epoch) instead of saving it.

Ranks: `shard` deals one global packing out so that every rank runs the same number of
micro-batches in every optimizer step (a rank with one fewer would hang DDP's all-reduce), splitting
or, failing that, dropping rows. SFT under DDP does not use it: it runs the 1-process plan's windows
with zero-weight fillers (biopost.distributed.window_share), which keeps every row in the
window it has on one process, so a W-process run equals the 1-process one and resumes under another W.
"""
from __future__ import annotations

import math

from biopost.train.recipe import epoch_order


def pack(order: list[int], lengths: list[int], budget: int) -> list[list[int]]:
    """Rows of `order` packed greedily, in that order, into micro-batches of at most `budget`
    tokens. A row longer than the budget gets a micro-batch of its own (it is never truncated:
    truncation is --max_length_text's job, and a silent cut would change what is supervised; SFT
    logs how many there are). Order is kept, so the data order of a packed epoch is the unpacked
    one's."""
    if budget < 1:
        raise ValueError(f"token budget must be >= 1, got {budget}")
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in order:
        n = lengths[i]
        if n > budget:
            if current:
                batches.append(current)
            batches.append([i])
            current, used = [], 0
            continue
        if used + n > budget:
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        batches.append(current)
    return batches


def packed_epoch(lengths: list[int], budget: int, seed: int, epoch: int) -> list[list[int]]:
    """The micro-batches of epoch `epoch`: a deterministic function of (lengths, budget, seed, epoch)."""
    return pack(epoch_order(len(lengths), seed, epoch), lengths, budget)


def steps_per_packed_epoch(lengths: list[int], budget: int, seed: int, epochs: int, accum: int) -> list[int]:
    """Optimizer steps of each epoch (ceil(micro-batches / accum)). Epochs pack differently (each
    has its own order), so the schedule's total is the sum of these, not epochs x epoch 0's."""
    return [math.ceil(len(packed_epoch(lengths, budget, seed, e)) / accum) for e in range(epochs)]


def balance(micro_batches: list[list[int]], world_size: int) -> list[list[int]]:
    """The micro-batches with their count made a multiple of `world_size` by splitting, never by
    padding with empty micro-batches (a forward pass on nothing) or repeating rows (which would
    weight them twice). The last micro-batch holding two or more rows is halved, in order, until the
    count divides; a split keeps every row exactly once and both halves under the budget. Only when
    every micro-batch is a single row does that fail: then the last `count % world_size` rows of
    the epoch are dropped (as DistributedSampler(drop_last=True); the order changes every epoch, so
    it is not the same rows each time) and the caller should log it."""
    batches = [list(mb) for mb in micro_batches]
    while len(batches) % world_size:
        splittable = [k for k, mb in enumerate(batches) if len(mb) > 1]
        if not splittable:
            return batches[:len(batches) - len(batches) % world_size]
        k = splittable[-1]
        half = (len(batches[k]) + 1) // 2
        batches[k:k + 1] = [batches[k][:half], batches[k][half:]]
    return batches


def shard(micro_batches: list[list[int]], world_size: int, accum: int) -> list[list[list[int]]]:
    """Per rank, the micro-batches it runs, in order. Optimizer step s takes the global window
    micro_batches[s*W*accum : (s+1)*W*accum] (after `balance`) and rank r runs window[r::W], so rank
    r's [s*accum : (s+1)*accum] is its share of step s and every rank runs the same number in every
    step, the last, shorter one included. Each rank can see the whole window, so the loss can be
    normalized by the window's supervised tokens over all ranks, as on one rank. world_size 1
    returns the micro-batches unchanged."""
    if world_size < 1 or accum < 1:
        raise ValueError(f"world_size and accum must be >= 1, got {world_size} and {accum}")
    balanced = balance(micro_batches, world_size)
    ranks: list[list[list[int]]] = [[] for _ in range(world_size)]
    window = world_size * accum
    for start in range(0, len(balanced), window):
        chunk = balanced[start:start + window]
        for r in range(world_size):
            ranks[r].extend(chunk[r::world_size])
    return ranks

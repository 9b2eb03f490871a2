"""Several processes, one training run (DDP under torchrun): the process group and the few
collectives a stage needs, as plain functions. SFT and CPT use them.

With `rank_info().world` 1 (a process started alone) every function here is a no-op returning its
input, so a stage calls them unconditionally and the 1-process path is the code that was there
before. With world W > 1 the ranks run the same schedule as one process with W times the gradient
accumulation: every optimizer step takes a window of W x accum micro-batches of the 1-process plan,
rank r runs window[r::W] (`window_share`), and DDP's gradient all-reduce makes the update the
1-process one. Decisions that must agree (stop on a signal, the monitor's stop) are collectives too,
so no rank leaves the loop a step before another (which would hang the next all-reduce).
"""
from __future__ import annotations

import contextlib
import datetime
import math

from biopost.errors import UserError
from biopost.runtime import rank_info

_STATE = {"device": None}   # the device collectives run on (gloo: CPU tensors, nccl: this rank's GPU)


def init(device, timeout_minutes: float = 60.0):
    """Join the process group when this process is one of several (gloo on CPU, nccl on CUDA);
    returns rank_info(). The timeout bounds how long a rank waits in a collective: rank 0 alone runs
    the monitor's probe evaluations while the others wait, so it is generous (nccl's default is 10
    minutes)."""
    rank = rank_info()
    if rank.world == 1:
        return rank
    import os

    import torch.distributed as dist
    if not dist.is_initialized():
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise UserError(f"world size {rank.world} (from {rank.source}) but {' and '.join(missing)} not set: "
                            f"launch with torchrun (or python -m biopost.launch), or export them under srun")
        if device.type == "cuda":
            import torch
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank.rank, world_size=rank.world,
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    _STATE["device"] = device
    return rank


def teardown() -> None:
    if _active():
        import torch.distributed as dist
        dist.destroy_process_group()
    _STATE["device"] = None


def _active() -> bool:
    if _STATE["device"] is None:
        return False
    import torch.distributed as dist
    return dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _active():
        import torch.distributed as dist
        dist.barrier()


def _reduce(values: list[float], op: str) -> list[float]:
    if not _active():
        return values
    import torch
    import torch.distributed as dist
    t = torch.tensor(values, dtype=torch.float64, device=_STATE["device"])
    dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
    return t.tolist()


def sum_across(value: float) -> float:
    """The sum of `value` over ranks (a logged metric: the window's summed loss)."""
    return _reduce([float(value)], "SUM")[0]


def any_rank(flag: bool) -> bool:
    """True on every rank when it is True on any: a signal may reach one rank only (or reach them
    between two polls), and all must stop at the same step."""
    return _reduce([1.0 if flag else 0.0], "MAX")[0] > 0


def from_main(values: tuple) -> tuple:
    """Rank 0's `values` (small numbers or booleans) on every rank: a decision only rank 0 made
    (the monitor's improved / stop)."""
    if not _active():
        return values
    import torch
    import torch.distributed as dist
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_STATE["device"])
    dist.broadcast(t, src=0)
    return tuple(type(v)(x) for v, x in zip(values, t.tolist()))


def gather_to_main(obj) -> list:
    """Every rank's `obj` (a picklable object: the random state) in rank order, on rank 0; [obj] alone."""
    if not _active():
        return [obj]
    import torch.distributed as dist
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def window_share(window: list, world: int, rank: int) -> list[tuple[list, float]]:
    """Rank `rank`'s micro-batches of one optimizer step's window, as (micro-batch, weight) pairs:
    window[rank::world] with weight 1, then, where the window does not divide by `world` (an epoch's
    last one), repeats of window[0] with weight 0 until every rank has ceil(len / world). A
    zero-weight pass adds nothing to the gradient but takes part in DDP's all-reduce, so no rank
    waits for one that has nothing to run; unlike splitting or dropping rows (packing.balance) it
    keeps every row in the window it has on one process, which is what makes a W-process run equal
    the 1-process one and its data position independent of W."""
    mine = [(mb, 1.0) for mb in window[rank::world]]
    need = math.ceil(len(window) / world)
    return mine + [(window[0], 0.0)] * (need - len(mine))


def wrap(model, device):
    """The module the training passes go through: `model` itself on one process, else DDP over it
    (a BioReasoningModel, or CPT's plain HF causal LM).
    Only trainable parameters (LoRA, projectors, bio-token rows) are in DDP's reducer. A model with
    several projectors may run a micro-batch without one modality's features, leaving its projector
    unused, which DDP only tolerates with find_unused_parameters (a graph walk per step); with one
    projector every trainable parameter is used in every pass, so it stays off. The bio-token
    lookup is the only buffer and never changes: no buffer broadcast per forward."""
    if not _active():
        return model
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP
    # torch 2.13 renamed broadcast_buffers (per forward) to forward_sync_buffers
    no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                      else {"broadcast_buffers": False})
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
               find_unused_parameters=len(getattr(model, "projectors", ())) > 1, **no_buffer_sync)


def no_sync(net, sync: bool):
    """DDP's no_sync() for the micro-batches of a window before its last: the gradients accumulate
    locally and are all-reduced once, at the last backward, instead of after every micro-batch."""
    if sync or not hasattr(net, "no_sync"):
        return contextlib.nullcontext()
    return net.no_sync()

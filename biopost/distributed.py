"""Several processes, one training run (DDP under torchrun): the process group and the few
collectives a stage needs, as plain functions. SFT, CPT and GRPO use them.

With `rank_info().world` 1 (a process started alone) every function here is a no-op returning its
input, so a stage calls them unconditionally and the 1-process path is the code that was there
before. With world W > 1 the ranks run the same schedule as one process with W times the gradient
accumulation: every optimizer step takes a window of W x accum micro-batches of the 1-process plan,
rank r runs window[r::W] (`window_share`), and DDP's gradient all-reduce makes the update the
1-process one. Decisions that must agree (stop on a signal, the monitor's stop) are collectives too,
so no rank leaves the loop a step before another (which would hang the next all-reduce).

Full fine-tuning can shard instead (`--parallel fsdp`, the default for full fine-tuning under
several processes): FSDP2's `fully_shard` on every decoder layer and on the root module, so each
rank holds 1/W of the weights, gradients and Adam state. Its reduce-scatter averages like DDP's
all-reduce, so the loss scaling and the windows are the same. A checkpoint is written in the
1-process format (full tensors, the optimizer state keyed by parameter index): every rank takes
part in gathering it, rank 0 writes it, and it resumes under any world size and either mode.
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


def sums_across(values: list[float]) -> list[float]:
    """Element-wise sums over ranks of a list of numbers (same length and order on every rank)."""
    return _reduce([float(v) for v in values], "SUM")


def max_across(value: float) -> float:
    return _reduce([float(value)], "MAX")[0]


def all_gather(obj) -> list:
    """Every rank's `obj` (picklable) in rank order, on every rank; [obj] alone."""
    if not _active():
        return [obj]
    import torch.distributed as dist
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


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


PARALLEL_MODES = ("auto", "ddp", "fsdp")


def parallel_mode(requested: str, full_finetune: bool) -> str:
    """The wrapping of a multi-process run: --parallel, where auto means FSDP2 for full
    fine-tuning (the weights are what outgrow a GPU) and DDP for LoRA / projector-only training
    (a few trainable tensors: replicating them costs nothing, sharding would cost an all-gather per
    layer and pass)."""
    if requested not in PARALLEL_MODES:
        from biopost.config import ConfigError
        raise ConfigError(f"parallel must be one of {', '.join(PARALLEL_MODES)}, got {requested!r}")
    if requested == "fsdp" and not full_finetune:
        from biopost.config import ConfigError
        raise ConfigError("--parallel fsdp shards full fine-tuning (--lora_rank 0); LoRA and projector-only training "
                          "run under ddp (--parallel ddp or auto)")
    if requested == "auto":
        return "fsdp" if full_finetune else "ddp"
    return requested


def wrap(model, device, mode: str = "ddp"):
    """The module the training passes go through: `model` itself on one process, else DDP over it
    or (`mode` fsdp) the model itself, sharded in place by FSDP2 (a BioReasoningModel, or CPT's
    plain HF causal LM). Build the optimizer after wrapping: fully_shard replaces the parameters.
    Only trainable parameters (LoRA, projectors, bio-token rows) are in DDP's reducer. A model with
    several projectors may run a micro-batch without one modality's features, leaving its projector
    unused, which DDP only tolerates with find_unused_parameters (a graph walk per step); with one
    projector every trainable parameter is used in every pass, so it stays off. The bio-token
    lookup is the only buffer and never changes: no buffer broadcast per forward."""
    if not _active():
        return model
    if mode == "fsdp":
        return _fully_shard(model)
    import inspect

    from torch.nn.parallel import DistributedDataParallel as DDP
    # torch 2.13 renamed broadcast_buffers (per forward) to forward_sync_buffers
    no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters
                      else {"broadcast_buffers": False})
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
               find_unused_parameters=len(getattr(model, "projectors", ())) > 1, **no_buffer_sync)


def no_sync(net, sync: bool):
    """DDP's no_sync() for the micro-batches of a window before its last: the gradients accumulate
    locally and are all-reduced once, at the last backward, instead of after every micro-batch.
    Under FSDP2 every micro-batch reduce-scatters: holding a window's unsharded gradients instead
    (set_requires_gradient_sync) would give back the memory that sharding saves."""
    if sync or not hasattr(net, "no_sync"):
        return contextlib.nullcontext()
    return net.no_sync()


def _fully_shard(model):
    """FSDP2 over `model`: each decoder layer (the first ModuleList named `layers`: Qwen3's) its own
    unit, so only one layer's full weights exist at a time, then the root (embeddings, LM head,
    projectors, bio-token rows)."""
    import torch.nn as nn
    from torch.distributed.fsdp import fully_shard
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] == "layers":
            for layer in module:
                fully_shard(layer)
            break
    fully_shard(model)
    return model


def is_sharded(net) -> bool:
    if not _active():
        return False
    from torch.distributed.fsdp import FSDPModule
    return isinstance(net, FSDPModule)


def _resharded(net):
    """`net` with every FSDP unit back in its sharded state. A forward without backward (an
    evaluation under no_grad) leaves the root unit's parameters gathered, and the state-dict
    functions would then see full tensors the optimizer does not know."""
    from torch.distributed.fsdp import FSDPModule
    for unit in net.modules():
        if isinstance(unit, FSDPModule):
            unit.reshard()
    return net


def full_model_state(net) -> dict | None:
    """Under FSDP the model's full state dict (a collective: every rank calls it; the tensors land
    on rank 0, on the CPU), for rank 0's `model.save(dir, state=...)`; None when not sharded (the
    model saves its own tensors)."""
    if not is_sharded(net):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(_resharded(net), options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _param_names(net, optimizer) -> list[str]:
    names = {id(p): n for n, p in net.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def optimizer_state(net, optimizer) -> dict:
    """The optimizer's state as one process would write it (`optimizer.state_dict()`): under FSDP
    the full state gathered from the shards (a collective; the tensors land on rank 0 only)."""
    if not is_sharded(net):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    full = get_optimizer_state_dict(_resharded(net), optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    index = {n: i for i, n in enumerate(_param_names(net, optimizer))}
    return {"state": {index[n]: v for n, v in full.get("state", {}).items()},
            "param_groups": [dict(g, params=[index[n] for n in g["params"]]) for g in full.get("param_groups", [])]}


def load_optimizer_state(net, optimizer, state: dict) -> None:
    """Load a 1-process-format optimizer state (see `optimizer_state`), sharding it under FSDP."""
    if not is_sharded(net):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    names = _param_names(net, optimizer)
    full = {"state": {names[int(i)]: v for i, v in state["state"].items()},
            "param_groups": [dict(g, params=[names[int(i)] for i in g["params"]]) for g in state["param_groups"]]}
    set_optimizer_state_dict(net, optimizer, full, options=StateDictOptions(full_state_dict=True))


def without_tied_head(state: dict, config) -> dict:
    """A gathered full state dict holds a tied LM head as a copy of the input embeddings; leave it to
    the tie (as save_pretrained does for the live model) when `config` ties them."""
    if not getattr(config, "tie_word_embeddings", False):
        return state
    return {k: v for k, v in state.items() if not k.endswith("lm_head.weight")}

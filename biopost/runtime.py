"""Where and how a stage runs: device, dtype and autocast policy, seeding, and the process's place
in a multi-process job.

One policy for every stage (CPT, SFT, GRPO, evaluation): bf16 autocast on CUDA, plain fp32 on CPU
so CPU runs are exact and resumable bit for bit. The rank fields come from torchrun's variables
(RANK, WORLD_SIZE, LOCAL_RANK) or, under `srun` without torchrun, from SLURM's (SLURM_PROCID,
SLURM_NTASKS, SLURM_LOCALID); a process started alone is rank 0 of 1. Torch is imported inside
the functions, so reading the rank costs nothing on a login node.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from biopost.errors import UserError


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    source: str = "alone"   # torchrun | slurm | alone

    @property
    def is_main(self) -> bool:
        """The one process that writes shared files (logs, checkpoints, metrics)."""
        return self.rank == 0


_SOURCES = (("torchrun", ("RANK", "WORLD_SIZE", "LOCAL_RANK")),
            ("slurm", ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")))


def rank_info(environ=None) -> Rank:
    """This process's rank, world size and local rank. torchrun's variables win over SLURM's: a
    torchrun launched by one sbatch task sets its own, and SLURM's then describe the launcher."""
    env = os.environ if environ is None else environ
    for source, names in _SOURCES:
        if names[0] not in env and names[1] not in env:
            continue
        values = []
        for name in names:
            raw = env.get(name, "0" if name != names[1] else "1")
            try:
                values.append(int(raw))
            except ValueError:
                raise UserError(f"environment variable {name}={raw!r} is not an integer "
                                f"(it is read as this process's {source} rank information)") from None
        rank, world, local = values
        if world < 1 or not 0 <= rank < world or local < 0:
            raise UserError(f"inconsistent {source} variables: {names[0]}={rank}, {names[1]}={world}, "
                            f"{names[2]}={local} (need 0 <= rank < world size and local rank >= 0)")
        return Rank(rank, world, local, source)
    return Rank()


def pick_device(requested: str = "auto"):
    import torch
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        # one GPU per process under torchrun / srun: the local rank picks it ("cuda" too, or every
        # rank of a multi-process run would share GPU 0)
        return torch.device("cuda", rank_info().local_rank % torch.cuda.device_count())
    if requested == "auto":
        return torch.device("cpu")
    return torch.device(requested)


def autocast(device, bf16: bool = True):
    import torch
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def base_dtype(device, bf16: bool = True):
    """dtype of the frozen base weights: bf16 on GPU halves memory; fp32 on CPU for exactness."""
    import torch
    return torch.bfloat16 if (device.type == "cuda" and bf16) else torch.float32


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def deterministic_on_cpu(device) -> None:
    """Bit-identical resume needs run-to-run determinism. On CPU some backward kernels (embedding,
    index_add) accumulate across threads in a varying order; the deterministic variants cost little
    there. GPU runs keep the fast kernels."""
    import torch
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)

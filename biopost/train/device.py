"""Device and precision policy: bf16 autocast on CUDA, plain fp32 on CPU."""
import contextlib

import torch


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def autocast(device: torch.device, bf16: bool = True):
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def base_dtype(device: torch.device, bf16: bool = True) -> torch.dtype:
    """dtype of the frozen base weights: bf16 on GPU halves memory; fp32 on CPU for exactness."""
    return torch.bfloat16 if (device.type == "cuda" and bf16) else torch.float32


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def deterministic_on_cpu(device: torch.device) -> None:
    """Bit-identical resume needs run-to-run determinism. On CPU some backward kernels (embedding,
    index_add) accumulate across threads in a varying order; the deterministic variants cost little
    there. GPU runs keep the fast kernels."""
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)

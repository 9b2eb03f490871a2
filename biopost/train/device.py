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

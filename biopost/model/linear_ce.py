"""The LM head and cross-entropy over supervised positions, without every position's logits alive.

With a 150k vocabulary the (N, V) fp32 logits of N supervised positions are the largest tensors of
an SFT step (8k positions: 4.9 GB, kept for the backward pass, plus their softmax gradient). Three
ways, picked in this order:
- liger-kernel's LigerFusedLinearCrossEntropyLoss on CUDA when the package is importable: it
  computes the loss and the input / weight gradients chunk by chunk in one fused op. It is an
  optional extra, not in the pinned stacks; on CPU it does not run, so nothing here tests it.
- N <= chunk_tokens (or chunk_tokens 0): the plain head + cross-entropy, exactly as before this
  module existed, so small batches (every test, the demo) keep their numbers bit for bit.
- Otherwise chunks of chunk_tokens positions, each under torch.utils.checkpoint: the forward pass
  keeps one chunk's logits at a time and the backward pass recomputes them chunk by chunk, so peak
  memory is one (chunk, V) block instead of (N, V). The sum over chunks equals the one-shot sum up
  to float rounding (a different summation order), which is why small N does not chunk.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F_
from torch.utils.checkpoint import checkpoint

LOSS_CHUNK_TOKENS = 8192


def _liger_loss_class():
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError:
        return None
    return LigerFusedLinearCrossEntropyLoss


def _ce_sum(head, hidden, targets):
    return F_.cross_entropy(head(hidden).float(), targets, reduction="sum")


def linear_cross_entropy_sum(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                             chunk_tokens: int = LOSS_CHUNK_TOKENS, use_liger: bool = True) -> torch.Tensor:
    """sum_i CE(head(hidden[i]), targets[i]) over N selected positions: `hidden` (N, d), `targets` (N,)."""
    # liger reads the head's weight directly: only a plain Linear (a LoRA-wrapped head would lose its adapter)
    liger = _liger_loss_class() if use_liger and hidden.is_cuda and type(head) is nn.Linear else None
    if liger is not None:
        loss = liger(reduction="sum")(head.weight, hidden.to(head.weight.dtype), targets, head.bias)
        return loss[0] if isinstance(loss, tuple) else loss
    n = hidden.shape[0]
    if chunk_tokens <= 0 or n <= chunk_tokens:
        return _ce_sum(head, hidden, targets)
    recompute = torch.is_grad_enabled()
    total = None
    for start in range(0, n, chunk_tokens):
        args = (head, hidden[start:start + chunk_tokens], targets[start:start + chunk_tokens])
        part = checkpoint(_ce_sum, *args, use_reentrant=False) if recompute else _ce_sum(*args)
        total = part if total is None else total + part
    return total

"""What a training pass hands the model: one record for SFT, CPT and every GRPO pass.

`BioReasoningModel.forward(batch)` is the only call training makes into the language model, so a
wrapper (DDP, FSDP2) wraps one module and one signature, and packing is a batch that carries
`position_ids` and `cu_seqlens` rather than a second code path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class Batch:
    input_ids: Any                       # (B, T) token ids, bio pad tokens where embeddings go
    attention_mask: Any = None           # (B, T) 1 = real token; None = all real
    labels: Any = None                   # (B, T) targets, IGNORE_INDEX where unsupervised; None: no loss
    bio_features: Optional[dict] = None  # modality -> list of (n_i, d) embeddings in slot order
    position_ids: Any = None             # (B, T); packed rows restart at 0 per document
    cu_seqlens: Any = None               # (B, D + 1) document starts per packed row (D documents,
                                         # cumulative, last = T); tokens attend within their document


@dataclass
class ForwardOutput:
    hidden: Any = None      # (B, T, d) last hidden states (always)
    loss_sum: Any = None    # summed next-token cross-entropy over supervised positions (labels given)
    n_tokens: int = 0       # supervised positions counted in loss_sum


def document_mask(cu_seqlens, length: int, attention_mask=None):
    """(B, 1, T, T) boolean mask: causal within each document of a packed row, nothing across.
    Positions at or past a row's last boundary are padding and see only themselves (a fully masked
    query row would make SDPA return NaN)."""
    import torch
    B = cu_seqlens.shape[0]
    pos = torch.arange(length, device=cu_seqlens.device)
    doc = torch.searchsorted(cu_seqlens[:, 1:].contiguous(), pos.expand(B, length).contiguous(), right=True)
    causal = torch.ones(length, length, dtype=torch.bool, device=cu_seqlens.device).tril()
    mask = causal & (doc.unsqueeze(2) == doc.unsqueeze(1))
    padding = pos.unsqueeze(0) >= cu_seqlens[:, -1:]
    if attention_mask is not None:
        padding = padding | ~attention_mask.bool()
    eye = torch.eye(length, dtype=torch.bool, device=cu_seqlens.device)
    mask = torch.where(padding.unsqueeze(2), eye, mask & ~padding.unsqueeze(1))
    return mask.unsqueeze(1)

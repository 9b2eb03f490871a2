"""The encoder interface every backend implements (DNA and protein alike).

    encode(sequences) -> list[Tensor[L_i, d]]   one float32 CPU tensor per sequence
    tokens_for(sequence) -> int                 L_i, without running the model
    hidden_size, name, backend, layer, weights_id

`tokens_for` sizes the placeholder block in the prompt; `encode` must return exactly that many
embeddings (the model checks). `weights_id` identifies the weights for the embedding cache.
"""
from __future__ import annotations

import hashlib
import json

import torch


class Encoder:
    backend = "base"
    name: str
    layer: str
    hidden_size: int
    weights_id: str

    def __init__(self):
        self.n_encoded = 0  # sequences actually run through the model (the cache test counts them)

    def tokens_for(self, sequence: str) -> int:
        raise NotImplementedError

    def encode(self, sequences: list[str]) -> list[torch.Tensor]:
        raise NotImplementedError

    def trainable_parameters(self):
        return []


def weights_fingerprint(model: torch.nn.Module, config: dict | None = None) -> str:
    """A cheap identity for a set of weights: config + a sample of every tensor."""
    h = hashlib.sha256(json.dumps(config or {}, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(flat[:4096].to(torch.float32).cpu().numpy().tobytes())
        if flat.numel() > 4096:
            h.update(flat[-4096:].to(torch.float32).cpu().numpy().tobytes())
    return h.hexdigest()[:16]

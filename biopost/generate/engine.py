"""Generation engines: the one interface evaluation, the SFT monitor, GRPO rollouts and reason.py
sample through.

    engine = build_engine(name, model, embeddings, device=..., autocast_ctx=...)
    engine.generate(examples, sampling) -> list[Generation]
    engine.sync_weights(model)      # after an optimizer step changed the policy

`examples` are prompt `Example`s (biopost.data.examples.encode_prompt); `embeddings(modality,
sequence) -> Tensor[L, d]` is the embedding lookup (the cache), taken once at construction, so
callers never pass it per call. Consumers never branch on the engine's type.

Engines register by name in `ENGINES`: a factory `(model, embeddings, device=None,
autocast_ctx=None) -> Engine`. Built in: `hf`, transformers' model with a KV cache
(biopost.generate.sampling), the reference implementation and the CPU default; `static`
(biopost.generate.static), a static KV cache with the decode step replayed as a CUDA graph; and
`auto`, the default everywhere: `static` on CUDA, `hf` on CPU. A vLLM engine
would plug in the same way (see docs/adding_a_modality.md, "Engines"): its `sync_weights` pushes
the updated (merged) weights to the server, its `generate` sends `prompt_embeds` with the bio
embeddings spliced in.
"""
from __future__ import annotations

from typing import Callable, Protocol

from biopost.registry import Registry


class Engine(Protocol):
    name: str

    def generate(self, examples: list, sampling) -> list: ...

    def sync_weights(self, model) -> None: ...


EngineFactory = Callable[..., Engine]
ENGINES: Registry[EngineFactory] = Registry("generation engine")


class HFEngine:
    """The transformers model itself, with a dynamic KV cache: always in sync with training
    (it *is* the policy), so `sync_weights` only rebinds the model."""
    name = "hf"

    def __init__(self, model, embeddings, device=None, autocast_ctx=None):
        self.model = model
        self.embeddings = embeddings
        self.device = device
        # a factory, not a context manager object: an autocast region must be fresh per use
        self.autocast_ctx = autocast_ctx

    def generate(self, examples: list, sampling) -> list:
        from biopost.generate.sampling import generate
        ctx = self.autocast_ctx() if callable(self.autocast_ctx) else self.autocast_ctx
        return generate(self.model, examples, self.embeddings, sampling, device=self.device, autocast_ctx=ctx)

    def sync_weights(self, model) -> None:
        self.model = model


ENGINES.register("hf", HFEngine, help="transformers with a KV cache (reference; the CPU default)")
ENGINES.register_lazy("static", "biopost.generate.static:StaticEngine",
                      help="static KV cache per (batch, length) bucket; the decode step as a CUDA graph on GPU")


def _auto(model, embeddings, device=None, autocast_ctx=None, **options):
    """`static` on CUDA (its decode step replayed as a CUDA graph), `hf` elsewhere (the reference)."""
    import torch
    where = torch.device(device) if device is not None else next(model.parameters()).device
    name = "static" if where.type == "cuda" else "hf"
    return ENGINES.get(name)(model, embeddings, device=device, autocast_ctx=autocast_ctx, **options)


ENGINES.register("auto", _auto, help="the default: static on CUDA, hf on CPU")


def build_engine(name: str, model, embeddings, device=None, autocast_ctx=None, **options) -> Engine:
    """The registered engine `name` for `model` (unknown names list what is registered); `options`
    go to the engine's factory (e.g. the static engine's `length_bucket`)."""
    return ENGINES.get(name)(model, embeddings, device=device, autocast_ctx=autocast_ctx, **options)


def engine_names() -> list[str]:
    return ENGINES.names()

"""The `static` engine: a KV cache allocated once per (batch, length) bucket and, on CUDA, the
decode step replayed as a CUDA graph.

Why: the `hf` engine is host-bound (each decode step launches thousands of small kernels from
Python, and the dynamic cache grows by concatenation), so decoding runs at a fraction of what the
GPU can do and GRPO spends almost all of its time sampling (DESIGN section 10). Here the project
owns the step and every buffer it touches:
  - a transformers `StaticCache` of `bucket_len` slots per row, reused across calls of the same
    bucket (`reset()` between calls), so no allocation happens while decoding;
  - one 4-D boolean attention mask buffer per bucket, over cache slots, updated in place (a 4-D
    mask reaches attention as it is: no mask construction, no host synchronization in the step);
  - static input buffers (token, position, cache slot) and an output buffer of logits, which the
    CUDA graph reads and writes; a replay is a copy into the input buffers plus `graph.replay()`.
Prefill runs eagerly on `inputs_embeds` (the bio embeddings spliced in); decode feeds token ids.
Sampling (temperature, top-k, top-p), the banned bio tokens and the stop tokens run on the device
with the same code and random stream as the `hf` engine (biopost.generate.sampling), so on the
same logits both engines draw the same tokens; "all rows stopped" is asked every CHECK_EVERY steps.
The graph holds pointers to the policy's parameters: optimizer steps update them in place, so
`sync_weights` only has to drop the graphs when the model object itself changes.

On CPU (and with `graphs=False`) the same loop runs without capture: the CPU fallback, which the
tests compare token for token with the `hf` engine.
"""
from __future__ import annotations

import contextlib
import math

import torch

from biopost.generate.sampling import CHECK_EVERY, _cache_kwarg, next_tokens, stop_token_ids, to_generations

LENGTH_BUCKET = 256   # cache lengths are rounded up to a multiple of this (one graph per bucket)


def batch_bucket(n: int) -> int:
    """Rows are padded up to a power of two (up to 64), then to a multiple of 64: few buckets."""
    if n <= 64:
        return 1 << max(0, math.ceil(math.log2(max(n, 1))))
    return 64 * math.ceil(n / 64)


class _Bucket:
    """The cache, mask and step buffers of one (batch, length) bucket, and its graph once captured."""

    def __init__(self, backbone, batch: int, length: int, device):
        from transformers import StaticCache
        self.batch, self.length = batch, length
        self.cache = StaticCache(config=backbone.config, max_cache_len=length)
        self.mask = torch.zeros((batch, 1, 1, length), dtype=torch.bool, device=device)
        self.token = torch.zeros((batch, 1), dtype=torch.long, device=device)
        self.position = torch.zeros((batch, 1), dtype=torch.long, device=device)
        self.slot = torch.zeros((1,), dtype=torch.long, device=device)
        self.logits = None
        self.graph = None


class StaticEngine:
    name = "static"

    def __init__(self, model, embeddings, device=None, autocast_ctx=None, graphs: bool | None = None,
                 length_bucket: int = LENGTH_BUCKET, max_buckets: int = 2):
        self.model = model
        self.embeddings = embeddings
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.autocast_ctx = autocast_ctx
        self.graphs = self.device.type == "cuda" if graphs is None else graphs
        self.length_bucket = length_bucket
        # a bucket holds a whole KV cache (rows x slots x layers): keep the most recent few only
        self.max_buckets = max_buckets
        self.buckets: dict[tuple[int, int], _Bucket] = {}
        self.captures = 0      # graphs captured so far (a test and the benchmark read it)

    def sync_weights(self, model) -> None:
        if model is not self.model:   # a new module: the graphs point at the old one's tensors
            self.model = model
            self.buckets.clear()

    # ------------------------------------------------------------------ the step
    def _autocast(self):
        ctx = self.autocast_ctx() if callable(self.autocast_ctx) else self.autocast_ctx
        if ctx is None:
            return contextlib.nullcontext()
        if self.graphs and isinstance(ctx, torch.autocast):
            # autocast's weight-cast cache would hand the graph tensors freed after capture
            return torch.autocast("cuda", dtype=ctx.fast_dtype, cache_enabled=False)
        return ctx

    def _forward_step(self, b: _Bucket):
        model = self.model
        backbone, head = model.base_llm().model, model.lm_head()
        embeds = model.embed_tokens(b.token)
        out = backbone(inputs_embeds=embeds, attention_mask=b.mask, position_ids=b.position,
                       cache_position=b.slot, use_cache=True, **{_cache_kwarg(type(backbone).forward): b.cache})
        return head(out.last_hidden_state[:, -1]).float()

    def _capture(self, b: _Bucket) -> None:
        """Warm up on a side stream, then capture one decode step. The warm-up writes slot
        `length - 1`, masked until decoding reaches it and then overwritten."""
        b.slot.fill_(b.length - 1)
        b.position.fill_(0)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream), self._autocast():
            for _ in range(2):
                self._forward_step(b)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        b.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(b.graph), self._autocast():
            b.logits = self._forward_step(b)
        self.captures += 1

    def _step(self, b: _Bucket, token, position, slot: int):
        b.token.copy_(token.view(-1, 1))
        b.position.copy_(position.view(-1, 1))
        b.slot.fill_(slot)
        if self.graphs:
            if b.graph is None:
                self._capture(b)
                b.token.copy_(token.view(-1, 1))
                b.position.copy_(position.view(-1, 1))
                b.slot.fill_(slot)
            b.graph.replay()
            return b.logits
        with self._autocast():
            return self._forward_step(b)

    # ------------------------------------------------------------------ generate
    @torch.no_grad()
    def generate(self, examples: list, sampling) -> list:
        from biopost.data.examples import collate
        model, device, cfg = self.model, self.device, sampling
        tok = model.tokenizer
        pad_id = tok.pad_token_id
        n = len(examples)
        # with graphs, filler rows (discarded) keep the number of captured batch shapes small; the
        # CPU fallback runs the rows as given, so its random draws are the hf engine's
        fill = batch_bucket(n) - n if self.graphs else 0
        rows = list(examples) + [examples[0]] * fill
        batch = collate(rows, pad_id, self.embeddings, left_pad=True, device=device)
        ids, mask2d = batch["input_ids"], batch["attention_mask"]
        B, P = ids.shape
        length = self.length_bucket * math.ceil((P + cfg.max_new_tokens) / self.length_bucket)
        b = self.buckets.pop((B, length), None)
        if b is None:
            while len(self.buckets) >= self.max_buckets:
                self.buckets.pop(next(iter(self.buckets)))    # the least recently used
            b = _Bucket(model.base_llm().model, B, length, device)
        self.buckets[(B, length)] = b                          # now the most recently used
        b.cache.reset()
        b.mask.zero_()
        b.mask[:, 0, 0, :P] = mask2d.bool()
        stops = torch.tensor(sorted(stop_token_ids(tok, model.base_llm())), device=device)
        banned = torch.tensor(sorted(model.bio_token_ids), device=device)
        gen = None
        if cfg.do_sample and cfg.seed is not None:
            gen = torch.Generator(device=device).manual_seed(cfg.seed)

        # prefill: causal over the prompt's slots, padding masked (a padded query sees itself: no NaN)
        positions = (mask2d.cumsum(-1) - 1).clamp(min=0)
        causal = torch.ones((P, P), dtype=torch.bool, device=device).tril()
        prefill_mask = torch.zeros((B, 1, P, length), dtype=torch.bool, device=device)
        prefill_mask[:, 0, :, :P] = causal & mask2d.bool()[:, None, :]
        eye = torch.eye(P, dtype=torch.bool, device=device)
        prefill_mask[:, 0, :, :P] |= eye & ~mask2d.bool()[:, :, None]
        backbone, head = model.base_llm().model, model.lm_head()
        with self._autocast():
            embeds = model.embed(ids, batch["bio_features"])
            out = backbone(inputs_embeds=embeds, attention_mask=prefill_mask, position_ids=positions,
                           cache_position=torch.arange(P, device=device), use_cache=True,
                           **{_cache_kwarg(type(backbone).forward): b.cache})
            logits = head(out.last_hidden_state[:, -1]).float()
        next_pos = positions[:, -1] + 1
        finished = torch.zeros(B, dtype=torch.bool, device=device)
        produced: list[torch.Tensor] = []
        for t in range(cfg.max_new_tokens):
            # a copy: the graph's output buffer is overwritten by the next replay
            nxt = next_tokens(logits.clone(), cfg, banned, finished, pad_id, gen)
            produced.append(nxt)
            finished = finished | torch.isin(nxt, stops)
            if len(produced) % CHECK_EVERY == 0 and bool(finished[:n].all()):
                break
            if t + 1 == cfg.max_new_tokens:
                break
            b.mask[:, 0, 0, P + t] = True
            logits = self._step(b, nxt, next_pos, P + t)
            next_pos = next_pos + 1

        return to_generations(produced, examples, stops, tok)

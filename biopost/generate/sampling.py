"""Batched decoding with a KV cache and bio embeddings spliced into the prompt.

Prompts are left-padded so every row's next token sits in the last column; position ids count
only real tokens, so a padded row sees the same positions as it would alone. The first forward
pass runs on `inputs_embeds` (text embeddings with the projected encoder outputs scattered in);
each later step embeds only the sampled token and reuses the cache. Bio placeholder tokens are
never sampled. A row stops at `<|im_end|>` / EOS; after that it only emits padding.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field

import torch

from biopost.data.examples import collate


@dataclass
class SamplingConfig:
    max_new_tokens: int = 256
    do_sample: bool = False          # False: greedy
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0                   # 0: off
    seed: int | None = None          # for a private torch.Generator (reproducible sampling)


@dataclass
class Generation:
    tokens: list[int]                # completion tokens, including the stop token if one was emitted
    text: str                        # decoded completion, stop token and padding removed
    stopped: bool                    # False: hit max_new_tokens (a truncated completion)
    prompt_length: int = 0
    extras: dict = field(default_factory=dict)


def stop_token_ids(tokenizer, llm=None) -> set[int]:
    ids = set()
    for tok in ("<|im_end|>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid is not None:
            ids.add(tid)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    gen_cfg = getattr(llm, "generation_config", None) if llm is not None else None
    eos = getattr(gen_cfg, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif isinstance(eos, (list, tuple)):
        ids.update(int(e) for e in eos)
    return ids


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering, as transformers' warpers do."""
    logits = logits / max(temperature, 1e-6)
    if top_k and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (the top token always stays)
        drop = probs.cumsum(-1) - probs > top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


CHECK_EVERY = 8  # decode steps between checks for "every row has stopped"


@functools.lru_cache(maxsize=None)
def _cache_kwarg(forward) -> str:
    """The name under which this transformers version's decoder takes its KV cache: `cache` from
    5.24 on (where `past_key_values` is deprecated, to be removed in 5.40), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def new_kv_cache(backbone):
    """An empty dynamic KV cache, created by the caller and filled in place by every forward pass
    (transformers' documented Cache API), so the loop never reads a cache back from the outputs."""
    from transformers import DynamicCache
    return DynamicCache(config=backbone.config)


@torch.no_grad()
def generate(model, examples, embeddings, cfg: SamplingConfig, device=None, autocast_ctx=None) -> list[Generation]:
    """Complete a batch of prompt `Example`s (from data.examples.encode_prompt)."""
    import contextlib
    device = device or next(model.parameters()).device
    ctx = autocast_ctx or contextlib.nullcontext()
    tok = model.tokenizer
    pad_id = tok.pad_token_id
    batch = collate(examples, pad_id, embeddings, left_pad=True, device=device)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    B = ids.shape[0]
    stops = torch.tensor(sorted(stop_token_ids(tok, model.base_llm())), device=device)
    banned = torch.tensor(sorted(model.bio_token_ids), device=device)
    gen = None
    if cfg.do_sample and cfg.seed is not None:
        gen = torch.Generator(device=device).manual_seed(cfg.seed)

    backbone, head = model.base_llm().model, model.lm_head()
    kv = {_cache_kwarg(type(backbone).forward): new_kv_cache(backbone)}
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with ctx:
        embeds = model.embed(ids, batch["bio_features"])
        out = backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True, **kv)
        logits = head(out.last_hidden_state[:, -1]).float()
    next_pos = positions[:, -1] + 1
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    produced: list[torch.Tensor] = []
    for _ in range(cfg.max_new_tokens):
        nxt = next_tokens(logits, cfg, banned, finished, pad_id, gen)
        produced.append(nxt)
        finished = finished | torch.isin(nxt, stops)
        # Asking the GPU whether all rows finished stalls the pipeline of queued kernels: ask
        # every CHECK_EVERY tokens only (rows that finished just emit padding meanwhile).
        if len(produced) % CHECK_EVERY == 0 and bool(finished.all()):
            break
        mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=device)], dim=1)
        with ctx:
            step_embeds = model.embed_tokens(nxt[:, None])
            out = backbone(inputs_embeds=step_embeds, attention_mask=mask, position_ids=next_pos[:, None],
                           use_cache=True, **kv)
            logits = head(out.last_hidden_state[:, -1]).float()
        next_pos = next_pos + 1

    return to_generations(produced, examples, stops, tok)


def next_tokens(logits, cfg: SamplingConfig, banned, finished, pad_id: int, gen):
    """One decode step's tokens, on the device: bio tokens banned (in place on `logits`), then
    greedy or temperature / top-k / top-p sampling from `gen`; rows already finished get padding.
    Shared by every engine, so on the same logits they draw the same tokens."""
    logits[:, banned] = float("-inf")
    if cfg.do_sample:
        probs = filter_logits(logits, cfg.temperature, cfg.top_k, cfg.top_p).softmax(-1)
        nxt = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
    else:
        nxt = logits.argmax(-1)
    return torch.where(finished, torch.full_like(nxt, pad_id), nxt)


def to_generations(produced: list, examples, stops, tok) -> list[Generation]:
    """The decoded completions of the first len(examples) rows: each cut after its first stop
    token (kept in `tokens`, left out of `text`); one that never stopped is truncated."""
    n = len(examples)
    tokens = torch.stack(produced, dim=1)[:n].tolist() if produced else [[] for _ in range(n)]
    stop_set = set(stops.tolist())
    results = []
    for i, row in enumerate(tokens):
        completion, stopped = [], False
        for t in row:
            completion.append(t)
            if t in stop_set:
                stopped = True
                break
        body = completion[:-1] if stopped else completion
        text = tok.decode(body, skip_special_tokens=False)
        results.append(Generation(tokens=completion, text=text, stopped=stopped,
                                  prompt_length=len(examples[i].input_ids)))
    return results

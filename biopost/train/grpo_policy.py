"""The policy side of GRPO: completions laid out as micro-batches, their per-token log-probs
through the model's one entry point (`BioReasoningModel.forward`), and the frozen reference policy.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from biopost.errors import MissingCheckpointError
from biopost.model.batch import Batch

REFERENCE_FILE = "reference.safetensors"


@dataclass
class MicroBatch:
    """Completions of one micro-batch laid out as [left-padded prompt | right-padded completion]."""
    input_ids: object          # (B, P + C)
    attention_mask: object     # (B, P + C)
    position_ids: object       # (B, P + C): count real tokens only, as in generation
    bio_features: dict
    prompt_width: int          # P
    completion_ids: object     # (B, C)
    loss_mask: object          # (B, C): completion tokens in the loss
    advantages: object         # (B,)
    old_logps: object = None   # (B, C)
    ref_logps: object = None   # (B, C)


def build_micro_batch(model, prompts, completions: list[list[int]], advantages, embeddings, device,
                      truncated=None, mask_truncated: bool = False) -> MicroBatch:
    """`prompts`: one prompt Example per completion (repeated for a group); `completions`: token ids
    (the stop token included: it is a sampled action, as in TRL)."""
    import torch

    from biopost.data.examples import collate
    pad_id = model.tokenizer.pad_token_id
    batch = collate(prompts, pad_id, embeddings, left_pad=True, device=device)
    B, P = batch["input_ids"].shape
    C = max(1, max(len(c) for c in completions))
    comp = torch.full((B, C), pad_id, dtype=torch.long)
    cmask = torch.zeros((B, C), dtype=torch.long)
    for i, c in enumerate(completions):
        comp[i, :len(c)] = torch.tensor(c, dtype=torch.long)
        cmask[i, :len(c)] = 1
    comp, cmask = comp.to(device), cmask.to(device)
    attention = torch.cat([batch["attention_mask"], cmask], dim=1)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    loss_mask = cmask
    if mask_truncated and truncated is not None:
        keep = (~torch.as_tensor(truncated, dtype=torch.bool)).to(device).long()
        loss_mask = cmask * keep.unsqueeze(1)
    return MicroBatch(input_ids=torch.cat([batch["input_ids"], comp], dim=1), attention_mask=attention,
                      position_ids=positions, bio_features=batch["bio_features"], prompt_width=P,
                      completion_ids=comp, loss_mask=loss_mask,
                      advantages=torch.as_tensor(advantages, dtype=torch.float32).to(device))


def completion_logps(model, mb: MicroBatch, temperature: float = 1.0, chunk_tokens: int = 4096, forward=None):
    """(log-probs, entropies) of the completion tokens, each (B, C), zero outside the loss mask.
    `forward`: the module the pass goes through when it is not `model` itself (its DDP wrapper).

    Only completion positions go through the LM head (never the prompt: a 150k vocabulary makes
    full logits the largest tensor of the step); with gradient, chunks beyond `chunk_tokens` are
    recomputed in the backward pass instead of keeping their logits. Entropies are detached."""
    import torch
    from torch.utils.checkpoint import checkpoint
    hidden = (forward or model)(Batch(input_ids=mb.input_ids, attention_mask=mb.attention_mask, bio_features=mb.bio_features,
                         position_ids=mb.position_ids)).hidden
    P, C = mb.prompt_width, mb.completion_ids.shape[1]
    h = hidden[:, P - 1:P + C - 1]          # position t predicts token t + 1
    sel = mb.loss_mask.bool()
    zeros = h.new_zeros(sel.shape, dtype=torch.float32)
    head = model.lm_head()
    if not bool(sel.any()):
        # nothing in the loss: zero gradients, but through every trainable tensor of the pass (a
        # trained LM head included), which DDP's reducer expects from each rank at every step
        anchor = sum((p.sum() * 0.0 for p in head.parameters() if p.requires_grad), hidden.sum() * 0.0)
        return zeros + anchor, zeros.detach()
    hs, targets = h[sel], mb.completion_ids[sel]

    def score(hs_chunk, t_chunk):
        logp_all = (head(hs_chunk).float() / temperature).log_softmax(-1)
        tok = logp_all.gather(-1, t_chunk.unsqueeze(-1)).squeeze(-1)
        ent = -(logp_all.exp() * logp_all).sum(-1)
        return tok, ent

    toks, ents = [], []
    recompute = torch.is_grad_enabled() and hs.shape[0] > chunk_tokens
    for start in range(0, hs.shape[0], chunk_tokens):
        args = (hs[start:start + chunk_tokens], targets[start:start + chunk_tokens])
        tok, ent = checkpoint(score, *args, use_reentrant=False) if recompute else score(*args)
        toks.append(tok)
        ents.append(ent.detach())
    logps = zeros.masked_scatter(sel, torch.cat(toks))
    entropies = zeros.detach().masked_scatter(sel, torch.cat(ents))
    return logps, entropies


class ReferencePolicy:
    """The KL reference: frozen copies of the trainable tensors, swapped in (pointer swaps under
    no_grad, no copies) for the reference pass. Run the pass in its own autocast region: autocast
    caches cast weights per tensor within a region."""

    def __init__(self, model, tensors: dict, disable_adapter: bool):
        import torch
        self.model = model
        self.disable_adapter = disable_adapter and model.is_lora
        params = dict(model.named_parameters())
        missing = sorted(set(tensors) - set(params))
        if missing:
            raise ValueError(f"reference tensors do not fit the model (unknown: {missing[:3]}...)")
        self.params = {n: params[n] for n in tensors}
        for n, p in self.params.items():
            if tuple(tensors[n].shape) != tuple(p.shape):
                raise ValueError(f"reference tensor {n} has shape {tuple(tensors[n].shape)}, "
                                 f"the model {tuple(p.shape)}")
        self.frozen = {n: tensors[n].to(device=p.device, dtype=p.dtype) for n, p in self.params.items()}
        self._torch = torch

    @staticmethod
    def capture(model) -> dict:
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    @contextlib.contextmanager
    def active(self):
        saved = {}
        with self._torch.no_grad():
            try:
                for n, p in self.params.items():
                    saved[n] = p.data
                    p.data = self.frozen[n]
                with (self.model.adapter_disabled() if self.disable_adapter else contextlib.nullcontext()):
                    yield
            finally:
                for n, data in saved.items():
                    self.params[n].data = data


def save_tensors(tensors: dict, path: Path) -> None:
    from safetensors.torch import save

    from biopost.files import write_bytes_atomic
    write_bytes_atomic(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))




def make_reference(cfg, model, out: Path, resume_from, write: bool = True) -> ReferencePolicy | None:
    """The KL reference (None with beta 0): captured from the policy as this run first started and
    written to <output_dir>/reference.safetensors (by the process with `write`: rank 0; the others
    capture the same tensors from their identical policy), so a resumed run compares against the
    same one."""
    if cfg.beta == 0.0:
        return None
    from biopost.config import ConfigError
    if cfg.reference == "base" and not model.is_lora:
        raise ConfigError("--reference base needs a LoRA policy "
                          "(with full fine-tuning the reference is the initial model)")
    ref_path = out / REFERENCE_FILE
    if resume_from is not None:
        if not ref_path.is_file():
            raise MissingCheckpointError(f"{ref_path}: the reference tensors of this run are missing; cannot resume "
                                         f"with beta {cfg.beta} (start afresh with --resume never)")
        from safetensors.torch import load_file
        ref_tensors = load_file(str(ref_path))
    else:
        ref_tensors = ReferencePolicy.capture(model)
        if write:
            save_tensors(ref_tensors, ref_path)
    fresh_adapter = cfg.init == "base" or cfg.merge_sft
    return ReferencePolicy(model, ref_tensors, disable_adapter=fresh_adapter or cfg.reference == "base")

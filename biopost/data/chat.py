"""Chat formatting (Qwen3 ChatML) with bio placeholders, and labels from character offsets.

A message's content is a string or a list of items: `{"type": "text", "text": ...}` or a bio
item `{"type": <modality name>, "sequence": ...}`. A bio item renders as its modality's start
token + n x its pad token + its end token (DNA: `<|dna_start|><|dna_pad|>...<|dna_end|>`), where
n is the number of embeddings the encoder yields for that sequence, so the model can splice them
in one-for-one. The tokens come from the modality registry (biopost.modality).

Labels: the renderer records the character span of every assistant turn (its content and the
closing `<|im_end|>`); after tokenizing with offsets, a token is supervised exactly when it starts
inside such a span. Text truncation removes text tokens from the right and never a bio token, so
bio pads always match their embeddings.
"""
from __future__ import annotations

from dataclasses import dataclass, field

IGNORE_INDEX = -100
IM_START, IM_END = "<|im_start|>", "<|im_end|>"



def bio_tokens(modality: str) -> tuple[str, str, str]:
    """(start, pad, end) of a registered modality."""
    from biopost.modality import get_modality
    return get_modality(modality).bio_tokens


def is_bio_item(kind) -> bool:
    from biopost.modality import MODALITIES
    return isinstance(kind, str) and kind != "text" and kind in MODALITIES


@dataclass
class BioItem:
    modality: str
    sequence: str


@dataclass
class Rendered:
    text: str
    bio_items: list[BioItem] = field(default_factory=list)
    bio_counts: list[int] = field(default_factory=list)
    assistant_spans: list[tuple[int, int]] = field(default_factory=list)


def render(messages: list[dict], n_bio_tokens, add_generation_prompt: bool = False) -> Rendered:
    """Render messages as Qwen3 ChatML. `n_bio_tokens(BioItem) -> int` sizes each bio block."""
    parts: list[str] = []
    out = Rendered(text="")
    pos = 0

    def emit(s: str):
        nonlocal pos
        parts.append(s)
        pos += len(s)

    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"message {i}: unknown role {role!r}")
        emit(f"{IM_START}{role}\n")
        start = pos
        content = msg.get("content", "")
        items = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for item in items:
            kind = item.get("type")
            if kind == "text":
                emit(item["text"])
            elif is_bio_item(kind):
                if role == "assistant":
                    raise ValueError(f"message {i}: bio inputs belong in the prompt, not the assistant turn")
                bio = BioItem(kind, item["sequence"])
                n = int(n_bio_tokens(bio))
                if n <= 0:
                    raise ValueError(f"message {i}: the {kind} encoder yields no embeddings for a sequence")
                begin, pad, end = bio_tokens(kind)
                emit(begin + pad * n + end)
                out.bio_items.append(bio)
                out.bio_counts.append(n)
            else:
                raise ValueError(f"message {i}: unknown content item type {kind!r}")
        emit(IM_END)
        if role == "assistant":
            out.assistant_spans.append((start, pos))
        emit("\n")
    if add_generation_prompt:
        emit(f"{IM_START}assistant\n")
    out.text = "".join(parts)
    return out


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    n_text_tokens: int
    truncated: bool


def encode(rendered: Rendered, tokenizer, bio_token_ids: set[int], pad_token_ids: dict[str, int],
           max_text_tokens: int = 0, example_id: str = "?") -> Encoded:
    """Tokenize with offsets, build labels from the assistant spans, truncate text only."""
    enc = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    spans = rendered.assistant_spans
    for t, (s, _e) in enumerate(offsets):
        if any(a <= s < b for a, b in spans):
            labels[t] = ids[t]
    _check_pads(ids, rendered, pad_token_ids, example_id)
    protected = [t in bio_token_ids for t in ids]
    n_text = len(ids) - sum(protected)
    truncated = False
    if max_text_tokens and n_text > max_text_tokens:
        excess = n_text - max_text_tokens
        drop = set()
        for t in range(len(ids) - 1, -1, -1):
            if excess == 0:
                break
            if not protected[t]:
                drop.add(t)
                excess -= 1
        ids = [x for t, x in enumerate(ids) if t not in drop]
        labels = [x for t, x in enumerate(labels) if t not in drop]
        n_text = max_text_tokens
        truncated = True
    return Encoded(ids, labels, n_text, truncated)


def _check_pads(ids: list[int], rendered: Rendered, pad_token_ids: dict[str, int], example_id: str) -> None:
    for modality, pad_id in pad_token_ids.items():
        expected = sum(n for item, n in zip(rendered.bio_items, rendered.bio_counts) if item.modality == modality)
        got = sum(1 for t in ids if t == pad_id)
        if got != expected:
            raise ValueError(f"example {example_id}: {got} {modality} pad tokens after tokenization but "
                             f"{expected} embeddings; the tokenizer must treat {bio_tokens(modality)[1]} "
                             f"as one special token")

"""Tiny random-weight models built offline from the real architecture classes.

Model weights cannot be downloaded here, so tests and the demo use these. They are written to
disk once (under BIOPOST_CACHE_DIR/tiny/) and then loaded through exactly the code that loads a
real checkpoint: `from_pretrained(path)`. A config names them like hub models:

    text_model_name: biopost-tiny/qwen3       # Qwen3ForCausalLM + byte-level BPE, ChatML (built here)

Modality packages register builders for their tiny encoders in `TINY_BUILDERS` (BioReason:
`biopost-tiny/nt-6mer`, `biopost-tiny/char-dna`), lazily, from their plug-in modules. A builder
`fn(out_dir: Path)` writes a `from_pretrained` directory; it runs under a fixed torch seed.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from biopost.files import umask
from biopost.paths import RESOURCES, cache_root
from biopost.registry import Registry

TINY_PREFIX = "biopost-tiny/"
VERSION = "v1"  # bump when a builder changes, so stale materializations are not reused

QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
BASE_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]


def is_tiny(name: str) -> bool:
    return str(name).startswith(TINY_PREFIX)


def resolve_model_path(name: str) -> str:
    """A tiny model's name -> its materialized directory; any other name is returned unchanged."""
    if not is_tiny(name):
        return name
    kind = name[len(TINY_PREFIX):]
    if kind not in TINY_BUILDERS:
        from biopost.errors import NotRegisteredError
        raise NotRegisteredError(f"unknown tiny model {name!r}; known: "
                                 f"{', '.join(TINY_PREFIX + k for k in TINY_BUILDERS.names())}")
    target = cache_root() / "tiny" / f"{kind}-{VERSION}-{_inputs_hash(kind)}"
    if (target / ".complete").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    import fcntl
    # the ranks of a torchrun job start together and would all build at once: one builds, the rest
    # wait on the lock and find it complete (concurrent builds left a directory without the model)
    with open(target.parent / f".{target.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".complete").exists():
            _build_into(kind, target)
    return str(target)


def _build_into(kind: str, target: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=target.parent))
    try:
        _seeded(TINY_BUILDERS.get(kind))(tmp)
        (tmp / ".complete").write_text("ok\n")
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp's 0700 would hide the shared cache from others
        try:
            os.replace(tmp, target)
        except OSError:
            # another process finished first: its copy is identical (seeded build)
            if not (target / ".complete").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


TOKENIZER_CORPUS = RESOURCES / "tiny" / "tokenizer_corpus.jsonl.gz"


@functools.lru_cache(maxsize=None)
def tokenizer_corpus() -> list[str]:
    """The text the tiny tokenizer's merges are trained on: questions, reasoning and answers in the
    style of the synthetic KEGG data, frozen as a resource so that the tiny Qwen3 is the same
    whatever modality packages are installed (regenerate it deliberately, never implicitly)."""
    import gzip
    import json
    with gzip.open(TOKENIZER_CORPUS, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@functools.lru_cache(maxsize=None)
def _inputs_hash(kind: str) -> str:
    """When the tokenizer corpus changes, the materialized model must too, so its directory name
    carries a hash of the corpus."""
    if kind != "qwen3":
        return "0"
    return hashlib.sha256("\n".join(tokenizer_corpus()).encode()).hexdigest()[:8]


def _seeded(fn):
    def wrapper(out_dir: Path):
        import torch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            fn(out_dir)
    return wrapper


def build_tiny_tokenizer(vocab_size: int = 2048):
    """Byte-level BPE with Qwen3's chat markers, trained on synthetic-KEGG-style and biology text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = tokenizer_corpus() + [
        "The gene encodes a kinase involved in DNA repair and cell cycle checkpoint control.",
        "GO:0006281 DNA repair; GO:0005634 nucleus; GO:0004672 protein kinase activity.",
        "Answer: yes. Answer: no. The protein localizes to the mitochondrion.",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nReference sequence: "
        "Variant sequence: question<|im_end|>\n<|im_start|>assistant\n<think>\nreasoning\n</think>\n\nAnswer: ",
    ] * 3
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=BASE_SPECIALS + THINK_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None)
    fast.chat_template = QWEN3_CHAT_TEMPLATE
    return fast


def _build_qwen3(out_dir: Path) -> None:
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    tok = build_tiny_tokenizer()
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=4096,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=None)
    model = Qwen3ForCausalLM(cfg)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)


TINY_BUILDERS: Registry = Registry("tiny model")
TINY_BUILDERS.register("qwen3", _build_qwen3, help="Qwen3ForCausalLM, 2 layers, hidden 128, byte-level BPE")

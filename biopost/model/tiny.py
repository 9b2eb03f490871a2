"""Tiny random-weight models built offline from the real architecture classes.

Model weights cannot be downloaded here, so tests and the demo use these. They are written to
disk once (under BIOPOST_CACHE_DIR/tiny/) and then loaded through exactly the code that loads a
real checkpoint: `from_pretrained(path)`. A config names them like hub models:

    text_model_name: biopost-tiny/qwen3       # Qwen3ForCausalLM + byte-level BPE, ChatML
    dna_model_name:  biopost-tiny/nt-6mer     # Nucleotide-Transformer-style EsmForMaskedLM, 6-mers
    dna_model_name:  biopost-tiny/char-dna    # character-level ModernBertForMaskedLM
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import os
import shutil
import tempfile
from pathlib import Path

from biopost.paths import cache_root

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
    if kind not in BUILDERS:
        raise ValueError(f"unknown tiny model {name!r}; known: {', '.join(TINY_PREFIX + k for k in BUILDERS)}")
    target = cache_root() / "tiny" / f"{kind}-{VERSION}-{_inputs_hash(kind)}"
    if (target / ".complete").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=target.parent))
    try:
        BUILDERS[kind](tmp)
        (tmp / ".complete").write_text("ok\n")
        try:
            os.replace(tmp, target)
        except OSError:
            # another process finished first: its copy is identical (seeded build)
            if not (target / ".complete").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


@functools.lru_cache(maxsize=None)
def _inputs_hash(kind: str) -> str:
    """The tiny tokenizer is trained on text from the synthetic generator: when that text changes,
    the materialized model must too, so its directory name carries a hash of the corpus."""
    if kind != "qwen3":
        return "0"
    from biopost.data.synth_kegg import tokenizer_corpus
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

    from biopost.data.synth_kegg import tokenizer_corpus

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


@_seeded
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


@_seeded
def _build_nt_6mer(out_dir: Path) -> None:
    from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer

    kmers = ["".join(p) for p in itertools.product("ACGT", repeat=6)]
    vocab = ["<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>"] + kmers + list("ACGTN")
    (out_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = EsmTokenizer(vocab_file=str(out_dir / "vocab.txt"), unk_token="<unk>", pad_token="<pad>",
                       mask_token="<mask>", cls_token="<cls>", eos_token="<eos>", model_max_length=1000)
    cfg = EsmConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128, position_embedding_type="rotary", pad_token_id=1, mask_token_id=2,
                    token_dropout=False, max_position_embeddings=1026, emb_layer_norm_before=False,
                    is_folding_model=False)
    EsmForMaskedLM(cfg).save_pretrained(out_dir)
    tok.save_pretrained(out_dir)


@_seeded
def _build_char_dna(out_dir: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import ModernBertConfig, ModernBertForMaskedLM, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {t: i for i, t in enumerate(specials + list("ACGTN"))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                      special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", model_max_length=4096)
    cfg = ModernBertConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, pad_token_id=0, cls_token_id=2, sep_token_id=3, bos_token_id=2,
                           eos_token_id=3, global_attn_every_n_layers=1, local_attention=64,
                           max_position_embeddings=4096)
    ModernBertForMaskedLM(cfg).save_pretrained(out_dir)
    tok.save_pretrained(out_dir)


BUILDERS = {"qwen3": _build_qwen3, "nt-6mer": _build_nt_6mer, "char-dna": _build_char_dna}

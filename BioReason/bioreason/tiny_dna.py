"""Tiny random-weight DNA encoders for tests and the demo, built offline from real HF classes.

    dna_model_name: biopost-tiny/nt-6mer     # Nucleotide-Transformer-style EsmForMaskedLM, 6-mers
    dna_model_name: biopost-tiny/char-dna    # character-level ModernBertForMaskedLM

Registered in biopost.tiny.TINY_BUILDERS by bioreason.modality; the core materializes them
once under BIOPOST_CACHE_DIR/tiny/ (under a fixed torch seed) and loads them with
`from_pretrained(path)`, exactly as a real encoder.
"""
from __future__ import annotations

import itertools
from pathlib import Path


def build_nt_6mer(out_dir: Path) -> None:
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


def build_char_dna(out_dir: Path) -> None:
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

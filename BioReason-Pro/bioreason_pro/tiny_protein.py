"""A tiny random-weight character-level protein encoder for tests and demos.

    protein_model_name: biopost-tiny/esm-protein

A real `EsmForMaskedLM` (hidden 64, 2 layers, rotary positions) over the 25 amino-acid letters
(ACDEFGHIKLMNPQRSTVWY + BZXUO), one token per residue, built offline; registered by
bioreason_pro.modality as a tiny model and loaded by the core's `hf` encoder backend.
"""
from __future__ import annotations

from pathlib import Path

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY" + "BZXUO"


def build(out_dir: Path) -> None:
    from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer

    vocab = ["<cls>", "<pad>", "<eos>", "<unk>"] + list(AMINO_ACIDS) + ["<mask>"]
    (Path(out_dir) / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = EsmTokenizer(vocab_file=str(Path(out_dir) / "vocab.txt"), unk_token="<unk>", pad_token="<pad>",
                       mask_token="<mask>", cls_token="<cls>", eos_token="<eos>", model_max_length=1024)
    cfg = EsmConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128, position_embedding_type="rotary", pad_token_id=1,
                    mask_token_id=len(vocab) - 1, token_dropout=False, max_position_embeddings=1026,
                    emb_layer_norm_before=False, is_folding_model=False)
    EsmForMaskedLM(cfg).save_pretrained(out_dir)
    tok.save_pretrained(out_dir)

"""Encoders from HuggingFace masked LMs: Nucleotide-Transformer-style 6-mer models, ESM-2,
character-level DNA models. Embeddings come from one hidden layer (an index into
`hidden_states`; -1 = last), with the tokenizer's special tokens (CLS/EOS) removed.
"""
from __future__ import annotations

import torch

from biopost.encoders.base import Encoder, weights_fingerprint


class HFMaskedLMEncoder(Encoder):
    backend = "hf"

    def __init__(self, model_name: str, layer: str | int = -1, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, trust_remote_code: bool = False, batch_size: int = 8):
        super().__init__()
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        from biopost.tiny import resolve_model_path
        path = resolve_model_path(model_name)
        from biopost.errors import ModelLoadError
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            self.model = AutoModelForMaskedLM.from_pretrained(path, trust_remote_code=trust_remote_code, dtype=dtype)
        except ValueError as e:
            if "trust_remote_code" in str(e) and not trust_remote_code:
                raise ModelLoadError(f"{model_name}: this model ships its own code; pass --trust_remote_code true "
                                     f"if you trust it ({e})") from None
            raise
        except OSError as e:
            raise ModelLoadError(f"cannot load the encoder {model_name!r}: {e}") from None
        self.model.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        self.name = model_name
        self.layer = str(layer)
        self.batch_size = batch_size
        self.hidden_size = int(self.model.config.hidden_size)
        self.weights_id = weights_fingerprint(self.model, self.model.config.to_dict())

    def tokens_for(self, sequence: str) -> int:
        return len(self.tokenizer(sequence.upper(), add_special_tokens=False)["input_ids"])

    @torch.no_grad()
    def encode(self, sequences: list[str]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for i in range(0, len(sequences), self.batch_size):
            batch = [s.upper() for s in sequences[i:i + self.batch_size]]
            enc = self.tokenizer(batch, padding=True, return_tensors="pt", return_special_tokens_mask=True)
            special = enc.pop("special_tokens_mask").bool()
            enc.pop("token_type_ids", None)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            hidden = self.model(**enc, output_hidden_states=True).hidden_states[int(self.layer)]
            keep = (~special) & enc["attention_mask"].bool().cpu()
            for row, seq in enumerate(batch):
                emb = hidden[row][keep[row].to(hidden.device)].float().cpu()
                expected = self.tokens_for(seq)
                if emb.shape[0] != expected:
                    raise RuntimeError(f"{self.name}: {emb.shape[0]} embeddings for a sequence that tokenizes "
                                       f"to {expected} tokens (is it longer than the model's maximum length?)")
                out.append(emb)
            self.n_encoded += len(batch)
        return out


def build(spec: dict, device="cpu", trust_remote_code: bool = False) -> HFMaskedLMEncoder:
    """The `hf` backend's factory (biopost.encoders.BACKENDS)."""
    return HFMaskedLMEncoder(spec["model_name"], layer=spec.get("layer", -1), device=device,
                             trust_remote_code=trust_remote_code)

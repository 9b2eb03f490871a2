"""BioReasoningModel: frozen bio encoders -> trainable projectors -> Qwen3 (LoRA or full).

Forward: look up the text embeddings, scatter the projected encoder outputs into the bio pad
positions (out of place, so autograd reaches the projector), run the LLM on `inputs_embeds`.
Encoder outputs arrive precomputed (from the embedding cache) as `bio_features`:
{modality: [Tensor[L_i, d_enc], ...]} in order of appearance over the batch, row-major.

The added special tokens (bio markers) get their own trainable rows (`new_token_embeddings`)
that override the looked-up embedding, so they train even when the LLM's embedding matrix is
frozen under LoRA, without making the whole 150k-row matrix trainable.

Saved form (a directory): `model_config.json` (rebuilds the model), `tokenizer/`,
`bio_modules.safetensors` (projectors + new token rows), and `adapter/` (peft LoRA) or `llm/`
(full fine-tuning). Loading uses safetensors only; `trust_remote_code` stays off unless asked.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from biopost.data.chat import IGNORE_INDEX
from biopost.errors import CheckpointError, MissingCheckpointError, ModelLoadError
from biopost.model.batch import Batch, ForwardOutput, document_mask
from biopost.model.linear_ce import LOSS_CHUNK_TOKENS, linear_cross_entropy_sum

DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MODEL_CONFIG = "model_config.json"
BIO_MODULES = "bio_modules.safetensors"


@dataclass
class ModelSpec:
    """Everything needed to rebuild the model; written as model_config.json."""
    text_model_name: str
    encoders: dict = field(default_factory=dict)      # modality -> {model_name, layer, backend}
    projectors: dict = field(default_factory=dict)    # modality -> "linear" | "mlp"
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    trust_remote_code: bool = False
    merged: bool = False   # a `merge` output: the directory itself is the (full) language model
    # lora_rank 0 with the language model frozen (projector-only training): a checkpoint then holds
    # no llm/ and reloads text_model_name as it is
    frozen_llm: bool = False
    # modality -> [start, pad, end]: the bio tokens this model's vocabulary has. A fresh model gets
    # every registered modality's (biopost.modality.all_bio_tokens); a saved one keeps its own, so
    # loading never depends on which modality packages are installed.
    bio_tokens: dict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> "ModelSpec":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def make_projector(kind: str, d_in: int, d_out: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(d_in, d_out)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(d_in, d_out), nn.GELU(), nn.Linear(d_out, d_out))
    raise ModelLoadError(f"projector must be 'linear' or 'mlp', got {kind!r}")


def default_bio_tokens() -> dict:
    """modality -> [start, pad, end] for every registered modality, in name order."""
    from biopost.modality import MODALITIES
    return {name: list(MODALITIES.get(name).bio_tokens) for name in MODALITIES.names()}


def _load_llm(name_or_path: str, dtype, device, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM

    from biopost.tiny import resolve_model_path
    path = resolve_model_path(name_or_path)
    try:
        llm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ModelLoadError(f"cannot load the text model {name_or_path!r}: {e}") from None
    return llm.to(device)


def _load_tokenizer(name_or_path: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    from biopost.tiny import resolve_model_path
    try:
        return AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), trust_remote_code=trust_remote_code)
    except OSError as e:
        raise ModelLoadError(f"cannot load the tokenizer of {name_or_path!r}: {e}") from None


def _grow_embeddings(llm, n_rows: int) -> None:
    """Resize to `n_rows`, new rows = mean of the old ones. Deterministic (unlike transformers'
    sampled mean_resizing), so a model rebuilt from a checkpoint has the same rows again."""
    old_in = llm.get_input_embeddings().weight.detach().clone()
    out_emb = llm.get_output_embeddings()
    old_out = out_emb.weight.detach().clone() if out_emb is not None else None
    llm.resize_token_embeddings(n_rows, mean_resizing=False)
    with torch.no_grad():
        llm.get_input_embeddings().weight[old_in.shape[0]:] = old_in.mean(0)
        new_out = llm.get_output_embeddings()
        if new_out is not None and new_out.weight.data_ptr() != llm.get_input_embeddings().weight.data_ptr():
            new_out.weight[old_out.shape[0]:] = old_out.mean(0)


def _flat(bio_tokens: dict) -> list[str]:
    return [t for triple in bio_tokens.values() for t in triple]


class BioReasoningModel(nn.Module):
    # supervised positions beyond which forward's head + cross-entropy runs in checkpointed chunks
    # (0 = never); a run-time setting (SFT's --loss_chunk_tokens), not part of the saved model
    loss_chunk_tokens: int = LOSS_CHUNK_TOKENS

    def __init__(self, spec: ModelSpec, llm, tokenizer, encoders: dict, projectors: nn.ModuleDict,
                 new_token_ids: list[int], new_token_embeddings: torch.Tensor):
        super().__init__()
        self.spec = spec
        self.llm = llm
        self.tokenizer = tokenizer
        self.encoders = encoders  # not a ModuleDict: frozen, used through the cache, never saved
        self.projectors = projectors
        self.new_token_embeddings = nn.Parameter(new_token_embeddings)
        vocab_rows = self.input_embeddings().num_embeddings
        lookup = torch.full((vocab_rows,), -1, dtype=torch.long)
        lookup[torch.tensor(new_token_ids, dtype=torch.long)] = torch.arange(len(new_token_ids))
        self.register_buffer("new_token_lookup", lookup, persistent=False)
        self.new_token_ids = list(new_token_ids)
        self.pad_token_ids = {m: tokenizer.convert_tokens_to_ids(toks[1]) for m, toks in spec.bio_tokens.items()}
        self.bio_token_ids = set(tokenizer.convert_tokens_to_ids(_flat(spec.bio_tokens)))

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, spec: ModelSpec, device="cpu", dtype=torch.float32, encoders: dict | None = None,
              adapter_dir: str | Path | None = None, full_llm_dir: str | Path | None = None,
              bio_modules: dict | None = None, tokenizer_dir: str | Path | None = None,
              is_trainable: bool = True, encoder_device=None):
        """A model from `spec`: fresh projectors and LoRA unless saved parts are given."""
        from biopost.encoders import build_encoder

        device = torch.device(device)
        if not spec.bio_tokens:
            spec.bio_tokens = default_bio_tokens()
        all_bio_tokens = _flat(spec.bio_tokens)
        tokenizer = _load_tokenizer(str(tokenizer_dir) if tokenizer_dir else spec.text_model_name,
                                    spec.trust_remote_code)
        new_tokens = [t for t in all_bio_tokens if t not in tokenizer.get_vocab()]
        if new_tokens:
            tokenizer.add_tokens(new_tokens, special_tokens=True)
        llm = _load_llm(str(full_llm_dir) if full_llm_dir else spec.text_model_name, dtype, device,
                        spec.trust_remote_code)
        emb = llm.get_input_embeddings()
        if len(tokenizer) > emb.num_embeddings:
            # only grow: Qwen3 checkpoints already have spare rows past the tokenizer's length
            _grow_embeddings(llm, len(tokenizer))
            emb = llm.get_input_embeddings()
        new_ids = tokenizer.convert_tokens_to_ids(all_bio_tokens)
        hidden = llm.config.get_text_config().hidden_size
        if encoders is None:
            encoders = {m: build_encoder(dict(s, modality=m), device=encoder_device or device,
                                         trust_remote_code=spec.trust_remote_code)
                        for m, s in spec.encoders.items()}
        projectors = nn.ModuleDict({m: make_projector(spec.projectors.get(m, "linear"), enc.hidden_size, hidden)
                                    for m, enc in encoders.items()})
        rows = emb.weight.detach()[torch.tensor(new_ids, device=emb.weight.device)].float().clone()
        if spec.lora_rank > 0 and full_llm_dir is None:
            from peft import LoraConfig, PeftModel, get_peft_model
            if adapter_dir is not None:
                llm = PeftModel.from_pretrained(llm, str(adapter_dir), is_trainable=is_trainable)
            else:
                llm = get_peft_model(llm, LoraConfig(
                    r=spec.lora_rank, lora_alpha=spec.lora_alpha, lora_dropout=spec.lora_dropout,
                    target_modules=list(spec.lora_target_modules), task_type="CAUSAL_LM"))
        model = cls(spec, llm, tokenizer, encoders, projectors, new_ids, rows)
        if bio_modules is not None:
            model.load_bio_modules(bio_modules)
        model.projectors.to(device)
        model.new_token_embeddings.data = model.new_token_embeddings.data.to(device)
        model.new_token_lookup = model.new_token_lookup.to(device)
        if not is_trainable:
            model.requires_grad_(False)
        elif spec.lora_rank == 0:
            model.llm.requires_grad_(not spec.frozen_llm)
        return model

    @classmethod
    def load(cls, ckpt_dir: str | Path, device="cpu", dtype=torch.float32, encoders: dict | None = None,
             is_trainable: bool = False, trust_remote_code: bool = False):
        """Rebuild a saved model (a checkpoint directory or a merged one).

        `trust_remote_code` is the caller's flag only (the user's `--trust_remote_code`), never the
        checkpoint's: a downloaded checkpoint whose config asks for it (or whose model directories
        carry an `auto_map` to their own Python files) must not run that code unless the user said so.
        """
        ckpt = Path(ckpt_dir)
        cfg_path = ckpt / MODEL_CONFIG
        if not cfg_path.is_file():
            raise MissingCheckpointError(f"{ckpt}: not a bio-post model directory (no {MODEL_CONFIG}); "
                                    f"expected a checkpoint such as <run>/checkpoints/last")
        try:
            spec = ModelSpec.from_json(json.loads(cfg_path.read_text()))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{cfg_path}: corrupt model config ({e})") from None
        if spec.trust_remote_code and not trust_remote_code:
            raise CheckpointError(f"{cfg_path}: this checkpoint asks to run code it ships (trust_remote_code); "
                                  f"it is off unless you pass --trust_remote_code true (only for checkpoints "
                                  f"you trust)")
        spec.trust_remote_code = bool(trust_remote_code)
        bio_path = ckpt / BIO_MODULES
        if not bio_path.is_file():
            raise MissingCheckpointError(f"{ckpt}: missing {BIO_MODULES} (incomplete or corrupt checkpoint)")
        try:
            bio = load_file(str(bio_path))
        except Exception as e:
            raise CheckpointError(f"{bio_path}: unreadable ({type(e).__name__}: {e})") from None
        adapter = ckpt / "adapter" if (ckpt / "adapter").is_dir() else None
        full = ckpt / "llm" if (ckpt / "llm").is_dir() else None
        if spec.merged:
            full, spec.lora_rank = ckpt, 0
        if spec.lora_rank > 0 and adapter is None and full is None:
            raise MissingCheckpointError(f"{ckpt}: model config says LoRA rank {spec.lora_rank} but there is no adapter/")
        if spec.lora_rank == 0 and full is None and not spec.frozen_llm:
            raise MissingCheckpointError(f"{ckpt}: model config says full fine-tuning but there is no llm/")
        tok_dir = ckpt / "tokenizer" if (ckpt / "tokenizer").is_dir() else (ckpt if spec.merged else None)
        try:
            return cls.build(spec, device=device, dtype=dtype, encoders=encoders, adapter_dir=adapter,
                             full_llm_dir=full, bio_modules=bio, tokenizer_dir=tok_dir,
                             is_trainable=is_trainable)
        except MissingCheckpointError as e:
            raise MissingCheckpointError(f"{ckpt}: cannot load checkpoint: {e}") from None
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            # a part that does not fit (shapes, keys) or cannot be read: the checkpoint's fault, not a bug
            raise CheckpointError(f"{ckpt}: cannot load checkpoint: {e}") from None

    # ------------------------------------------------------------------ saving
    def bio_module_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"projectors.{k}": v.detach().float().cpu().contiguous()
                   for k, v in self.projectors.state_dict().items()}
        tensors["new_token_embeddings"] = self.new_token_embeddings.detach().float().cpu().contiguous()
        return tensors

    def load_projector_checkpoint(self, path: str | Path) -> Path:
        """Initialize the projectors and bio-token rows from another run's checkpoint (a checkpoint
        directory or its bio_modules.safetensors), e.g. the projector-only first stage of a
        two-stage SFT. The language model and LoRA are untouched."""
        path = Path(path)
        file = path / BIO_MODULES if path.is_dir() else path
        if not file.is_file():
            raise MissingCheckpointError(f"projector checkpoint {path}: no {BIO_MODULES} there (give a "
                                         f"checkpoint directory such as <run>/checkpoints/last, or the file)")
        try:
            self.load_bio_modules(load_file(str(file)))
        except Exception as e:  # unreadable, or shapes that do not fit this model
            raise CheckpointError(f"projector checkpoint {file}: {type(e).__name__}: {e}") from None
        return file

    def load_bio_modules(self, tensors: dict[str, torch.Tensor]) -> None:
        proj = {k[len("projectors."):]: v for k, v in tensors.items() if k.startswith("projectors.")}
        missing, unexpected = self.projectors.load_state_dict(proj, strict=False)
        if missing or unexpected:
            raise ValueError(f"projector weights do not fit this model (missing {missing}, unexpected {unexpected})")
        rows = tensors["new_token_embeddings"]
        if rows.shape != self.new_token_embeddings.shape:
            raise ValueError(f"new token rows have shape {tuple(rows.shape)}, model expects "
                             f"{tuple(self.new_token_embeddings.shape)}")
        self.new_token_embeddings.data.copy_(rows)

    def save(self, out_dir: str | Path, state: dict | None = None) -> None:
        """Write the model directory. `state`: this model's full state dict when its own parameters
        are shards (FSDP2 under several processes: biopost.distributed.full_model_state)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / MODEL_CONFIG).write_text(json.dumps(asdict(self.spec), indent=1))
        bio = self.bio_module_tensors() if state is None else {
            k: v.detach().float().cpu().contiguous() for k, v in state.items()
            if k.startswith("projectors.") or k == "new_token_embeddings"}
        save_file(bio, str(out / BIO_MODULES))
        self.tokenizer.save_pretrained(out / "tokenizer")
        llm_state = None
        if state is not None:
            from biopost.distributed import without_tied_head
            llm_state = without_tied_head({k[len("llm."):]: v for k, v in state.items() if k.startswith("llm.")},
                                          self.base_llm().config)
        if self.is_lora:
            # the resized embedding matrix is rebuilt deterministically on load: keep it out of the adapter
            self.llm.save_pretrained(out / "adapter", save_embedding_layers=False, state_dict=llm_state)
        elif not self.spec.frozen_llm:
            self.llm.save_pretrained(out / "llm", state_dict=llm_state)
        from biopost.files import fsync_tree
        fsync_tree(out)  # durable, and readable by the group as the umask allows (libraries write 0600)

    def merge(self, out_dir: str | Path) -> Path:
        """Write a plain HF model directory (LoRA merged, trained bio-token rows written into the
        embedding matrix) plus the projectors, so that it loads with AutoModelForCausalLM and,
        as a whole, with BioReasoningModel.load or as a later stage's --text_model_name."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        llm = self.llm.merge_and_unload() if self.is_lora else self.llm
        emb, head = llm.get_input_embeddings(), llm.get_output_embeddings()
        if head is None or head.weight.data_ptr() != emb.weight.data_ptr():
            # untied: the trained marker rows go into the matrix. Tied: writing them would change the
            # output layer too; they stay in bio_modules.safetensors, which BioReasoningModel.load reads.
            with torch.no_grad():
                ids = torch.tensor(self.new_token_ids, device=emb.weight.device)
                emb.weight[ids] = self.new_token_embeddings.detach().to(emb.weight.dtype).to(emb.weight.device)
        llm.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        spec = dict(asdict(self.spec), text_model_name=str(out.resolve()), lora_rank=0, merged=True, frozen_llm=False)
        (out / MODEL_CONFIG).write_text(json.dumps(spec, indent=1))
        save_file(self.bio_module_tensors(), str(out / BIO_MODULES))
        if self.is_lora:
            self.llm = llm  # merge_and_unload modified the layers in place; keep the object coherent
        from biopost.files import fsync_tree
        fsync_tree(out)
        return out

    @property
    def is_lora(self) -> bool:
        from peft import PeftModel
        return isinstance(self.llm, PeftModel)

    # ------------------------------------------------------------------ forward
    def input_embeddings(self) -> nn.Embedding:
        return self.llm.get_input_embeddings()

    def base_llm(self):
        """The transformers model underneath peft (LoRA layers are injected in place)."""
        return self.llm.get_base_model() if self.is_lora else self.llm

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the added special tokens' trainable rows, no bio features. No
        host-device synchronization: the decode loop calls this once per generated token."""
        embeds = self.input_embeddings()(input_ids)
        if self.new_token_embeddings.shape[0] == 0:
            return embeds
        idx = self.new_token_lookup[input_ids]
        rows = self.new_token_embeddings[idx.clamp(min=0)].to(embeds.dtype)
        return torch.where((idx >= 0).unsqueeze(-1), rows, embeds)

    def embed(self, input_ids: torch.Tensor, bio_features: dict | None = None) -> torch.Tensor:
        embeds = self.embed_tokens(input_ids)
        for modality, feats in (bio_features or {}).items():
            mask = input_ids == self.pad_token_ids[modality]
            n_slots = int(mask.sum())
            if not feats:
                if n_slots:
                    raise ValueError(f"{n_slots} {modality} pad tokens but no {modality} embeddings")
                continue
            stacked = torch.cat([f.to(embeds.device) for f in feats], dim=0)
            if stacked.shape[0] != n_slots:
                raise ValueError(f"{n_slots} {modality} pad tokens but {stacked.shape[0]} embeddings")
            proj_param = next(self.projectors[modality].parameters())
            projected = self.projectors[modality](stacked.to(proj_param.dtype)).to(embeds.dtype)
            embeds = embeds.masked_scatter(mask.unsqueeze(-1), projected)
        for modality, pad_id in self.pad_token_ids.items():
            if modality not in (bio_features or {}) and bool((input_ids == pad_id).any()):
                raise ValueError(f"{modality} pad tokens in the input but no {modality} embeddings given")
        return embeds

    def lm_head(self):
        return self.base_llm().get_output_embeddings()

    def adapter_disabled(self):
        """A context in which the LoRA adapter is off (the base model's behaviour; GRPO's reference)."""
        return self.llm.disable_adapter()

    def forward(self, batch: Batch) -> ForwardOutput:
        """The one training entry point (SFT, CPT, GRPO's policy / old / reference passes): hidden
        states, and with `batch.labels` the summed cross-entropy over supervised positions. Logits
        are computed for supervised positions only: a 150k vocabulary makes full logits the largest
        tensor of the step; past `loss_chunk_tokens` of them, in checkpointed chunks (or liger-kernel's
        fused op on CUDA): biopost.model.linear_ce. GRPO applies the head itself, in chunks, to
        completion positions."""
        embeds = self.embed(batch.input_ids, batch.bio_features)
        attention = batch.attention_mask
        if batch.cu_seqlens is not None:
            attention = document_mask(batch.cu_seqlens, batch.input_ids.shape[1], batch.attention_mask)
        kw = {} if batch.position_ids is None else {"position_ids": batch.position_ids}
        out = self.base_llm().model(inputs_embeds=embeds, attention_mask=attention, use_cache=False, **kw)
        hidden = out.last_hidden_state
        if batch.labels is None:
            return ForwardOutput(hidden=hidden)
        targets = batch.labels[:, 1:]
        sel = targets != IGNORE_INDEX
        if batch.cu_seqlens is not None:
            # the last token of a document does not predict the first of the next one
            starts = torch.zeros_like(batch.labels, dtype=torch.bool)
            starts.scatter_(1, batch.cu_seqlens[:, 1:-1].clamp(max=batch.labels.shape[1] - 1), True)
            sel = sel & ~starts[:, 1:]
        n = int(sel.sum())
        if n == 0:
            return ForwardOutput(hidden=hidden, loss_sum=hidden.sum() * 0.0, n_tokens=0)
        loss_sum = linear_cross_entropy_sum(self.lm_head(), hidden[:, :-1][sel], targets[sel], self.loss_chunk_tokens)
        return ForwardOutput(hidden=hidden, loss_sum=loss_sum, n_tokens=n)

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

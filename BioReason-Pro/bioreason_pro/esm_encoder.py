"""The `esm` encoder backend: ESM-3 and ESM C through EvolutionaryScale's `esm` package.

    protein_encoder_backend: esm            # or auto: picked for the names below
    protein_model_name: esm3_sm_open_v1     # or esmc_300m, esmc_600m, a local directory, a .pth / .safetensors
    protein_embedding_layer: auto           # ESM-3 small: 37 (BioReason-Pro's); ESM C: the last

The backend builds the architecture itself from esm's classes (`esm.models.esm3.ESM3`,
`esm.models.esmc.ESMC`) and loads the weights from a local path or a Hugging Face repository
with safetensors or `torch.load(weights_only=True)`; esm's own loaders (`ESM3.from_pretrained`,
`esm.pretrained`) are not used: they unpickle with `torch.load` without `weights_only` and
download through esm's data root. Nothing here reaches EvolutionaryScale's Forge API.

Where the weights come from (`model_name`):
- a directory with `esm_config.json` ({"arch": "esm3"|"esmc", "d_model", "n_heads", "n_layers",
  ["v_heads"]}) and `model.safetensors` (or one `*.pth` / `*.pt` state dict) — what
  `save_pretrained` writes and the tiny test models are;
- a directory or file holding one of the published weight files (`esm3_sm_open_v1.pth`,
  `esmc_300m_2024_12_v0.pth`, `esmc_600m_2024_12_v0.pth`, e.g. a snapshot of the HF repository
  with `data/weights/...`): the architecture is the published one;
- a published name (`esm3_sm_open_v1` / `esm3-open` / `EvolutionaryScale/esm3-sm-open-v1`,
  `esmc_300m`, `esmc_600m`, ...): the weight file is fetched with `huggingface_hub.hf_hub_download`
  (the local HF cache, or the hub where it can be reached; ESM-3's repository is gated).

Layers (`layer`): k >= 0 is the output of transformer block k (0-based, esm's own numbering, as
ESM C's `hidden_states[k]`; BioReason-Pro uses 37 of ESM-3 small's 48); -1 is the final,
layer-normed output (ESM C's `embeddings`); other negatives count blocks from the end; `auto` is
37 for a 48-block ESM-3 and -1 otherwise. The forward pass stops after the block it needs.

Tokens: esm's sequence tokenizer, one token per residue plus BOS (`<cls>`) and EOS; the
embeddings of BOS and EOS are kept (as BioReason-Pro feeds them), so `tokens_for(seq)` is
len(seq) + 2 and the prompt's protein placeholder block has that many pads. Batches are padded
and attention is masked by `sequence_id` (padding never attends to or is attended by residues).

Licences: ESM-3 open small is under EvolutionaryScale's Cambrian Non-Commercial licence (not for
commercial use); ESM C 300M under the Cambrian Open licence, ESM C 600M non-commercial. See
DATA_LICENSES.md.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from biopost.encoders.base import Encoder, weights_fingerprint
from biopost.errors import UserError

from bioreason_pro.esm_names import (CONFIG_FILE, ESM3_SMALL_LAYER, PUBLISHED, TINY_CONFIGS,  # noqa: F401
                                   WEIGHTS_FILE, is_esm_model, published_name)


class EsmLoadError(UserError, OSError):
    """An ESM-3 / ESM C model that cannot be built or loaded from the name or path given."""


# ---------------------------------------------------------------------------------- construction

def _require_esm():
    try:
        import esm  # noqa: F401
    except ImportError as e:
        raise EsmLoadError(f"the esm backend needs the `esm` package (an optional extra of BioReason-Pro: "
                           f"pip install --no-deps -r BioReason-Pro/requirements-esm.txt): {e}") from None


def _no_weights(what):
    def fn(device=None):
        raise EsmLoadError(f"the esm backend encodes sequences only; ESM-3's {what} is not loaded")
    return fn


def sequence_tokenizer():
    from esm.tokenization import EsmSequenceTokenizer
    return EsmSequenceTokenizer()


def build_model(config: dict) -> torch.nn.Module:
    """A randomly initialised ESM-3 or ESM C of the given architecture, built from esm's classes
    (ESM-3 with only its sequence tokenizer in use; its structure / function decoders are never
    loaded, and the residue-annotation vocabulary is never read)."""
    _require_esm()
    arch = config.get("arch")
    try:
        d_model, n_heads, n_layers = int(config["d_model"]), int(config["n_heads"]), int(config["n_layers"])
    except (KeyError, TypeError, ValueError) as e:
        raise EsmLoadError(f"{CONFIG_FILE}: needs integer d_model, n_heads, n_layers ({e!r})") from None
    if arch == "esmc":
        from esm.models.esmc import ESMC
        return ESMC(d_model=d_model, n_heads=n_heads, n_layers=n_layers, tokenizer=sequence_tokenizer(),
                    use_flash_attn=False)
    if arch == "esm3":
        from esm.models.esm3 import ESM3
        from esm.tokenization import (InterProQuantizedTokenizer, ResidueAnnotationsTokenizer,
                                      SASADiscretizingTokenizer, SecondaryStructureTokenizer,
                                      StructureTokenizer, TokenizerCollection)
        tokenizers = TokenizerCollection(
            sequence=sequence_tokenizer(), structure=StructureTokenizer(),
            secondary_structure=SecondaryStructureTokenizer(kind="ss8"), sasa=SASADiscretizingTokenizer(),
            function=InterProQuantizedTokenizer(),
            # read lazily, only when residue annotations are tokenized (never here)
            residue_annotations=ResidueAnnotationsTokenizer(csv_path="unused-by-bio-post.csv"))
        return ESM3(d_model=d_model, n_heads=n_heads, v_heads=int(config.get("v_heads", max(n_heads // 4, 1))),
                    n_layers=n_layers, structure_encoder_fn=_no_weights("structure encoder"),
                    structure_decoder_fn=_no_weights("structure decoder"),
                    function_decoder_fn=_no_weights("function decoder"), tokenizers=tokenizers)
    raise EsmLoadError(f"{CONFIG_FILE}: arch must be 'esm3' or 'esmc', got {arch!r}")


def load_state_dict_file(path: Path) -> dict:
    """Tensors from a safetensors file or a pickled state dict read with weights_only=True."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input
        raise EsmLoadError(f"{path}: cannot read the weights ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EsmLoadError(f"{path}: not a state dict of tensors")
    return state


# ESM C's state-dict layout changed in esm 3.4 (a native EsmcForMaskedLM under the old ESMC name):
# published .pth files and checkpoints written with esm 3.2 use the left names, 3.4 the right ones
# (block b's parts; the last three rows take everything else under those roots).
_ESMC_NAMES = [
    ("attn.layernorm_qkv.0.weight", "attn.layernorm_qkv.layer_norm_weight"),
    ("attn.layernorm_qkv.0.bias", "attn.layernorm_qkv.layer_norm_bias"),
    ("attn.layernorm_qkv.1.weight", "attn.layernorm_qkv.weight"),
    ("ffn.0.weight", "ffn.layer_norm_weight"),
    ("ffn.0.bias", "ffn.layer_norm_bias"),
    ("ffn.1.weight", "ffn.fc1_weight"),
    ("ffn.3.weight", "ffn.fc2_weight"),
]
_ESMC_ROOTS = [("transformer.", "esmc.transformer."), ("embed.", "esmc.embed."), ("sequence_head.", "lm_head.")]


def _esmc_rename(key: str, to_34: bool) -> str:
    src_root, dst_root = (0, 1) if to_34 else (1, 0)
    block = "transformer.blocks." if to_34 else "esmc.transformer.blocks."
    if key.startswith(block):
        number, _, rest = key[len(block):].partition(".")
        for names in _ESMC_NAMES:
            if rest == names[src_root]:
                return ("esmc.transformer.blocks." if to_34 else "transformer.blocks.") + f"{number}.{names[dst_root]}"
    for roots in _ESMC_ROOTS:
        if key.startswith(roots[src_root]):
            return roots[dst_root] + key[len(roots[src_root]):]
    return key


def esmc_layout_for(model: torch.nn.Module, state: dict) -> dict:
    """`state` renamed to the ESM C layout `model` has (esm 3.2's or 3.4's), so a published weight
    file or a checkpoint from either version loads into either; tensors are not touched."""
    want_34 = any(k.startswith("esmc.") for k in model.state_dict())
    have_34 = any(k.startswith("esmc.") for k in state)
    if want_34 == have_34:
        return state
    return {_esmc_rename(k, want_34): v for k, v in state.items()}


def save_pretrained(model: torch.nn.Module, config: dict, out_dir) -> Path:
    """Write `esm_config.json` + `model.safetensors`: a directory this backend loads by path."""
    from safetensors.torch import save_file

    from biopost.files import ensure_dir, write_json_atomic
    out = Path(out_dir)
    ensure_dir(out)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out / WEIGHTS_FILE))
    write_json_atomic(out / CONFIG_FILE, {k: v for k, v in config.items() if k not in ("repo", "file")})
    return out


def _published_file_in(path: Path) -> tuple[str, Path] | None:
    """(published name, weight file) when `path` is or holds one of the published weight files."""
    for name, info in PUBLISHED.items():
        fname = Path(info["file"]).name
        if path.is_file() and path.name == fname:
            return name, path
        for cand in (path / info["file"], path / fname):
            if path.is_dir() and cand.is_file():
                return name, cand
    return None


def resolve(model_name: str) -> tuple[dict, Path]:
    """(architecture config, weights file) for a name or path; see the module docstring."""
    from biopost.tiny import resolve_model_path
    path = Path(resolve_model_path(model_name))
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        try:
            config = json.loads((path / CONFIG_FILE).read_text())
        except json.JSONDecodeError as e:
            raise EsmLoadError(f"{path / CONFIG_FILE}: not JSON ({e})") from None
        if (path / WEIGHTS_FILE).is_file():
            return config, path / WEIGHTS_FILE
        pickled = sorted(list(path.glob("*.pth")) + list(path.glob("*.pt")))
        if len(pickled) == 1:
            return config, pickled[0]
        raise EsmLoadError(f"{path}: has {CONFIG_FILE} but no {WEIGHTS_FILE} (or exactly one *.pth / *.pt)")
    if path.exists():
        found = _published_file_in(path)
        if found is None:
            if path.is_file() and path.suffix in (".pth", ".pt", ".safetensors"):
                raise EsmLoadError(f"{path}: a weight file of unknown architecture; put it in a directory with "
                                   f"{CONFIG_FILE} ({{\"arch\": \"esm3\"|\"esmc\", \"d_model\", \"n_heads\", "
                                   f"\"n_layers\"}})")
            raise EsmLoadError(f"{path}: neither a directory with {CONFIG_FILE} nor one of the published "
                               f"weight files ({', '.join(Path(i['file']).name for i in PUBLISHED.values())})")
        name, file = found
        return dict(PUBLISHED[name]), file
    name = published_name(model_name)
    if name is None:
        raise EsmLoadError(f"unknown esm model {model_name!r}: give a local directory or weight file, or one of "
                           f"{', '.join(sorted(PUBLISHED))}")
    info = PUBLISHED[name]
    try:
        from huggingface_hub import hf_hub_download
        file = hf_hub_download(info["repo"], info["file"])
    except Exception as e:  # noqa: BLE001 - offline, gated, missing: all the user's to fix
        raise EsmLoadError(f"{model_name}: cannot fetch {info['file']} from the Hugging Face repository "
                           f"{info['repo']} ({type(e).__name__}: {e}); download it (ESM-3's repository is gated: "
                           f"accept its non-commercial licence first) and pass the local path") from None
    return dict(info), Path(file)


# ---------------------------------------------------------------------------------- the encoder

class _Stop(Exception):
    pass


class EsmEncoder(Encoder):
    backend = "esm"

    def __init__(self, model_name: str, layer="auto", device="cpu", batch_size: int = 8):
        super().__init__()
        _require_esm()
        self.config, weights = resolve(model_name)
        model = build_model(self.config)
        state = esmc_layout_for(model, load_state_dict_file(weights)) if self.config.get("arch") == "esmc" else \
            load_state_dict_file(weights)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise EsmLoadError(f"{weights}: the weights do not fit the {self.config.get('arch')} architecture "
                               f"{ {k: self.config.get(k) for k in ('d_model', 'n_heads', 'n_layers')} }: "
                               f"{str(e)[:500]}") from None
        self.model = model.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        self.tokenizer = sequence_tokenizer()
        self.name = model_name
        self.n_layers = int(self.config["n_layers"])
        self.block = self._block_index(layer)   # None = final normed output
        self.layer = str(-1 if self.block is None else self.block)
        self.batch_size = batch_size
        self.hidden_size = int(self.config["d_model"])
        self.weights_id = weights_fingerprint(self.model, {k: self.config.get(k) for k in
                                                           ("arch", "d_model", "n_heads", "n_layers", "v_heads")})

    def _block_index(self, layer) -> int | None:
        text = str(layer).strip().lower()
        if text in ("auto", "default", ""):
            return ESM3_SMALL_LAYER if self.config.get("arch") == "esm3" and self.n_layers == 48 else None
        try:
            k = int(text)
        except ValueError:
            raise EsmLoadError(f"protein_embedding_layer must be an integer or auto, got {layer!r}") from None
        if k == -1:
            return None
        if not -self.n_layers <= k < self.n_layers:
            raise EsmLoadError(f"protein_embedding_layer {k} is outside this model's blocks 0..{self.n_layers - 1} "
                               f"(-1 = the final output)")
        return k % self.n_layers

    def tokens_for(self, sequence: str) -> int:
        return len(self.tokenizer(sequence.upper(), add_special_tokens=False)["input_ids"]) + 2

    def _forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, L, d) of the selected layer; stops after the block it needs."""
        captured = {}
        target = (self.model.transformer.norm if self.block is None else self.model.transformer.blocks[self.block])

        def hook(_module, _inputs, output):
            # esm >= 3.4's blocks return (hidden, attention weights); 3.2's the hidden states
            captured["h"] = output[0] if isinstance(output, tuple) else output
            raise _Stop

        handle = target.register_forward_hook(hook)
        try:
            self.model(sequence_tokens=tokens, sequence_id=mask)
        except _Stop:
            pass
        finally:
            handle.remove()
        return captured["h"]

    @torch.no_grad()
    def encode(self, sequences: list[str]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        pad = self.tokenizer.pad_token_id
        for i in range(0, len(sequences), self.batch_size):
            batch = [s.upper() for s in sequences[i:i + self.batch_size]]
            ids = [self.tokenizer(s, add_special_tokens=True)["input_ids"] for s in batch]
            width = max(len(x) for x in ids)
            tokens = torch.full((len(ids), width), pad, dtype=torch.long)
            for row, x in enumerate(ids):
                tokens[row, :len(x)] = torch.tensor(x, dtype=torch.long)
            mask = tokens != pad
            hidden = self._forward(tokens.to(self.device), mask.to(self.device))
            for row, (seq, x) in enumerate(zip(batch, ids)):
                emb = hidden[row, :len(x)].float().cpu()
                if emb.shape[0] != self.tokens_for(seq):
                    raise RuntimeError(f"{self.name}: {emb.shape[0]} embeddings for a sequence of "
                                       f"{self.tokens_for(seq)} tokens")
                out.append(emb)
            self.n_encoded += len(batch)
        return out


def build(spec: dict, device="cpu", trust_remote_code: bool = False) -> EsmEncoder:
    """The `esm` backend's factory (biopost.encoders.BACKENDS); `trust_remote_code` is unused:
    the architecture is esm's own code, the weights are tensors only."""
    return EsmEncoder(spec["model_name"], layer=spec.get("layer", "auto"), device=device)


# ---------------------------------------------------------------------------------- tiny models



def _build_tiny(kind: str, out_dir: Path) -> None:
    save_pretrained(build_model(TINY_CONFIGS[kind]), TINY_CONFIGS[kind], out_dir)


def build_tiny_esm3(out_dir: Path) -> None:
    """biopost-tiny/esm3-protein: a random-weight ESM3 (d_model 64, 2 blocks) from esm's class."""
    _build_tiny("esm3-protein", out_dir)


def build_tiny_esmc(out_dir: Path) -> None:
    """biopost-tiny/esmc-protein: a random-weight ESMC (d_model 64, 2 blocks) from esm's class."""
    _build_tiny("esmc-protein", out_dir)

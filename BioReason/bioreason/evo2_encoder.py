"""Evo2 DNA encoder backend (`--dna_is_evo2 true`), through the real `evo2` / `vtx` packages.

    pip install -e "./BioReason[evo2]"        # evo2==0.6.0, vtx==1.1.0 (no flash-attn, no TE needed)

`--dna_model_name` names the model one of three ways:
    evo2_1b_base, evo2_7b, ... (or arcinstitute/evo2_7b)   config from the evo2 package; weights
                                from the Hugging Face cache, downloaded (as evo2 does) where the
                                network allows
    /path/to/evo2_7b.pt         a checkpoint file in evo2's format (a torch state dict with vortex
                                key names); its config: config.yml beside it, else the evo2 config
                                its file name names
    /path/to/dir                a directory holding one such .pt file (and optionally config.yml)

Embeddings come from one module of the model, captured by a forward hook: `--dna_embedding_layer`
names it (default `blocks.20.mlp.l3`, as every BioReason launcher; the flag's generic default
"-1" means that default here). The forward stops once that module has run.

Precision (what each configuration gives is in docs/evo2.md):
    default      float32 weights and activations, outside any autocast (an enclosing bf16
                 autocast is switched off); attention through PyTorch SDPA, since flash-attn only
                 takes fp16/bf16. For evo2_1b_base (and the 20b/40b models) this is not what
                 evo2's README calls numerically accurate, and a warning says so.
    fp8 (spec["fp8"] / BIOPOST_EVO2_FP8=1)
                 evo2's own layout: bf16 weights, fp32 poles and residues, FP8 input projections
                 through Transformer Engine (a Hopper GPU). Needs transformer_engine installed;
                 asking without it raises TransformerEngineMissingError. Not exercised by this
                 project's tests: no GPU and no Transformer Engine here.

Batched encoding pads on the right. Every Evo2 layer is causal (short and medium FIR filters,
the long implicit filter as a causal FFT convolution, causal attention), so a sequence's
embeddings do not depend on what follows it: a batch gives what encoding each sequence alone
gives (tests/test_evo2.py checks fp32 max abs diff <= 1e-5). The published code encoded one
sequence at a time; its left-padding gather was wrong (fixed upstream in BioReason PR #24).

Loading checkpoints never unpickles code: `torch.load(weights_only=True)`, with io.BytesIO
(Transformer Engine's FP8 metadata) allowed only inside this call. vtx's own `load_checkpoint`
instead calls `torch.serialization.add_safe_globals` for the whole process, which widens every
later weights-only load; the backend therefore does the same three steps itself (see
`load_weights`).
"""
from __future__ import annotations

import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from biopost.encoders.base import Encoder, weights_fingerprint
from biopost.errors import CheckpointError, UserError

DEFAULT_LAYER = "blocks.20.mlp.l3"
CONFIG_FILE = "config.yml"          # the evo2-format config a local checkpoint may carry
FP8_ENV = "BIOPOST_EVO2_FP8"
INSTALL_HINT = 'pip install -e "./BioReason[evo2]"  (evo2==0.6.0, vtx==1.1.0)'
README_FP8_NOTE = ("evo2's README: the 1B, 20B and 40B models require FP8 via Transformer Engine on an "
                   "NVIDIA Hopper GPU for numerical accuracy; only the 7B models run accurately without it")


class Evo2NotInstalledError(UserError, ImportError):
    """The evo2 / vtx packages are not importable."""


class TransformerEngineMissingError(UserError, ImportError):
    """FP8 input projections were asked for, but transformer_engine is not importable."""


class Evo2ConfigError(UserError, ValueError):
    """An unknown model name, an unusable config file, or a layer the model does not have."""


class Evo2CheckpointError(CheckpointError):
    """A checkpoint path that is missing, unreadable, or does not match its config."""


def build(spec: dict, device="cpu", trust_remote_code: bool = False) -> "Evo2Encoder":
    """The `evo2` encoder backend factory (registered lazily by bioreason.modality).

    spec: {"model_name", "layer", "backend": "evo2", "fp8": bool (optional), "batch_size": int
    (optional)}. trust_remote_code does not apply: Evo2 runs vtx's code and loads weights only.
    """
    fp8 = spec.get("fp8")
    if fp8 is None:
        fp8 = os.environ.get(FP8_ENV, "").strip().lower() in ("1", "true", "yes")
    return Evo2Encoder(spec["model_name"], layer=spec.get("layer"), device=device, fp8=bool(fp8),
                       batch_size=int(spec.get("batch_size") or 8))


# --- the packages, behind the shims ---------------------------------------------------------------

def _vortex(device):
    """Import what the backend uses from vtx / evo2, after bioreason.evo2_compat's shims."""
    from bioreason import evo2_compat
    evo2_compat.install(device)
    try:
        import evo2.utils
        import vortex.model.model
        import vortex.model.tokenizer
        import vortex.model.utils
    except ImportError as e:
        raise Evo2NotInstalledError(f"the Evo2 encoder backend needs the evo2 and vtx packages ({e}); "
                                    f"install them with: {INSTALL_HINT}") from e
    return evo2.utils, vortex.model.model, vortex.model.tokenizer, vortex.model.utils


def evo2_config(name: str, device="cpu") -> dict:
    """evo2's own config (the yaml shipped in the evo2 package) for a model name."""
    import importlib.resources

    import yaml
    utils = _vortex(device)[0]
    if name not in utils.CONFIG_MAP:
        raise Evo2ConfigError(f"unknown Evo2 model {name!r}; evo2 {_evo2_version()} knows: "
                              f"{', '.join(utils.MODEL_NAMES)} (or pass a checkpoint path)")
    return yaml.safe_load((importlib.resources.files("evo2") / utils.CONFIG_MAP[name]).read_text())


def _evo2_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("evo2")
    except PackageNotFoundError:
        return "(not installed)"


# --- where the config and the weights come from ---------------------------------------------------

@dataclass
class Checkpoint:
    config: dict
    config_source: str             # "evo2 package: configs/evo2-1b-8k.yml" or a file path
    weights: Path | None           # None: random weights (tests, benchmarks)
    evo2_name: str | None          # the evo2 model name, where there is one


_REQUIRED_KEYS = ("vocab_size", "hidden_size", "num_filters", "num_layers", "attn_layer_idxs", "hcl_layer_idxs",
                  "hcm_layer_idxs", "hcs_layer_idxs", "hcm_filter_length", "hcs_filter_length",
                  "hcl_filter_groups", "hcm_filter_groups", "hcs_filter_groups", "short_filter_length",
                  "num_attention_heads", "state_size", "inner_mlp_size", "eps")


def _check_config(config, source: str) -> dict:
    if not isinstance(config, dict):
        raise Evo2ConfigError(f"{source}: an Evo2 config is a YAML mapping (as evo2's configs/*.yml), "
                              f"got {type(config).__name__}")
    missing = [k for k in _REQUIRED_KEYS if k not in config]
    if missing:
        raise Evo2ConfigError(f"{source}: missing Evo2 config field(s) {', '.join(missing)} "
                              f"(copy evo2's configs/evo2-7b-8k.yml and change what differs)")
    kinds = [i for key in ("attn_layer_idxs", "hcl_layer_idxs", "hcm_layer_idxs", "hcs_layer_idxs")
             for i in config[key]]
    if sorted(kinds) != list(range(config["num_layers"])):
        raise Evo2ConfigError(f"{source}: attn/hcl/hcm/hcs_layer_idxs must together list each of the "
                              f"num_layers={config['num_layers']} layers exactly once, got {sorted(kinds)}")
    return config


def _evo2_name(name: str, device) -> str | None:
    """'evo2_7b' or its Hub id 'arcinstitute/evo2_7b' -> 'evo2_7b'; anything else -> None."""
    utils = _vortex(device)[0]
    if name in utils.MODEL_NAMES:
        return name
    by_repo = {repo: n for n, repo in utils.HF_MODEL_NAME_MAP.items()}
    return by_repo.get(name)


def resolve_checkpoint(model_name: str, device="cpu", random_weights: bool = False) -> Checkpoint:
    """Find the config and the weights file `model_name` means (see the module docstring)."""
    import yaml
    name = _evo2_name(str(model_name), device)
    if name is not None:
        config = evo2_config(name, device)
        source = f"evo2 {_evo2_version()} package: {_vortex(device)[0].CONFIG_MAP[name]}"
        weights = None if random_weights else download_weights(name, device)
        return Checkpoint(config, source, weights, name)

    path = Path(model_name).expanduser()
    if not path.exists():
        if "/" in str(model_name) or os.sep in str(model_name) or str(model_name).endswith(".pt"):
            raise Evo2CheckpointError(f"{model_name}: no such Evo2 checkpoint file or directory")
        raise Evo2ConfigError(f"unknown Evo2 model {model_name!r}; use an evo2 model name "
                              f"({', '.join(_vortex(device)[0].MODEL_NAMES)}) or a checkpoint path")
    if path.is_dir():
        pts = sorted(path.glob("*.pt"))
        if len(pts) != 1:
            raise Evo2CheckpointError(f"{path}: an Evo2 checkpoint directory holds exactly one .pt weights file "
                                      f"(found {len(pts)}: {', '.join(p.name for p in pts) or 'none'}); "
                                      f"pass the file itself")
        weights = pts[0]
    else:
        weights = path
    config_file = weights.parent / CONFIG_FILE
    if config_file.is_file():
        try:
            config = yaml.safe_load(config_file.read_text())
        except yaml.YAMLError as e:
            raise Evo2ConfigError(f"{config_file}: not valid YAML ({e})") from None
        return Checkpoint(_check_config(config, str(config_file)), str(config_file), weights,
                          _evo2_name(weights.stem, device))
    stem_name = _evo2_name(weights.stem, device)
    if stem_name is None:
        raise Evo2CheckpointError(f"{weights}: no {CONFIG_FILE} beside it and its name is not an evo2 model "
                                  f"name ({', '.join(_vortex(device)[0].MODEL_NAMES)}); put the evo2 config "
                                  f"it was trained with next to it as {CONFIG_FILE}")
    return Checkpoint(evo2_config(stem_name, device),
                      f"evo2 {_evo2_version()} package: {_vortex(device)[0].CONFIG_MAP[stem_name]}",
                      weights, stem_name)


def download_weights(name: str, device="cpu") -> Path:
    """`<name>.pt` from the Hugging Face cache or Hub, found (and its shards merged) as evo2 does.

    The merged file goes where evo2 0.6.0 puts it (beside the Hub cache), so a file evo2 merged
    earlier is reused; the shards are left in place (evo2 deletes them).
    """
    utils = _vortex(device)[0]
    repo, filename = utils.HF_MODEL_NAME_MAP[name], f"{name}.pt"
    try:
        from huggingface_hub import constants, snapshot_download
        merged = Path(constants.HF_HUB_CACHE).parent / filename
        if merged.is_file():
            return merged
        repo_dir = Path(snapshot_download(repo_id=repo))
    except Exception as e:  # offline, no such repo, no permission: all "cannot get the weights"
        raise Evo2CheckpointError(
            f"{name}: cannot get its weights from the Hugging Face Hub ({repo}): {type(e).__name__}: {e}. "
            f"Where this machine has no network, download {filename} elsewhere and pass its path: "
            f"--dna_model_name /path/to/{filename}") from None
    if (repo_dir / filename).is_file():
        return repo_dir / filename
    parts = sorted(repo_dir.glob(f"{filename}.part*"), key=lambda p: int(p.name.rsplit("part", 1)[1]))
    if not parts:
        raise Evo2CheckpointError(f"{repo_dir}: neither {filename} nor its shards ({filename}.part0, ...)")
    tmp = merged.with_name(f".{filename}.{os.getpid()}.tmp")
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(64 << 20):
                    out.write(chunk)
    os.replace(tmp, merged)
    return merged


# --- building the model ---------------------------------------------------------------------------

def make_model(ckpt: Checkpoint, device="cpu", fp8: bool = False):
    """StripedHyena from the checkpoint's config, on `device`, in the precision `fp8` selects.

    Returns (model, effective config). The config overrides are the backend's precision choice and
    nothing else: FP8 projections on or off, flash-attn only where it imports and the weights are
    bf16, vtx's optional Triton HC* kernels off (they change generation quality on the 1B).
    """
    _, model_mod, _, utils_mod = _vortex(device)
    device = torch.device(device)
    config = dict(ckpt.config)
    label = ckpt.evo2_name or ckpt.config_source
    if fp8:
        try:
            import transformer_engine  # noqa: F401
        except ImportError as e:
            raise TransformerEngineMissingError(
                f"{label}: FP8 input projections need NVIDIA Transformer Engine, which does not import here "
                f"({e}). Install transformer_engine (a CUDA build matching your torch) on a Hopper GPU, or "
                f"run without FP8 (unset {FP8_ENV} / fp8: false) and accept float32 projections") from None
    elif config.get("use_fp8_input_projections", False):
        warnings.warn(f"{label}: running with float32 input projections, without FP8. {README_FP8_NOTE}; the "
                      f"published BioReason study ran it with Transformer Engine off as well. Embeddings are "
                      f"not the reference numerics; see docs/evo2.md", stacklevel=3)
    config["use_fp8_input_projections"] = bool(fp8)
    # flash-attn kernels take only fp16/bf16: the fp32 path must use PyTorch attention.
    config["use_flash_attn"] = bool(fp8 and config.get("use_flash_attn", False) and _flash_attn_imports())
    for key in ("use_hcs_kernel", "use_hcm_kernel", "use_hcl_kernel"):
        config[key] = False

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Not using Evo2 style activations.*")
        model = model_mod.StripedHyena(utils_mod.dotdict(config))
    # vtx places layers on cuda:0.. when CUDA exists (splitting across GPUs); put them all on
    # `device`, and tell its forward, which moves activations by this map.
    model.to(device)
    model.block_idx_to_device = {i: str(device) for i in model.block_idx_to_device}
    if fp8:
        model.to_bfloat16_except_pr_lc(to_float32=True)    # evo2's dtype layout, as vtx's load_checkpoint
    else:
        model.float()
    model.eval().requires_grad_(False)
    return model, config


def _flash_attn_imports() -> bool:
    try:
        import flash_attn_2_cuda  # noqa: F401
        return True
    except Exception:
        return False


def _safe_globals():
    globals_ = [io.BytesIO]  # FP8 checkpoints keep TE metadata as BytesIO in `_extra_state`
    try:
        from transformer_engine.common.recipe import DelayedScaling, Format, _FormatHelper
        globals_ += [DelayedScaling, Format, _FormatHelper]
    except ImportError:
        pass
    return globals_


def load_weights(model, weights: Path, config_source: str, fp8: bool = False) -> None:
    """Load an evo2-format state dict into `model` (what vtx's load_checkpoint does, scoped).

    vtx: torch.load(mmap, weights_only) with BytesIO allowed, then `custom_load_state_dict`
    (drops TE `_extra_state` keys when TE is absent; un-interleaves the attention Wqkv rows from
    savanna's per-head layout), then bf16 except poles/residues. Here the allow-list is a context
    (torch.serialization.safe_globals), not process-wide, and the weights keep the model's dtype.
    """
    weights = Path(weights)
    if not weights.is_file():
        raise Evo2CheckpointError(f"{weights}: no such Evo2 weights file")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            state = torch.load(weights, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:
        raise Evo2CheckpointError(f"{weights}: not a weights-only torch state dict in evo2's format "
                                  f"({type(e).__name__}: {str(e).splitlines()[0][:300]})") from None
    if not isinstance(state, dict):
        raise Evo2CheckpointError(f"{weights}: holds a {type(state).__name__}, not a state dict")
    expected = {k: v for k, v in model.state_dict().items() if not k.endswith("._extra_state")}
    missing = sorted(set(expected) - set(state))
    wrong = sorted(k for k in expected if k in state and hasattr(state[k], "shape")
                   and tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or wrong:
        problems = [f"missing {len(missing)} tensor(s): {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}"
                    ] if missing else []
        problems += [f"shape of {k}: {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} "
                     f"in the config" for k in wrong[:4]]
        raise Evo2CheckpointError(f"{weights}: does not match its config ({config_source}): "
                                  f"{'; '.join(problems)}. Pass the config it was trained with as "
                                  f"{CONFIG_FILE} beside it")
    with torch.no_grad():
        model.custom_load_state_dict(state)
    # custom_load_state_dict assigns the re-ordered Wqkv as `.data`, in the file's dtype (bf16 for
    # evo2's releases): restore one dtype layout for the whole model.
    if fp8:
        model.to_bfloat16_except_pr_lc()
    else:
        model.float()


def save_checkpoint(model, directory, config: dict, name: str = "evo2_checkpoint") -> Path:
    """Write `model` as evo2 checkpoints are laid out: `<dir>/<name>.pt` + `<dir>/config.yml`.

    The inverse of what `custom_load_state_dict` does on load: attention Wqkv rows go back to
    savanna's per-head (head, q|k|v, dim) order, so loading the file gives this model exactly.
    Tests and benchmarks use it; a real Evo2 checkpoint comes from evo2's release.
    """
    import yaml
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.endswith("._extra_state")}
    if config.get("column_split", True):
        heads, hidden = config["num_attention_heads"], config["hidden_size"]
        for key in [k for k in state if re.fullmatch(r"blocks\.\d+\.inner_mha_cls\.Wqkv\.(weight|bias)", k)]:
            t = state[key]
            t = t.reshape(3, heads, hidden // heads, *t.shape[1:]).transpose(0, 1)
            state[key] = t.reshape(3 * hidden, *state[key].shape[1:]).contiguous()
    weights = directory / f"{name}.pt"
    torch.save(state, weights)
    clean = {k: (v if not isinstance(v, torch.dtype) else str(v)) for k, v in config.items()}
    (directory / CONFIG_FILE).write_text(yaml.safe_dump(clean, sort_keys=False))
    return weights


def random_init_(model, seed: int = 0):
    """Random weights, drawn from `seed`, that a StripedHyena can run at any length.

    vtx's constructor draws the long filters' log-poles from N(0, 1): half of them grow like
    exp(t) and overflow to inf (then NaN) within a few dozen positions. Trained Evo2 poles decay.
    Here: log-poles uniform in [-0.5, -0.01], residues with std 0.1; linear, embedding and FIR
    filter weights N(0, 1/fan_in) so activations stay O(1) through the depth; norms 1; biases
    and the D skip terms 0.
    """
    generators = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            # drawn where the weights live: a 1B model on the GPU initializes in a second
            gen = generators.setdefault(p.device, torch.Generator(device=p.device).manual_seed(seed))
            fresh = torch.randn(p.shape, generator=gen, dtype=torch.float32, device=p.device)
            if name.endswith("log_poles"):
                fresh = -(torch.rand(p.shape, generator=gen, device=p.device) * 0.49 + 0.01)
            elif name.endswith("residues"):
                fresh = fresh * 0.1
            elif name.endswith("scale"):             # RMSNorm
                fresh = torch.ones_like(fresh)
            elif name.endswith(".D") or name.endswith("bias"):
                fresh = torch.zeros_like(fresh)
            elif p.dim() == 2:                       # linear layers, embedding
                fresh = fresh / p.shape[-1] ** 0.5
            elif p.dim() == 3:                       # FIR filters (channels, 1, taps)
                fresh = fresh / p.shape[-1] ** 0.5
            p.copy_(fresh.to(p.dtype))
    return model


# Tiny dims for tests and `bench_evo2.py --tiny`; every other field is evo2_1b_base's. The
# medium filters keep the 1B's 128 taps, so the FFT path of the HCM layers runs too.
TINY_OVERRIDES = dict(hidden_size=32, num_filters=32, num_layers=4, attn_layer_idxs=[3], hcl_layer_idxs=[2],
                      hcm_layer_idxs=[1], hcs_layer_idxs=[0], hcl_filter_groups=32, hcm_filter_groups=4,
                      hcs_filter_groups=4, num_attention_heads=4, inner_mlp_size=64, max_seqlen=2048,
                      model_name="biopost-tiny-evo2",
                      use_fp8_input_projections=False)  # random weights: no reference numerics to match


def tiny_config(device="cpu") -> dict:
    """evo2_1b_base's config from the evo2 package with tiny dimensions (same keys)."""
    config = evo2_config("evo2_1b_base", device)
    config.update(TINY_OVERRIDES)
    return config


# --- the encoder ----------------------------------------------------------------------------------

class _Captured(Exception):
    """Raised by the hook once the embedding layer has run: the rest of the forward is not needed."""


class Evo2Encoder(Encoder):
    """A frozen Evo2 model as a DNA encoder: `encode` returns, per sequence, the float32 output of
    module `layer` at each nucleotide (`tokens_for(s) == len(s)` for DNA).

    model_name: an evo2 name, a .pt checkpoint or a directory (module docstring). fp8: evo2's
    FP8 layout (needs Transformer Engine). random_weights / seed: evo2's config with random
    weights (tests, benchmarks); no file is read.
    """
    backend = "evo2"

    def __init__(self, model_name: str, layer: str | int | None = None, device="cpu", fp8: bool = False,
                 batch_size: int = 8, random_weights: bool = False, seed: int = 0):
        super().__init__()
        _, _, tokenizer_mod, _ = _vortex(device)
        self.device = torch.device(device)
        self.name = str(model_name)
        self.fp8 = fp8
        self.batch_size = max(1, int(batch_size))
        self.layer = _layer_name(layer)
        ckpt = resolve_checkpoint(self.name, self.device, random_weights=random_weights)
        self.model, self.config = make_model(ckpt, self.device, fp8=fp8)
        try:  # before reading gigabytes of weights
            self.module = self.model.get_submodule(self.layer)
        except AttributeError:
            n = self.config["num_layers"]
            raise Evo2ConfigError(f"{self.name}: no module {self.layer!r}; this model has blocks.0 .. blocks.{n - 1} "
                                  f"(module names as in model.named_modules(), e.g. blocks.{n - 1}.mlp.l3); "
                                  f"set --dna_embedding_layer") from None
        if ckpt.weights is None:
            random_init_(self.model, seed)
        else:
            load_weights(self.model, ckpt.weights, ckpt.config_source, fp8=fp8)
        self.weights_path = ckpt.weights
        self.tokenizer = tokenizer_mod.CharLevelTokenizer(self.config.get("vocab_size", 512))
        self.max_length = int(self.config.get("max_seqlen") or 0)
        self.precision = "bf16 weights + FP8 input projections (Transformer Engine)" if fp8 else "float32"
        self.hidden_size = int(self._forward([[65]])[0].shape[-1])  # one token ("A"): the layer's width
        self.weights_id = weights_fingerprint(self.model, {**self.config, "layer": self.layer, "fp8": fp8})

    def tokens_for(self, sequence: str) -> int:
        return len(sequence.upper().encode("utf-8"))   # one byte-level token per nucleotide

    def _forward(self, batch_ids: list[list[int]]) -> torch.Tensor:
        """Right-padded batch -> the hooked layer's output (batch, max_len, d), float32."""
        width = max(len(ids) for ids in batch_ids)
        x = torch.full((len(batch_ids), width), self.tokenizer.pad_id, dtype=torch.long)
        for row, ids in enumerate(batch_ids):
            x[row, :len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        captured = {}

        def hook(_module, _inputs, output):
            captured["out"] = output[0] if isinstance(output, tuple) else output
            raise _Captured

        handle = self.module.register_forward_hook(hook)
        try:
            # Outside any enclosing (bf16) autocast of the training step: the encoder's precision
            # is its own (FP8 goes through Transformer Engine's fp8_autocast, not torch's).
            # vtx's HCM layers enter torch.autocast("cuda") themselves around an fp32 FFT; on
            # the CPU that warns, once per call site.
            with torch.no_grad(), torch.autocast(self.device.type, enabled=False), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*CUDA is not available.*Disabling autocast.*")
                self.model(x.to(self.device))
        except _Captured:
            pass
        finally:
            handle.remove()
        if "out" not in captured:
            raise RuntimeError(f"{self.name}: module {self.layer} did not run in the forward pass")
        return captured["out"].float()

    @torch.no_grad()
    def encode(self, sequences: list[str]) -> list[torch.Tensor]:
        seqs = [s.upper() for s in sequences]
        for s in seqs:
            if self.max_length and len(s) > self.max_length:
                raise Evo2ConfigError(f"{self.name}: a {len(s)} nt sequence is longer than the model's "
                                      f"max_seqlen {self.max_length}; lower --max_length_dna")
        out: list[torch.Tensor | None] = [None] * len(seqs)
        # Longest first, so a batch holds similar lengths and pads little; results keep input order.
        order = sorted((i for i, s in enumerate(seqs) if s), key=lambda i: -len(seqs[i]))
        for i, s in enumerate(seqs):
            if not s:
                out[i] = torch.zeros(0, self.hidden_size)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            ids = [[int(t) for t in self.tokenizer.tokenize(seqs[i])] for i in idx]
            hidden = self._forward(ids).cpu()
            for row, i in enumerate(idx):
                out[i] = hidden[row, :len(ids[row])].clone()
            self.n_encoded += len(idx)
        return out


def _layer_name(layer) -> str:
    """--dna_embedding_layer -> a module name. The flag's generic default ("-1", meaning "last
    hidden state" for HF encoders) and an empty value mean BioReason's Evo2 default; a bare block
    number N means blocks.N.mlp.l3."""
    text = "" if layer is None else str(layer).strip()
    if text in ("", "-1"):
        return DEFAULT_LAYER
    if text.isdigit():
        return f"blocks.{text}.mlp.l3"
    if re.fullmatch(r"-\d+", text):
        raise Evo2ConfigError(f"--dna_embedding_layer {text}: Evo2 layers are module names such as "
                              f"{DEFAULT_LAYER} (or a block number N for blocks.N.mlp.l3), not negative indices")
    return text

"""Compatibility shims that let the real `evo2` 0.6.0 / `vtx` 1.1.0 packages import and run where
flash-attn, Triton or a GPU is absent. This is the only module in the project that patches
third-party code (tests/test_evo2.py greps for `sys.modules[` assignments anywhere else).

Each shim fixes one import-time or run-time assumption of vtx (the `vortex` package); none changes
the numbers a layer computes. `install(device)` applies the ones the machine needs, once, before
the first `import vortex...`, and returns {shim: why} so callers can log or record them
(bench/bench_evo2.py prints them next to its timings).

    vortex.logging               always. Importing the real module calls logging.basicConfig(INFO,
                                 RichHandler) on the root logger and opens ./activations_debug.log
                                 in the current directory, attached to the root logger: every
                                 ERROR anywhere in the process is written there. Replaced by a
                                 module with the same two names that touches neither.
    vortex.ops.attn_interface    when flash-attn's compiled extension (flash_attn_2_cuda) does not
                                 import. vortex/ops/__init__.py imports it unconditionally, and
                                 vortex.model.rotary imports vortex.ops.embedding.rotary, so without
                                 it no model can be built at all. The stub exports the six
                                 `local_flash_attn_*` names as None, which is exactly the state
                                 vortex.model.attention's own `except ImportError` branch sets up:
                                 attention then runs through its SelfAttention class (PyTorch
                                 scaled_dot_product_attention, causal) when the config says
                                 use_flash_attn: false, and a flash-attn layer fails with vortex's
                                 own "FlashAttention is not installed" if asked for.
                                 Nothing named flash_attn is faked, so transformers'
                                 is_flash_attn_2_available() and peft still see the truth.
    vortex.ops.embedding.rotary  when Triton is absent (the CPU torch wheel). The real module is a
                                 Triton kernel for rotary embeddings imported unconditionally by
                                 vortex.model.rotary; the stub provides `apply_rotary` in PyTorch,
                                 same signature, same arithmetic (fp32 inside, as the kernel).
    vortex.model.rotary.apply_rotary
                                 when Triton is present but the model runs on the CPU: the Triton
                                 kernel only takes CUDA tensors, so CPU tensors go to the PyTorch
                                 version and CUDA tensors still to the kernel.
    torch.cuda.device            when the model runs on the CPU. StripedHyena wraps construction
                                 and every Hyena input projection in `torch.cuda.device(d)`, which
                                 raises "Expected a cuda device, but got: cpu" for a CPU `d`. The
                                 replacement is a subclass that treats a non-CUDA device as a
                                 no-op (as torch already does for None or -1) and is unchanged for
                                 every argument the original accepted.

Nothing here is needed for transformer_engine: vtx imports it inside try/except.
"""
from __future__ import annotations

import importlib
import logging
import sys
import types

INSTALLED: dict[str, str] = {}


def install(device="cpu") -> dict[str, str]:
    """Apply the shims this machine needs for running vtx on `device`; idempotent."""
    import torch

    device = torch.device(device)
    _shim_logging()
    if not _imports("flash_attn_2_cuda"):
        _shim_attn_interface()
    if not _imports("triton"):
        _shim_rotary_module()
    if device.type != "cuda":
        if _imports("triton"):
            _route_cpu_rotary_to_torch()
        _shim_cuda_device_context()
    return dict(INSTALLED)


def _imports(module: str) -> bool:
    # A present but broken build (flash-attn compiled for another torch: "undefined symbol") counts
    # as absent: it is the case that otherwise fails deep inside vortex's import.
    try:
        importlib.import_module(module)
        return True
    except Exception:
        return False


def _fresh_module(name: str, doc: str) -> types.ModuleType:
    module = types.ModuleType(name, doc)
    module.__biopost_shim__ = True
    return module


def _shim_logging() -> None:
    if "vortex.logging" in INSTALLED:
        return
    if "vortex.logging" in sys.modules and not getattr(sys.modules["vortex.logging"], "__biopost_shim__", False):
        # Imported before us: its side effects have happened; say so instead of pretending.
        INSTALLED["vortex.logging"] = "not replaced: vortex.logging was imported before evo2_compat.install()"
        return
    module = _fresh_module("vortex.logging", "bio-post stand-in for vortex.logging (see bioreason.evo2_compat)")
    activations = logging.getLogger("activations_logger")
    activations.setLevel(logging.ERROR)  # vtx's default: activation dumps off

    def enable_activations_logging():
        activations.setLevel(logging.DEBUG)

    module.activations_logger = activations
    module.enable_activations_logging = enable_activations_logging
    sys.modules["vortex.logging"] = module
    INSTALLED["vortex.logging"] = ("replaced: the real module configures the root logger (INFO, Rich) and opens "
                                   "./activations_debug.log at import")


_FLASH_NAMES = ("local_flash_attn_func", "local_flash_attn_kvpacked_func", "local_flash_attn_qkvpacked_func",
                "local_flash_attn_varlen_kvpacked_func", "local_flash_attn_varlen_qkvpacked_func",
                "local_flash_attn_with_kvcache")


def _shim_attn_interface() -> None:
    if "vortex.ops.attn_interface" in INSTALLED:
        return
    module = _fresh_module("vortex.ops.attn_interface",
                           "bio-post stand-in: flash-attn is not importable here (see bioreason.evo2_compat)")
    for name in _FLASH_NAMES:
        setattr(module, name, None)
    sys.modules["vortex.ops.attn_interface"] = module
    INSTALLED["vortex.ops.attn_interface"] = ("stubbed: flash_attn_2_cuda does not import; attention layers run "
                                              "PyTorch scaled_dot_product_attention (use_flash_attn: false)")


def apply_rotary_torch(x, cos, sin, seqlen_offsets=0, cu_seqlens=None, max_seqlen=None,
                       interleaved=False, inplace=False, conjugate=False):
    """PyTorch version of vortex.ops.embedding.rotary.apply_rotary (x: batch, seqlen, heads, dim).

    Same contract as the Triton kernel: cos/sin are (seqlen_ro, rotary_dim / 2), the rotation is
    computed in float32 and written in x's dtype, dimensions past rotary_dim pass through, and
    `inplace` writes into x (ApplyRotaryEmbQKV_ relies on that to rotate q and k inside qkv).
    """
    import torch

    if cu_seqlens is not None:
        raise NotImplementedError("variable-length (cu_seqlens) rotary needs vtx's Triton kernel; "
                                  "install triton or run on a CUDA GPU")
    seqlen = x.shape[1]
    if isinstance(seqlen_offsets, torch.Tensor):  # per-sample offsets (KV-cache decoding)
        positions = seqlen_offsets.reshape(-1, 1) + torch.arange(seqlen, device=x.device)
        cos_t, sin_t = cos[positions], sin[positions]                 # batch, seqlen, d/2
        cos_t, sin_t = cos_t[:, :, None, :], sin_t[:, :, None, :]
    else:
        cos_t = cos[seqlen_offsets:seqlen_offsets + seqlen][None, :, None, :]
        sin_t = sin[seqlen_offsets:seqlen_offsets + seqlen][None, :, None, :]
    cos_t, sin_t = cos_t.float(), sin_t.float()
    if conjugate:
        sin_t = -sin_t
    rotary_dim = 2 * cos.shape[-1]
    xr = x[..., :rotary_dim].float()
    if interleaved:
        x1, x2 = xr[..., 0::2], xr[..., 1::2]
        rotated = torch.stack((x1 * cos_t - x2 * sin_t, x1 * sin_t + x2 * cos_t), dim=-1).flatten(-2)
    else:
        x1, x2 = xr.chunk(2, dim=-1)
        rotated = torch.cat((x1 * cos_t - x2 * sin_t, x1 * sin_t + x2 * cos_t), dim=-1)
    rotated = rotated.to(x.dtype)
    if inplace:
        x[..., :rotary_dim].copy_(rotated)
        return x
    return torch.cat((rotated, x[..., rotary_dim:]), dim=-1)


def _shim_rotary_module() -> None:
    if "vortex.ops.embedding.rotary" in INSTALLED:
        return
    module = _fresh_module("vortex.ops.embedding.rotary",
                           "bio-post stand-in: Triton is not importable here (see bioreason.evo2_compat)")
    module.apply_rotary = apply_rotary_torch
    sys.modules["vortex.ops.embedding.rotary"] = module
    INSTALLED["vortex.ops.embedding.rotary"] = "stubbed: triton does not import; rotary embeddings in PyTorch"


def _route_cpu_rotary_to_torch() -> None:
    if "vortex.model.rotary.apply_rotary" in INSTALLED:
        return
    import vortex.model.rotary as rotary

    triton_apply = rotary.apply_rotary

    def apply_rotary(x, *args, **kwargs):
        return (triton_apply if x.is_cuda else apply_rotary_torch)(x, *args, **kwargs)

    rotary.apply_rotary = apply_rotary
    INSTALLED["vortex.model.rotary.apply_rotary"] = ("wrapped: CPU tensors use the PyTorch rotary, "
                                                     "CUDA tensors the Triton kernel")


def _shim_cuda_device_context() -> None:
    if "torch.cuda.device" in INSTALLED:
        return
    import torch

    original = torch.cuda.device

    class device(original):  # noqa: N801 - keeps torch's name
        __doc__ = original.__doc__

        def __init__(self, device):
            if _names_a_non_cuda_device(device):
                self.idx, self.prev_idx = -1, -1  # torch's own no-op (as for device=None or -1)
                return
            super().__init__(device)

    torch.cuda.device = device
    INSTALLED["torch.cuda.device"] = ("widened: a CPU device is a no-op context (StripedHyena enters it "
                                      "around CPU layers)")


def _names_a_non_cuda_device(device) -> bool:
    import torch

    if isinstance(device, str):
        try:
            device = torch.device(device)
        except RuntimeError:
            return False
    return isinstance(device, torch.device) and device.type != "cuda"

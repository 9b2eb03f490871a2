"""The Evo2 encoder backend through the real evo2 / vtx packages, on a tiny StripedHyena built
from evo2's own 1B config (random weights, saved and loaded in evo2's checkpoint format).

What these tests cannot reach (no GPU, no network, no Transformer Engine here) is listed in
docs/evo2.md: real weights, FP8 projections, flash-attn, vtx's Triton kernels.
"""
import importlib.util
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, run_script

# find_spec, not import: importing evo2 before bioreason.evo2_compat's shims fails without flash-attn.
if importlib.util.find_spec("evo2") is None or importlib.util.find_spec("vortex") is None:
    pytest.skip('the Evo2 extra is not installed (pip install -e "./BioReason[evo2]")', allow_module_level=True)

from bioreason import evo2_encoder as E  # noqa: E402
from biopost.errors import UserError  # noqa: E402

LAYER = "blocks.2.mlp.l3"       # the tiny model has 4 blocks: hcs, hcm, hcl, attention
SEQS = ["ACGTACGTTAGC" * 7, "GATTACA", "acgtnACGTN" * 12, "", "T", "CCGGAATT" * 3]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A tiny Evo2 checkpoint directory (tiny_evo2.pt + config.yml), and the model it came from."""
    ckpt = E.Checkpoint(E.tiny_config(), "tiny", None, None)
    model, _ = E.make_model(ckpt)
    E.random_init_(model, seed=0)
    out = tmp_path_factory.mktemp("tiny_evo2")
    E.save_checkpoint(model, out, ckpt.config, "tiny_evo2")
    return out, model


@pytest.fixture(scope="module")
def encoder(tiny_ckpt):
    return E.Evo2Encoder(str(tiny_ckpt[0]), layer=LAYER, batch_size=4)


def _hooked(model, layer, sequence):
    captured = {}
    handle = model.get_submodule(layer).register_forward_hook(
        lambda _m, _i, out: captured.__setitem__("x", out[0] if isinstance(out, tuple) else out))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*CUDA is not available.*")  # vtx's autocast("cuda")
        model(torch.tensor([list(sequence.encode())]))
    handle.remove()
    return captured["x"][0]


# ------------------------------------------------------------------ the encoder interface

def test_batch_of_different_lengths_equals_encoding_each_alone(encoder):
    before = encoder.n_encoded
    batched = encoder.encode(SEQS)
    assert encoder.n_encoded - before == len([s for s in SEQS if s])  # the empty one runs nothing
    for seq, emb in zip(SEQS, batched):
        assert emb.dtype == torch.float32 and emb.device.type == "cpu"
        assert emb.shape == (encoder.tokens_for(seq), encoder.hidden_size) == (len(seq), 32)
        if seq:
            alone = encoder.encode([seq])[0]
            assert (emb - alone).abs().max().item() <= 1e-5, seq
            assert torch.isfinite(emb).all()


def test_an_enclosing_bf16_autocast_does_not_reach_the_encoder(encoder):
    plain = encoder.encode(SEQS[:3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = encoder.encode(SEQS[:3])
    for a, b in zip(plain, inside):
        assert b.dtype == torch.float32 and (a - b).abs().max().item() <= 1e-5


def test_encoder_sits_under_the_embedding_cache(encoder, tmp_path):
    from biopost.encoders.cache import EmbeddingCache
    cache = EmbeddingCache(encoder, root=tmp_path)
    before = encoder.n_encoded
    assert cache.ensure(SEQS[:3]) == 3 and cache.ensure(SEQS[:3]) == 0
    assert encoder.n_encoded - before == 3


def test_default_layer_and_layer_names():
    assert E._layer_name("-1") == E._layer_name(None) == E._layer_name("") == "blocks.20.mlp.l3"
    assert E._layer_name("7") == "blocks.7.mlp.l3" and E._layer_name("blocks.3") == "blocks.3"
    with pytest.raises(E.Evo2ConfigError, match="negative"):
        E._layer_name("-2")


# ------------------------------------------------------------------ checkpoints in evo2's format

def test_checkpoint_loads_by_path_and_equals_the_saved_model(tiny_ckpt):
    directory, model = tiny_ckpt
    seq = "ACGTTGCAAGGCTTAACG"
    # blocks.3 is the attention block: its Wqkv rows are stored in savanna's per-head order and
    # re-ordered by vtx on load, so equality here checks the file format, not just a pickle.
    for name in (str(directory), str(directory / "tiny_evo2.pt")):
        enc = E.build({"model_name": name, "layer": "blocks.3", "backend": "evo2"})
        assert enc.backend == "evo2" and enc.name == name and enc.layer == "blocks.3"
        assert torch.equal(enc.encode([seq])[0], _hooked(model, "blocks.3", seq).float())
    assert enc.weights_id == E.build({"model_name": name, "layer": "blocks.3"}).weights_id


def test_a_bf16_checkpoint_runs_in_float32(tmp_path, tiny_ckpt):
    # evo2's released weights are bf16; vtx assigns the re-ordered Wqkv in the file's dtype.
    state = torch.load(tiny_ckpt[0] / "tiny_evo2.pt", weights_only=True)
    (tmp_path / "config.yml").write_text((tiny_ckpt[0] / "config.yml").read_text())
    torch.save({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()},
               tmp_path / "tiny_bf16.pt")
    enc = E.Evo2Encoder(str(tmp_path), layer="blocks.3")
    assert {p.dtype for p in enc.model.parameters()} == {torch.float32}
    seq = "ACGTTGCAAGGCTTAACG"
    rounded = enc.encode([seq])[0]
    exact = E.Evo2Encoder(str(tiny_ckpt[0]), layer="blocks.3").encode([seq])[0]
    assert rounded.dtype == torch.float32 and 0 < (rounded - exact).abs().max() < 0.05 * exact.abs().max()


def test_bad_paths_name_the_path(tmp_path, tiny_ckpt):
    missing = tmp_path / "nowhere" / "evo2_7b.pt"
    with pytest.raises(E.Evo2CheckpointError, match=re.escape(str(missing))):
        E.Evo2Encoder(str(missing))
    two = tmp_path / "two"
    two.mkdir()
    (two / "a.pt").write_bytes(b"")
    (two / "b.pt").write_bytes(b"")
    with pytest.raises(E.Evo2CheckpointError, match="exactly one .pt"):
        E.Evo2Encoder(str(two))
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "w.pt").write_bytes(b"not a checkpoint")
    (garbage / "config.yml").write_text((tiny_ckpt[0] / "config.yml").read_text())
    with pytest.raises(E.Evo2CheckpointError, match=r"w\.pt: not a weights-only torch state dict"):
        E.Evo2Encoder(str(garbage), layer=LAYER)
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    (no_config / "mine.pt").write_bytes((tiny_ckpt[0] / "tiny_evo2.pt").read_bytes())
    with pytest.raises(E.Evo2CheckpointError, match="no config.yml beside it"):
        E.Evo2Encoder(str(no_config))
    with pytest.raises(E.Evo2ConfigError, match="unknown Evo2 model 'evo3_1b'.*evo2_1b_base"):
        E.Evo2Encoder("evo3_1b")


def test_mismatched_config_is_a_named_error(tmp_path, tiny_ckpt):
    wider = tmp_path / "wider"
    wider.mkdir()
    (wider / "tiny_evo2.pt").write_bytes((tiny_ckpt[0] / "tiny_evo2.pt").read_bytes())
    config = yaml.safe_load((tiny_ckpt[0] / "config.yml").read_text())
    config.update(hidden_size=48, num_filters=48, hcl_filter_groups=48)
    (wider / "config.yml").write_text(yaml.safe_dump(config))
    with pytest.raises(E.Evo2CheckpointError, match=r"tiny_evo2\.pt: does not match its config .*config\.yml.*shape"):
        E.Evo2Encoder(str(wider), layer=LAYER)
    config.update(num_layers=5)
    (wider / "config.yml").write_text(yaml.safe_dump(config))
    with pytest.raises(E.Evo2ConfigError, match="config.yml: attn/hcl/hcm/hcs_layer_idxs"):
        E.Evo2Encoder(str(wider), layer=LAYER)


def test_a_layer_the_model_lacks_is_named(tiny_ckpt):
    with pytest.raises(E.Evo2ConfigError, match=r"no module 'blocks.20.mlp.l3'.*blocks.3"):
        E.Evo2Encoder(str(tiny_ckpt[0]))  # BioReason's default layer; the tiny model has 4 blocks


def test_evo2_names_use_evo2s_configs_and_offline_download_is_a_named_error():
    for name in ("evo2_7b", "arcinstitute/evo2_7b"):
        ckpt = E.resolve_checkpoint(name, random_weights=True)
        assert ckpt.evo2_name == "evo2_7b" and ckpt.config["hidden_size"] == 4096
        assert ckpt.config_source.endswith("configs/evo2-7b-1m.yml") and ckpt.weights is None
    assert E.resolve_checkpoint("evo2_1b_base", random_weights=True).config["use_fp8_input_projections"] is True
    # conftest sets HF_HUB_OFFLINE=1 (and there is no network here): the Hub cannot be reached
    with pytest.raises(E.Evo2CheckpointError, match=r"evo2_1b_base: cannot get its weights.*"
                                                    r"--dna_model_name /path/to/evo2_1b_base\.pt"):
        E.resolve_checkpoint("evo2_1b_base")


def test_without_the_extra_the_error_says_how_to_install(monkeypatch, tiny_ckpt):
    monkeypatch.setitem(sys.modules, "evo2.utils", None)   # as if evo2 were not installed
    with pytest.raises(E.Evo2NotInstalledError, match=re.escape('pip install -e "./BioReason[evo2]"')):
        E.build({"model_name": str(tiny_ckpt[0]), "layer": LAYER})


def test_tiny_config_has_exactly_evo2s_keys():
    assert set(E.tiny_config()) == set(E.evo2_config("evo2_1b_base"))


# ------------------------------------------------------------------ precision: FP8 / Transformer Engine

def test_fp8_without_transformer_engine_is_a_named_error(tiny_ckpt, monkeypatch):
    if _imports("transformer_engine"):
        pytest.skip("transformer_engine is installed here")
    with pytest.raises(E.TransformerEngineMissingError, match="Transformer Engine") as info:
        E.build({"model_name": str(tiny_ckpt[0]), "layer": LAYER, "fp8": True})
    assert isinstance(info.value, UserError)
    monkeypatch.setenv(E.FP8_ENV, "1")
    with pytest.raises(E.TransformerEngineMissingError):
        E.build({"model_name": str(tiny_ckpt[0]), "layer": LAYER})


def test_a_model_that_needs_fp8_warns_with_the_readme_note(tmp_path, tiny_ckpt):
    d = tmp_path / "needs_fp8"
    d.mkdir()
    (d / "tiny_evo2.pt").write_bytes((tiny_ckpt[0] / "tiny_evo2.pt").read_bytes())
    config = yaml.safe_load((tiny_ckpt[0] / "config.yml").read_text())
    config["use_fp8_input_projections"] = True      # as evo2_1b_base's config says
    (d / "config.yml").write_text(yaml.safe_dump(config))
    with pytest.warns(UserWarning, match="require FP8 via Transformer Engine.*numerical accuracy"):
        enc = E.Evo2Encoder(str(d), layer=LAYER)
    assert enc.precision == "float32" and enc.config["use_fp8_input_projections"] is False


def _imports(name):
    try:
        __import__(name)
        return True
    except Exception:
        return False


# ------------------------------------------------------------------ the shims

def test_rotary_shim_matches_vtx_torch_reference():
    from bioreason.evo2_compat import apply_rotary_torch
    from vortex.model.rotary import apply_rotary_emb_torch
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 9, 3, 16, generator=gen)
    angles = torch.randn(20, 6, generator=gen)        # rotary_dim 12 < head dim 16
    cos, sin = angles.cos(), angles.sin()
    for interleaved in (False, True):
        for offset in (0, 5):
            want = apply_rotary_emb_torch(x, cos[offset:offset + 9], sin[offset:offset + 9], interleaved)
            got = apply_rotary_torch(x, cos, sin, seqlen_offsets=offset, interleaved=interleaved)
            assert torch.allclose(got, want, atol=1e-6)
        back = apply_rotary_torch(got, cos, sin, seqlen_offsets=5, interleaved=interleaved, conjugate=True)
        assert torch.allclose(back, x, atol=1e-5)
    y = x.clone()
    assert apply_rotary_torch(y, cos, sin, inplace=True) is y and not torch.equal(y, x)


SHIM_PROBE = r"""
import importlib.util, logging, os, sys, torch
root_handlers = list(logging.getLogger().handlers)
import transformers.utils
flash_before = transformers.utils.is_flash_attn_2_available()
from bioreason import evo2_compat
shims = evo2_compat.install("cpu")
import vortex.model.model, evo2
import peft, transformers
from transformers.utils import is_flash_attn_2_available
assert is_flash_attn_2_available() == flash_before, "flash-attn availability changed"
assert importlib.util.find_spec("flash_attn") is None or flash_before
assert logging.getLogger().handlers == root_handlers, logging.getLogger().handlers
assert not os.path.exists("activations_debug.log")
with torch.cuda.device("cpu"):
    pass
print("SHIMS", sorted(shims))
"""


def test_shims_leave_the_rest_of_the_process_alone(tmp_path):
    # A fresh interpreter, in an empty directory: vtx's real logging module would create
    # ./activations_debug.log there and add handlers to the root logger.
    r = subprocess.run([sys.executable, "-c", SHIM_PROBE], cwd=tmp_path, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "BioReason")])))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "vortex.logging" in r.stdout and "torch.cuda.device" in r.stdout
    assert list(tmp_path.iterdir()) == []


def test_no_module_but_evo2_compat_assigns_sys_modules():
    """Third-party modules are patched in one place. Tests may still block an import in a child
    process with `sys.modules[name] = None` (Python's own way to make an import fail)."""
    pattern = re.compile(r"sys\.modules\s*\[[^\]]*\]\s*=(?!=)|sys\.modules\.(setdefault|update|__setitem__)\(")
    blocks_an_import = re.compile(r"sys\.modules\s*\[[^\]]*\]\s*=\s*None\b")
    allowed = ROOT / "BioReason/bioreason/evo2_compat.py"
    offenders = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in (".venv", ".git", "runs", "build", "__pycache__")
                       and not d.startswith(".venv") and d != "site-packages"]
        for filename in filenames:
            path = Path(dirpath) / filename
            if not filename.endswith(".py") or path == allowed:
                continue
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                in_tests = path.relative_to(ROOT).parts[0] == "tests"
                if pattern.search(line) and not (in_tests and blocks_an_import.search(line)):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "third-party code is patched only in bioreason/evo2_compat.py:\n" + "\n".join(offenders)


# ------------------------------------------------------------------ registered and used by the stages

def test_registered_as_the_evo2_backend_and_selected_by_the_flags(tiny_ckpt):
    from biopost.encoders import build_encoder
    from biopost.modality import get_modality
    spec = get_modality("dna").encoder_spec({"dna_is_evo2": True, "dna_model_name": str(tiny_ckpt[0]),
                                             "dna_embedding_layer": LAYER})
    assert spec["backend"] == "evo2"
    enc = build_encoder(spec)
    assert isinstance(enc, E.Evo2Encoder) and enc.layer == LAYER


ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny matmuls on a shared 2-core CPU: a second thread costs up to 40x


def test_tiny_dna_reasoning_model_does_an_sft_epoch_and_a_grpo_step(tmp_path, tiny_ckpt, synth_data):
    evo2 = ["--dna_model_name", tiny_ckpt[0], "--dna_is_evo2", "true", "--dna_embedding_layer", LAYER,
            "--data_path", synth_data, "--max_length_dna", "64"]
    sft = tmp_path / "sft"
    r = run_script([ROOT / "BioReason/train_dna_qwen.py", "--config", ROOT / "BioReason/configs/sft_tiny.yaml",
                    *evo2, "--output_dir", sft, "--num_train_epochs", "1", "--train_data_fraction", "0.03",
                    "--per_device_train_batch_size", "4", "--save_steps", "1000"], env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-3000:]
    from biopost.train.log import read_log
    log = read_log(sft / "train_log.jsonl")
    assert log and all(torch.isfinite(torch.tensor(e["loss"])) for e in log if "loss" in e)
    saved = yaml.safe_load((sft / "config.yaml").read_text())
    assert saved["dna_is_evo2"] is True

    grpo = tmp_path / "grpo"
    r = run_script([ROOT / "BioReason/train_grpo.py", "--config", ROOT / "BioReason/configs/grpo_tiny.yaml",
                    *evo2, "--output_dir", grpo, "--init", "sft", "--sft_checkpoint", sft / "checkpoints/last",
                    "--max_steps", "1", "--train_data_fraction", "0.03", "--num_generations", "2",
                    "--per_device_train_batch_size", "4", "--max_completion_length", "8"], env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_log(grpo / "train_log.jsonl")[-1]["step"] == 1

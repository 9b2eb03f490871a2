"""Protein encoders: ESM-2 / ESM C through transformers (the core's `hf` backend) and ESM-3 /
ESM C through the `esm` package (BioReason-Pro's `esm` backend). Tiny random-weight models of
the real classes, written to directories the tests make and loaded by path. No skips: `make
test` installs esm (BioReason-Pro/requirements-esm.txt)."""
import json

import pytest
import torch

from biopost.encoders import BACKENDS, build_encoder
from biopost.encoders.cache import EmbeddingCache
from biopost.modality import get_modality

SEQS = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEV", "MKTAYBZXUO", "acdefghiklmnpqrstvwy"]


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def _padding_invariant(enc, seqs=SEQS):
    batched = enc.encode(seqs)
    for seq, emb in zip(seqs, batched):
        single = enc.encode([seq])[0]
        assert emb.shape == (enc.tokens_for(seq), enc.hidden_size)
        assert torch.allclose(emb, single, atol=1e-5), "padding changed a sequence's embeddings"
    return batched


# ------------------------------------------------------------------ transformers (hf backend)

def _write_esm2(path):
    from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer
    vocab = ["<cls>", "<pad>", "<eos>", "<unk>"] + list("ACDEFGHIKLMNPQRSTVWYBZXUO") + ["<mask>"]
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = EsmTokenizer(vocab_file=str(path / "vocab.txt"))
    cfg = EsmConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, position_embedding_type="rotary", pad_token_id=1,
                    mask_token_id=len(vocab) - 1, token_dropout=False, max_position_embeddings=1026,
                    emb_layer_norm_before=False)
    torch.manual_seed(0)
    EsmForMaskedLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _write_esmc_hf(path):
    from transformers import EsmcConfig, EsmcForMaskedLM, EsmcTokenizer
    torch.manual_seed(0)
    cfg = EsmcConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    EsmcForMaskedLM(cfg).save_pretrained(path)
    EsmcTokenizer().save_pretrained(path)
    return path


@pytest.mark.parametrize("writer", [_write_esm2, _write_esmc_hf], ids=["esm2", "esmc-transformers"])
def test_hf_backend_esm_by_path(tmp_path, writer):
    """EsmForMaskedLM / EsmcForMaskedLM from a directory: BOS/EOS removed and not counted, one
    embedding per residue, padding-invariant, layer selection by hidden-state index."""
    path = writer(tmp_path / "enc")
    spec = get_modality("protein").encoder_spec({"protein_model_name": str(path)})
    assert spec["backend"] == "hf" and spec["layer"] == "-1"
    enc = build_encoder(spec)
    assert [enc.tokens_for(s) for s in SEQS] == [len(s) for s in SEQS]
    last = _padding_invariant(enc)
    first = build_encoder(dict(spec, layer="0")).encode(SEQS[:1])[0]
    assert first.shape == last[0].shape and not torch.allclose(first, last[0])


# ------------------------------------------------------------------ the esm package (esm backend)

def test_esm_package_imports_without_skip():
    """CI runs these tests: the package is installed by make (requirements-esm.txt)."""
    import esm
    assert esm.__version__.startswith("3.")
    assert "esm" in BACKENDS.names()


@pytest.mark.parametrize("arch", ["esm3", "esmc"])
def test_esm_backend_from_pretrained_by_path(tmp_path, arch):
    """A tiny ESM3 / ESMC built from esm's own class, saved (safetensors) to a directory this
    test writes, loaded by path through the registered backend: same embeddings as the model in
    memory, BOS/EOS kept and counted, padding-invariant, the cache keyed by the layer."""
    from bioreason_pro.esm_encoder import build_model, save_pretrained
    config = {"arch": arch, "d_model": 32, "n_heads": 4, "n_layers": 3, **({"v_heads": 2} if arch == "esm3" else {})}
    torch.manual_seed(1)
    model = build_model(config).eval()
    path = save_pretrained(model, config, tmp_path / arch)
    assert json.loads((path / "esm_config.json").read_text())["arch"] == arch
    spec = get_modality("protein").encoder_spec({"protein_model_name": str(path)})
    assert spec == {"model_name": str(path), "layer": "auto", "backend": "esm"}
    enc = build_encoder(spec)
    assert enc.backend == "esm" and enc.hidden_size == 32 and enc.layer == "-1"
    assert [enc.tokens_for(s) for s in SEQS] == [len(s) + 2 for s in SEQS]  # BOS + residues + EOS
    embs = _padding_invariant(enc)
    # the final layer equals the model's own normed output on the same tokens
    from bioreason_pro.esm_encoder import sequence_tokenizer
    ids = torch.tensor([sequence_tokenizer()(SEQS[0])["input_ids"]])
    with torch.no_grad():
        ref = model(sequence_tokens=ids)
    want = ref.embeddings if arch == "esmc" else model.transformer.norm(_block_outputs(model, ids)[-1])
    assert torch.allclose(embs[0], want[0], atol=1e-5)
    # layer k = the output of block k (0-based); the cache keeps the layers apart
    enc1 = build_encoder(dict(spec, layer="1"))
    assert enc1.layer == "1"
    assert torch.allclose(enc1.encode(SEQS[:1])[0], _block_outputs(model, ids)[1][0], atol=1e-5)
    c_last, c_one = EmbeddingCache(enc, tmp_path / "cache"), EmbeddingCache(enc1, tmp_path / "cache")
    assert c_last.dir != c_one.dir
    assert c_last.ensure(SEQS) == 3 and c_last.ensure(SEQS) == 0
    assert torch.allclose(c_last.get(SEQS[1]), embs[1])


def _block_outputs(model, ids):
    outs = []
    # esm >= 3.4's blocks return (hidden, attention weights)
    handles = [b.register_forward_hook(lambda m, i, o: outs.append(o[0] if isinstance(o, tuple) else o))
               for b in model.transformer.blocks]
    try:
        with torch.no_grad():
            model(sequence_tokens=ids)
    finally:
        for h in handles:
            h.remove()
    return outs


def test_esm_backend_pickled_state_dict_weights_only(tmp_path):
    """A `.pth` state dict (the published format) loads with torch.load(weights_only=True); a
    pickle that is not plain tensors is refused with a named error, never unpickled."""
    from bioreason_pro.esm_encoder import EsmLoadError, build_model
    config = {"arch": "esmc", "d_model": 32, "n_heads": 4, "n_layers": 2}
    model = build_model(config)
    d = tmp_path / "pth"
    d.mkdir()
    (d / "esm_config.json").write_text(json.dumps(config))
    torch.save(model.state_dict(), d / "weights.pth")
    enc = build_encoder({"model_name": str(d), "layer": "-1", "backend": "esm"})
    assert enc.encode(["MKT"])[0].shape == (5, 32)

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))
    (d / "weights.pth").unlink()
    torch.save({"x": Evil()}, d / "weights.pth")
    with pytest.raises(EsmLoadError, match="cannot read the weights"):
        build_encoder({"model_name": str(d), "layer": "-1", "backend": "esm"})


def test_esm_c_weights_in_either_esm_layout_load(tmp_path):
    """esm 3.4 re-implemented ESM C (EsmcForMaskedLM under the old ESMC name) with other tensor
    names; the published .pth files and checkpoints written under 3.2 use the old ones. A state
    dict in the *other* version's layout than the installed esm's loads and gives the same
    embeddings (this runs under whichever esm is installed: 3.2.1 here, 3.4.x on the GPU image)."""
    from bioreason_pro.esm_encoder import _esmc_rename, build_model, esmc_layout_for
    config = {"arch": "esmc", "d_model": 32, "n_heads": 4, "n_layers": 2}
    torch.manual_seed(0)
    model = build_model(config)
    native = model.state_dict()
    installed_is_34 = any(k.startswith("esmc.") for k in native)
    other = {_esmc_rename(k, to_34=not installed_is_34): v for k, v in native.items()}
    assert set(other).isdisjoint(native)                            # really the other vocabulary
    assert esmc_layout_for(model, other).keys() == native.keys()    # and back, name for name
    same, foreign = tmp_path / "same", tmp_path / "foreign"
    for d, state in ((same, native), (foreign, other)):
        d.mkdir()
        (d / "esm_config.json").write_text(json.dumps(config))
        torch.save(state, d / "weights.pth")
    a = build_encoder({"model_name": str(same), "layer": "-1", "backend": "esm"}).encode(SEQS)
    b = build_encoder({"model_name": str(foreign), "layer": "-1", "backend": "esm"}).encode(SEQS)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_esm_backend_named_errors(tmp_path):
    from biopost.errors import UserError
    from bioreason_pro.esm_encoder import EsmLoadError, build_model, save_pretrained
    config = {"arch": "esmc", "d_model": 32, "n_heads": 4, "n_layers": 2}
    path = save_pretrained(build_model(config), config, tmp_path / "m")
    with pytest.raises(EsmLoadError, match="outside this model's blocks"):
        build_encoder({"model_name": str(path), "layer": "5", "backend": "esm"})
    with pytest.raises(EsmLoadError, match="integer or auto"):
        build_encoder({"model_name": str(path), "layer": "blocks.1", "backend": "esm"})
    # weights of another architecture
    (path / "esm_config.json").write_text(json.dumps(dict(config, d_model=64)))
    with pytest.raises(EsmLoadError, match="do not fit"):
        build_encoder({"model_name": str(path), "backend": "esm"})
    with pytest.raises(UserError, match="unknown esm model"):
        build_encoder({"model_name": "no-such-esm-model", "backend": "esm"})
    with pytest.raises(UserError, match="neither a directory"):
        build_encoder({"model_name": str(tmp_path), "backend": "esm"})


def test_published_names_and_auto_layer():
    """esm3_sm_open_v1 (and its aliases) select the esm backend; its auto layer is 37, checked on
    the published architecture without weights (meta device: no memory)."""
    from bioreason_pro.esm_encoder import ESM3_SMALL_LAYER, EsmEncoder, build_model
    from bioreason_pro.esm_names import PUBLISHED, published_name
    for alias in ("esm3_sm_open_v1", "esm3-open", "EvolutionaryScale/esm3-sm-open-v1"):
        assert published_name(alias) == "esm3_sm_open_v1"
        assert get_modality("protein").encoder_spec({"protein_model_name": alias})["backend"] == "esm"
    assert published_name("esmc_300m") == "esmc_300m" and published_name("facebook/esm2_t6_8M_UR50D") is None
    info = PUBLISHED["esm3_sm_open_v1"]
    with torch.device("meta"):
        model = build_model(info)
    assert len(model.transformer.blocks) == 48
    enc = EsmEncoder.__new__(EsmEncoder)
    enc.config, enc.n_layers = info, 48
    assert enc._block_index("auto") == ESM3_SMALL_LAYER == 37 and enc._block_index("-1") is None
    assert enc._block_index("-2") == 46


@pytest.mark.parametrize("kind", ["esm3-protein", "esmc-protein"])
def test_tiny_esm_models_registered(kind):
    enc = build_encoder(get_modality("protein").encoder_spec({"protein_model_name": f"biopost-tiny/{kind}"}))
    assert enc.backend == "esm" and enc.hidden_size == 64
    _padding_invariant(enc)

"""BioReasoningModel: trainable parts, bio splicing, save/load, merge, loading by path, the cache."""
import shutil

import pytest
import torch
from safetensors.torch import load_file

from biopost.data.examples import collate, encode_training_example
from bioreason.synth_kegg import SynthConfig, generate
from biopost.encoders.cache import EmbeddingCache
from biopost.model.batch import Batch, document_mask
from biopost.model.bio_model import BioReasoningModel, ModelSpec
from biopost.tiny import resolve_model_path
from biopost.tasks import get_task

KEGG = get_task("kegg")


def mean_loss(model, b):
    """Mean next-token cross-entropy over the supervised positions, through the one entry point."""
    out = model(Batch(**b))
    return out.loss_sum / max(out.n_tokens, 1)


def logits(model, b):
    return model.lm_head()(model(Batch(**{k: v for k, v in b.items() if k != "labels"})).hidden).float()


def spec(rank=4, text="biopost-tiny/qwen3", dna="biopost-tiny/nt-6mer", layer="-1"):
    return ModelSpec(text_model_name=text, encoders={"dna": {"model_name": dna, "layer": layer}},
                     projectors={"dna": "linear"}, lora_rank=rank, lora_alpha=8, lora_dropout=0.0)


@pytest.fixture(scope="module")
def rows():
    return generate(SynthConfig(seed=0, sizes={"train": 4}))["train"]


def batch_for(model, rows, cache=None):
    cache = cache or EmbeddingCache(model.encoders["dna"])
    exs = [encode_training_example(model, KEGG, r, 0) for r in rows]
    return collate(exs, model.tokenizer.pad_token_id, lambda m, s: cache.get(s))


def test_lora_trains_adapters_projector_and_new_token_rows_only(rows):
    torch.manual_seed(0)
    model = BioReasoningModel.build(spec(rank=4))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in names) and "new_token_embeddings" in names
    assert any(n.startswith("projectors.dna") for n in names)
    assert not any("embed_tokens" in n or ("q_proj.base_layer" in n) for n in names)
    b = batch_for(model, rows[:2])
    loss = mean_loss(model, b)
    loss.backward()
    # the projector learns through the spliced DNA embeddings; the <|dna_start|>/<|dna_end|> rows train too
    assert model.projectors["dna"].weight.grad.abs().sum() > 0
    grads = model.new_token_embeddings.grad
    start, end = (model.new_token_ids.index(model.tokenizer.convert_tokens_to_ids(t))
                  for t in ("<|dna_start|>", "<|dna_end|>"))
    assert grads[start].abs().sum() > 0 and grads[end].abs().sum() > 0


def test_rank_zero_is_full_fine_tuning():
    model = BioReasoningModel.build(spec(rank=0))
    assert not model.is_lora
    assert all(p.requires_grad for p in model.llm.parameters())


def test_special_tokens_added_and_embeddings_resized():
    model = BioReasoningModel.build(spec(rank=4))
    n_vocab = len(model.tokenizer)
    assert model.input_embeddings().num_embeddings >= n_vocab
    for tok in ("<|dna_start|>", "<|dna_pad|>", "<|dna_end|>", "<|protein_pad|>"):
        tid = model.tokenizer.convert_tokens_to_ids(tok)
        assert tid in model.new_token_ids and model.tokenizer.tokenize(f"x{tok}y").count(tok) == 1


def test_pad_and_embedding_count_mismatch_is_an_error(rows):
    model = BioReasoningModel.build(spec(rank=4))
    b = batch_for(model, rows[:1])
    b["bio_features"]["dna"] = b["bio_features"]["dna"][:1]
    with pytest.raises(ValueError, match="pad tokens but .* embeddings"):
        mean_loss(model, b)


@pytest.mark.parametrize("rank", [4, 0])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, rows, rank):
    torch.manual_seed(1)
    model = BioReasoningModel.build(spec(rank=rank))
    with torch.no_grad():  # make the adapter and projector non-trivial
        for p in model.trainable_parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.eval()
    b = batch_for(model, rows)
    before = logits(model, b)
    model.save(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / ("adapter" if rank else "llm")).is_dir()
    loaded = BioReasoningModel.load(tmp_path / "ckpt")
    after = logits(loaded, b)
    assert torch.equal(before, after)


def test_merge_writes_a_plain_hf_model_with_the_same_outputs(tmp_path, rows):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.manual_seed(2)
    model = BioReasoningModel.build(spec(rank=4))
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.eval()
    b = batch_for(model, rows[:2])
    text = model.tokenizer("<|im_start|>user\nhello<|im_end|>", return_tensors="pt")
    with torch.no_grad():
        ref_bio = logits(model, b)
        ref_text = logits(model, {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"]})
    model.merge(tmp_path / "merged")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert tok.convert_tokens_to_ids("<|dna_pad|>") == model.pad_token_ids["dna"]
    with torch.no_grad():
        plain_text = plain(**text).logits
    assert torch.allclose(plain_text, ref_text, atol=1e-5)  # the LoRA update is in the plain weights
    again = BioReasoningModel.load(tmp_path / "merged")
    with torch.no_grad():
        merged_bio = logits(again, b)
    assert torch.allclose(merged_bio, ref_bio, atol=1e-5)


def test_models_load_by_path_through_from_pretrained(tmp_path, rows):
    text_dir, dna_dir = tmp_path / "my-qwen3", tmp_path / "my-nt"
    shutil.copytree(resolve_model_path("biopost-tiny/qwen3"), text_dir)
    shutil.copytree(resolve_model_path("biopost-tiny/nt-6mer"), dna_dir)
    model = BioReasoningModel.build(spec(rank=4, text=str(text_dir), dna=str(dna_dir)))
    assert model.spec.text_model_name == str(text_dir)
    b = batch_for(model, rows[:1])
    assert torch.isfinite(mean_loss(model, b))


def test_unavailable_hub_model_fails_with_its_name():
    with pytest.raises(OSError, match="Qwen/Qwen3-1.7B-does-not-exist"):
        BioReasoningModel.build(spec(text="Qwen/Qwen3-1.7B-does-not-exist"))


def test_corrupt_checkpoints_give_clear_errors(tmp_path):
    model = BioReasoningModel.build(spec(rank=4))
    model.save(tmp_path / "ok")
    with pytest.raises(FileNotFoundError, match="not a bio-post model directory"):
        BioReasoningModel.load(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "ok", broken)
    (broken / "bio_modules.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="bio_modules.safetensors.*unreadable"):
        BioReasoningModel.load(broken)
    no_adapter = tmp_path / "no_adapter"
    shutil.copytree(tmp_path / "ok", no_adapter)
    shutil.rmtree(no_adapter / "adapter")
    with pytest.raises(FileNotFoundError, match="no adapter"):
        BioReasoningModel.load(no_adapter)


def test_embedding_cache_encodes_each_unique_sequence_once(tmp_path):
    from biopost.encoders.hf import HFMaskedLMEncoder
    enc = HFMaskedLMEncoder("biopost-tiny/nt-6mer")
    seqs = ["ACGTACGTACGTAAA", "TTTTTTGGGGGG", "ACGTACGTACGTAAA", "acgtacgtacgtaaa"]
    cache = EmbeddingCache(enc, tmp_path)
    assert cache.ensure(seqs) == 2 and enc.n_encoded == 2
    assert cache.ensure(seqs) == 0 and enc.n_encoded == 2
    first = cache.get(seqs[0])
    assert first.shape == (enc.tokens_for(seqs[0]), enc.hidden_size)
    # a new process (new cache object, new encoder) reads the shards instead of encoding
    enc2 = HFMaskedLMEncoder("biopost-tiny/nt-6mer")
    cache2 = EmbeddingCache(enc2, tmp_path)
    assert cache2.ensure(seqs + ["GGGGGGAAAAAA"]) == 1 and enc2.n_encoded == 1
    assert torch.equal(cache2.get(seqs[0]), first)
    # another layer is another cache
    enc3 = HFMaskedLMEncoder("biopost-tiny/nt-6mer", layer=0)
    cache3 = EmbeddingCache(enc3, tmp_path)
    assert cache3.dir != cache.dir and cache3.ensure(seqs) == 2
    assert not torch.equal(cache3.get(seqs[0]), first)
    files = list(cache.dir.glob("shard-*.safetensors"))
    assert files and all(load_file(str(f)) for f in files)


def test_character_level_encoder_end_to_end(rows):
    model = BioReasoningModel.build(spec(rank=4, dna="biopost-tiny/char-dna"))
    enc = model.encoders["dna"]
    assert enc.tokens_for("ACGTN") == 5
    b = batch_for(model, rows[:1])
    assert sum(t.shape[0] for t in b["bio_features"]["dna"]) == 600
    assert torch.isfinite(mean_loss(model, b))


def test_an_unknown_encoder_backend_names_the_registered_ones():
    from biopost.encoders import build_encoder
    from biopost.errors import NotRegisteredError
    with pytest.raises(NotRegisteredError, match="unknown encoder backend 'jax'; registered: .*evo2.*hf"):
        build_encoder({"modality": "dna", "model_name": "x", "backend": "jax"})


def test_a_packed_row_equals_its_documents_run_alone(rows):
    """One entry point for packing: a row that carries cu_seqlens and restarting position ids gives
    each document the hidden states and the loss it has alone (no attention across documents, no
    loss on the boundary), with the bio embeddings spliced in place."""
    torch.manual_seed(3)
    model = BioReasoningModel.build(spec(rank=4)).eval()
    cache = EmbeddingCache(model.encoders["dna"])
    exs = [encode_training_example(model, KEGG, r, 0) for r in rows[:2]]
    alone = [collate([e], model.tokenizer.pad_token_id, lambda m, s: cache.get(s)) for e in exs]
    lengths = [a["input_ids"].shape[1] for a in alone]
    width = sum(lengths) + 3                            # + padding after the last document
    pad = model.tokenizer.pad_token_id
    ids = torch.full((1, width), pad)
    labels = torch.full((1, width), -100)
    pos = torch.zeros((1, width), dtype=torch.long)
    start = 0
    for a, n in zip(alone, lengths):
        ids[0, start:start + n], labels[0, start:start + n] = a["input_ids"][0], a["labels"][0]
        pos[0, start:start + n] = torch.arange(n)
        start += n
    cu = torch.tensor([[0, lengths[0], sum(lengths)]])
    bio = {"dna": [f for a in alone for f in a["bio_features"]["dna"]]}
    with torch.no_grad():
        packed = model(Batch(input_ids=ids, labels=labels, bio_features=bio, position_ids=pos, cu_seqlens=cu))
        singles = [model(Batch(**a)) for a in alone]
    assert packed.n_tokens == sum(s.n_tokens for s in singles) > 0
    assert packed.loss_sum.item() == pytest.approx(sum(s.loss_sum.item() for s in singles), rel=1e-5)
    assert torch.allclose(packed.hidden[0, :lengths[0]], singles[0].hidden[0], atol=1e-5)
    assert torch.allclose(packed.hidden[0, lengths[0]:sum(lengths)], singles[1].hidden[0], atol=1e-5)
    # without the document mask the second document sees the first: the check can fail (an explicit
    # mask, because transformers infers documents from restarting position ids when there is none)
    with torch.no_grad():
        leaky = model(Batch(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, bio_features=bio,
                            position_ids=pos))
    assert not torch.allclose(leaky.hidden[0, lengths[0]:sum(lengths)], singles[1].hidden[0], atol=1e-3)


def test_document_mask_is_causal_within_documents_and_isolates_padding():
    m = document_mask(torch.tensor([[0, 2, 5]]), 6)[0, 0]
    expected = torch.tensor([[1, 0, 0, 0, 0, 0],
                             [1, 1, 0, 0, 0, 0],
                             [0, 0, 1, 0, 0, 0],
                             [0, 0, 1, 1, 0, 0],
                             [0, 0, 1, 1, 1, 0],
                             [0, 0, 0, 0, 0, 1]], dtype=torch.bool)   # position 5: padding sees itself only
    assert torch.equal(m, expected)

"""Packed SFT (--tokens_per_micro_batch) and the chunked LM-head loss: packing changes how rows are
laid out, never what is learned from them (same loss and gradients as padding), resumes bit-exactly,
and leaves the unpacked default exactly as it was."""
import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import given, settings, strategies as st

from conftest import ROOT, run_script, trained_tensors

from biopost.data.examples import collate, collate_packed, encode_training_example
from biopost.encoders.cache import EmbeddingCache
from biopost.model.batch import Batch
from biopost.model.bio_model import BioReasoningModel, ModelSpec
from biopost.model.linear_ce import linear_cross_entropy_sum
from biopost.signals import REQUEUE_EXIT_CODE
from biopost.tasks import get_task
from biopost.train.log import read_log
from biopost.train.packing import balance, pack, packed_epoch, shard
from biopost.train.recipe import epoch_order
from biopost.train.sft import micro_batches
from bioreason.synth_kegg import SynthConfig, generate

SCRIPT = ROOT / "BioReason/train_dna_qwen.py"
TINY = ROOT / "BioReason/configs/sft_tiny.yaml"
KEGG = get_task("kegg")


@pytest.fixture(autouse=True, scope="module")
def _threads(one_torch_thread):
    yield


def tiny_model(rank: int) -> BioReasoningModel:
    torch.manual_seed(0)
    spec = ModelSpec(text_model_name="biopost-tiny/qwen3", encoders={"dna": {"model_name": "biopost-tiny/nt-6mer",
                                                                             "layer": "-1"}},
                     projectors={"dna": "linear"}, lora_rank=rank, lora_alpha=8, lora_dropout=0.0)
    model = BioReasoningModel.build(spec)
    with torch.no_grad():   # LoRA's B starts at zero (A's gradient too): move every trainable tensor off init
        for p in model.trainable_parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.train()


@pytest.fixture(scope="module")
def examples_and_cache():
    rows = generate(SynthConfig(seed=0, sizes={"train": 5}))["train"]
    model = tiny_model(4)
    cache = EmbeddingCache(model.encoders["dna"])
    return [encode_training_example(model, KEGG, r, 0) for r in rows], cache


def window_loss_and_grads(model, micro_batches: list[dict]):
    """One accumulation window as SFT runs it: summed CE / supervised tokens of the window."""
    model.zero_grad(set_to_none=True)
    outs = [model(Batch(**b)) for b in micro_batches]
    n_tokens = sum(o.n_tokens for o in outs)
    loss = sum(o.loss_sum for o in outs) / n_tokens
    loss.backward()
    return loss.detach(), n_tokens, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def max_diffs(a: dict, b: dict):
    """(largest absolute difference, largest one relative to its tensor's largest entry) over tensors."""
    abs_diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    rel = max(float((a[k] - b[k]).abs().max() / b[k].abs().max()) for k in a)
    return abs_diff, rel


# ---------------------------------------------------------------- (a) packed == padded

@pytest.mark.parametrize("rank", [4, 0])
def test_packed_window_has_the_padded_windows_loss_and_gradients(examples_and_cache, rank):
    """Five rows in one accumulation window: padded as micro-batches of 3 + 2 rows, packed as two
    rows of documents (3 + 2 again, and 1 + 4 so that the grouping differs too). Every trainable
    tensor's gradient (LoRA, projector, bio-token rows; with rank 0 the whole LLM) matches."""
    exs, cache = examples_and_cache
    model = tiny_model(rank)
    emb = lambda m, s: cache.get(s)  # noqa: E731
    pad = model.tokenizer.pad_token_id
    padded = [collate(exs[:3], pad, emb), collate(exs[3:], pad, emb)]
    assert int((padded[0]["attention_mask"] == 0).sum()) > 0    # the padded path really pads
    ref_loss, ref_n, ref_grads = window_loss_and_grads(model, padded)
    assert all(float(g.abs().max()) > 0 for g in ref_grads.values())
    for split in (3, 1):
        packed = [collate_packed(exs[:split], emb), collate_packed(exs[split:], emb)]
        loss, n, grads = window_loss_and_grads(model, packed)
        assert n == ref_n and grads.keys() == ref_grads.keys()
        abs_diff, rel_diff = max_diffs(grads, ref_grads)
        print(f"rank {rank} split {split}: loss {loss.item():.8f} vs {ref_loss.item():.8f}, "
              f"max |dgrad| {abs_diff:.3e}, max rel {rel_diff:.3e}")
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
        for k in grads:
            torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-5, atol=1e-6, msg=k)


def test_collate_packed_lays_documents_back_to_back(examples_and_cache):
    exs, cache = examples_and_cache
    b = collate_packed(exs[:3], lambda m, s: cache.get(s))
    lengths = [len(e.input_ids) for e in exs[:3]]
    assert b["input_ids"].shape == (1, sum(lengths))     # no padding at all
    assert b["cu_seqlens"].tolist() == [[0, lengths[0], lengths[0] + lengths[1], sum(lengths)]]
    assert b["position_ids"][0].tolist() == [p for n in lengths for p in range(n)]
    assert b["labels"][0].tolist() == [t for e in exs[:3] for t in e.labels]   # assistant-only mask unchanged
    assert len(b["bio_features"]["dna"]) == sum(len(e.bio) for e in exs[:3])


# ---------------------------------------------------------------- chunked LM head + cross-entropy

def test_chunked_loss_equals_the_unchunked_one(examples_and_cache):
    exs, cache = examples_and_cache
    model = tiny_model(0)   # full fine-tuning: the LM head's weight gets a gradient through the chunks too
    batch = [collate_packed(exs, lambda m, s: cache.get(s))]
    ref_loss, n, ref_grads = window_loss_and_grads(model, batch)
    model.loss_chunk_tokens = 7
    assert n > 3 * model.loss_chunk_tokens     # many chunks, the last one partial unless n divides
    loss, _, grads = window_loss_and_grads(model, batch)
    abs_diff, rel_diff = max_diffs(grads, ref_grads)
    print(f"chunked: loss {loss.item():.8f} vs {ref_loss.item():.8f}, max |dgrad| {abs_diff:.3e}, rel {rel_diff:.3e}")
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    for k in grads:
        torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-5, atol=1e-6, msg=k)


def test_chunks_keep_no_full_vocabulary_logits_for_the_backward_pass():
    """What autograd saves for the backward pass: unchunked, the (N, V) log-softmax; chunked, only
    the chunk inputs (the logits are recomputed chunk by chunk)."""
    torch.manual_seed(0)
    N, d, V = 64, 16, 500
    head = torch.nn.Linear(d, V, bias=False)
    hidden = torch.randn(N, d, requires_grad=True)
    targets = torch.randint(0, V, (N,))

    def widest_saved(chunk):
        widest = [0]

        def pack_hook(t):
            if t.dim() == 2 and t.shape[-1] == V:
                widest[0] = max(widest[0], t.shape[0])
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t):
            loss = linear_cross_entropy_sum(head, hidden, targets, chunk)
        return widest[0], loss

    full_rows, full = widest_saved(0)
    chunk_rows, chunked = widest_saved(8)
    assert full_rows == N and chunk_rows == 0
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-6)
    # with as many positions as the chunk size or fewer: the plain pass, bit for bit
    assert torch.equal(linear_cross_entropy_sum(head, hidden, targets, N), full)


# ---------------------------------------------------------------- (c) the packer

lengths_st = st.lists(st.integers(1, 300), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(lengths=lengths_st, budget=st.integers(1, 700), seed=st.integers(0, 5), epoch=st.integers(0, 3))
def test_packing_covers_every_row_once_in_order_within_budget(lengths, budget, seed, epoch):
    batches = packed_epoch(lengths, budget, seed, epoch)
    assert batches == packed_epoch(lengths, budget, seed, epoch)                   # deterministic
    assert [i for mb in batches for i in mb] == epoch_order(len(lengths), seed, epoch)   # each row once, in order
    for k, mb in enumerate(batches):
        tokens = sum(lengths[i] for i in mb)
        assert mb and (tokens <= budget or len(mb) == 1)         # over budget only as a row alone
        if k + 1 < len(batches):                                 # greedy: the next row did not fit
            assert tokens + lengths[batches[k + 1][0]] > budget


def test_a_row_longer_than_the_budget_is_alone_and_whole():
    assert pack([0, 1, 2, 3], [3, 10, 2, 2], budget=5) == [[0], [1], [2, 3]]
    assert pack([0, 2, 1], [3, 4, 9], budget=8) == [[0], [2], [1]]   # the open batch closes before row 2


@settings(max_examples=200, deadline=None)
@given(lengths=lengths_st, budget=st.integers(1, 700), world=st.integers(1, 4), accum=st.integers(1, 4))
def test_every_rank_gets_the_same_number_of_micro_batches_in_every_step(lengths, budget, world, accum):
    batches = packed_epoch(lengths, budget, 0, 0)
    ranks = shard(batches, world, accum)
    counts = {len(r) for r in ranks}
    assert len(counts) == 1
    per_rank = counts.pop()
    balanced = balance(batches, world)
    assert per_rank * world == len(balanced)
    for s in range(math.ceil(per_rank / accum)):                # step s: every rank's share of one window
        window = balanced[s * world * accum:(s + 1) * world * accum]
        shares = [r[s * accum:(s + 1) * accum] for r in ranks]
        assert len({len(x) for x in shares}) == 1
        assert sorted(map(tuple, window)) == sorted(tuple(mb) for x in shares for mb in x)
    rows = [i for r in ranks for mb in r for i in mb]
    n = len(lengths)
    if math.ceil(len(batches) / world) * world <= n:            # enough rows to split into: none lost
        assert sorted(rows) == list(range(n))
    else:                                                       # all single rows: the epoch's last n % W go
        assert sorted(rows) == sorted(epoch_order(n, 0, 0)[:n - n % world])
    for mb in balanced:                                         # splits keep the budget
        assert sum(lengths[i] for i in mb) <= budget or len(mb) == 1


def test_rank_balance_with_two_ranks_splits_rather_than_pads_or_drops():
    lengths = [4, 4, 4, 4, 4]
    batches = pack(list(range(5)), lengths, budget=8)           # [[0, 1], [2, 3], [4]]: three, odd
    ranks = shard(batches, 2, accum=1)
    assert ranks == [[[0, 1], [3]], [[2], [4]]]                 # the last two-row batch halved
    assert shard(batches, 1, accum=3) == [batches]              # one rank: unchanged
    # only single-row micro-batches left and an odd count: the epoch's last row is dropped
    assert shard([[0], [1], [2]], 2, accum=1) == [[[0]], [[1]]]


def test_the_schedule_counts_each_epochs_own_packing(capsys):
    """Epochs pack differently (each its own order): the total is the sum of every epoch's steps,
    not epochs x epoch 0's, and it is logged before training."""
    from types import SimpleNamespace
    from biopost.train.sft import plan_steps
    rng = random.Random(1)
    lengths = [rng.randint(1, 30) for _ in range(40)]
    cfg = SimpleNamespace(gradient_accumulation_steps=1, tokens_per_micro_batch=40, seed=0, num_train_epochs=3,
                          max_steps=-1, per_device_train_batch_size=4)
    per_epoch, total = plan_steps(cfg, lengths)
    assert per_epoch == [len(packed_epoch(lengths, 40, 0, e)) for e in range(3)] == [22, 21, 20]
    assert total == 63 != 3 * per_epoch[0]
    assert "optimizer steps per epoch [22, 21, 20]" in capsys.readouterr().err
    assert plan_steps(SimpleNamespace(**dict(vars(cfg), max_steps=5)), lengths)[1] == 5
    plan_steps(SimpleNamespace(**dict(vars(cfg), tokens_per_micro_batch=25)), lengths)
    n_over = sum(n > 25 for n in lengths)
    assert n_over and f"{n_over} rows are longer than --tokens_per_micro_batch 25" in capsys.readouterr().err
    unpacked = SimpleNamespace(**dict(vars(cfg), tokens_per_micro_batch=0, gradient_accumulation_steps=3))
    assert plan_steps(unpacked, lengths) == ([4, 4, 4], 12)      # ceil(ceil(40 / 4) / 3), as before packing


# ---------------------------------------------------------------- (b), (d) runs

# Bit-exact packed resume holds with one torch thread per process. With two threads a resumed packed
# run differed from the uninterrupted one in a clean-clone CI run and in 1 of 2 tries by hand, while
# two uninterrupted two-thread runs were identical: not understood yet (open in the throughput
# issue). The padded SFT resume test stays bit-exact with two threads.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _packed_args(synth_data, out, max_steps=18):
    # 96 rows of about 280 tokens, 900-token micro-batches (3 rows), accumulation 2: 16 steps per epoch
    return [SCRIPT, "--config", TINY, "--data_path", synth_data, "--output_dir", out,
            "--train_data_fraction", "0.16", "--tokens_per_micro_batch", "900",
            "--gradient_accumulation_steps", "2", "--max_steps", str(max_steps), "--save_steps", "4",
            "--lora_rank", "4", "--lora_dropout", "0.1", "--learning_rate", "1e-3", "--logging_steps", "1"]


def test_packed_sigterm_resume_is_bit_identical(tmp_path, synth_data):
    straight = tmp_path / "straight"
    r = run_script(_packed_args(synth_data, straight), env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "packing into micro-batches of <= 900 tokens" in r.stderr

    interrupted = tmp_path / "interrupted"
    env = dict(os.environ, PYTHONUNBUFFERED="1", **ONE_THREAD)
    proc = subprocess.Popen([sys.executable, *map(str, _packed_args(synth_data, interrupted))], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = interrupted / "train_log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and any(e.get("step", 0) >= 2 for e in read_log(log)):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == REQUEUE_EXIT_CODE, err[-2000:]
    state = json.loads((interrupted / "checkpoints/last/trainer_state.json").read_text())
    assert 2 <= state["step"] < 12 and state["epoch"] == 0 and state["micro"] > 0   # mid-epoch
    r = run_script(_packed_args(synth_data, interrupted), env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from" in r.stderr
    a, b = trained_tensors(straight), trained_tensors(interrupted)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la, lb = read_log(straight / "train_log.jsonl"), read_log(interrupted / "train_log.jsonl")
    assert [e["step"] for e in la] == [e["step"] for e in lb] == list(range(1, 19))
    drop = ("step_time_s", "tokens_per_s")
    assert [{k: v for k, v in e.items() if k not in drop} for e in la] == \
           [{k: v for k, v in e.items() if k not in drop} for e in lb]
    assert any(e["epoch"] >= 1 for e in la)       # the run crossed into the second, differently packed epoch


def test_packed_epochs_see_every_supervised_token_once_and_follow_the_planned_steps(tmp_path, synth_data):
    """Two epochs without --max_steps: the run takes exactly the planned steps (each epoch its own
    count) and each epoch's windows together supervise as many tokens as the unpacked epoch's."""
    runs = {}
    for budget in (0, 1500):
        out = tmp_path / f"b{budget}"
        r = run_script([SCRIPT, "--config", TINY, "--data_path", synth_data, "--output_dir", out,
                        "--train_data_fraction", "0.05", "--num_train_epochs", "2", "--tokens_per_micro_batch",
                        str(budget), "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2",
                        "--lora_rank", "4", "--save_steps", "1000"])
        assert r.returncode == 0, r.stderr[-2000:]
        runs[budget] = read_log(out / "train_log.jsonl")
    done = json.loads((tmp_path / "b1500/train_done.json").read_text())
    state = json.loads((tmp_path / "b1500/checkpoints/last/trainer_state.json").read_text())
    assert state["epoch"] == 2 and state["micro"] == 0 and done["step"] == done["total_steps"] == len(runs[1500])
    per_epoch_tokens = {}
    for budget, entries in runs.items():
        steps = [len(entries) // 2] * 2 if budget == 0 else None
        if steps is None:   # the packed epochs' step counts, read back from where the epoch counter turns
            first = next(k for k, e in enumerate(entries) if e["epoch"] >= 1)
            steps = [first + 1, len(entries) - first - 1]
        ends = [0, steps[0], steps[0] + steps[1]]
        per_epoch_tokens[budget] = [sum(e["n_tokens"] for e in entries[ends[k]:ends[k + 1]]) for k in range(2)]
    assert per_epoch_tokens[1500] == per_epoch_tokens[0]
    assert len(runs[1500]) < len(runs[0])         # 1500 tokens hold 5 rows of ~280, more than the 4 padded ones


def test_no_packing_keeps_todays_batching_and_numbers(tmp_path, synth_data):
    """--tokens_per_micro_batch 0 (the default) is the padded batching as it was: the micro-batches of
    a seed and epoch, and a short run's supervised tokens and losses recorded before packing existed."""
    assert micro_batches(10, 3, 0, 0) == [[4, 1, 7], [5, 3, 9], [0, 8, 6], [2]]
    assert micro_batches(10, 3, 0, 1) == [[5, 6, 1], [2, 0, 8], [9, 3, 7], [4]]
    out = tmp_path / "run"
    r = run_script([SCRIPT, "--config", TINY, "--data_path", synth_data, "--output_dir", out,
                    "--train_data_fraction", "0.05", "--per_device_train_batch_size", "4",
                    "--gradient_accumulation_steps", "2", "--max_steps", "3", "--lora_rank", "4",
                    "--lora_dropout", "0.1", "--tokens_per_micro_batch", "0"])
    assert r.returncode == 0, r.stderr[-2000:]
    entries = read_log(out / "train_log.jsonl")
    assert [e["n_tokens"] for e in entries] == [521, 526, 509]
    # recorded on main before this change (exactly equal there; a tolerance for other CPUs' rounding)
    assert [e["loss"] for e in entries] == pytest.approx([6.880249257737524, 6.793086410928589, 6.712323921368492],
                                                          rel=1e-6)

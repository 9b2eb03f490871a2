"""GRPO rewards: the core registry and the DNA rewards (correctness, format, concise), each on its own
with multi-line completions -- the published code's format regex lacked DOTALL and never fired."""
import pytest

import bioreason.rewards as R
from biopost.train import rewards as core

ROW = {"answer": "Parkinson disease", "gold": "Parkinson disease"}

GOOD = "<think>\nThe variant creates a motif.\nIt sits in a kinase gene.\n</think>\n\nAnswer: Parkinson disease"


def test_dna_rewards_are_registered_by_name():
    for name in ("correctness", "format", "concise"):
        assert callable(core.get_reward(name))
    assert core.get_reward("format") is R.format_reward


def test_registry_rejects_silent_overrides_and_names_the_package():
    core.register_reward("correctness", R.correctness)  # same function again: fine
    with pytest.raises(ValueError, match="already registered"):
        core.register_reward("correctness", lambda c, r: [0.0] * len(c))
    with pytest.raises(KeyError, match="not registered"):
        core.get_reward("no_such_reward")
    with pytest.raises(ValueError, match="reward_weights"):
        core.resolve_rewards(["correctness", "format"], [1.0])
    assert [(n, w) for n, _, w in core.resolve_rewards(["correctness", "format"], [])] == \
        [("correctness", 1.0), ("format", 1.0)]


def test_score_checks_what_a_reward_returns():
    with pytest.raises(ValueError, match="returned 1 values for 2"):
        core.score(lambda c, r: [1.0], "bad", ["a", "b"], [{}, {}])
    with pytest.raises(ValueError, match="finite"):
        core.score(lambda c, r: [float("nan")], "bad", ["a"], [{}])
    assert core.score(lambda c, r: [1, True], "ok", ["a", "b"], [{}, {}]) == [1.0, 1.0]


@pytest.mark.parametrize("text,expected", [
    (GOOD, 1.0),
    ("<think>\nline one\nline two\n</think>\n\nAnswer: parkinson  DISEASE.", 1.0),        # normalized
    ("<think>\nmulti\nline\n</think>\n\n**Answer:** Parkinson Disease<|im_end|>", 1.0),
    ("Answer: Parkinson disease", 1.0),                        # no think block: still the answer
    (GOOD.replace("Parkinson disease", "Alzheimer disease"), 0.0),
    ("<think>\nParkinson disease\n", 0.0),                    # think block never closed: no answer
    ("<think>\nreasoning\n</think>\n\n", 0.0),                 # nothing after the think block
    ("", 0.0),
])
def test_correctness(text, expected):
    assert R.correctness([text], [ROW]) == [expected]


def test_correctness_falls_back_to_the_answer_column_and_scores_a_batch():
    rows = [{"answer": "benign"}, {"answer": "pathogenic; Cushing syndrome"}]
    texts = ["<think>\nx\n</think>\nAnswer: Benign", "<think>\ny\n</think>\nAnswer: pathogenic ;  cushing syndrome"]
    assert R.correctness(texts, rows) == [1.0, 1.0]
    assert R.correctness(texts[::-1], rows) == [0.0, 0.0]


@pytest.mark.parametrize("text,expected", [
    (GOOD, 1.0),                                                     # a multi-line think block (DOTALL)
    ("  <think>\n\nstep 1\n\nstep 2\n</think>\nAnswer: benign<|im_end|>", 1.0),
    ("<think>\nno close tag\nAnswer: benign", 0.0),
    ("Answer: benign", 0.0),                                         # no think block
    ("<think>a</think><think>b</think>\nAnswer: benign", 0.0),       # twice
    ("<think>\nx\n</think>\n</think>\nAnswer: benign", 0.0),         # a stray close tag
    ("Preamble\n<think>\nx\n</think>\nAnswer: benign", 0.0),         # the block must open the completion
    ("<think>\nx\n</think>\n\n", 0.0),                               # no answer after it
])
def test_format(text, expected):
    assert R.format_reward([text], [ROW]) == [expected]


def test_concise_rewards_short_answered_completions_only():
    short = GOOD
    long_ = "<think>\n" + "word " * 1000 + "\n</think>\nAnswer: benign"            # ~5,000 characters
    mid = "<think>\n" + "x" * 2500 + "\n</think>\nAnswer: benign"
    scores = R.concise([short, long_, mid, "<think>\nunfinished"], [ROW] * 4)
    assert scores[0] == 1.0 and scores[1] == 0.0 and scores[3] == 0.0
    n = len(mid)
    assert scores[2] == pytest.approx((R.CONCISE_ZERO_CHARS - n) / (R.CONCISE_ZERO_CHARS - R.CONCISE_TARGET_CHARS))
    assert 0.0 < scores[2] < 1.0

"""GRPO rewards: the core registry and the built-in rewards (correctness = the task's own example
score, format, concise), each on its own with multi-line completions -- the published code's format
regex lacked DOTALL and never fired."""
import pytest

from biopost import rewards as core
from biopost import rewards as R
from biopost.errors import NotRegisteredError
from biopost.tasks import get_task

KEGG = get_task("kegg")

ROW = {"answer": "Parkinson disease", "gold": "Parkinson disease"}

GOOD = "<think>\nThe variant creates a motif.\nIt sits in a kinase gene.\n</think>\n\nAnswer: Parkinson disease"


def test_built_in_rewards_are_registered_by_name():
    for name in ("correctness", "format", "concise"):
        assert callable(core.get_reward(name))
    assert core.get_reward("format") is R.format_reward


def test_registry_rejects_silent_overrides_and_lists_what_is_registered():
    core.register_reward("correctness", R.correctness)  # same function again: fine
    with pytest.raises(ValueError, match="already registered"):
        core.register_reward("correctness", lambda c, r: [0.0] * len(c))
    with pytest.raises(NotRegisteredError, match="unknown reward 'no_such_reward'; registered: .*concise"):
        core.get_reward("no_such_reward")
    with pytest.raises(ValueError, match="reward_weights"):
        core.resolve_rewards(["correctness", "format"], [1.0], task=KEGG)
    with pytest.raises(ValueError, match="give a task"):
        core.resolve_rewards(["correctness"], [])
    assert [(n, w) for n, _, w in core.resolve_rewards(["correctness", "format"], [], task=KEGG)] == \
        [("correctness", 1.0), ("format", 1.0)]


def test_correctness_is_the_tasks_example_score():
    """One parse rule for metric and reward: the reward of a completion equals the per-example
    score the task's metric gives the same completion."""
    texts = [GOOD, "Answer: Alzheimer disease", "<think>\nunfinished", "Answer: parkinson disease."]
    rewards = R.correctness(texts, [ROW] * 4, task=KEGG)
    result = KEGG.metrics([ROW["gold"]] * 4, [KEGG.parse(t) for t in texts], bootstrap_resamples=0)
    assert rewards == result.per_example == [1.0, 0.0, 0.0, 1.0]


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
    assert R.correctness([text], [ROW], task=KEGG) == [expected]


def test_correctness_falls_back_to_the_answer_column_and_scores_a_batch():
    rows = [{"answer": "benign"}, {"answer": "pathogenic; Cushing syndrome"}]
    texts = ["<think>\nx\n</think>\nAnswer: Benign", "<think>\ny\n</think>\nAnswer: pathogenic ;  cushing syndrome"]
    assert R.correctness(texts, rows, task=KEGG) == [1.0, 1.0]
    assert R.correctness(texts[::-1], rows, task=KEGG) == [0.0, 0.0]


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

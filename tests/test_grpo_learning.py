"""GRPO learns from a correctness reward alone, and a shuffled-reward control does not.

Toy task: the label (yes / no) is written in the prompt ("Item 3: reply with no no no ..."), so the
correct answer is determined by the prompt text. A tiny random Qwen3 first gets a few SFT steps on
uniformly random labels: it learns the answer format (`Answer: yes|no`) but picks labels at chance
(~0.5). GRPO with the correctness reward only (no format reward) must then raise the mean reward;
the control run is identical except that each batch's rewards are permuted across completions,
which keeps the batch mean (so its logged reward is still the true accuracy) but cuts the link
between a completion and its reward.

Why these settings: every generation batch holds all 8 prompts (4 yes, 4 no), so prompt-independent
drift cancels; completions are cut after 3 tokens (`Answer`, `:`, label), so the stop token is never
sampled and its tied embedding row cannot drift into an early stop; a KL penalty (beta 0.1, against
the frozen initial model: the full-fine-tuning reference path) keeps Adam's noise on a 0.5M-parameter
random model from wrecking the format. Measured over seeds 0-5: +0.25 to +0.45 for the real run.
"""
import json
import random

import pytest
import torch

from biopost.config import from_dict
from conftest import write_split
from biopost.data.schema import RowSchema
from biopost.tasks import classification_task, get_task, register_task
from biopost.train.grpo import GRPOConfig, train_grpo
from biopost.train.log import read_log
from biopost.rewards import get_reward, register_reward
from biopost.train.sft import SFTConfig, train_sft

pytestmark = pytest.mark.slow
LABELS = ["yes", "no"]
SCHEMA = RowSchema(name="toy_echo", text=("question", "answer"))
register_task(classification_task("toy_echo", "dna", SCHEMA, SCHEMA,
                                  prompt_messages=lambda row, system_prompt=None: [{"role": "user",
                                                                                    "content": row["question"]}],
                                  target_text=lambda row: f"Answer: {row['answer']}", gold=lambda row: row["answer"]))
MODELS = dict(task="toy_echo", text_model_name="biopost-tiny/qwen3", dna_model_name="biopost-tiny/nt-6mer",
              seed=0, resume="never", max_length_text=64)
_shuffler = random.Random(0)


def correctness_shuffled(completions, rows):
    rewards = get_reward("correctness")(completions, rows, task=get_task("toy_echo"))
    _shuffler.shuffle(rewards)
    return rewards


register_reward("correctness_shuffled", correctness_shuffled, replace=True)


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test here runs torch on one thread (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_echo")
    questions = [(f"Item {k}: reply with " + " ".join([LABELS[k % 2]] * 8) + ".", LABELS[k % 2]) for k in range(8)]
    rng = random.Random(0)
    sft_rows = [{"question": q, "answer": rng.choice(LABELS)} for q, _ in questions for _ in range(4)]
    rl_data = write_split(root / "rl", [{"question": q, "answer": a} for q, a in questions])
    sft_data = write_split(root / "sft", sft_rows)
    sft_cfg = from_dict(SFTConfig, dict(MODELS, lora_rank=0, data_path=str(sft_data), output_dir=str(root / "sft_run"),
                                        learning_rate=2e-3, max_steps=60, per_device_train_batch_size=8,
                                        gradient_accumulation_steps=1, lr_scheduler_type="constant",
                                        warmup_ratio=0.0, save_steps=1000))
    assert train_sft(sft_cfg) == 0
    return root, rl_data, root / "sft_run/checkpoints/last"


def run_grpo(toy, reward):
    root, data, sft = toy
    cfg = from_dict(GRPOConfig, dict(
        MODELS, data_path=str(data), output_dir=str(root / f"grpo_{reward}"), init="sft", sft_checkpoint=str(sft),
        reward_funcs=[reward], num_generations=4, per_device_train_batch_size=32, max_completion_length=3,
        learning_rate=5e-4, beta=0.1, loss_type="dapo", max_steps=60, save_steps=1000))
    assert train_grpo(cfg) == 0
    log = read_log(root / f"grpo_{reward}/train_log.jsonl")
    assert len(log) == 60
    rewards = [e["reward"] for e in log]
    return sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10, log


def test_correctness_reward_alone_teaches_the_prompt_determined_answer(toy):
    first, last, log = run_grpo(toy, "correctness")
    assert 0.3 < first < 0.7                     # the SFT policy answers at chance
    assert last > first + 0.2 and last > 0.8     # ... and GRPO makes it read the prompt
    assert all(e["rewards/correctness"] == e["reward"] for e in log)
    # the KL reference is live: the policy moved away from the frozen initial model
    assert log[0]["kl"] == pytest.approx(0.0, abs=1e-6) and log[-1]["kl"] > 1e-3

    c_first, c_last, c_log = run_grpo(toy, "correctness_shuffled")
    assert c_last < c_first + 0.15 and c_last < 0.65   # shuffled rewards: no learning
    assert last > c_last + 0.25

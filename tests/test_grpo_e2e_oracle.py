"""End-to-end oracle: our GRPO training loop ends where TRL 1.16's GRPOTrainer.train() ends.

tests/test_grpo_oracle.py checks one loss and gradient against TRL on fixed tensors; it cannot see
a bug in the loop around them (a ratio that is identically 1, old log-probs taken at the wrong
time, a generation batch reused in the wrong order, wrong accumulation or normalization across
micro-batches, an optimizer or schedule that differs). Here the project's real loop,
`biopost.train.grpo.train_grpo(cfg)`, and a real `trl.GRPOTrainer(...).train()` run several
optimizer steps from the same weights on the same data, and must end on the same weights:

  * θ_0: a LoRA checkpoint (BioReasoningModel.save, nonzero lora_B so A and B both get gradients)
    that ours continues with `init: sft` and that TRL gets as the PeftModel BioReasoningModel.load
    builds from it (its peft adapter, the same resized tokenizer). Asserted equal before training.
  * Rollouts: fixed completions keyed by the prompt's token ids (some end in <|im_end|>, some are
    cut at max_completion_length), through a test engine registered in ENGINES on our side and
    TRL's `rollout_func` hook on its side; fixed rewards keyed by the completion text, one
    registered reward function on our side, the same mapping as TRL's reward function; prompts 1
    and 5 have a constant reward (zero std: advantage 0, only the KL moves them). A text-only task
    (registered here, as tests/test_grpo_learning.py does): TRL has no bio encoder.
  * Everything else equal: fp32 on CPU, a constant learning rate, AdamW (0.9, 0.999, 1e-8, no
    weight decay), max_grad_norm 1, LoRA dropout 0, the temperature, epsilon / epsilon_high /
    delta, scale_rewards, the KL estimator, mask_truncated_completions; the reference is the
    initial adapter on both sides (ours: frozen copies; TRL: its "ref" copy of the adapter).

After STEPS optimizer steps the updates θ_T - θ_0 agree per LoRA tensor to a relative L2 error of
1e-4, with a learning rate large enough that the update is at least 1% of the parameters (so a
loop that skips steps, reuses stale old log-probs or mis-normalizes cannot hide in the tolerance),
and the per-step loss, KL, entropy, grad norm and clip fractions agree. On the steps that reuse a
generation batch the ratio must really have moved away from 1 (ours logs max |rho - 1|; TRL logs no
ratio, but its clip fractions, equal to ours, must be nonzero on some reused step), and exactly 1
on a fresh one. Measured: relative update errors 1e-6 to 6e-5. The largest sit in one tensor of
one run (a LoRA matrix whose Adam-normalized update is sensitive to fp32 rounding); ours against
ours with the LM head in 3-token chunks (the same math, other rounding) differs as much there.

Where the two loops legitimately differ, the test pins or skips, it does not bend production code:
  * TRL shuffles the rows of a generation batch before cutting it into micro-batches
    (`shuffle_sequence_dict`); ours keeps each group whole in one micro-batch. A data-order
    choice: the shuffle is patched to the identity here.
  * Prompt order: the dataset is exactly one generation batch of prompts. Where a generation batch
    is consumed by one optimizer step (steps_per_generation <= gradient_accumulation_steps) the
    order inside it cannot matter: every loss type is a sum over the window's rows divided by a
    constant (grpo: sequences per micro-batch x accumulation; dr_grpo: that x
    max_completion_length; dapo: the generation batch's tokens), the advantages are per group or
    over the whole batch, and the clipped gradient norm is of the window's total. There TRL reads
    the prompts in the reverse of our first epoch's order (and ours reshuffles per epoch with
    `epoch_order` while TRL does not), so the test checks that claim. Where steps_per_generation >
    accumulation the order decides which prompts each optimizer step sees: those cases run within
    one generation batch, and TRL reads the dataset in our epoch-0 order (shuffle_dataset false).
  * Logged means: TRL averages each micro-batch's masked mean over the step; ours pools the
    step's tokens. Every group here has the same number of loss tokens (with and without the
    truncated ones), so every micro-batch of whole groups does too and the two coincide.
  * Logged KL with use_bias_correction_kl: TRL logs the term it optimizes, k3 x ratio; ours logs
    the plain k3 mean (grpo.py's documented KL). Compared only where the ratio is 1.
"""
import json
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file

trl = pytest.importorskip("trl")

from biopost.config import from_dict  # noqa: E402
from biopost.data.examples import encode_prompt  # noqa: E402
from biopost.data.schema import RowSchema  # noqa: E402
from biopost.generate.engine import ENGINES  # noqa: E402
from biopost.generate.sampling import Generation  # noqa: E402
from biopost.model.bio_model import BioReasoningModel, ModelSpec  # noqa: E402
from biopost.rewards import REWARDS  # noqa: E402
from biopost.tasks import TASKS, classification_task  # noqa: E402
from biopost.train.grpo import GRPOConfig, train_grpo  # noqa: E402
from biopost.train.log import read_log  # noqa: E402
from biopost.train.sft import epoch_order  # noqa: E402

NAME = "e2e_oracle"      # the task, engine and reward registered for this module
G = 4                    # completions per prompt
BATCH = 8                # completions per micro-batch: two whole groups
MAX_LEN = 8              # max_completion_length
N_PROMPTS = 8            # the pool: steps_per_generation 4 needs 4 x 8 / 4 prompts
STEPS = 4                # optimizer steps per run
TEMPERATURE = 0.7
LR = 1e-3
SEED = 3
# per group: completion lengths and which are cut at MAX_LEN without a stop token. Every group has
# 22 tokens, 14 of them in completions that stopped (see the module docstring: logged means)
LENGTHS = [(3, 8, 5, 6), (8, 2, 7, 5), (4, 6, 8, 4), (8, 7, 3, 4)]
TRUNCATED = [(False, True, False, False), (True, False, False, False), (False, False, True, False),
             (True, False, False, False)]
# per prompt: the rewards of its G completions; prompts 1 and 5 all equal: zero std
REWARDS_BY_PROMPT = [(1.0, 0.0, 0.5, 0.0), (0.3, 0.3, 0.3, 0.3), (0.0, 1.0, 1.0, 0.2), (0.9, 0.1, 0.4, 0.6),
                     (0.2, 0.8, 0.0, 0.0), (1.0, 1.0, 1.0, 1.0), (0.5, 0.0, 1.0, 0.7), (0.0, 0.0, 0.1, 1.0)]

LOSS_TYPES = ("grpo", "dr_grpo", "dapo")
# (loss_type, beta, num_iterations, gradient_accumulation_steps, steps_per_generation, other settings)
# epsilon 0.1 / epsilon_high 0.15 unless a case says otherwise (narrower than TRL's 0.2: with four steps
# the ratio moves by up to ~0.5, and clipping should fire on reused batches)
# 1. every loss type x beta 0 / 0.04 x num_iterations 1 / 2 x accumulation 1 / 2, one generation batch
#    per accumulation window (TRL's default): ratio 1 without an old-policy pass (mu 1), or a batch
#    reused by the next optimizer step (mu 2)
FACTORIAL = [(lt, beta, mu, accum, accum, {}) for lt in LOSS_TYPES for beta in (0.0, 0.04) for mu in (1, 2)
             for accum in (1, 2)]
# 2. a generation batch that spans several optimizer steps (steps_per_generation > accumulation): each
#    step takes the next micro-batches of the same batch, their old log-probs from the policy that
#    generated it. STEPS x accumulation = steps_per_generation x num_iterations: one batch, one epoch
SPANNING = [(lt, beta, mu, accum, spg, {}) for lt, beta in zip(LOSS_TYPES, (0.04, 0.0, 0.04))
            for mu, accum, spg in ((1, 1, 4), (2, 1, 2), (2, 2, 4))]
# 3. the remaining settings, each on a shape that reuses batches. A sequence-level ratio averages its
#    tokens' log-ratios, so it moves less: GSPO's small epsilons (as its paper's 3e-4 / 4e-4, here
#    larger for a 4-step run) make it clip; the caps sit just above 1 + epsilon_high so that they bind
NARROW = dict(epsilon=0.05, epsilon_high=0.06)
OTHERS = [
    ("grpo", 0.04, 2, 2, 2, dict(scale_rewards="batch")),
    ("dr_grpo", 0.0, 2, 1, 2, dict(scale_rewards="none")),
    ("dapo", 0.04, 2, 2, 2, dict(mask_truncated_completions=True)),
    ("dr_grpo", 0.04, 2, 1, 1, dict(mask_truncated_completions=True, scale_rewards="batch")),
    ("dapo", 0.04, 2, 2, 4, dict(use_bias_correction_kl=True)),           # TRL 1.16's default KL: k3 x ratio
    ("grpo", 0.04, 2, 2, 2, dict(importance_sampling_level="sequence")),   # GSPO
    ("dapo", 0.0, 2, 2, 2, dict(importance_sampling_level="sequence", scale_rewards="none", **NARROW)),
    # two-sided clipping: at the sequence level as BioReason-Pro, per token as INTELLECT-2
    ("dapo", 0.04, 2, 2, 4, dict(importance_sampling_level="sequence", delta=1.011, epsilon=0.01,
                                 epsilon_high=0.01)),
    ("dr_grpo", 0.0, 2, 2, 2, dict(delta=1.07, **NARROW)),
]
CASES = FACTORIAL + SPANNING + OTHERS


def case_id(case):
    lt, beta, mu, accum, spg, extra = case
    return "-".join([lt, f"beta{beta:g}", f"mu{mu}", f"accum{accum}", f"spg{spg}"]
                    + [f"{k}={v}" for k, v in extra.items()])


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test here runs torch on one thread (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """θ_0 on disk, the prompts and their fixed completions and rewards, and the registered task,
    engine and reward (unregistered afterwards)."""
    root = tmp_path_factory.mktemp("e2e_oracle")
    torch.manual_seed(0)
    spec = ModelSpec(text_model_name="biopost-tiny/qwen3", encoders={}, projectors={}, lora_rank=4, lora_alpha=8,
                     lora_dropout=0.0)
    model = BioReasoningModel.build(spec)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():   # a trained-looking adapter: with lora_B = 0 lora_A would get no gradient
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    ckpt = root / "theta0"
    model.save(ckpt)
    tok = model.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.eos_token_id == eos          # TRL's stop token (its completion mask) is ours

    schema = RowSchema(name=NAME, text=("question", "answer"))
    task = classification_task(NAME, "dna", schema, schema,
                               prompt_messages=lambda row, system_prompt=None: [{"role": "user",
                                                                                 "content": row["question"]}],
                               target_text=lambda row: row["answer"], gold=lambda row: row["answer"])
    TASKS.register(NAME, task)
    # equal-length prompts (TRL passes no position ids): the first N_PROMPTS of a common length
    candidates = [{"question": f"Item {k}: say something.", "answer": "x"} for k in range(40)]
    encoded = [encode_prompt(model, task, r).input_ids for r in candidates]
    width = Counter(len(p) for p in encoded).most_common(1)[0][0]
    rows = [r for r, p in zip(candidates, encoded) if len(p) == width][:N_PROMPTS]
    prompt_ids = [p for p in encoded if len(p) == width][:N_PROMPTS]
    assert len(rows) == N_PROMPTS

    # merged (multi-byte) ordinary tokens: random ones decode to distinct texts, the rewards' keys
    ordinary = [i for i in range(257, tok.vocab_size) if i not in tok.all_special_ids]
    completions, reward_of = {}, {}
    for k, ids in enumerate(prompt_ids):
        group = []
        for j, (n, cut) in enumerate(zip(LENGTHS[k % 4], TRUNCATED[k % 4])):
            c = [ordinary[i] for i in torch.randint(len(ordinary), (n,), generator=g)]
            # a group's completions share their first token (as sampled ones often do): a token with a
            # negative advantage can then gain probability through its groupmates, where delta binds
            c[0] = ordinary[k]
            if not cut:
                c[-1] = eos
            group.append(c)
            reward_of[tok.decode(c, skip_special_tokens=True)] = REWARDS_BY_PROMPT[k][j]
        completions[tuple(ids)] = group
    assert len(reward_of) == G * N_PROMPTS          # texts are distinct: the reward keys are unambiguous

    def text(ids):
        return tok.decode(ids, skip_special_tokens=True)   # as TRL decodes completions for its rewards

    class FixedEngine:
        """The k-th request for a prompt gets its k-th fixed completion."""
        name = NAME

        def __init__(self, model, embeddings, device=None, autocast_ctx=None):
            pass

        def generate(self, examples, sampling):
            assert sampling.max_new_tokens == MAX_LEN
            seen, out = Counter(), []
            for ex in examples:
                key = tuple(ex.input_ids)
                c = completions[key][seen[key]]
                seen[key] += 1
                out.append(Generation(tokens=list(c), text=text(c), stopped=c[-1] == eos))
            return out

        def sync_weights(self, model):
            pass

    def fixed_reward(completions, rows):
        return [reward_of[t] for t in completions]

    ENGINES.register(NAME, FixedEngine)
    REWARDS.register(NAME, fixed_reward)
    yield dict(root=root, ckpt=ckpt, rows=rows, prompt_ids=prompt_ids, completions=completions,
               reward_of=reward_of)
    ENGINES.unregister(NAME)
    REWARDS.unregister(NAME)
    TASKS.unregister(NAME)


def case_settings(loss_type, beta, mu, accum, spg, extra):
    return dict(dict(loss_type=loss_type, beta=beta, num_iterations=mu, gradient_accumulation_steps=accum,
                     steps_per_generation=spg, epsilon=0.1, epsilon_high=0.15, delta=None,
                     scale_rewards="group", importance_sampling_level="token", mask_truncated_completions=False,
                     use_bias_correction_kl=False), **extra)


def run_ours(world, out, n, s):
    data = out / "data"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in world["rows"][:n]))
    cfg = from_dict(GRPOConfig, dict(
        s, task=NAME, data_path=str(data), output_dir=str(out / "run"), init="sft",
        sft_checkpoint=str(world["ckpt"]), seed=SEED, resume="never", engine=NAME, reward_funcs=[NAME],
        reward_weights=[], num_generations=G, max_completion_length=MAX_LEN, temperature=TEMPERATURE,
        learning_rate=LR, weight_decay=0.0, max_grad_norm=1.0, lr_scheduler_type="constant", warmup_ratio=0.0,
        max_steps=STEPS, per_device_train_batch_size=BATCH, bf16=False, device="cpu", save_steps=1000))
    assert train_grpo(cfg) == 0
    final = load_file(str(out / "run/checkpoints/last/adapter/adapter_model.safetensors"))
    return final, read_log(out / "run/train_log.jsonl")


def run_trl(world, out, n, s, order, monkeypatch):
    from datasets import Dataset
    from peft import get_peft_model_state_dict
    from trl.trainer import grpo_trainer
    monkeypatch.setattr(grpo_trainer, "shuffle_sequence_dict", lambda batch: batch)  # see the docstring
    model = BioReasoningModel.load(world["ckpt"], is_trainable=True)
    start = {k: v.clone() for k, v in get_peft_model_state_dict(model.llm, save_embedding_layers=False).items()}
    prompt_of = {f"prompt {k}": world["prompt_ids"][k] for k in range(n)}

    def rollout(prompts, trainer):   # fixed completions in place of generation
        seen, comps = Counter(), []
        for p in prompts:
            key = tuple(prompt_of[p])
            comps.append(world["completions"][key][seen[key]])
            seen[key] += 1
        return {"prompt_ids": [prompt_of[p] for p in prompts], "completion_ids": comps, "logprobs": None}

    def fixed_reward(completions, **kw):
        return [world["reward_of"][t] for t in completions]

    args = trl.GRPOConfig(
        output_dir=str(out / "trl"), per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=s["gradient_accumulation_steps"], steps_per_generation=s["steps_per_generation"],
        num_iterations=s["num_iterations"], num_generations=G, max_completion_length=MAX_LEN,
        temperature=TEMPERATURE, beta=s["beta"], epsilon=s["epsilon"], epsilon_high=s["epsilon_high"],
        delta=s["delta"], loss_type=s["loss_type"], scale_rewards=s["scale_rewards"],
        importance_sampling_level=s["importance_sampling_level"],
        mask_truncated_completions=s["mask_truncated_completions"], use_bias_correction_kl=s["use_bias_correction_kl"],
        learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, adam_beta1=0.9,
        adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0, optim="adamw_torch", max_steps=STEPS,
        seed=SEED, shuffle_dataset=False, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
        gradient_checkpointing=False, logging_steps=1, log_completions=False, dataloader_num_workers=0,
        disable_dropout=True)
    ds = Dataset.from_dict({"prompt": [f"prompt {k}" for k in order]})
    trainer = trl.GRPOTrainer(model=model.llm, reward_funcs=[fixed_reward], args=args, train_dataset=ds,
                              processing_class=model.tokenizer, rollout_func=rollout)
    trainer.train()
    final = {k: v.detach().clone() for k, v in get_peft_model_state_dict(trainer.model, adapter_name="default",
                                                                            save_embedding_layers=False).items()}
    logs = [e for e in trainer.state.log_history if "loss" in e and "train_runtime" not in e]
    return start, final, logs, trainer


def relative_update_errors(theta0, ours, theirs):
    """max over tensors of |Δ_ours - Δ_trl| / |Δ_trl|, and |Δ_trl| / |θ_0| over all tensors."""
    worst, upd2, par2 = 0.0, 0.0, 0.0
    for k in theta0:
        d_ours, d_trl = ours[k] - theta0[k], theirs[k] - theta0[k]
        worst = max(worst, float((d_ours - d_trl).norm() / d_trl.norm()))
        upd2 += float(d_trl.norm() ** 2)
        par2 += float(theta0[k].norm() ** 2)
    return worst, (upd2 / par2) ** 0.5


def close(a, b):
    return abs(a - b) <= 1e-6 + 1e-5 * abs(b)


@pytest.mark.parametrize("loss_type,beta,mu,accum,spg,extra", CASES, ids=[case_id(c) for c in CASES])
def test_training_loop_ends_where_trl_ends(world, tmp_path, monkeypatch, loss_type, beta, mu, accum, spg, extra):
    s = case_settings(loss_type, beta, mu, accum, spg, extra)
    n = BATCH * spg // G                                   # one generation batch of prompts
    theta0 = load_file(str(world["ckpt"] / "adapter/adapter_model.safetensors"))
    if spg > accum:     # the order decides which prompts each optimizer step sees: TRL reads ours
        assert STEPS * accum == spg * mu                   # one generation batch, so ours' epoch 0 only
        order = epoch_order(n, SEED, 0)
    else:               # the order cannot matter (module docstring): make it differ, to test that
        order = epoch_order(n, SEED, 0)[::-1]
    ours, log = run_ours(world, tmp_path / "ours", n, s)
    start, theirs, trl_log, trainer = run_trl(world, tmp_path, n, s, order, monkeypatch)
    # TRL's reference for a PeftModel that already has an adapter: a frozen copy of it, "ref" (ours:
    # the initial policy); without one it would disable the adapter, a different reference
    assert ("ref" in trainer.model.peft_config) == (beta != 0)

    assert start.keys() == theta0.keys() == ours.keys() == theirs.keys() and len(theta0) > 0
    for k in theta0:
        assert torch.equal(start[k], theta0[k]), k         # θ_0 identical on both sides
    worst, moved = relative_update_errors(theta0, ours, theirs)
    print(f"\n{case_id((loss_type, beta, mu, accum, spg, extra))}: max relative update error {worst:.2e}, "
          f"update / parameter norm {moved:.3f}, |rho - 1| max {[round(e['ratio_max_abs_dev'], 3) for e in log]}, "
          f"clipped {[round(t['clip_ratio/region_mean'], 3) for t in trl_log]}")
    assert moved >= 0.01                                   # a real update, not a tolerance-sized one
    assert worst <= 1e-4

    assert [e["step"] for e in log] == [1, 2, 3, 4] and [t["step"] for t in trl_log] == [1, 2, 3, 4]
    keys = ["loss", "entropy", "grad_norm", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"]
    for e, t in zip(log, trl_log):
        fresh = e["generated"] > 0                        # this step started a generation batch
        for k in keys + (["kl"] if beta else []):
            if k == "kl" and s["use_bias_correction_kl"] and not fresh:
                # TRL logs the KL term it optimizes, k3 x ratio; ours logs the plain k3 mean (the KL
                # as grpo.py documents it). Compared on fresh steps only, where the ratio is 1
                continue
            assert close(e[k], t[k]), (e["step"], k, e[k], t[k])
        # the ratio: exactly 1 on a fresh batch (its old log-probs are the current policy's), away
        # from 1 once an optimizer step has changed the policy that generated the batch
        if fresh:
            assert e["ratio_max_abs_dev"] < 1e-6, e
        else:
            assert e["ratio_max_abs_dev"] > 0.02, e
    reused = [t for e, t in zip(log, trl_log) if e["generated"] == 0]
    assert bool(reused) == (mu > 1 or spg > accum)
    if reused:          # TRL's own view of the same: the ratio left the clip range on a reused step
        assert max(t["clip_ratio/region_mean"] for t in reused) > 0

    if s["delta"] is not None:   # the cap binds: without it (ours alone), training ends elsewhere
        uncapped, _ = run_ours(world, tmp_path / "uncapped", n, dict(s, delta=None))
        assert relative_update_errors(theta0, uncapped, ours)[0] > 1e-3

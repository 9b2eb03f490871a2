"""Oracle: our GRPO advantages, loss and gradient equal TRL 1.16's GRPOTrainer on the same batch.

TRL is a test-only dependency (the project never imports it). A real `trl.GRPOTrainer` is built on
the same tiny Qwen3 (the language model inside a text-only BioReasoningModel, so both sides hold
the very same parameters). Fixed completions enter TRL through its `rollout_func` hook and fixed
rewards through two reward functions, so TRL computes the advantages itself; the old and reference
log-probs are fixed tensors (perturbed so that ratios spread and clipping fires) fed to both sides.
A generation batch of two micro-batches with gradient accumulation 2 checks the normalizations.
"""
import pytest
import torch

trl = pytest.importorskip("trl")

from biopost.data.examples import Example  # noqa: E402
from biopost.model.bio_model import BioReasoningModel, ModelSpec  # noqa: E402
from biopost.train.grpo_loss import compute_advantages, grpo_loss  # noqa: E402
from biopost.train.grpo_policy import build_micro_batch, completion_logps  # noqa: E402

G = 4                 # completions per prompt
MICRO = 4             # completions per micro-batch
ACCUM = 2             # micro-batches per optimizer step = steps per generation
MAX_LEN = 12          # max_completion_length
TEMPERATURE = 0.7
PROMPT_LEN = 7        # equal-length prompts: TRL's forward passes no position ids (0..L-1 per row)
# weighted total: group 0 varied, group 1 all equal (zero std: the 1e-4 in the denominator matters)
REWARDS_A = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5]
REWARDS_B = [0.0, 1.0, 0.0, 1.0, 0.2, 0.2, 0.2, 0.2]
WEIGHTS = [1.0, 0.5]

CASES = [
    # loss_type, beta, scale_rewards, importance_sampling_level, mask_truncated_completions, use_bias_correction_kl
    ("grpo", 0.0, "group", "token", False, False),
    ("grpo", 0.04, "batch", "token", False, False),
    ("dr_grpo", 0.0, "none", "token", False, False),
    ("dr_grpo", 0.04, "group", "token", True, False),
    ("dapo", 0.0, "group", "token", True, False),
    ("dapo", 0.04, "batch", "token", False, False),
    ("dapo", 0.04, "group", "token", False, True),     # TRL 1.16's default KL: k3 x ratio
    ("grpo", 0.04, "none", "sequence", False, False),
    ("dapo", 0.0, "group", "sequence", False, False),
]
# two-sided clipping (TRL's delta; BioReason-Pro's capped sequence-level ratio): loss_type, level, delta
DELTA_CASES = [("dr_grpo", "sequence", 1.29), ("grpo", "token", 1.3)]
CASES = [c + (None,) for c in CASES] + [(lt, 0.04, "group", lvl, False, False, d) for lt, lvl, d in DELTA_CASES]


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test here runs torch on one thread (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    spec = ModelSpec(text_model_name="biopost-tiny/qwen3", encoders={}, projectors={}, lora_rank=0)
    model = BioReasoningModel.build(spec)
    tok = model.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    g = torch.Generator().manual_seed(1)
    vocab = 200  # ordinary tokens only
    prompts = [torch.randint(10, vocab, (PROMPT_LEN,), generator=g).tolist() for _ in range(2)]
    lengths = [5, 12, 3, 9, 12, 1, 7, 12]       # 12 without a stop token = truncated
    completions = []
    for i, n in enumerate(lengths):
        ids = torch.randint(10, vocab, (n,), generator=g).tolist()
        if not (n == MAX_LEN and i % 2 == 1):    # rows 1 and 7 hit the limit without stopping
            ids[-1] = eos
        completions.append(ids)
    truncated = [ids[-1] != eos for ids in completions]
    assert sum(truncated) == 2
    # old / reference log-probs: the model's own, perturbed (fixed inputs for both sides)
    pre = prompt_examples(prompts)
    with torch.no_grad():
        mb = build_micro_batch(model, pre, completions, torch.zeros(8), None, "cpu")
        cur, _ = completion_logps(model, mb, TEMPERATURE)
    noise = torch.Generator().manual_seed(2)
    old = cur + 0.3 * torch.randn(cur.shape, generator=noise)
    ref = cur + 0.5 * torch.randn(cur.shape, generator=noise)
    return dict(model=model, prompts=prompts, completions=completions, truncated=truncated, old=old, ref=ref,
                eos=eos)


def prompt_examples(prompts):
    return [Example(id=f"p{i // G}", input_ids=prompts[i // G], labels=None, bio=[]) for i in range(G * len(prompts))]


def trl_trainer(setup, tmp_path, loss_type, beta, scale, level, mask_truncated, kl_corr, delta=None):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    model = setup["model"]
    prompts, completions = setup["prompts"], setup["completions"]

    def rollout(batch_prompts, trainer):  # fixed completions in place of generation
        order = [int(p.split()[-1]) for p in batch_prompts]
        return {"prompt_ids": [prompts[i // G] for i in order], "completion_ids": [completions[i] for i in order],
                "logprobs": None}

    def reward_a(completions, idx, **kw):
        return [REWARDS_A[i] for i in idx]

    def reward_b(completions, idx, **kw):
        return [REWARDS_B[i] for i in idx]

    args = GRPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=MICRO,
                      gradient_accumulation_steps=ACCUM, num_generations=G, max_completion_length=MAX_LEN,
                      temperature=TEMPERATURE, beta=beta, epsilon=0.2, epsilon_high=0.28, loss_type=loss_type,
                      scale_rewards=scale, importance_sampling_level=level, mask_truncated_completions=mask_truncated,
                      reward_weights=WEIGHTS, use_bias_correction_kl=kl_corr, delta=delta, use_cpu=True, bf16=False,
                      report_to="none", save_strategy="no",
                      gradient_checkpointing=False, logging_steps=1, log_completions=False,
                      dataloader_num_workers=0)
    ds = Dataset.from_dict({"prompt": [f"prompt {i}" for i in range(8)], "idx": list(range(8))})
    return GRPOTrainer(model=model.llm, reward_funcs=[reward_a, reward_b], args=args, train_dataset=ds,
                       processing_class=model.tokenizer, rollout_func=rollout)


def grad_norm(params):
    return torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params if p.grad is not None)).item()


@pytest.mark.parametrize("loss_type,beta,scale,level,mask_truncated,kl_corr,delta", CASES)
def test_loss_advantages_and_gradient_equal_trl(setup, tmp_path, loss_type, beta, scale, level, mask_truncated,
                                                kl_corr, delta):
    from trl.trainer.utils import split_tensor_dict
    model = setup["model"]
    params = [p for p in model.llm.parameters() if p.requires_grad]
    trainer = trl_trainer(setup, tmp_path, loss_type, beta, scale, level, mask_truncated, kl_corr, delta)
    trainer.model.train()

    # ---- TRL: its own advantages from the rewards, then its loss over two accumulated micro-batches
    inputs = [{"prompt": f"prompt {i}", "idx": i} for i in range(8)]
    out = trainer._generate_and_score_completions(inputs)
    C = out["completion_ids"].shape[1]
    old_all = setup["old"]
    if delta is not None:  # push half the sequences' ratios past the cap (a sequence-level ratio averages noise out)
        old_all = old_all - 0.4 * (torch.arange(old_all.shape[0]) % 2).unsqueeze(1)
    out["old_per_token_logps"] = old_all[:, :C].clone()
    if beta:
        out["ref_per_token_logps"] = setup["ref"][:, :C].clone()
    trl_adv = out["advantages"].clone()
    trainer.current_gradient_accumulation_steps = ACCUM
    model.zero_grad(set_to_none=True)
    trl_loss = 0.0
    for chunk in split_tensor_dict(out, ACCUM):
        loss = trainer._compute_loss(trainer.model, chunk)
        loss.backward()
        trl_loss += loss.item()
    trl_grad = grad_norm(params)
    trl_clip = trainer._metrics["train"]["clip_ratio/region_mean"]

    # ---- ours, on the same tensors
    total = (torch.tensor(REWARDS_A) * WEIGHTS[0] + torch.tensor(REWARDS_B) * WEIGHTS[1])
    adv, _ = compute_advantages(total, G, scale)
    torch.testing.assert_close(adv, trl_adv, atol=1e-5, rtol=0)
    model.zero_grad(set_to_none=True)
    pre = prompt_examples(setup["prompts"])
    micro = [build_micro_batch(model, pre[s:s + MICRO], setup["completions"][s:s + MICRO], adv[s:s + MICRO], None,
                               "cpu", truncated=setup["truncated"][s:s + MICRO], mask_truncated=mask_truncated)
             for s in range(0, 8, MICRO)]
    num_items = sum(int(mb.loss_mask.sum()) for mb in micro)
    assert num_items == int(out["num_items_in_batch"])
    ours_loss, clip, capped_any = 0.0, [], False
    for k, mb in enumerate(micro):
        rows = slice(k * MICRO, (k + 1) * MICRO)
        width = mb.completion_ids.shape[1]
        logps, _ = completion_logps(model, mb, TEMPERATURE)
        loss, stats = grpo_loss(logps, old_all[rows, :width], setup["ref"][rows, :width] if beta else None,
                                mb.advantages, mb.loss_mask, loss_type=loss_type, beta=beta, epsilon_low=0.2,
                                epsilon_high=0.28, importance_sampling_level=level, max_completion_length=MAX_LEN,
                                grad_accum=ACCUM, num_items_in_batch=num_items, steps_per_generation=ACCUM,
                                use_bias_correction_kl=kl_corr, delta=delta)
        loss.backward()
        ours_loss += loss.item()
        if delta is not None:
            uncapped = grpo_loss(logps.detach(), old_all[rows, :width], setup["ref"][rows, :width],
                                 mb.advantages, mb.loss_mask, loss_type=loss_type, beta=beta, epsilon_low=0.2,
                                 epsilon_high=0.28, importance_sampling_level=level, max_completion_length=MAX_LEN,
                                 grad_accum=ACCUM, num_items_in_batch=num_items, steps_per_generation=ACCUM,
                                 use_bias_correction_kl=kl_corr)[0]
            capped_any = capped_any or abs(uncapped.item() - loss.item()) > 1e-6
        s, c = stats["clip_ratio/region_mean"]
        clip.append(float(s / c))
    ours_grad = grad_norm(params)

    print(f"loss ours {ours_loss:.8f} trl {trl_loss:.8f}; grad norm ours {ours_grad:.8f} trl {trl_grad:.8f}")
    assert trl_grad > 1e-3 and abs(trl_loss) > 1e-4     # a real, non-degenerate comparison
    assert ours_loss == pytest.approx(trl_loss, abs=1e-5)
    assert ours_grad == pytest.approx(trl_grad, abs=1e-5, rel=0)
    assert clip == pytest.approx(trl_clip[-ACCUM:], abs=1e-6)
    assert delta is None or capped_any                   # the cap bound somewhere: the case tests it
    if level == "token":
        assert max(clip) > 0                             # the perturbed old log-probs make clipping fire

"""GRPO stage on the tiny DNA model: the math by hand, the old-policy ratio with num_iterations 2,
gradients into the projector through the DNA embeddings, warm (continue / merge) and cold starts,
exact resume after SIGTERM, the entry script and the configs.

The warm starts read a short run of BioReason/configs/sft_tiny.yaml (a few steps: what matters here
is the checkpoint's form, and the 750-step `tiny_sft_run` fixture would cost two minutes or more)."""
import json
import os
import signal

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import ROOT, run_script

from biopost.config import ConfigError, from_dict, load_yaml
from biopost.data.examples import encode_prompt
from biopost.data.io import load_split_rows
from biopost.encoders.cache import EmbeddingCache
from biopost.generate.sampling import SamplingConfig, generate
from biopost.model.bio_model import BioReasoningModel
from biopost.tasks import get_task
from biopost.train.grpo import GRPOConfig, train_grpo, validate_config
from biopost.train.grpo_loss import compute_advantages, grpo_loss
from biopost.train.grpo_policy import build_micro_batch, completion_logps
from biopost.train.warm_start import policy_lora_rank
from biopost.train.log import read_log
from biopost.rewards import register_reward
from biopost.train.recipe import model_spec_from_config
from biopost.train.sft import SFTConfig, train_sft
from biopost.signals import REQUEUE_EXIT_CODE

TINY = ROOT / "BioReason/configs/grpo_tiny.yaml"
KEGG = get_task("kegg")
TIMING = {"generation_s", "update_s", "step_time_s"}


def text_length_reward(completions, rows):
    """A reward that varies between completions of any model, random ones included."""
    return [(len(t) % 7) / 6 for t in completions]


register_reward("test_length", text_length_reward, replace=True)


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test here runs torch on one thread (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def short_sft(tmp_path_factory, synth_data):
    out = tmp_path_factory.mktemp("sft_short")
    data = load_yaml(ROOT / "BioReason/configs/sft_tiny.yaml")
    data.update(output_dir=str(out), data_path=str(synth_data), resume="never", max_steps=6, save_steps=3,
                per_device_train_batch_size=4)
    assert train_sft(from_dict(SFTConfig, data)) == 0
    return out / "checkpoints/last"


@pytest.fixture(scope="module")
def short_sft_lora(tmp_path_factory, synth_data):
    out = tmp_path_factory.mktemp("sft_short_lora")
    data = load_yaml(ROOT / "BioReason/configs/sft_tiny.yaml")
    data.update(output_dir=str(out), data_path=str(synth_data), resume="never", max_steps=4, save_steps=4,
                per_device_train_batch_size=4, lora_rank=4, lora_alpha=8, lora_dropout=0.1)
    assert train_sft(from_dict(SFTConfig, data)) == 0
    return out / "checkpoints/last"


def config(tmp_path, synth_data, name="run", **overrides):
    data = load_yaml(TINY)
    data.update(data_path=str(synth_data), output_dir=str(tmp_path / name), resume="auto", max_steps=2,
                max_completion_length=24, per_device_train_batch_size=8, save_steps=100)
    data.update(overrides)
    return from_dict(GRPOConfig, data)


def run_config(path):
    return yaml.safe_load((path / "config.yaml").read_text())


# ------------------------------------------------------------------ the math, by hand

def test_advantages_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    std = torch.tensor(1 / 3).sqrt()  # Bessel-corrected std of (1, 0, 0, 1)
    adv, _ = compute_advantages(r, 4, "group")
    expected = torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]) / (std + 1e-4)
    torch.testing.assert_close(adv, expected)
    adv, _ = compute_advantages(r, 4, "none")
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]))
    adv, _ = compute_advantages(r, 4, "batch")
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]) / (r.std() + 1e-4))


def test_clipped_surrogate_and_aggregations_by_hand():
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]))
    old = torch.log(torch.tensor([[0.25, 0.5, 0.8], [0.25, 0.5, 0.8]]))  # ratios 2, 1, 0.625
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv = torch.tensor([1.0, -1.0])
    kw = dict(beta=0.0, epsilon_low=0.2, epsilon_high=0.28, max_completion_length=4)
    # A=+1: -min(r, clip(r)) = -(1.28, 1, 0.625); A=-1: -min(-r, -clip(r)) = (2, 1, 0.8)
    per_token = torch.tensor([[-1.28, -1.0, -0.625], [2.0, 1.0, 0.8]])
    loss, stats = grpo_loss(logp, old, None, adv, mask, loss_type="grpo", **kw)
    assert float(loss) == pytest.approx(((-1.28 - 1 - 0.625) / 3 + (2 + 1) / 2) / 2)
    loss, _ = grpo_loss(logp, old, None, adv, mask, loss_type="dr_grpo", **kw)
    assert float(loss) == pytest.approx((-1.28 - 1 - 0.625 + 2 + 1) / (2 * 4))
    loss, _ = grpo_loss(logp, old, None, adv, mask, loss_type="dapo", num_items_in_batch=10, **kw)
    assert float(loss) == pytest.approx(float((per_token * mask).sum()) / 10)
    # clipped: row 0 token 0 (2 > 1.28, A > 0: high); row 1 token 2 is masked, token 0 not clipped (A < 0, r > 1)
    s, c = stats["clip_ratio/high_mean"]
    assert float(s / c) == pytest.approx(1 / 5)
    assert float(stats["clip_ratio/low_mean"][0]) == 0.0
    # k3 KL: exp(ref - logp) - (ref - logp) - 1 >= 0, zero where ref == logp
    ref = logp.clone()
    ref[0, 0] = torch.log(torch.tensor(0.25))
    loss_kl, stats = grpo_loss(logp, old, ref, adv, mask, loss_type="dapo", num_items_in_batch=10, **dict(kw, beta=0.5))
    k3 = 0.5 - torch.log(torch.tensor(0.5)) - 1
    assert float(loss_kl - loss) == pytest.approx(0.5 * float(k3) / 10, abs=1e-6)
    assert float(stats["kl"][0] / stats["kl"][1]) == pytest.approx(float(k3) / 5, abs=1e-6)


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="multiple of num_generations 3"):
        validate_config(GRPOConfig(num_generations=3, per_device_train_batch_size=8))
    with pytest.raises(ValueError, match="needs --sft_checkpoint"):
        validate_config(GRPOConfig(init="sft"))
    with pytest.raises(ValueError, match="must divide one another"):
        validate_config(GRPOConfig(per_device_train_batch_size=8, num_generations=4, gradient_accumulation_steps=3,
                                   steps_per_generation=2))
    with pytest.raises(ValueError, match="loss_type"):
        validate_config(GRPOConfig(loss_type="bnpo"))
    with pytest.raises(ValueError, match=r"delta must be > 1 \+ epsilon_high \(1.28\)"):
        validate_config(GRPOConfig(epsilon_high=0.28, delta=1.2))
    validate_config(GRPOConfig(epsilon=7e-4, epsilon_high=9e-4, delta=2.0, importance_sampling_level="sequence"))
    with pytest.raises(ConfigError):
        from_dict(GRPOConfig, {"num_generation": 8})


# ------------------------------------------------------------------ the policy ratio over iterations

@pytest.mark.slow
def test_second_iteration_has_a_real_ratio_and_clips(tmp_path, synth_data):
    # one generation batch used twice: iteration 1 equals the old policy (a real pass, ratio 1 up to
    # float noise); after one large update, iteration 2's ratio moves and the small epsilon clips it
    cfg = config(tmp_path, synth_data, init="base", lora_rank=0, num_iterations=2, epsilon=0.01, epsilon_high=0.01,
                 learning_rate=1e-2, reward_funcs=["test_length"], reward_weights=[], beta=0.0, max_steps=2)
    assert train_grpo(cfg) == 0
    first, second = read_log(tmp_path / "run/train_log.jsonl")
    assert first["generated"] == 1 and second["generated"] == 0        # the same rollouts, reused
    assert first["ratio_max_abs_dev"] < 1e-5 and first["clip_ratio/region_mean"] == 0.0
    assert second["ratio_max_abs_dev"] > 0.05
    assert second["clip_ratio/region_mean"] > 0.05
    assert second["reward"] == first["reward"]
    for key in ("reward", "reward_std", "rewards/test_length", "frac_reward_zero_std", "entropy",
                "clip_ratio/low_mean", "clip_ratio/high_mean", "completion_length", "completion_length_min",
                "completion_length_max", "truncated_frac", "lr", "grad_norm", "generation_s", "update_s"):
        assert first[key] is not None, key
    assert run_config(tmp_path / "run")["generation"]["old_policy_pass"] is True


# ------------------------------------------------------------------ the DNA reaches the loss

def test_gradient_reaches_the_projector_through_the_dna_embeddings(tmp_path, synth_data):
    torch.manual_seed(0)
    cfg = config(tmp_path, synth_data, init="base", lora_rank=4)
    model = BioReasoningModel.build(model_spec_from_config(cfg, "dna"))
    cache = EmbeddingCache(model.encoders["dna"])
    rows = [r for r, _ in load_split_rows(str(synth_data), ("train",))["train"][:2]]
    prompts = [encode_prompt(model, KEGG, r, 0) for r in rows for _ in range(2)]
    assert all(len(p.bio) == 2 for p in prompts)
    gens = generate(model, prompts, lambda m, s: cache.get(s),
                    SamplingConfig(max_new_tokens=6, do_sample=True, seed=0))
    mb = build_micro_batch(model, prompts, [g.tokens for g in gens], torch.tensor([1.0, -1.0, 1.0, -1.0]),
                           lambda m, s: cache.get(s), "cpu")
    assert len(mb.bio_features["dna"]) == 8          # reference + variant for each of 4 completions
    logps, _ = completion_logps(model, mb)
    loss, _ = grpo_loss(logps, None, None, mb.advantages, mb.loss_mask, loss_type="grpo", beta=0.0,
                        epsilon_low=0.2, epsilon_high=0.2, max_completion_length=6)
    loss.backward()
    grad = model.projectors["dna"].weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # and the log-probs depend on the DNA: other sequences give other log-probs
    with torch.no_grad():
        mb.bio_features = {"dna": [torch.randn_like(f) for f in mb.bio_features["dna"]]}
        other, _ = completion_logps(model, mb)
    assert (other - logps.detach()).abs().max() > 1e-4


def test_reference_policy_is_the_initial_policy_and_survives_training(tmp_path, synth_data):
    from biopost.train.grpo_policy import ReferencePolicy
    torch.manual_seed(0)
    cfg = config(tmp_path, synth_data, init="base", lora_rank=4)
    model = BioReasoningModel.build(model_spec_from_config(cfg, "dna"))
    with torch.no_grad():                     # an adapter that already learned something (a continued SFT one)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    cache = EmbeddingCache(model.encoders["dna"])
    rows = [r for r, _ in load_split_rows(str(synth_data), ("train",))["train"][:2]]
    prompts = [encode_prompt(model, KEGG, r, 0) for r in rows]
    mb = build_micro_batch(model, prompts, [[5, 6, 7, 8], [9, 10, 11]], torch.zeros(2), lambda m, s: cache.get(s),
                           "cpu")

    def logps():
        with torch.no_grad():
            return completion_logps(model, mb)[0]

    initial = logps()
    with torch.no_grad():
        with model.llm.disable_adapter():
            base = completion_logps(model, mb)[0]
    reference = ReferencePolicy(model, ReferencePolicy.capture(model), disable_adapter=False)
    base_reference = ReferencePolicy(model, ReferencePolicy.capture(model), disable_adapter=True)
    with torch.no_grad():                     # "training" moves every trainable tensor
        for p in model.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.05)
    trained = logps()
    assert (trained - initial).abs().max() > 1e-3
    with reference.active():
        torch.testing.assert_close(logps(), initial, rtol=0, atol=1e-6)
    with base_reference.active():             # --reference base: adapter off, initial projector
        torch.testing.assert_close(logps(), base, rtol=0, atol=1e-6)
    torch.testing.assert_close(logps(), trained, rtol=0, atol=0)   # swapped back


# ------------------------------------------------------------------ warm and cold starts

@pytest.mark.slow
def test_warm_start_continues_the_sft_checkpoint(tmp_path, synth_data, short_sft):
    # a short SFT answers badly: a length reward keeps the advantages (and so the update) non-zero
    cfg = config(tmp_path, synth_data, init="sft", sft_checkpoint=str(short_sft), merge_sft=False, lora_rank=8,
                 reward_funcs=["correctness", "test_length"], reward_weights=[1.0, 1.0])
    assert policy_lora_rank(cfg, None) == 0             # the checkpoint decides: full fine-tuning, fp32
    assert train_grpo(cfg) == 0
    run = tmp_path / "run"
    rc = run_config(run)
    sft_state = json.loads((short_sft / "trainer_state.json").read_text())
    assert rc["stage"] == "grpo" and rc["modality"] == "dna" and rc["init"] == "sft" and rc["merge_sft"] is False
    assert rc["sft_checkpoint"] == str(short_sft)
    assert rc["init_source"]["sft_fingerprint"] == sft_state["fingerprint"]
    assert rc["init_source"]["sft_step"] == sft_state["step"] == 6
    ckpt = run / "checkpoints/last"
    assert (ckpt / "llm").is_dir()                         # the full-fine-tuning SFT model, continued
    before = load_file(str(short_sft / "bio_modules.safetensors"))["projectors.dna.weight"]
    after = load_file(str(ckpt / "bio_modules.safetensors"))["projectors.dna.weight"]
    assert not torch.equal(before, after)                  # GRPO trained the projector
    assert (run / "reference.safetensors").is_file()       # beta 0.01: the frozen initial policy
    assert json.loads((ckpt / "trainer_state.json").read_text())["stage"] == "grpo"
    assert rc["policy"]["lora_rank"] == 0


@pytest.mark.slow
def test_warm_start_continues_an_sft_adapter(tmp_path, synth_data, short_sft_lora):
    # the real runs' default: the SFT LoRA adapter keeps training; its dropout is switched off for RL;
    # the reference is the SFT policy (frozen adapter copy), so the KL starts at 0 and then grows
    cfg = config(tmp_path, synth_data, init="sft", sft_checkpoint=str(short_sft_lora), merge_sft=False,
                 reward_funcs=["test_length"], reward_weights=[], beta=0.1, learning_rate=1e-2, max_steps=3)
    assert train_grpo(cfg) == 0
    run = tmp_path / "run"
    ckpt = run / "checkpoints/last"
    spec = json.loads((ckpt / "model_config.json").read_text())
    assert spec["lora_rank"] == 4 and spec["lora_dropout"] == 0.0 and run_config(run)["policy"]["lora_rank"] == 4
    before = load_file(str(short_sft_lora / "adapter/adapter_model.safetensors"))
    after = load_file(str(ckpt / "adapter/adapter_model.safetensors"))
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    log = read_log(run / "train_log.jsonl")
    assert log[0]["kl"] == pytest.approx(0.0, abs=1e-7) and log[-1]["kl"] > 1e-4


@pytest.mark.slow
def test_warm_start_merges_sft_and_adds_a_fresh_adapter_then_evaluates(tmp_path, synth_data, short_sft):
    cfg = config(tmp_path, synth_data, init="sft", sft_checkpoint=str(short_sft), merge_sft=True, lora_rank=4,
                 lora_alpha=8)
    assert train_grpo(cfg) == 0
    run = tmp_path / "run"
    rc = run_config(run)
    assert rc["init"] == "sft" and rc["merge_sft"] is True and rc["init_source"]["sft_fingerprint"]
    merged = run / "merged_sft"
    assert (merged / "config.json").is_file() and json.loads((merged / "model_config.json").read_text())["merged"]
    ckpt = run / "checkpoints/last"
    spec = json.loads((ckpt / "model_config.json").read_text())
    assert (ckpt / "adapter/adapter_model.safetensors").is_file() and spec["lora_rank"] == 4
    assert spec["text_model_name"] == str(merged.resolve())
    model = BioReasoningModel.load(ckpt)                   # the checkpoint loads for evaluation
    assert model.is_lora
    from biopost.eval.run import main as eval_main
    assert eval_main(["--run_dir", str(run), "--eval_split", "id", "--max_examples", "4",
                      "--max_new_tokens", "8", "--bootstrap_resamples", "10"]) == 0
    metrics = json.loads((run / "eval/id/metrics.json").read_text())
    assert metrics["stage"] == "grpo" and metrics["n"] == 4


@pytest.mark.slow
def test_cold_start_from_the_entry_script(tmp_path, synth_data):
    out = tmp_path / "cold"
    r = run_script([ROOT / "BioReason/train_grpo.py", "--config", TINY, "--init", "base", "--lora_rank", "4",
                    "--data_path", synth_data, "--output_dir", out, "--max_steps", "2", "--max_completion_length",
                    "16", "--per_device_train_batch_size", "8", "--merge_sft", "false",
                    "--reward_funcs", "correctness,format,concise", "--reward_weights", "1,0.2,0.1"],
                   env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    rc = run_config(out)
    assert rc["init"] == "base" and rc["stage"] == "grpo" and "sft_fingerprint" not in rc["init_source"]
    assert rc["reward_weights"] == [1.0, 0.2, 0.1]
    log = read_log(out / "train_log.jsonl")
    assert [e["step"] for e in log] == [1, 2] and "rewards/concise" in log[0]
    assert (out / "checkpoints/last/adapter").is_dir()
    assert "generation batch" in run_script([ROOT / "BioReason/train_grpo.py", "--help"]).stdout


# ------------------------------------------------------------------ preemption and exact resume

_kill = {"at": None, "calls": 0}


def killing_reward(completions, rows):
    """test_length, plus SIGTERM to this process at the Nth call (the Nth generation batch)."""
    _kill["calls"] += 1
    if _kill["calls"] == _kill["at"]:
        os.kill(os.getpid(), signal.SIGTERM)
    return text_length_reward(completions, rows)


register_reward("test_killer", killing_reward, replace=True)


@pytest.mark.slow
def test_sigterm_checkpoints_at_a_generation_boundary_and_resume_is_bit_identical(tmp_path, synth_data, short_sft):
    # merged SFT + fresh LoRA + projector, KL against the reference: the reference tensors must come
    # back from reference.safetensors. Two iterations per generation batch: the signal arrives while
    # generation batch 2 is generated (step 3) and takes effect after step 4, its last use.
    kw = dict(init="sft", sft_checkpoint=str(short_sft), merge_sft=True, lora_rank=4, lora_alpha=8, beta=0.05,
              num_iterations=2, max_steps=8, save_steps=100, reward_funcs=["test_killer"], reward_weights=[],
              learning_rate=3e-3)
    _kill.update(at=None, calls=0)
    assert train_grpo(config(tmp_path, synth_data, "straight", **kw)) == 0

    _kill.update(at=2, calls=0)
    assert train_grpo(config(tmp_path, synth_data, "interrupted", **kw)) == REQUEUE_EXIT_CODE
    state = json.loads((tmp_path / "interrupted/checkpoints/last/trainer_state.json").read_text())
    assert state["step"] == 4 < 8 and state["generation_batches"] == 2
    assert not (tmp_path / "interrupted/train_done.json").exists()
    _kill.update(at=None, calls=0)
    assert train_grpo(config(tmp_path, synth_data, "interrupted", **kw)) == 0

    a, b = tmp_path / "straight/checkpoints/last", tmp_path / "interrupted/checkpoints/last"
    for f in ("bio_modules.safetensors", "adapter/adapter_model.safetensors"):
        ta, tb = load_file(str(a / f)), load_file(str(b / f))
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), (f, k)
    def log_of(name):
        return [{k: v for k, v in e.items() if k not in TIMING} for e in read_log(tmp_path / name / "train_log.jsonl")]

    log_a, log_b = log_of("straight"), log_of("interrupted")
    assert [e["step"] for e in log_b] == list(range(1, 9))
    assert log_a == log_b
    assert log_a[-1]["kl"] > 0


# ------------------------------------------------------------------ configs and sweeps

def test_configs_parse_and_sweep_keys_exist():
    for name in ("grpo_tiny.yaml", "grpo_1p7b.yaml"):
        cfg = from_dict(GRPOConfig, load_yaml(ROOT / "BioReason/configs" / name))
        if name == "grpo_1p7b.yaml":
            cfg.sft_checkpoint = "x"
        validate_config(cfg)
    big = from_dict(GRPOConfig, load_yaml(ROOT / "BioReason/configs/grpo_1p7b.yaml"))
    assert big.text_model_name == "Qwen/Qwen3-1.7B" and big.num_generations == 8 and big.loss_type == "dapo"
    assert big.max_completion_length == 1024
    fields = set(GRPOConfig.__dataclass_fields__)
    for spec_path in sorted((ROOT / "sweeps").glob("*.yaml")):
        spec = yaml.safe_load(spec_path.read_text())
        grpo = spec.get("stages", {}).get("grpo")
        if not grpo:
            continue
        # make demo and the small study (docs/study_small.md) run the tiny models on a CPU
        tiny = spec_path.name == "demo.yaml" or spec_path.name.startswith("study_small_")
        if spec.get("modality") == "protein":  # the protein study's real-run config (tests/test_protein_grpo.py)
            want = "grpo_tiny.yaml" if tiny else "grpo_4b.yaml"
            assert grpo["config"] == f"BioReason-Pro/configs/{want}", spec_path.name
        else:
            assert grpo["config"] == f"BioReason/configs/grpo_{'tiny' if tiny else '1p7b'}.yaml", spec_path.name
        keys = set(grpo.get("grid", {})) | set(grpo.get("overrides", {}))
        keys |= {k.split(".", 1)[1] for cell in spec.get("cells", []) for k in cell if k.startswith("grpo.")}
        keys |= {k.split(".", 1)[1] for k in spec.get("zip", {}) if k.startswith("grpo.")}
        assert keys <= fields, (spec_path.name, keys - fields)

"""Protein GRPO (BioReason-Pro/train_protein_grpo.py) on the tiny protein model: warm from a tiny
protein SFT LoRA and cold from the base, with the GO reward; the encoder in the loop (log-probs and
rollouts depend on the protein embeddings); gold only from go_mf / go_bp / go_cc, never from the
GO-GPT columns; the real-run config carries the paper's settings and validates.

The learning test (GO reward rises with the real reward, not with a shuffled one) is
tests/test_protein_grpo_learning.py.
"""
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, run_script

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import protein_runs  # noqa: E402

from biopost.config import from_dict, load_yaml  # noqa: E402
from biopost.data.examples import encode_prompt  # noqa: E402
from biopost.data.io import DataError, load_split_rows  # noqa: E402
from biopost.encoders.cache import EmbeddingCache  # noqa: E402
from biopost.generate.engine import build_engine  # noqa: E402
from biopost.generate.sampling import SamplingConfig  # noqa: E402
from biopost.model.bio_model import BioReasoningModel  # noqa: E402
from biopost.rewards import get_reward, register_reward  # noqa: E402
from biopost.tasks import get_task  # noqa: E402
from biopost.train.grpo import GRPOConfig, train_grpo, validate_config  # noqa: E402
from biopost.train.grpo_policy import build_micro_batch, completion_logps  # noqa: E402
from biopost.train.grpo_rollouts import schedule_from_config  # noqa: E402
from biopost.train.log import read_log  # noqa: E402
from biopost.train.sft import SFTConfig  # noqa: E402

CONFIGS = ROOT / "BioReason-Pro" / "configs"
TINY = CONFIGS / "grpo_tiny.yaml"
SCRIPT = ROOT / "BioReason-Pro" / "train_protein_grpo.py"
GO = get_task("go")
# Two MF terms whose propagated sets share only the root (IA 0): the F1 of one against the other is 0.
GOLD_TERM, DECOY_TERM = "GO:0005515", "GO:0016740"   # protein binding, transferase activity


def gold_columns(row):
    return {c: list(row.get(c) or []) for c in ("go_mf", "go_bp", "go_cc")}


_seen_rows: list[dict] = []


def probe_reward(completions, rows):
    """Records the rows the trainer hands to rewards; a length-based value that differs between
    completions of any model, so advantages are non-zero and the policy moves between steps."""
    _seen_rows.extend(rows)
    return [(len(t) % 7) / 6 for t in completions]


register_reward("test_protein_probe", probe_reward, replace=True)


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """Every test here runs torch on one thread (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def go_data():
    return protein_runs.go_synth()


@pytest.fixture(scope="module")
def decoy_data(tmp_path_factory, go_data):
    """16 synthetic GO training proteins, each with GO-GPT columns (`go_pred`, `go_pred_leaf`)
    naming a term the protein does not have: the trainer must score against go_mf/bp/cc only."""
    rows = [r for r, _ in load_split_rows(str(go_data), ("train",))["train"][:16]]
    out = tmp_path_factory.mktemp("go_decoy")
    with open(out / "train.jsonl", "w") as f:
        for r in rows:
            r = {k: v for k, v in r.items() if not k.startswith("_")}
            assert DECOY_TERM not in r["go_mf"]
            f.write(json.dumps(dict(r, go_pred=f"{DECOY_TERM} (transferase activity)", go_pred_leaf=[DECOY_TERM])) + "\n")
    return out


@pytest.fixture(scope="module")
def sft_lora(tmp_path_factory, go_data):
    """A tiny protein SFT with a LoRA adapter (rank 4), a few steps: what a warm start continues."""
    out = tmp_path_factory.mktemp("protein_sft_lora")
    assert protein_runs.train(["--config", str(protein_runs.SFT_CONFIG), "--data_path", str(go_data),
                               "--output_dir", str(out), "--resume", "never", "--lora_rank", "4", "--lora_alpha", "8",
                               "--lora_dropout", "0.1", "--max_steps", "4", "--per_device_train_batch_size", "4",
                               "--save_steps", "4"]) == 0
    return out / "checkpoints" / "last"


def tiny_config(tmp_path, data, name="run", **overrides) -> GRPOConfig:
    values = load_yaml(TINY)
    values.update(data_path=str(data), output_dir=str(tmp_path / name), resume="never", max_steps=2,
                  max_completion_length=16, save_steps=100)
    values.update(overrides)
    return from_dict(GRPOConfig, values)


def run_config(path):
    return yaml.safe_load((path / "config.yaml").read_text())


# ------------------------------------------------------------------ warm and cold runs

@pytest.mark.slow
def test_warm_start_continues_the_sft_lora_with_the_go_reward_and_encoder(tmp_path, decoy_data, sft_lora, monkeypatch):
    # record every embedding lookup of the run: rollouts and log-prob passes read the protein embeddings
    import biopost.eval.run as eval_run
    looked_up = []
    real_lookup = eval_run.cache_lookup

    def recording_lookup(caches):
        inner = real_lookup(caches)

        def lookup(modality, sequence):
            looked_up.append((modality, sequence))
            return inner(modality, sequence)
        return lookup

    monkeypatch.setattr(eval_run, "cache_lookup", recording_lookup)
    _seen_rows.clear()
    cfg = tiny_config(tmp_path, decoy_data, init="sft", sft_checkpoint=str(sft_lora),
                      reward_funcs=["go_f1", "format", "test_protein_probe"], reward_weights=[1.0, 0.2, 1.0])
    assert train_grpo(cfg) == 0
    out = tmp_path / "run"
    rc = run_config(out)
    assert rc["stage"] == "grpo" and rc["modality"] == "protein" and rc["init_source"]["sft_fingerprint"]
    assert rc["policy"]["lora_rank"] == 4                       # the SFT adapter continues (not a fresh rank 8)
    assert rc["generation"]["old_policy_pass"] is True          # a generation batch spans 2 optimizer steps
    log = read_log(out / "train_log.jsonl")
    assert [e["step"] for e in log] == [1, 2]
    assert all(0.0 <= e["rewards/go_f1"] <= 1.0 and "rewards/format" in e for e in log)
    assert log[0]["generated"] == 1 and log[1]["generated"] == 0   # step 2 reuses the rollouts of step 1
    assert log[0]["ratio_max_abs_dev"] == 0.0 and log[1]["ratio_max_abs_dev"] > 0   # a real ratio on step 2
    assert (out / "checkpoints/last/adapter").is_dir()
    # every prompt's protein went through the embedding lookup, as a protein (never pasted as text)
    train_seqs = {json.loads(line)["sequence"] for line in (decoy_data / "train.jsonl").read_text().splitlines()}
    assert {m for m, _ in looked_up} == {"protein"}
    rollout_seqs = {s for _, s in looked_up}
    assert rollout_seqs <= train_seqs and len(rollout_seqs) == 4   # one generation batch = 4 prompts
    # gold only from the gold columns: the GO-GPT decoy in go_pred / go_pred_leaf never becomes gold
    assert len(_seen_rows) == 16
    for row in _seen_rows:
        assert row["gold"] == gold_columns(row) and DECOY_TERM not in sum(row["gold"].values(), [])
        assert row["go_pred_leaf"] == [DECOY_TERM]
    decoy_answer = f"<think>\nx\n</think>\n\nMolecular function: {DECOY_TERM}"
    assert get_reward("go_f1")([decoy_answer] * 16, _seen_rows[:16]) == [0.0] * 16


@pytest.mark.slow
def test_cold_start_from_the_entry_script(tmp_path, go_data):
    out = tmp_path / "cold"
    r = run_script([SCRIPT, "--config", TINY, "--init", "base", "--data_path", go_data, "--output_dir", out,
                    "--max_steps", "2", "--max_completion_length", "12", "--resume", "never"],
                   env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    rc = run_config(out)
    assert rc["init"] == "base" and "sft_fingerprint" not in rc["init_source"]
    assert rc["policy"]["lora_rank"] == 8 and rc["policy"]["encoders"]["protein"]["model_name"] == "biopost-tiny/esm-protein"
    assert rc["reward_funcs"] == ["go_f1", "format"] and rc["importance_sampling_level"] == "sequence"
    assert rc["delta"] == 2.0
    log = read_log(out / "train_log.jsonl")
    assert [e["step"] for e in log] == [1, 2] and "rewards/go_f1" in log[0]
    assert (out / "checkpoints/last/adapter").is_dir()
    assert "generation batch" in run_script([SCRIPT, "--help"]).stdout


# ------------------------------------------------------------------ the encoder is in the loop

@pytest.mark.slow
def test_log_probs_and_rollouts_depend_on_the_protein_embeddings(go_data, sft_lora):
    torch.manual_seed(0)
    model = BioReasoningModel.load(sft_lora)
    cache = EmbeddingCache(model.encoders["protein"])
    rows = [r for r, _ in load_split_rows(str(go_data), ("train",))["train"][:2]]
    prompts = [encode_prompt(model, GO, r, 0) for r in rows for _ in range(2)]
    assert all(p.bio == [("protein", r["sequence"])] for p, r in zip(prompts, [r for r in rows for _ in range(2)]))

    asked = []

    def real(modality, sequence):
        asked.append((modality, sequence))
        return cache.get(sequence)

    def zeros(modality, sequence):
        return torch.zeros_like(cache.get(sequence))

    # the rollout engine splices the embeddings into the prompts it samples from
    sampling = SamplingConfig(max_new_tokens=8, do_sample=True, seed=0)
    gens = build_engine("hf", model, real).generate(prompts, sampling)
    assert sorted(set(asked)) == sorted({("protein", r["sequence"]) for r in rows})

    mb = build_micro_batch(model, prompts, [g.tokens for g in gens], torch.tensor([1.0, -1.0, 1.0, -1.0]), real, "cpu")
    feats = mb.bio_features["protein"]
    assert len(feats) == 4 and all(f.shape[0] == model.encoders["protein"].tokens_for(r["sequence"])
                                   for f, r in zip(feats, [r for r in rows for _ in range(2)]))
    with torch.no_grad():
        logps, _ = completion_logps(model, mb)
        mb_zero = build_micro_batch(model, prompts, [g.tokens for g in gens], mb.advantages, zeros, "cpu")
        logps_zero, _ = completion_logps(model, mb_zero)
    assert mb.loss_mask.sum() > 0
    assert (logps - logps_zero).abs().max() > 1e-4        # zeros for the protein: other log-probs
    # and the prompt text alone is identical: the difference is the embeddings
    assert torch.equal(mb.input_ids, mb_zero.input_ids)


# ------------------------------------------------------------------ gold never from GO-GPT columns

def test_gold_comes_only_from_the_gold_columns():
    row = {"protein_id": "P1", "sequence": "MKV", "go_mf": [GOLD_TERM], "go_bp": [], "go_cc": [],
           "go_pred": f"{DECOY_TERM}", "go_pred_leaf": [DECOY_TERM]}
    assert GO.gold(row) == {"go_mf": [GOLD_TERM], "go_bp": [], "go_cc": []}
    decoy = f"<think>\nx\n</think>\n\nMolecular function: {DECOY_TERM}"
    right = f"<think>\nx\n</think>\n\nMolecular function: {GOLD_TERM}"
    assert get_reward("go_f1")([decoy, right], [row, row]) == [0.0, 1.0]
    # a row whose gold columns are missing has no gold: the go_pred* columns never stand in
    no_gold = {k: v for k, v in row.items() if not k.startswith("go_") or k.startswith("go_pred")}
    with pytest.raises(KeyError):
        GO.gold(no_gold)


def test_a_training_row_labelled_only_by_go_pred_leaf_is_an_error_naming_file_row_and_field(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"protein_id": "P1", "sequence": "MKVLAAGIW", "organism": "Homo sapiens", "go_mf": [GOLD_TERM],
             "go_bp": [], "go_cc": []},
            {"protein_id": "P2", "sequence": "MKVLAAGIW", "organism": "Homo sapiens", "go_mf": [], "go_bp": [],
             "go_cc": [], "go_pred_leaf": [DECOY_TERM]}]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tiny_config(tmp_path, data, init="base")
    with pytest.raises(DataError) as err:
        train_grpo(cfg)
    msg = str(err.value)
    assert "train.jsonl" in msg and "go_pred_leaf" in msg and "line 2" in msg, msg


# ------------------------------------------------------------------ configs

PAPER = dict(loss_type="dr_grpo", num_generations=24, num_iterations=1, steps_per_generation=2, beta=1e-4,
             epsilon=7e-4, epsilon_high=9e-4, importance_sampling_level="sequence", delta=2.0, learning_rate=3e-5,
             lora_rank=16, lora_alpha=32, lora_dropout=0.05, temperature=1.0, top_k=20, top_p=0.95,
             text_model_name="Qwen/Qwen3-4B-Thinking-2507", protein_model_name="esm3_sm_open_v1", task="go",
             reward_funcs=["go_f1", "format"])


def test_protein_configs_parse_validate_and_carry_the_paper_settings():
    from biopost.eval.run import EvalConfig
    for name in ("grpo_tiny.yaml", "grpo_4b.yaml"):
        cfg = from_dict(GRPOConfig, load_yaml(CONFIGS / name))
        cfg.sft_checkpoint = cfg.sft_checkpoint or "x"
        validate_config(cfg)
    for name in ("sft_tiny.yaml", "sft_4b.yaml", "sft_stage1_1p7b.yaml", "sft_stage2_1p7b.yaml"):
        from_dict(SFTConfig, load_yaml(CONFIGS / name))
    for name in ("eval_tiny.yaml", "eval_1p7b.yaml", "eval_4b.yaml"):
        from_dict(EvalConfig, load_yaml(CONFIGS / name))
    big = from_dict(GRPOConfig, load_yaml(CONFIGS / "grpo_4b.yaml"))
    assert {k: getattr(big, k) for k in PAPER} == PAPER
    sft = from_dict(SFTConfig, load_yaml(CONFIGS / "sft_4b.yaml"))
    assert sft.text_model_name == big.text_model_name and sft.protein_model_name == big.protein_model_name
    # 8 prompts per optimizer step; each generation batch serves 2 optimizer steps, so the old-policy
    # pass is real and the sequence ratio (and its cap) can act
    s = schedule_from_config(big)
    assert s.batch * s.accum // s.num_generations == 8
    assert s.micro_per_generation // s.accum == 2 and s.needs_old_logps
    # the one-GPU layout of the config's comment is the same schedule in smaller micro-batches
    big.per_device_train_batch_size, big.gradient_accumulation_steps, big.steps_per_generation = 24, 8, 16
    big.sft_checkpoint = "x"
    validate_config(big)
    s1 = schedule_from_config(big)
    assert s1.batch * s1.accum // s1.num_generations == 8 and s1.micro_per_generation // s1.accum == 2
    assert s1.prompts_per_generation == s.prompts_per_generation == 16 and s1.needs_old_logps
    # the flags of the sequence-level ratio and its cap are documented where users look
    text = (CONFIGS / "grpo_4b.yaml").read_text()
    docs = (ROOT / "BioReason-Pro" / "README.md").read_text()
    for flag in ("importance_sampling_level: sequence", "delta: 2.0"):
        assert flag in text and flag in docs, flag

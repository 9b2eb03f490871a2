"""Evaluation: the shared generation path (batched == one-by-one, KV cache == recompute), the eval
script's metrics files, the SFT over-specialization monitor, and reason.py."""
import json
import shutil

import pytest
import torch

from conftest import ROOT, run_script

from biopost.data.examples import encode_prompt
from biopost.data.io import load_split_rows
from biopost.encoders.cache import EmbeddingCache
from biopost.metrics.classification import majority_rate
from biopost.eval.metrics_file import read_metrics, read_predictions, recompute_from_predictions
from biopost.generate import SamplingConfig, generate
from biopost.model.batch import Batch
from biopost.model.bio_model import BioReasoningModel
from biopost.tasks import get_task
from biopost.train.log import read_log

EVAL = ROOT / "BioReason/eval_kegg_dna_vllm.py"
KEGG = get_task("kegg")


@pytest.fixture(scope="module")
def trained(tiny_sft_run, synth_data):
    model = BioReasoningModel.load(tiny_sft_run / "checkpoints/last").eval()
    cache = EmbeddingCache(model.encoders["dna"])
    rows = [r for r, _ in load_split_rows(str(synth_data), ("id_test",))["id_test"]][:12]
    examples = [encode_prompt(model, KEGG, r) for r in rows]
    return model, cache, examples


def test_batched_greedy_equals_one_by_one(trained):
    model, cache, examples = trained
    emb = lambda m, s: cache.get(s)  # noqa: E731
    batched = generate(model, examples, emb, SamplingConfig(max_new_tokens=80))
    single = [generate(model, [e], emb, SamplingConfig(max_new_tokens=80))[0] for e in examples]
    assert [b.tokens for b in batched] == [s.tokens for s in single]
    assert any(b.stopped for b in batched) and all("<think>" in b.text for b in batched)
    # prompts of different lengths were left-padded in the batch
    assert len({len(e.input_ids) for e in examples}) > 1


def test_kv_cache_logits_equal_full_recompute(trained):
    model, cache, examples = trained
    emb = lambda m, s: cache.get(s)  # noqa: E731
    ex = examples[0]
    out = generate(model, [ex], emb, SamplingConfig(max_new_tokens=24))[0]
    steps = []

    # record the logits the cached decoder used, step by step, through the same code path
    orig_head = model.lm_head()

    class Spy(torch.nn.Module):
        def forward(self, h):
            y = orig_head(h)
            steps.append(y.detach().float().clone())
            return y
    spy = Spy()
    model.lm_head = lambda: spy
    try:
        generate(model, [ex], emb, SamplingConfig(max_new_tokens=24))
    finally:
        del model.lm_head
    full_ids = torch.tensor([ex.input_ids + out.tokens])
    bio = {"dna": [cache.get(s) for _, s in ex.bio]}
    with torch.no_grad():
        hidden = model(Batch(input_ids=full_ids, attention_mask=torch.ones_like(full_ids), bio_features=bio)).hidden
        full = model.lm_head()(hidden).float()[0]
    n_prompt = len(ex.input_ids)
    for i, cached in enumerate(steps):
        assert torch.allclose(cached[0], full[n_prompt - 1 + i], atol=1e-4), f"step {i}"


def test_sampling_is_reproducible_and_top_k_one_is_greedy(trained):
    model, cache, examples = trained
    emb = lambda m, s: cache.get(s)  # noqa: E731
    cfg = SamplingConfig(max_new_tokens=30, do_sample=True, temperature=1.3, top_p=0.95, seed=7)
    a, b = generate(model, examples[:4], emb, cfg), generate(model, examples[:4], emb, cfg)
    assert [x.tokens for x in a] == [x.tokens for x in b]
    greedy = generate(model, examples[:4], emb, SamplingConfig(max_new_tokens=30))
    top1 = generate(model, examples[:4], emb, SamplingConfig(max_new_tokens=30, do_sample=True, top_k=1, seed=3))
    assert [x.tokens for x in greedy] == [x.tokens for x in top1]
    truncated = generate(model, examples[:2], emb, SamplingConfig(max_new_tokens=5))
    assert all(not t.stopped and len(t.tokens) == 5 for t in truncated)


def test_eval_script_writes_both_splits_and_beats_the_majority(tiny_sft_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_sft_run, run, symlinks=True)
    r = run_script([EVAL, "--run_dir", run, "--eval_split", "both", "--max_examples", "100",
                    "--max_new_tokens", "96", "--batch_size", "25"])
    assert r.returncode == 0, r.stderr[-3000:]
    for split in ("id", "ood"):
        m = read_metrics(run / "eval" / split / "metrics.json")
        preds = read_predictions(run / "eval" / split / "predictions.jsonl")
        assert m["split"] == split and m["n"] == len(preds) == 100 and m["stage"] == "sft"
        assert m["run_id"] == tiny_sft_run.name and m["checkpoint"] == "last" and m["sweep"] is None and m["cell"] == {}
        assert m["headline"] == "accuracy" and m["ci95"]["accuracy"][0] <= m["metrics"]["accuracy"] <= m["ci95"]["accuracy"][1]
        again = recompute_from_predictions(preds)
        assert again["accuracy"] == m["metrics"]["accuracy"] and again["macro_f1"] == m["metrics"]["macro_f1"]
        assert again["n_unparsed"] == m["n_unparsed"]
        assert m["provenance"]["torch"] and m["provenance"]["config_sha256"]
    id_metrics = read_metrics(run / "eval/id/metrics.json")
    majority = majority_rate([p["gold"] for p in read_predictions(run / "eval/id/predictions.jsonl")])
    print(f"ID accuracy {id_metrics['metrics']['accuracy']:.3f}, majority {majority:.3f}, "
          f"OOD {read_metrics(run / 'eval/ood/metrics.json')['metrics']['accuracy']:.3f}")
    assert id_metrics["metrics"]["accuracy"] > majority + 0.15


def test_eval_errors_are_clear(tiny_sft_run, tmp_path, synth_data):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sft_run / "checkpoints/last", broken / "checkpoints/step-1")
    (broken / "checkpoints/last").symlink_to("step-1")
    shutil.copy(tiny_sft_run / "config.yaml", broken / "config.yaml")
    (broken / "checkpoints/step-1/bio_modules.safetensors").write_bytes(b"not a safetensors file")
    r = run_script([EVAL, "--run_dir", broken, "--eval_split", "id"])
    assert r.returncode == 1 and "Traceback" not in r.stderr and "bio_modules.safetensors" in r.stderr
    r = run_script([EVAL, "--run_dir", tiny_sft_run, "--checkpoint", "best_ood_val"])
    assert r.returncode == 1 and "no checkpoint 'best_ood_val'" in r.stderr
    data = tmp_path / "only_train"
    data.mkdir()
    shutil.copy(next(synth_data.glob("train.jsonl*")), data)
    r = run_script([EVAL, "--run_dir", tiny_sft_run, "--data_path", data, "--eval_split", "ood",
                    "--output_dir", tmp_path / "o"])
    assert r.returncode == 1 and "ood_test" in r.stderr and "Traceback" not in r.stderr


def _sft_cfg(tmp_path, synth_data, **over):
    from biopost.config import from_dict, load_yaml
    from biopost.train.sft import SFTConfig
    data = load_yaml(ROOT / "BioReason/configs/sft_tiny.yaml")
    data.update(output_dir=str(tmp_path / "mon"), data_path=str(synth_data), train_data_fraction=0.1,
                max_steps=20, eval_every=2, probe_size=4, max_new_tokens=16, save_steps=1000,
                save_total_limit=1, resume="never")
    data.update(over)
    return from_dict(SFTConfig, data)


def test_stop_on_ood_peak_stops_and_keeps_the_best_checkpoint(tmp_path, synth_data, monkeypatch):
    from biopost.train import monitor as monitor_mod
    from biopost.train.sft import train_sft
    ood = iter([0.2, 0.5, 0.4, 0.6, 0.55, 0.6, 0.3, 0.9, 0.9])  # best at the 4th evaluation (step 8)
    calls = []

    def scripted(self, split):
        calls.append(split)
        return {"accuracy": 0.7 if split == "id_val" else next(ood), "macro_f1": 0.0}
    monkeypatch.setattr(monitor_mod.ProbeMonitor, "score_split", scripted)
    assert train_sft(_sft_cfg(tmp_path, synth_data, stop_on_ood_peak=2)) == 0
    run = tmp_path / "mon"
    log = read_log(run / "train_log.jsonl")
    probes = [e for e in log if e.get("event") == "probe"]
    assert [e["step"] for e in probes] == [2, 4, 6, 8, 10, 12]
    assert [e["ood_val_accuracy"] for e in probes] == [0.2, 0.5, 0.4, 0.6, 0.55, 0.6]  # 0.6 again is no improvement
    assert max(e["step"] for e in log if "loss" in e) == 12  # stopped after two evaluations without improvement
    best = json.loads((run / "checkpoints/best_ood_val/trainer_state.json").read_text())
    last = json.loads((run / "checkpoints/last/trainer_state.json").read_text())
    assert best["step"] == 8 and last["step"] == 12
    assert last["monitor"]["best_step"] == 8 and last["monitor"]["since_best"] == 2
    assert calls.count("ood_val") == 6
    # the best checkpoint loads and evaluates like any other
    assert BioReasoningModel.load(run / "checkpoints/best_ood_val") is not None


def test_monitor_runs_real_probe_evaluations(tmp_path, synth_data):
    from biopost.train.sft import train_sft
    assert train_sft(_sft_cfg(tmp_path, synth_data, max_steps=2, eval_every=1)) == 0
    probes = [e for e in read_log(tmp_path / "mon/train_log.jsonl") if e.get("event") == "probe"]
    assert [e["step"] for e in probes] == [1, 2]
    assert all(0 <= e["id_val_accuracy"] <= 1 and 0 <= e["ood_val_accuracy"] <= 1 for e in probes)
    assert (tmp_path / "mon/checkpoints/best_ood_val").exists()


def test_reason_script_prints_reasoning_and_answer(tiny_sft_run, synth_data, tmp_path):
    rows = [r for r, _ in load_split_rows(str(synth_data), ("id_test",))["id_test"]][:2]
    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps({k: r[k] for k in ("reference_sequence", "variant_sequence", "question",
                                                         "answer")}) + "\n" for r in rows))
    r = run_script([ROOT / "BioReason/reason.py", "--checkpoint", tiny_sft_run / "checkpoints/last",
                    "--input_jsonl", src, "--max_new_tokens", "96", "--output_jsonl", tmp_path / "out.jsonl"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("reasoning:") == 2 and r.stdout.count("answer:") == 2 and "[gold:" in r.stdout
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(out) == 2 and all(o["reasoning"] for o in out)
    one = rows[0]
    r = run_script([ROOT / "BioReason/reason.py", "--checkpoint", tiny_sft_run / "checkpoints/last",
                    "--reference_sequence", one["reference_sequence"], "--variant_sequence", one["variant_sequence"],
                    "--question", one["question"], "--max_new_tokens", "96"])
    assert r.returncode == 0 and "answer:" in r.stdout
    r = run_script([ROOT / "BioReason/reason.py", "--checkpoint", tiny_sft_run / "checkpoints/last",
                    "--reference_sequence", "ACGTQ", "--variant_sequence", "ACGTA", "--question", "?"])
    assert r.returncode == 1 and "reference_sequence" in r.stderr

"""The `go` task: registration, prompt / target / gold / parse, metrics equal to
`go_metrics.set_metrics` with bootstrap intervals over proteins, per-example score = the GO
reward; and the tiny protein encoder through the core's `hf` backend."""
import json

import numpy as np
import pytest

from biopost.tasks import MetricResult, get_task
from bioreason_pro.go_metrics import set_metrics
from bioreason_pro.go_reward import go_reward, go_scorer

GO = get_task("go")
ROW = {"protein_id": "P1", "sequence": "MKTAYIAKQR", "organism": "Homo sapiens",
       "go_mf": ["GO:0003824"], "go_bp": ["GO:0008152"], "go_cc": ["GO:0005737"],
       "go_pred": "GO:0005634 nucleus", "interpro_formatted": "IPR000719 Protein kinase domain",
       "ppi_formatted": "STRING: P2, P3", "reasoning": "It has a kinase domain."}


def test_registered_lazily_with_its_metric_settings():
    from biopost.modality import get_modality
    assert GO.name == "go" and GO.modality == "protein" and get_modality("protein").name == "protein"
    assert GO.headline == "f1" and GO.prediction_field == "score"
    assert [f.name for f in GO.schema.sequences] == ["sequence"] and GO.schema.sequences[0].modality == "protein"
    assert GO.schema.lists == ("go_mf", "go_bp", "go_cc")


def test_prompt_has_protein_item_organism_context_and_aspects():
    msgs = GO.prompt_messages(ROW, system_prompt="sys")
    assert msgs[0] == {"role": "system", "content": "sys"}
    content = msgs[1]["content"]
    assert {"type": "protein", "sequence": "MKTAYIAKQR"} in content
    text = "".join(c.get("text", "") for c in content)
    assert "Organism: Homo sapiens" in text and "IPR000719" in text and "STRING: P2, P3" in text
    assert "GO-GPT" in text and "GO:0005634" in text
    assert "molecular function, biological process, cellular component" in text
    only_mf = "".join(c.get("text", "") for c in GO.prompt_messages(dict(ROW, aspects=["MF"]))[0]["content"])
    assert "(molecular function)" in only_mf


def test_target_gold_parse_round_trip_and_gold_never_from_go_pred():
    target = GO.target_text(ROW)
    assert target == ("<think>\nIt has a kinase domain.\n</think>\n\nMolecular function: GO:0003824\n"
                      "Biological process: GO:0008152\nCellular component: GO:0005737")
    gold = GO.gold(ROW)
    assert gold == {"go_mf": ["GO:0003824"], "go_bp": ["GO:0008152"], "go_cc": ["GO:0005737"]}
    assert GO.parse(target) == ["GO:0003824", "GO:0008152", "GO:0005737"]
    assert GO.example_score(GO.parse(target), ROW) == pytest.approx(1.0)
    assert GO.example_score(GO.parse(target), gold) == pytest.approx(1.0)
    assert "GO:0005634" not in json.dumps(gold)
    assert GO.parse("<think>\nstill thinking") is None and GO.example_score(None, ROW) == 0.0
    no_reasoning = dict(ROW)
    del no_reasoning["reasoning"]
    assert GO.target_text(no_reasoning).startswith("<think>\n\n</think>\n\nMolecular function:")


def _answers(rng, n):
    pool = ["GO:0003824", "GO:0016787", "GO:0005215", "GO:0008152", "GO:0006508", "GO:0005737", "GO:0005634",
            "GO:0005739", "GO:0019952"]
    golds, parsed = [], []
    for i in range(n):
        golds.append({"go_mf": list(rng.choice(pool[:3], size=rng.integers(0, 3), replace=False)),
                      "go_bp": list(rng.choice(pool[3:5], size=rng.integers(0, 2), replace=False)),
                      "go_cc": list(rng.choice(pool[5:8], size=rng.integers(1, 3), replace=False))})
        parsed.append(None if i % 7 == 0 else list(rng.choice(pool, size=rng.integers(0, 5), replace=False)))
    return golds, parsed


def test_metrics_equal_set_metrics_and_reward():
    golds, parsed = _answers(np.random.default_rng(0), 60)
    res = GO.metrics(golds, parsed, bootstrap_resamples=200, seed=0)
    assert isinstance(res, MetricResult)
    ref = set_metrics(golds, parsed)
    for space, prefix in (("pooled", ""), ("MF", "MF_"), ("BP", "BP_"), ("CC", "CC_")):
        assert res.metrics[prefix + "f1"] == pytest.approx(ref[space]["weighted_f1"], abs=1e-12)
        assert res.metrics[prefix + "precision"] == pytest.approx(ref[space]["weighted_precision"], abs=1e-12)
        assert res.metrics[prefix + "recall"] == pytest.approx(ref[space]["weighted_recall"], abs=1e-12)
        assert res.metrics[prefix + "plain_f1"] == pytest.approx(ref[space]["f1"], abs=1e-12)
        lo, hi = res.ci95[prefix + "f1"]
        assert lo <= res.metrics[prefix + "f1"] <= hi
    texts = ["<think>\n</think>\n\n" + ", ".join(p) if p is not None else "no answer" for p in parsed]
    assert res.per_example == pytest.approx(go_reward(texts, golds))
    assert "not an Fmax" in res.computed and "bootstrap over proteins (200 resamples" in res.computed
    assert res.extra["scored"] is False
    again = GO.metrics(golds, parsed, bootstrap_resamples=200, seed=0)
    assert again.ci95 == res.ci95   # seeded
    assert GO.metrics(golds, parsed, bootstrap_resamples=0).ci95 == {}


def test_bootstrap_equals_recomputing_on_resampled_proteins():
    golds, parsed = _answers(np.random.default_rng(1), 25)
    res = GO.metrics(golds, parsed, bootstrap_resamples=50, seed=3)
    idx = np.random.default_rng(3).integers(0, 25, size=(50, 25))
    values = [set_metrics([golds[i] for i in row], [parsed[i] for i in row])["pooled"]["weighted_f1"] for row in idx]
    assert res.ci95["f1"] == pytest.approx(list(np.quantile(values, [0.025, 0.975])), abs=1e-12)


def test_tiny_protein_encoder_loads_through_hf_backend():
    from biopost.encoders import build_encoder
    from biopost.tiny import resolve_model_path
    path = resolve_model_path("biopost-tiny/esm-protein")
    enc = build_encoder({"model_name": path, "layer": "-1", "backend": "hf"})
    out = enc.encode(["MKTAYIAKQR", "MBZXUO"])
    assert enc.hidden_size == 64 and out[0].shape[-1] == 64
    assert out[0].shape[0] == enc.tokens_for("MKTAYIAKQR") and out[1].shape[0] == enc.tokens_for("MBZXUO")
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok("MBZXUOACDEFGHIKLMNPQRSTVWY")["input_ids"]
    assert tok.unk_token_id not in ids and len(ids) == 26 + 2


def test_scorer_is_shared_with_the_reward():
    assert go_scorer() is go_scorer()


def test_swissprot_benchmark_through_sft_and_eval(tmp_path, one_torch_thread):
    """The real Swiss-Prot rows go through the split command, the core SFT and evaluation."""
    from biopost.config import from_dict
    from biopost.eval.run import EvalConfig, run_eval
    from biopost.train.sft import SFTConfig, train_sft
    from bioreason_pro.swissprot_benchmark import build
    build(tmp_path / "data")
    cfg = dict(task="go", data_path=str(tmp_path / "data"), output_dir=str(tmp_path / "run"),
               text_model_name="biopost-tiny/qwen3", protein_model_name="biopost-tiny/esm-protein",
               max_length_protein=128, lora_rank=0, max_length_text=512, learning_rate=1e-3, max_steps=3,
               per_device_train_batch_size=4, gradient_accumulation_steps=1, save_steps=1000, resume="never",
               device="cpu")
    assert train_sft(from_dict(SFTConfig, cfg)) == 0
    assert run_eval(from_dict(EvalConfig, dict(run_dir=str(tmp_path / "run"), eval_split="id,ood", batch_size=8,
                                               max_new_tokens=16, device="cpu", bootstrap_resamples=50))) == 0
    m = json.loads((tmp_path / "run/eval/ood/metrics.json").read_text())
    assert m["task"] == "go" and m["headline"] == "f1" and m["n"] == 8 and "f1" in m["metrics"]
    assert "not an Fmax" in m["computed"] and m["scored"] is False
    preds = [json.loads(line) for line in (tmp_path / "run/eval/ood/predictions.jsonl").read_text().splitlines()]
    assert all(isinstance(p["score"], float) and set(p["gold"]) == {"go_mf", "go_bp", "go_cc"} for p in preds)

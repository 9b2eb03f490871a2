"""BioReason-Pro/train_protein_llm.py: the two-stage protein SFT on the shared trainer.

Stage 1 trains the projector (and the bio-token rows) with the language model frozen and no LoRA;
stage 2 starts from stage 1's projector (--projector_checkpoint_path) and trains the language
model too (LoRA, or full fine-tuning at rank 0). The tiny runs are built once per session
(tests/fixtures/protein_runs.py)."""
import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import protein_runs  # noqa: E402
from conftest import ROOT, run_script  # noqa: E402

from biopost.config import load_yaml  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def runs(biopost_cache):
    return protein_runs.two_stage()


def test_training_stage_maps_onto_core_flags():
    mod = protein_runs._script("train_protein_llm.py")
    assert mod.stage_argv(["--x", "1", "--training_stage", "1"]) == ["--x", "1", "--train_projector_only", "true"]
    assert mod.stage_argv(["--training_stage=2"]) == ["--train_projector_only", "false"]
    with pytest.raises(SystemExit) as e:
        mod.stage_argv(["--training_stage", "3"])
    assert e.value.code == 2


def test_core_defaults_unchanged_for_dna():
    from biopost.train.sft import SFTConfig
    cfg = SFTConfig()
    assert cfg.train_projector_only is False and cfg.projector_checkpoint_path is None


def test_stage1_trains_the_projector_only(runs):
    from biopost.model.bio_model import BioReasoningModel
    s1, _ = runs
    cfg = load_yaml(s1 / "config.yaml")
    assert cfg["train_projector_only"] is True and cfg["task"] == "go"
    last = s1 / "checkpoints" / "last"
    spec = json.loads((last / "model_config.json").read_text())
    assert spec["frozen_llm"] is True and spec["lora_rank"] == 0
    assert not (last / "llm").exists() and not (last / "adapter").exists()  # the LLM is the base, unsaved
    assert spec["projectors"] == {"protein": "mlp"}                          # the protein default
    # the loaded model: LLM weights equal the base model's, only projector + bio rows trainable
    model = BioReasoningModel.load(last, is_trainable=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("projectors.") or n == "new_token_embeddings" for n in trainable)
    from transformers import AutoModelForCausalLM
    from biopost.tiny import resolve_model_path
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path(cfg["text_model_name"]))
    w = dict(base.named_parameters())["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(dict(model.llm.named_parameters())["model.layers.0.self_attn.q_proj.weight"], w)
    log = [json.loads(line) for line in (s1 / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 30 and log[-1]["loss"] < log[0]["loss"]


def test_stage2_starts_from_the_stage1_projector_and_trains_the_llm(runs):
    s1, s2 = runs
    cfg = load_yaml(s2 / "config.yaml")
    assert cfg["train_projector_only"] is False
    assert cfg["projector_checkpoint_path"] == str(s1 / "checkpoints" / "last")
    assert (s2 / "checkpoints" / "last" / "llm").is_dir()       # tiny config: lora_rank 0 (full fine-tuning)
    log = [json.loads(line) for line in (s2 / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < 0.2


def test_stage2_with_lora_loads_the_projector(runs, tmp_path):
    """With learning rate 0 the saved projector is exactly stage 1's; the checkpoint is a LoRA one."""
    s1, _ = runs
    out = tmp_path / "s2_lora"
    code = protein_runs.train(["--config", str(protein_runs.SFT_CONFIG), "--data_path", str(protein_runs.go_synth()),
                               "--training_stage", "2", "--lora_rank", "4", "--lora_alpha", "8",
                               "--projector_checkpoint_path", str(s1 / "checkpoints" / "last"),
                               "--learning_rate", "0", "--max_steps", "1", "--train_data_fraction", "0.05",
                               "--output_dir", str(out), "--resume", "never"])
    assert code == 0
    last = out / "checkpoints" / "last"
    assert (last / "adapter").is_dir() and json.loads((last / "model_config.json").read_text())["lora_rank"] == 4
    want = load_file(str(s1 / "checkpoints" / "last" / "bio_modules.safetensors"))
    got = load_file(str(last / "bio_modules.safetensors"))
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    report = json.loads((out / "data_report.json").read_text())
    assert report["train_rows_used"] == 24  # ceil(0.05 * 480)


def test_projector_checkpoint_errors_are_named(runs, tmp_path):
    data = str(protein_runs.go_synth())
    base = [ROOT / "BioReason-Pro" / "train_protein_llm.py", "--config", protein_runs.SFT_CONFIG, "--data_path", data,
            "--training_stage", "2", "--max_steps", "1", "--resume", "never"]
    r = run_script(base + ["--output_dir", tmp_path / "a", "--projector_checkpoint_path", tmp_path / "nowhere"])
    assert r.returncode == 1 and "projector checkpoint" in r.stderr and "bio_modules.safetensors" in r.stderr
    s1, _ = runs
    # a linear projector cannot take the stage-1 MLP's weights
    r = run_script(base + ["--output_dir", tmp_path / "b", "--projector", "linear",
                           "--projector_checkpoint_path", s1 / "checkpoints" / "last"])
    assert r.returncode == 1 and "projector checkpoint" in r.stderr and "do not fit" in r.stderr


def test_monitor_uses_the_go_headline(runs, tmp_path):
    """--eval_every probes id_val / ood_val with the task's headline (f1 for unscored GO answers)."""
    s1, _ = runs
    out = tmp_path / "mon"
    code = protein_runs.train(["--config", str(protein_runs.SFT_CONFIG), "--data_path", str(protein_runs.go_synth()),
                               "--training_stage", "1", "--max_steps", "4", "--eval_every", "2", "--probe_size", "4",
                               "--max_new_tokens", "8", "--stop_on_ood_peak", "5",
                               "--output_dir", str(out), "--resume", "never"])
    assert code == 0
    entries = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    probes = [e for e in entries if "ood_val_f1" in e]
    assert len(probes) == 2 and all("id_val_f1" in e for e in probes)


def _bad_cases():
    sys.path.insert(0, str(Path(__file__).parent))
    from test_protein_data import BAD, good
    return BAD, good


@pytest.mark.parametrize("case", sorted(_bad_cases()[0]))
def test_bad_go_rows_are_named_errors_through_both_scripts(runs, tmp_path, capsys, case):
    """Every bad-input class of the GO rows (tests/test_protein_data.py's BAD) stops
    train_protein_llm.py and eval.py with one error line naming the file, line and field
    (exit 1), before any model is loaded; --skip_invalid skips and counts the row instead."""
    BAD, good = _bad_cases()
    change, field, message = BAD[case]
    rows = [good("P1", reasoning="r"), dict(good("P2", reasoning="r"), **change), good("P3", reasoning="r")]
    data = tmp_path / "data"
    data.mkdir()
    text = "".join(json.dumps(r) + "\n" for r in rows)
    for split in ("train", "id_test"):
        (data / f"{split}.jsonl").write_text(text)
    code = protein_runs.train(["--config", str(protein_runs.SFT_CONFIG), "--data_path", str(data),
                               "--output_dir", str(tmp_path / "run"), "--max_steps", "1", "--resume", "never"])
    err = capsys.readouterr().err
    assert code == 1 and f"train.jsonl: line 2: field {field!r}" in err and message in err, err[-500:]
    _, s2 = runs
    code = protein_runs.evaluate(["--run_dir", str(s2), "--data_path", str(data), "--eval_split", "id",
                                  "--output_dir", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert code == 1 and f"id_test.jsonl: line 2: field {field!r}" in err and message in err, err[-500:]

"""A downloaded checkpoint never runs its own code unless the user says so: the model config's
`trust_remote_code` is ignored in favour of the caller's flag, and a checkpoint that asks for it
is refused with a message naming the flag (reason.py, evaluation and SFT resume alike)."""
import json
import shutil
import sys

import pytest

from conftest import ROOT, run_script

pytestmark = pytest.mark.slow

EVIL = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


def plant(run_dir, tmp_path):
    """A copy of a real run whose checkpoint asks for remote code, with an auto_map into a module
    of its own that leaves a marker file when imported."""
    planted = tmp_path / "planted_run"
    shutil.copytree(run_dir, planted, symlinks=True)
    marker = tmp_path / "REMOTE_CODE_RAN"
    ckpt = planted / "checkpoints" / "last"
    if ckpt.is_symlink():
        target = ckpt.resolve()
        ckpt.unlink()
        shutil.copytree(target, ckpt)
    cfg = json.loads((ckpt / "model_config.json").read_text())
    cfg["trust_remote_code"] = True
    (ckpt / "model_config.json").write_text(json.dumps(cfg))
    for sub in ("adapter", "llm", "tokenizer"):
        d = ckpt / sub
        if d.is_dir():
            (d / "evil.py").write_text(EVIL.format(marker=str(marker)))
            for name in ("config.json", "adapter_config.json", "tokenizer_config.json"):
                f = d / name
                if f.is_file():
                    doc = json.loads(f.read_text())
                    doc["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.Evil",
                                       "AutoTokenizer": ["evil.EvilTokenizer", None]}
                    f.write_text(json.dumps(doc))
    return planted, ckpt, marker


def check_refused(proc, marker):
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and "--trust_remote_code" in errors[0] and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not marker.exists()


def test_reason_refuses_a_checkpoint_that_asks_for_remote_code(tiny_sft_run, tmp_path):
    _, ckpt, marker = plant(tiny_sft_run, tmp_path)
    proc = run_script([ROOT / "BioReason/reason.py", "--checkpoint", ckpt, "--reference_sequence", "ACGT" * 6,
                       "--variant_sequence", "ACGA" * 6, "--question", "Which disease?", "--max_new_tokens", "4"])
    check_refused(proc, marker)


def test_evaluation_refuses_a_checkpoint_that_asks_for_remote_code(tiny_sft_run, tmp_path):
    run, _, marker = plant(tiny_sft_run, tmp_path)
    proc = run_script([ROOT / "BioReason/eval_kegg_dna_vllm.py", "--run_dir", run, "--max_examples", "1",
                       "--max_new_tokens", "4"])
    check_refused(proc, marker)
    assert not (run / "eval").exists()


def test_sft_resume_refuses_a_checkpoint_that_asks_for_remote_code(tiny_sft_run, tmp_path, synth_data):
    run, _, marker = plant(tiny_sft_run, tmp_path)
    (run / "train_done.json").unlink(missing_ok=True)
    proc = run_script([ROOT / "BioReason/train_dna_qwen.py", "--config", ROOT / "BioReason/configs/sft_tiny.yaml",
                       "--data_path", synth_data, "--output_dir", run, "--num_train_epochs", "3"])
    check_refused(proc, marker)


def test_the_model_loader_itself_ignores_the_checkpoints_flag(tiny_sft_run, tmp_path):
    from biopost.errors import CheckpointError
    from biopost.model.bio_model import BioReasoningModel
    _, ckpt, marker = plant(tiny_sft_run, tmp_path)
    with pytest.raises(CheckpointError, match="--trust_remote_code true"):
        BioReasoningModel.load(ckpt)
    assert not marker.exists() and "evil" not in sys.modules

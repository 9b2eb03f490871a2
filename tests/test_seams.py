"""The plug-in seams: a modality found only through its entry point runs SFT, evaluation and GRPO
with BioReason blocked; the registries refuse duplicates and list what they have; the core names
no modality; every entry script turns a user's mistake into one `error:` line and exit code 1."""
import json
import os
import random
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "tests" / "fixtures" / "toy_modality"
MOTIFS = {"alpha": "GAUUACA", "beta": "CUCCUGG", "gamma": "AGGAGGU"}


def write_toy_dist(site: Path, name="toy_modality", entry="toy = toy_modality.modality") -> Path:
    """A dist-info directory declaring the toy modality's entry point, as `pip install` would write."""
    dist = site / f"{name}-0.1.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[biopost.modalities]\n{entry}\n")
    return site


def toy_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choice(sorted(MOTIFS))
        left = "".join(rng.choice("ACGU") for _ in range(10))
        right = "".join(rng.choice("ACGU") for _ in range(10))
        rows.append({"toy_id": f"t{seed}-{i}", "sequence": left + MOTIFS[label] + right, "answer": label})
    return rows


@pytest.fixture(scope="module")
def toy_env(tmp_path_factory, biopost_cache):
    root = tmp_path_factory.mktemp("toy")
    site = write_toy_dist(root / "site")
    data = root / "data"
    data.mkdir()
    for split, n, seed in (("train", 8, 0), ("id_test", 4, 1), ("ood_test", 4, 2)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in toy_rows(n, seed)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(TOY)]), BIOPOST_CACHE_DIR=str(biopost_cache),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    return {"root": root, "data": data, "env": env}


BLOCKED = "import sys; sys.modules['bioreason'] = None\n"


def run_blocked(code: str, env: dict, timeout=600) -> subprocess.CompletedProcess:
    """Python with `bioreason` unimportable (its entry point fails to load and is skipped)."""
    return subprocess.run([sys.executable, "-c", BLOCKED + textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_sft_eval_and_grpo_run_on_a_modality_found_only_through_its_entry_point(toy_env):
    root, data, env = toy_env["root"], toy_env["data"], toy_env["env"]
    sft, grpo = root / "sft", root / "grpo"
    code = f"""
        import json, sys
        from biopost.modality import MODALITIES
        from biopost.registry import DISCOVERY_PROBLEMS
        assert "toy" in MODALITIES and "dna" not in MODALITIES, MODALITIES.names()
        assert any(p.startswith("dna ") for p in DISCOVERY_PROBLEMS), DISCOVERY_PROBLEMS
        from biopost.train.sft import main as sft
        assert sft(["--task", "toy_motif", "--data_path", {str(data)!r}, "--output_dir", {str(sft)!r},
                    "--text_model_name", "biopost-tiny/qwen3", "--lora_rank", "0", "--max_steps", "2",
                    "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
                    "--learning_rate", "1e-3", "--max_length_text", "64", "--resume", "never"]) == 0
        from biopost.eval.run import main as ev
        assert ev(["--run_dir", {str(sft)!r}, "--eval_split", "both", "--max_new_tokens", "6",
                   "--bootstrap_resamples", "20", "--batch_size", "4"]) == 0
        from biopost.train.grpo import main as grpo
        assert grpo(["--task", "toy_motif", "--data_path", {str(data)!r}, "--output_dir", {str(grpo)!r},
                     "--init", "sft", "--sft_checkpoint", {str(sft / "checkpoints" / "last")!r},
                     "--max_steps", "1", "--num_generations", "2", "--per_device_train_batch_size", "4",
                     "--max_completion_length", "6", "--max_length_text", "64", "--resume", "never"]) == 0
        print("BIOREASON", "bioreason" in sys.modules and sys.modules["bioreason"] is not None)
    """
    proc = run_blocked(code, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "BIOREASON False" in proc.stdout
    cfg = (sft / "config.yaml").read_text()
    assert "toy_model_name: biopost-tiny/toy-char" in cfg and "dna_model_name" not in cfg
    for split in ("id", "ood"):
        m = json.loads((sft / "eval" / split / "metrics.json").read_text())
        assert m["modality"] == "toy" and m["task"] == "toy_motif" and m["n"] == 4
        assert set(m["metrics"]) == {"accuracy", "macro_f1"}
        preds = [json.loads(x) for x in (sft / "eval" / split / "predictions.jsonl").read_text().splitlines()]
        assert [p["id"] for p in preds] == [f"t{1 if split == 'id' else 2}-{i}" for i in range(4)]  # the id field
    log = [json.loads(x) for x in (grpo / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 1 and "rewards/correctness" in log[-1]
    model_cfg = json.loads((grpo / "checkpoints" / "last" / "model_config.json").read_text())
    assert list(model_cfg["encoders"]) == ["toy"] and model_cfg["projectors"] == {"toy": "mlp"}
    assert model_cfg["bio_tokens"]["toy"] == ["<|toy_start|>", "<|toy_pad|>", "<|toy_end|>"]


def test_a_duplicate_registration_gives_the_registrys_error(toy_env, tmp_path):
    """Two plug-ins registering the modality `toy`: the second one's import fails with the
    registry's error (noted, not fatal to the others), and registering in-process is refused."""
    site = write_toy_dist(tmp_path / "site2", name="toy_clone", entry="toy_clone = toy_clone_modality")
    (tmp_path / "site2" / "toy_clone_modality.py").write_text(textwrap.dedent("""
        from biopost.modality import Modality, register_modality
        register_modality(Modality(name="toy", bio_tokens=("<a>", "<b>", "<c>"), alphabet="AC",
                                   default_projector="linear", encoder_spec=dict, truncation=lambda c: (0, 0)))
    """))
    env = dict(toy_env["env"], PYTHONPATH=os.pathsep.join([toy_env["env"]["PYTHONPATH"], str(site)]))
    proc = run_blocked("""
        from biopost.modality import MODALITIES, Modality, register_modality
        from biopost.registry import DISCOVERY_PROBLEMS, RegistryError
        assert MODALITIES.get("toy").alphabet == "ACGU"
        clone = [p for p in DISCOVERY_PROBLEMS if p.startswith("toy_clone ")]
        assert clone and "modality 'toy' is already registered" in clone[0], DISCOVERY_PROBLEMS
        try:
            register_modality(Modality(name="toy", bio_tokens=("<x>", "<y>", "<z>"), alphabet="A",
                                       default_projector="mlp", encoder_spec=dict, truncation=lambda c: (0, 0)))
        except RegistryError as e:
            print("REFUSED", e)
        from biopost.tasks import get_task
        try:
            get_task("kegg")
        except KeyError as e:
            print("MISSING", e)
    """, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REFUSED modality 'toy' is already registered" in proc.stdout
    # an unknown name lists what is registered, and says which plug-ins failed to load
    missing = [x for x in proc.stdout.splitlines() if x.startswith("MISSING")][0]
    assert "unknown task 'kegg'; registered: " in missing and "toy_motif" in missing and "dna (" in missing


def test_registry_basics():
    from biopost.errors import NotRegisteredError
    from biopost.registry import Registry, RegistryError
    reg = Registry("widget", discover_on_miss=False)
    fn = lambda: 1  # noqa: E731
    reg.register("a", fn)
    reg.register("a", fn)                     # the same object again: a no-op
    with pytest.raises(RegistryError, match="widget 'a' is already registered"):
        reg.register("a", lambda: 2)
    reg.register_lazy("json", "json:dumps")
    assert reg.get("json")({"x": 1}) == '{"x": 1}'  # imported on first use
    with pytest.raises(NotRegisteredError, match="unknown widget 'b'; registered: a, json"):
        reg.get("b")
    with pytest.raises(RegistryError, match="module:attribute"):
        reg.register_lazy("c", "no_colon")
    reg.register_lazy("gone", "no_such_module_xyz:thing")
    with pytest.raises(NotRegisteredError, match="cannot be imported"):
        reg.get("gone")


def test_modality_flags_extend_the_stage_configs_and_keep_the_published_names():
    from biopost.config import from_dict, stage_class
    from biopost.eval.run import EvalConfig
    from biopost.train.grpo import GRPOConfig
    from biopost.train.sft import SFTConfig
    for cls in (SFTConfig, GRPOConfig):
        core = set(cls.__dataclass_fields__)
        assert not any(re.fullmatch(r"(dna|protein)_\w+", f) for f in core), core
        ext = set(stage_class(cls).__dataclass_fields__)
        assert {"dna_model_name", "dna_is_evo2", "dna_embedding_layer", "max_length_dna",
                "truncate_dna_per_side", "protein_model_name", "protein_embedding_layer"} <= ext
    assert stage_class(EvalConfig) is EvalConfig
    cfg = from_dict(SFTConfig, {"dna_is_evo2": "true", "dna_model_name": "evo2_1b_base"})
    from biopost.modality import get_modality
    assert get_modality("dna").encoder_spec(cfg) == {"model_name": "evo2_1b_base", "backend": "evo2",
                                                     "layer": "blocks.20.mlp.l3", "fp8": False}


def test_train_dna_qwen_help_lists_every_published_dna_flag():
    proc = subprocess.run([sys.executable, "BioReason/train_dna_qwen.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    published = ["--text_model_name", "--dna_model_name", "--dna_is_evo2", "--dna_embedding_layer",
                 "--max_length_dna", "--max_length_text", "--truncate_dna_per_side", "--learning_rate",
                 "--num_train_epochs", "--max_steps", "--per_device_train_batch_size",
                 "--gradient_accumulation_steps", "--train_data_fraction", "--seed", "--output_dir", "--resume",
                 "--lora_rank", "--lora_alpha", "--lora_dropout", "--gradient_checkpointing", "--eval_every",
                 "--probe_size", "--stop_on_ood_peak", "--skip_invalid", "--engine"]
    missing = [f for f in published if not re.search(rf"^\s+{re.escape(f)}\b", proc.stdout, re.M)]
    assert not missing, missing
    assert "dna modality:" in proc.stdout  # the modality's flags under its own heading


def test_the_core_names_no_modality():
    """`grep -rnwE 'dna_[a-z_]+|protein_[a-z_]+|"dna"|"protein"|bioreason' biopost/` finds only
    documentation: every hit must sit in a docstring or a comment."""
    import ast
    import io
    import tokenize
    pattern = re.compile(r'\b(dna_[a-z_]+|protein_[a-z_]+|bioreason)\b|"dna"|"protein"')
    # help texts and epilogs show example spec paths (sweeps/dna_sft_epochs.yaml): documentation too
    example_path = re.compile(r"sweeps/dna_[a-z_]+\.yaml")
    offenders = []
    for path in sorted((ROOT / "biopost").rglob("*.py")):
        source = path.read_text()
        doc_lines = set()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                        and isinstance(body[0].value.value, str):
                    doc_lines.update(range(body[0].lineno, body[0].end_lineno + 1))
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT or tok.start[0] in doc_lines:
                continue
            if pattern.search(example_path.sub("", tok.string)):
                offenders.append(f"{path.relative_to(ROOT)}:{tok.start[0]}: {tok.string[:80]}")
    assert not offenders, "\n".join(offenders)


# --- user errors: one `error:` line, exit code 1 ------------------------------------------------

def _one_error_line(proc):
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith("error: ")]
    return proc.returncode == 1 and len(errors) == 1 and "Traceback" not in proc.stderr, errors


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, biopost_cache, synth_data):
    """A 1-step tiny SFT run: the checkpoint the error cases point at."""
    out = tmp_path_factory.mktemp("err_sft")
    proc = subprocess.run([sys.executable, "BioReason/train_dna_qwen.py", "--config", "BioReason/configs/sft_tiny.yaml",
                           "--data_path", str(synth_data), "--output_dir", str(out), "--max_steps", "1",
                           "--resume", "never"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, BIOPOST_CACHE_DIR=str(biopost_cache)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


CASES = {
    "sft": ["BioReason/train_dna_qwen.py", "--config", "BioReason/configs/sft_tiny.yaml", "--max_steps", "1",
            "--resume", "never"],
    "grpo": ["BioReason/train_grpo.py", "--config", "BioReason/configs/grpo_tiny.yaml", "--max_steps", "1",
             "--resume", "never", "--init", "base"],
}


@pytest.mark.slow
@pytest.mark.parametrize("mistake", ["task", "backend", "split", "checkpoint"])
@pytest.mark.parametrize("script", ["sft", "grpo", "eval", "reason"])
def test_entry_scripts_turn_user_mistakes_into_one_error_line(script, mistake, tiny_run, synth_data, tmp_path,
                                                               biopost_cache):
    ckpt = tiny_run / "checkpoints" / "last"
    if script in CASES:
        args = CASES[script] + ["--data_path", str(synth_data), "--output_dir", str(tmp_path / "out")]
        args += {"task": ["--task", "no_such_task"],
                 "backend": ["--dna_is_evo2", "false", "--dna_model_name", "biopost-tiny/no-such-encoder"],
                 "split": ["--data_path", str(tmp_path / "empty")],
                 "checkpoint": ["--resume", str(tmp_path / "no_ckpt")] if script == "sft"
                 else ["--init", "sft", "--sft_checkpoint", str(tmp_path / "no_ckpt")]}[mistake]
        if mistake == "split":
            (tmp_path / "empty").mkdir()
            (tmp_path / "empty" / "id_test.jsonl").write_text("")
    elif script == "eval":
        args = ["BioReason/eval_kegg_dna_vllm.py", "--run_dir", str(tiny_run), "--max_examples", "1",
                "--output_dir", str(tmp_path / "ev")]
        args += {"task": ["--task", "no_such_task"], "backend": ["--engine", "no_such_engine"],
                 "split": ["--eval_split", "train"], "checkpoint": ["--checkpoint", "no_such_label"]}[mistake]
    else:
        args = ["BioReason/reason.py", "--checkpoint", str(ckpt), "--reference_sequence", "ACGT" * 6,
                "--variant_sequence", "ACGA" * 6, "--question", "Which disease?"]
        args += {"task": ["--task", "no_such_task"], "backend": ["--engine", "no_such_engine"],
                 "split": ["--reference_sequence", "ACGTXX"], "checkpoint": []}[mistake]
        if mistake == "checkpoint":
            args[2] = str(tmp_path / "no_ckpt")
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, BIOPOST_CACHE_DIR=str(biopost_cache)))
    ok, errors = _one_error_line(proc)
    assert ok, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    expected = {"task": "no_such_task", "backend": "no_such|no-such", "split": "split|train|outside|rows",
                "checkpoint": "no_ckpt|no_such_label|checkpoint"}[mistake]
    assert re.search(expected, errors[0]), errors[0]

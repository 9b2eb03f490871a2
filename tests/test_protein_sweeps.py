"""The protein study's sweep specs (sweeps/protein_*.yaml) and their launchers
(BioReason-Pro/scripts/): every spec plans, names only keys its stages' configs know, and the
launchers' dry runs print the sbatch scripts of the protein SFT, GRPO and evaluation jobs."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from sweep_helpers import PYTHON, REPO, cli_env, sweep  # noqa: E402

from biopost.sweeps.plan import Options, Plan  # noqa: E402
from biopost.sweeps.spec import load_spec  # noqa: E402
from biopost.sweeps.status import write_json_atomic  # noqa: E402

SPECS = sorted((REPO / "sweeps").glob("protein_*.yaml"))
SCRIPTS = REPO / "BioReason-Pro" / "scripts"
SFT_LAUNCHER, GRPO_LAUNCHER, EVAL_LAUNCHER = (SCRIPTS / n for n in
                                              ("sweep_protein_sft.sh", "sweep_protein_grpo.sh",
                                               "submit_id_ood_eval_rl.sh"))
AXES = {"protein_sft_data_fraction", "protein_rl_data_fraction", "protein_rl_epochs", "protein_rl_warm_start",
        "protein_kl_beta", "protein_data_budget", "protein_lora_rank"}


def default_specs(launcher: Path) -> list[str]:
    """The spec paths a launcher submits when given none (its `[ $# -gt 0 ] || set -- ...` list)."""
    block = re.search(r"\|\| set -- \\\n(.*?)\nexec ", launcher.read_text(), re.S).group(1)
    return [line.strip().rstrip("\\").strip() for line in block.splitlines() if line.strip()]


def cells(spec_path, stage):
    plan = Plan(load_spec(spec_path), Options(work_root=REPO / "no-runs", repo_root=REPO), queue={})
    return plan.exp.stages.get(stage, [])


def test_every_study_axis_has_a_spec_and_a_launcher():
    assert {p.stem for p in SPECS} == AXES
    sft_only, with_grpo = default_specs(SFT_LAUNCHER), default_specs(GRPO_LAUNCHER)
    assert sorted(sft_only + with_grpo) == sorted(f"sweeps/{p.name}" for p in SPECS)
    assert default_specs(EVAL_LAUNCHER) == with_grpo
    for rel in with_grpo:
        spec = yaml.safe_load((REPO / rel).read_text())
        assert spec["modality"] == "protein" and spec["task"] == "go"
        assert spec["stages"]["grpo"]["script"] == "BioReason-Pro/train_protein_grpo.py"
        assert spec["stages"]["grpo"]["config"] == "BioReason-Pro/configs/grpo_4b.yaml"
        assert spec["stages"]["sft"]["config"] == "BioReason-Pro/configs/sft_4b.yaml"
    for rel in sft_only:
        assert "grpo" not in yaml.safe_load((REPO / rel).read_text())["stages"]


def test_the_specs_sweep_the_study_values():
    def swept(name, stage, key):
        return sorted({c.values[key] for c in cells(REPO / f"sweeps/{name}.yaml", stage) if key in c.values})

    assert swept("protein_sft_data_fraction", "sft", "train_data_fraction") == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert swept("protein_rl_data_fraction", "grpo", "train_data_fraction") == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert swept("protein_rl_epochs", "grpo", "num_train_epochs") == [1, 2, 4, 8]
    assert swept("protein_kl_beta", "grpo", "beta") == [1e-4, 1e-3]
    assert swept("protein_rl_warm_start", "grpo", "init") == ["base", "sft"]
    assert swept("protein_lora_rank", "sft", "lora_rank") == [8, 16, 32, 64, 128]
    # the budget: SFT share + RL share of 20K proteins is 20K in every cell (a skipped stage counts 0)
    budget = yaml.safe_load((REPO / "sweeps/protein_data_budget.yaml").read_text())
    shares = []
    for cell in budget["cells"]:
        sft = 0.0 if cell.get("sft.num_train_epochs") == 0 else cell.get("sft.train_data_fraction", 1.0)
        rl = 0.0 if cell.get("grpo.num_train_epochs") == 0 else cell.get("grpo.train_data_fraction", 1.0)
        shares.append((sft * 20_000, rl * 20_000))
    assert shares == [(0, 20_000), (5_000, 15_000), (10_000, 10_000), (15_000, 5_000), (20_000, 0)]
    stages = budget["stages"]
    assert stages["sft"]["data"]["path"] != stages["grpo"]["data"]["path"]   # disjoint pools
    assert budget["eval"]["data"]["path"] == budget["data"]["path"]        # one test set for every cell


def test_swept_keys_are_fields_of_the_stage_configs():
    from biopost.train.grpo import GRPOConfig
    from biopost.train.sft import SFTConfig
    fields = {"sft": set(SFTConfig.__dataclass_fields__), "grpo": set(GRPOConfig.__dataclass_fields__)}
    for path in SPECS:
        spec = yaml.safe_load(path.read_text())
        for stage, body in spec["stages"].items():
            keys = set(body.get("grid", {})) | set(body.get("overrides", {}))
            keys |= {k.split(".", 1)[1] for cell in spec.get("cells", []) for k in cell if k.startswith(stage + ".")}
            keys |= {k.split(".", 1)[1] for k in spec.get("zip", {}) if k.startswith(stage + ".")}
            assert keys <= fields[stage], (path.name, stage, keys - fields[stage])


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_spec_plans(tmp_path, spec):
    out = sweep("plan", spec, "--work_root", tmp_path / "runs", env=cli_env(tmp_path)).stdout
    assert "GPU-h" in out and "sft" in out
    assert not (tmp_path / "runs").exists()   # planning writes nothing


def _dry_run(launcher, tmp_path, *specs):
    env = cli_env(tmp_path, DRY_RUN=1, PYTHON=PYTHON, BIOPOST_WORK_ROOT=tmp_path / "runs", PARTITION="gpu a",
                  TIME="12:00:00")
    proc = subprocess.run([str(launcher), *map(str, specs)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_sft_launcher_dry_run_shows_the_sbatch_scripts(tmp_path):
    proc = _dry_run(SFT_LAUNCHER, tmp_path)
    out = proc.stdout
    assert "== sweeps/protein_sft_data_fraction.yaml" in proc.stderr
    assert "# ===== job sft.0" in out and "# ===== job eval-sft.0" in out and "train_protein_grpo" not in out
    assert "#SBATCH --array=0-4" in out and "#SBATCH --partition='gpu a'" in out and "#SBATCH --time=12:00:00" in out
    assert out.count("BioReason-Pro/train_protein_llm.py --config BioReason-Pro/configs/sft_4b.yaml") == 5
    assert "BioReason-Pro/eval.py --run_dir" in out
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_grpo_launcher_dry_run_shows_every_protein_rl_sweep(tmp_path):
    proc = _dry_run(GRPO_LAUNCHER, tmp_path)
    out = proc.stdout
    for rel in default_specs(GRPO_LAUNCHER):
        assert f"== {rel}" in proc.stderr
    scripts = re.split(r"^# ===== job ", out, flags=re.M)[1:]
    labels = [s.split(":", 1)[0] for s in scripts]
    assert {"sft.0", "grpo.0", "eval-sft.0", "eval-grpo.0"} <= set(labels)
    for text in scripts:
        assert "#SBATCH --requeue" in text and "#SBATCH --gres=gpu:1" in text
    grpo_lines = [line for line in out.splitlines() if "BioReason-Pro/train_protein_grpo.py" in line]
    assert grpo_lines and all("--config BioReason-Pro/configs/grpo_4b.yaml" in line for line in grpo_lines)
    # warm cells bind the SFT checkpoint; the warm-start sweep's cold cell and the budget's 0/20K start from the base
    assert any("--init sft --sft_checkpoint" in line for line in grpo_lines)
    assert sum("--init base" in line for line in grpo_lines) == 2
    assert "--beta 0.001" in out and "--num_train_epochs 8" in out and "--lora_rank 128" in out
    assert "--data_path data/go_budget20k/rl" in out and "--data_path data/go_budget20k/sft" in out
    assert not (tmp_path / "runs").exists()


def test_eval_launcher_dry_run_submits_only_the_evaluation_of_done_cells(tmp_path):
    spec = REPO / "sweeps/protein_kl_beta.yaml"
    plan = Plan(load_spec(spec), Options(work_root=tmp_path / "runs", repo_root=REPO), queue={})
    for cell in plan.exp.stages["sft"] + plan.exp.stages["grpo"]:   # done, each grpo after its current sft
        up = cell.effective_upstream()
        write_json_atomic(cell.status_path, {
            "schema": "biopost.status/v1", "state": "done", "output_hash": "h-" + cell.run_id,
            "upstream": {"run_id": up.run_id, "checkpoint_hash": "h-" + up.run_id} if up else None})
    out = _dry_run(EVAL_LAUNCHER, tmp_path, spec).stdout
    assert "# ===== job eval-grpo.0" in out and "# ===== job eval-sft.0" in out
    assert "# ===== job grpo.0" not in out and "# ===== job sft.0" not in out
    assert out.count("BioReason-Pro/eval.py --run_dir") == 3   # 1 sft + 2 grpo cells (beta 1e-4, 1e-3)

"""Sweep specs: validation errors that name the key, expansion (grid, zip, cells, seeds, fan-out),
run ids, skipped 0-epoch cells, upstream binding, expected_evaluations, and every spec in sweeps/."""
import re
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from sweep_helpers import REPO  # noqa: E402

from biopost.sweeps.binding import stage_command  # noqa: E402
from biopost.sweeps.spec import SpecError, expand, expected_evaluations, load_spec  # noqa: E402

SCRIPT = "tests/fixtures/sweep_stage.py"


def spec_file(tmp_path, spec: dict, name="spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(spec, sort_keys=False))
    return p


def base(**stages) -> dict:
    return {"name": "t", "modality": "dna", "stages": stages or {"sft": {"script": SCRIPT}}}


def load_error(tmp_path, spec) -> str:
    with pytest.raises(SpecError) as e:
        load_spec(spec_file(tmp_path, spec))
    return str(e.value)


def cells_of(tmp_path, spec, root=None):
    return expand(load_spec(spec_file(tmp_path, spec)), tmp_path / "runs", root=root or tmp_path)


# ------------------------------------------------------------------ errors name the key
def test_unknown_top_level_key_is_named(tmp_path):
    msg = load_error(tmp_path, {**base(), "sedes": [0]})
    assert "sedes" in msg and "unknown key" in msg and "spec.yaml" in msg


def test_unknown_stage_key_is_named(tmp_path):
    msg = load_error(tmp_path, base(sft={"script": SCRIPT, "gird": {"num_train_epochs": [1]}}))
    assert "stages.sft.gird" in msg and "unknown key" in msg


@pytest.mark.parametrize("values, key", [
    (4, "stages.sft.grid.num_train_epochs"),  # not a list
    ([], "stages.sft.grid.num_train_epochs"),  # empty
    ([1, [2]], "stages.sft.grid.num_train_epochs[1]"),  # nested
    ([1, {"a": 2}], "stages.sft.grid.num_train_epochs[1]"),
    ([2, 2], "stages.sft.grid.num_train_epochs"),  # duplicate
])
def test_bad_grid_values_are_named(tmp_path, values, key):
    msg = load_error(tmp_path, base(sft={"script": SCRIPT, "grid": {"num_train_epochs": values}}))
    assert key in msg


def test_zip_lists_of_unequal_length(tmp_path):
    spec = base(sft={"script": SCRIPT}, grpo={"script": SCRIPT, "after": "sft"})
    spec["zip"] = {"sft.num_train_epochs": [0, 2, 4], "grpo.num_train_epochs": [4, 2]}
    msg = load_error(tmp_path, spec)
    assert "zip.grpo.num_train_epochs" in msg and "unequal length" in msg and "3" in msg and "2" in msg


def test_stage_after_a_missing_stage(tmp_path):
    msg = load_error(tmp_path, base(grpo={"script": SCRIPT, "after": "sft"}))
    assert "stages.grpo.after" in msg and "'sft'" in msg


def test_zip_key_of_a_missing_stage(tmp_path):
    spec = {**base(), "zip": {"rl.num_train_epochs": [1, 2]}}
    assert "zip.rl.num_train_epochs" in load_error(tmp_path, spec)


def test_unsupported_chain_is_named(tmp_path):
    msg = load_error(tmp_path, base(grpo={"script": SCRIPT}, sft={"script": SCRIPT, "after": "grpo"}))
    assert "stages.sft.after" in msg and "sft stage cannot run after a grpo" in msg


def test_cycle_is_named(tmp_path):
    msg = load_error(tmp_path, base(cpt={"script": SCRIPT, "after": "sft"}, sft={"script": SCRIPT, "after": "cpt"}))
    assert "after" in msg and "cycle" in msg


@pytest.mark.parametrize("grid_key", ["seed", "output_dir", "run_id"])
def test_reserved_keys_cannot_be_swept(tmp_path, grid_key):
    msg = load_error(tmp_path, base(sft={"script": SCRIPT, "grid": {grid_key: [1, 2]}}))
    assert f"stages.sft.grid.{grid_key}" in msg and "set by the sweep" in msg


@pytest.mark.parametrize("resources, key", [
    ({"gpus": -1}, "resources.gpus"), ({"time": "soon"}, "resources.time"), ({"cpus": 0}, "resources.cpus"),
    ({"partition": "a\nb"}, "resources.partition"), ({"gpu": 1}, "resources.gpu"),
    ({"setup": "module load cuda"}, "resources.setup"),
])
def test_bad_resources_are_named(tmp_path, resources, key):
    assert key in load_error(tmp_path, {**base(), "resources": resources})


def test_key_swept_twice_is_an_error(tmp_path):
    spec = base(sft={"script": SCRIPT, "grid": {"num_train_epochs": [1, 2]}})
    spec["zip"] = {"sft.num_train_epochs": [1, 2]}
    assert "zip.sft.num_train_epochs" in load_error(tmp_path, spec)


def test_duplicate_yaml_key_is_an_error(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text(f"name: t\nstages:\n  sft: {{script: {SCRIPT}}}\nname: u\n")
    with pytest.raises(SpecError, match="duplicate key 'name'"):
        load_spec(p)


def test_eval_stage_must_exist(tmp_path):
    spec = {**base(), "eval": {"stages": ["grpo"]}}
    assert "eval.stages" in load_error(tmp_path, spec)


def test_missing_config_file_names_the_key(tmp_path):
    spec = base(sft={"script": SCRIPT, "config": "nope/sft.yaml"})
    with pytest.raises(SpecError, match=r"stages\.sft\.config: config file not found"):
        cells_of(tmp_path, spec)


# ------------------------------------------------------------------ expansion
def test_grid_is_a_product(tmp_path):
    exp = cells_of(tmp_path, base(sft={"script": SCRIPT, "grid": {"num_train_epochs": [1, 2],
                                                                  "learning_rate": [1e-4, 3e-4, 1e-3]}}))
    cells = exp.stages["sft"]
    assert len(cells) == 6
    assert {(c.values["num_train_epochs"], c.values["learning_rate"]) for c in cells} == \
        {(e, lr) for e in (1, 2) for lr in (1e-4, 3e-4, 1e-3)}
    assert isinstance(cells[0].values["learning_rate"], float)  # 1e-4 is a float (YAML 1.2), not a string


def test_fan_out_one_downstream_cell_per_upstream_cell_and_value(tmp_path):
    spec = base(sft={"script": SCRIPT, "grid": {"num_train_epochs": [1, 2]}},
                grpo={"script": SCRIPT, "after": "sft", "grid": {"num_train_epochs": [1, 2, 4]}})
    spec["eval"] = {"stages": ["sft", "grpo"]}
    exp = cells_of(tmp_path, spec)
    sft, grpo = exp.stages["sft"], exp.stages["grpo"]
    assert len(sft) == 2 and len(grpo) == 6
    for g in grpo:
        assert g.upstream.values["num_train_epochs"] == g.cell["sft.num_train_epochs"]
        assert g.task_id == g.upstream.task_id  # index-aligned with its upstream's array
    assert [len([g for g in grpo if g.upstream is s]) for s in sft] == [3, 3]
    assert len(exp.evals["sft"]) == 2 and len(exp.evals["grpo"]) == 6


def test_zip_couples_stages_and_zero_epochs_skip(tmp_path):
    spec = base(sft={"script": SCRIPT}, grpo={"script": SCRIPT, "after": "sft"})
    spec["zip"] = {"sft.num_train_epochs": [0, 2, 4, 6, 8], "grpo.num_train_epochs": [8, 6, 4, 2, 0]}
    spec["eval"] = {"stages": ["sft", "grpo"]}
    exp = cells_of(tmp_path, spec)
    sft, grpo = exp.stages["sft"], exp.stages["grpo"]
    assert len(sft) == 5 and len(grpo) == 5
    assert [c.skipped for c in sft] == [True, False, False, False, False]
    assert [c.skipped for c in grpo] == [False, False, False, False, True]
    assert [(g.upstream.values["num_train_epochs"], g.values["num_train_epochs"]) for g in grpo] == \
        [(0, 8), (2, 6), (4, 4), (6, 2), (8, 0)]
    # skipped cells are not evaluated
    assert len(exp.evals["sft"]) == 4 and len(exp.evals["grpo"]) == 4


def test_explicit_cells(tmp_path):
    spec = base(sft={"script": SCRIPT}, grpo={"script": SCRIPT, "after": "sft"})
    spec["cells"] = [{"grpo.init": "sft", "grpo.merge_sft": True}, {"grpo.init": "base", "grpo.merge_sft": False}]
    exp = cells_of(tmp_path, spec)
    assert len(exp.stages["sft"]) == 1 and len(exp.stages["grpo"]) == 2
    assert [c.values for c in exp.stages["grpo"]] == [{"init": "sft", "merge_sft": True},
                                                      {"init": "base", "merge_sft": False}]


def test_seeds_multiply_cells_and_appear_in_ids(tmp_path):
    spec = {**base(sft={"script": SCRIPT, "grid": {"num_train_epochs": [4]}}), "seeds": [0, 1]}
    cells = cells_of(tmp_path, spec).stages["sft"]
    assert [c.seed for c in cells] == [0, 1]
    assert [c.run_id.rsplit("-", 1)[0] for c in cells] == ["e4_s0", "e4_s1"]
    assert cells[0].resolved["seed"] == 0 and cells[0].run_id != cells[1].run_id


def test_run_ids_are_readable_stable_and_follow_the_config(tmp_path):
    config = tmp_path / "sft.yaml"
    config.write_text("learning_rate: 1.0e-4\n")
    spec = base(sft={"script": SCRIPT, "config": str(config), "grid": {"num_train_epochs": [4]}},
                grpo={"script": SCRIPT, "after": "sft", "grid": {"learning_rate": [1e-4]}})
    first = cells_of(tmp_path, spec)
    again = cells_of(tmp_path, spec)
    sft_id, grpo_id = first.stages["sft"][0].run_id, first.stages["grpo"][0].run_id
    assert re.fullmatch(r"e4-[0-9a-f]{8}", sft_id) and re.fullmatch(r"e4_lr1e-4-[0-9a-f]{8}", grpo_id)
    assert (again.stages["sft"][0].run_id, again.stages["grpo"][0].run_id) == (sft_id, grpo_id)
    assert first.stages["sft"][0].run_dir == tmp_path / "runs" / "t" / "sft" / sft_id

    config.write_text("learning_rate: 2.0e-4\n")  # the sft config changes: both ids change
    changed = cells_of(tmp_path, spec)
    assert changed.stages["sft"][0].run_id != sft_id
    assert changed.stages["grpo"][0].run_id != grpo_id  # only through its upstream's run id
    assert changed.stages["grpo"][0].resolved["config"] == first.stages["grpo"][0].resolved["config"]

    spec["stages"]["grpo"]["overrides"] = {"beta": 0.001}  # a downstream change leaves the upstream alone
    third = cells_of(tmp_path, spec)
    assert third.stages["sft"][0].run_id == changed.stages["sft"][0].run_id
    assert third.stages["grpo"][0].run_id != changed.stages["grpo"][0].run_id


def test_run_id_sanitizes_values(tmp_path):
    spec = base(sft={"script": SCRIPT, "grid": {"note": ["a b/../$(x);'\""]}})
    run_id = cells_of(tmp_path, spec).stages["sft"][0].run_id
    assert re.fullmatch(r"[A-Za-z0-9._-]+", run_id) and not run_id.startswith(".")


# ------------------------------------------------------------------ binding (stage command lines)
def argv_of(exp, stage, i=0):
    argv, select_best = stage_command(exp.spec, exp.stages[stage][i])
    return argv, select_best


def flag(argv, name):
    return argv[argv.index(name) + 1] if name in argv else None


def test_binding_cpt_sft_grpo_and_identity_flags(tmp_path):
    spec = base(cpt={"script": SCRIPT}, sft={"script": SCRIPT, "after": "cpt", "grid": {"num_train_epochs": [2]}},
                grpo={"script": SCRIPT, "after": "sft", "checkpoint": "best_ood_val",
                      "data": {"path": "grpo_data"}})
    spec["data"] = {"path": "kegg dir", "seed": 3}
    exp = cells_of(tmp_path, spec)
    cpt, sft, grpo = exp.stages["cpt"][0], exp.stages["sft"][0], exp.stages["grpo"][0]
    argv, _ = argv_of(exp, "sft")
    assert flag(argv, "--text_model_name") == f"{cpt.run_dir}/final"
    assert flag(argv, "--num_train_epochs") == "2"
    assert flag(argv, "--output_dir") == str(sft.run_dir) and flag(argv, "--run_id") == sft.run_id
    assert flag(argv, "--sweep") == "t" and flag(argv, "--seed") == "0"
    assert flag(argv, "--cell") == '{"sft.num_train_epochs": 2}'
    assert flag(argv, "--data_path") == "kegg dir" and flag(argv, "--data_seed") == "3"
    argv, _ = argv_of(exp, "grpo")
    assert flag(argv, "--init") == "sft"
    assert flag(argv, "--sft_checkpoint") == f"{sft.run_dir}/checkpoints/best_ood_val"
    assert flag(argv, "--text_model_name") == f"{cpt.run_dir}/final"  # the cpt model travels down the chain
    assert flag(argv, "--data_path") == "grpo_data" and "--data_seed" not in argv  # stage data replaces the sweep's
    assert grpo.resolved["upstream"] == {"run_id": sft.run_id, "checkpoint": "best_ood_val"}


def test_grpo_after_a_skipped_sft_starts_from_the_base(tmp_path):
    spec = base(cpt={"script": SCRIPT}, sft={"script": SCRIPT, "after": "cpt", "overrides": {"num_train_epochs": 0}},
                grpo={"script": SCRIPT, "after": "sft"})
    exp = cells_of(tmp_path, spec)
    assert exp.stages["sft"][0].skipped
    argv, _ = argv_of(exp, "grpo")
    assert flag(argv, "--init") == "base" and "--sft_checkpoint" not in argv
    assert flag(argv, "--text_model_name") == f"{exp.stages['cpt'][0].run_dir}/final"  # passed through
    assert exp.stages["grpo"][0].effective_upstream() is exp.stages["cpt"][0]


def test_explicit_init_wins_over_the_binding(tmp_path):
    spec = base(sft={"script": SCRIPT}, grpo={"script": SCRIPT, "after": "sft"})
    spec["cells"] = [{"grpo.init": "base"}, {"grpo.init": "sft"}]
    exp = cells_of(tmp_path, spec)
    cold, _ = argv_of(exp, "grpo", 0)
    warm, _ = argv_of(exp, "grpo", 1)
    assert cold.count("--init") == 1 and flag(cold, "--init") == "base" and "--sft_checkpoint" not in cold
    assert warm.count("--init") == 1 and flag(warm, "--sft_checkpoint").endswith("/checkpoints/last")


def test_select_best_pools_cpt_runs_per_text_model(tmp_path):
    spec = base(cpt={"script": SCRIPT, "select_best": True,
                     "grid": {"learning_rate": [1e-5, 1e-4], "text_model_name": ["m/a", "m/b"]}},
                sft={"script": SCRIPT, "after": "cpt", "grid": {"num_train_epochs": [1, 2]}})
    exp = cells_of(tmp_path, spec)
    assert len(exp.stages["cpt"]) == 4
    sft = exp.stages["sft"]
    assert len(sft) == 4  # (2 text models) x (2 epochs), not x 4 cpt runs
    for cell in sft:
        assert len(cell.select_best_group) == 2
        assert {c.values["text_model_name"] for c in cell.select_best_group} == {cell.cell["cpt.text_model_name"]}
        argv, select_best = stage_command(exp.spec, cell)
        assert "--text_model_name" not in argv  # resolved by the runner at run time
        assert select_best["runs"] == [str(c.run_dir) for c in cell.select_best_group]
        assert select_best["out"].endswith(f"select_best-{cell.cell['cpt.text_model_name'].replace('/', '-')}.json")


def test_select_best_only_on_cpt(tmp_path):
    assert "stages.sft.select_best" in load_error(tmp_path, base(sft={"script": SCRIPT, "select_best": True}))


# ------------------------------------------------------------------ expected_evaluations
def test_expected_evaluations(tmp_path, monkeypatch):
    spec = base(sft={"script": SCRIPT}, grpo={"script": SCRIPT, "after": "sft"})
    spec["zip"] = {"sft.num_train_epochs": [0, 4], "grpo.num_train_epochs": [8, 4]}
    spec["eval"] = {"splits": ["id", "ood"], "stages": ["sft", "grpo"], "checkpoint": ["last", "best_ood_val"]}
    spec["seeds"] = [0, 1]
    path = spec_file(tmp_path, spec)
    monkeypatch.chdir(tmp_path)
    out = expected_evaluations(path, tmp_path / "runs")
    # sft: 2 non-skipped cells (seeds 0, 1); grpo: 4 cells; x 2 checkpoint labels
    assert len(out) == (2 + 4) * 2
    keys = {"sweep", "stage", "run_id", "checkpoint", "cell", "seed", "splits"}
    assert all(keys <= set(e) for e in out)
    grpo = [e for e in out if e["stage"] == "grpo" and e["checkpoint"] == "last" and e["seed"] == 1]
    assert sorted(e["cell"]["grpo.num_train_epochs"] for e in grpo) == [4, 8]
    assert all(set(e["cell"]) == {"sft.num_train_epochs", "grpo.num_train_epochs"} for e in grpo)
    assert {e["checkpoint"] for e in out} == {"last", "best_ood_val"} and out[0]["splits"] == ["id", "ood"]
    assert not [e for e in out if e["stage"] == "sft" and e["cell"]["sft.num_train_epochs"] == 0]


def test_no_eval_section_expects_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert expected_evaluations(spec_file(tmp_path, base()), tmp_path) == []


# ------------------------------------------------------------------ the specs in sweeps/
SPECS = sorted((REPO / "sweeps").glob("*.yaml"))


def test_the_study_specs_are_there():
    names = {p.stem for p in SPECS}
    for axis in ("dna_cpt_lr_ga", "dna_sft_data_fraction", "dna_sft_epochs", "dna_rl_epochs",
                 "dna_rl_data_fraction", "dna_rl_warm_start", "dna_kl_beta", "dna_epoch_budget", "dna_lora_rank"):
        assert axis in names


def _config_class(kind: str):
    from biopost.eval.run import EvalConfig
    from biopost.train.cpt import CPTConfig
    from biopost.train.grpo import GRPOConfig
    from biopost.train.sft import SFTConfig
    return {"cpt": CPTConfig, "sft": SFTConfig, "grpo": GRPOConfig, "eval": EvalConfig}[kind]


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_every_spec_in_sweeps_loads_and_expands(path, tmp_path):
    """Every config file a spec names exists and parses into its stage's config class, and every
    key the spec sets (grid, zip, cells, overrides) is a flag of that stage."""
    from biopost.config import from_dict, load_yaml
    spec = load_spec(path)
    raw = yaml.safe_load(path.read_text())
    for name, s in spec.stages.items():
        cls = _config_class(s.kind)
        if s.config:
            from_dict(cls, load_yaml(REPO / s.config), where=s.config)
        keys = set(raw["stages"][name].get("grid", {})) | set(raw["stages"][name].get("overrides", {}))
        keys |= {k.split(".", 1)[1] for cell in raw.get("cells", []) for k in cell if k.startswith(f"{name}.")}
        keys |= {k.split(".", 1)[1] for k in raw.get("zip", {}) if k.startswith(f"{name}.")}
        assert keys <= set(cls.__dataclass_fields__), (name, keys - set(cls.__dataclass_fields__))
    if spec.eval.config:
        from_dict(_config_class("eval"), load_yaml(REPO / spec.eval.config), where=spec.eval.config)
    assert set(spec.eval.overrides) <= set(_config_class("eval").__dataclass_fields__)
    exp = expand(spec, tmp_path / "runs", root=REPO)
    assert spec.name == path.stem
    from biopost.modality import MODALITIES
    assert spec.eval is not None and spec.modality in MODALITIES
    assert all(exp.stages[s] for s in spec.stages)
    assert sum(len(v) for v in exp.evals.values()) > 0
    for cells in exp.stages.values():
        assert len({c.run_id for c in cells}) == len(cells)
    for s in spec.stages.values():
        assert (REPO / s.script).name.endswith(".py")

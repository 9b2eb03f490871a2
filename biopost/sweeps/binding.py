"""What a cell's script receives on its command line (docs/contracts.md, "Stage command line").

Stage cell:
    <script> [--config F] [--<override> v ...] [--<swept key> v ...] [upstream binding]
             --output_dir <run dir> --sweep <name> --run_id <id> --cell '<json>' --seed <n>
             [--data_<key> <value> ...]
Upstream binding:
    after cpt            --text_model_name <cpt run dir>/final   (select_best: the best run's,
                         resolved by the runner at run time, see runner.py)
    grpo after sft       --init sft --sft_checkpoint <sft run dir>/checkpoints/<checkpoint>
    after a skipped one  its input passes through (a grpo after a skipped sft: --init base)
    The text model a cpt chooses travels down the whole chain (cpt -> sft -> grpo), so a grpo
    warm-started from an sft adapter gets the base model that adapter was trained on.
    A value the spec sets itself (grid, zip, cells, overrides) always wins over a binding.
Eval cell, once per checkpoint label:
    <eval script> --run_dir <stage run dir> --checkpoint <label> --eval_split <id|ood|both|a,b>
                  [--config F] [--<override> v ...] [--data_<key> v ...]

Values are handed over as argument lists (never through a shell): see runner.py.
"""
from __future__ import annotations

import json

from biopost.sweeps.spec import Cell, Spec, sanitize


def flag_value(v) -> str:
    """How a YAML value is written as one command-line argument."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def explicit_values(spec: Spec, cell: Cell) -> dict:
    """Config values the spec itself sets for a stage cell (fixed overrides, then swept values)."""
    return {**spec.stages[cell.stage].overrides, **cell.values}


def select_best_out(cell: Cell) -> str:
    """Where the select-best pick for this cell's cpt group is written."""
    cpt = cell.select_best_group[0]
    group_dir = cpt.run_dir.parent
    tm_key = f"{cpt.stage}.text_model_name"
    if tm_key in cell.cell:
        return str(group_dir / f"select_best-{sanitize(str(cell.cell[tm_key]))}.json")
    return str(group_dir / "select_best.json")


class SelectBest:
    """Marker: the text model is the select-best pick among these cpt cells (known at run time)."""

    def __init__(self, group: list):
        self.group = group


def chain_text_model(spec: Spec, cell: Cell):
    """The text model that a cell's chain hands it: a cpt upstream's final/ directory (or a
    SelectBest), passed through skipped stages and down the chain. None: the stage's config
    decides (or the cell sets text_model_name itself)."""
    if "text_model_name" in explicit_values(spec, cell):
        return None
    if cell.select_best_group:
        return SelectBest(cell.select_best_group)
    up = cell.upstream
    if up is None:
        return None
    if up.kind == "cpt" and not up.skipped:
        return f"{up.run_dir}/final"
    own = explicit_values(spec, up).get("text_model_name")
    if own is not None:
        return flag_value(own)
    return chain_text_model(spec, up)


def stage_command(spec: Spec, cell: Cell) -> tuple[list, dict | None]:
    """(argv after the script, select-best request or None) of a stage cell."""
    stage = spec.stages[cell.stage]
    explicit = explicit_values(spec, cell)
    argv = []
    if stage.config:
        argv += ["--config", stage.config]
    for key, value in explicit.items():
        argv += [f"--{key}", flag_value(value)]

    select_best = None
    model = chain_text_model(spec, cell)
    if isinstance(model, SelectBest):
        select_best = {"flag": "--text_model_name", "out": select_best_out(cell),
                       "runs": [str(c.run_dir) for c in model.group],
                       "run_ids": [c.run_id for c in model.group],
                       "status_paths": [str(c.status_path) for c in model.group]}
    elif model is not None:
        argv += ["--text_model_name", model]

    up = cell.upstream
    if cell.kind == "grpo" and up is not None and up.kind == "sft":
        checkpoint = f"{up.run_dir}/checkpoints/{stage.checkpoint}"
        init = explicit.get("init")
        if up.skipped:
            if init is None:
                argv += ["--init", "base"]
        elif init is None:
            argv += ["--init", "sft", "--sft_checkpoint", checkpoint]
        elif init == "sft" and "sft_checkpoint" not in explicit:
            argv += ["--sft_checkpoint", checkpoint]

    argv += ["--output_dir", str(cell.run_dir), "--sweep", cell.sweep, "--run_id", cell.run_id,
             "--cell", json.dumps(cell.cell, sort_keys=True), "--seed", str(cell.seed)]
    for key, value in cell.resolved["data"].items():
        argv += [f"--data_{key}", flag_value(value)]
    return argv, select_best


def eval_split_arg(splits: list) -> str:
    if sorted(splits) == ["id", "ood"]:
        return "both"
    return ",".join(splits)


def eval_commands(spec: Spec, cell: Cell) -> list:
    """One argv (after the script) per evaluated checkpoint label of an eval cell."""
    ev = spec.eval
    commands = []
    for label in ev.checkpoints:
        argv = ["--run_dir", str(cell.run_dir), "--checkpoint", label, "--eval_split", eval_split_arg(ev.splits)]
        if ev.config:
            argv += ["--config", ev.config]
        for key, value in ev.overrides.items():
            argv += [f"--{key}", flag_value(value)]
        for key, value in (ev.data or {}).items():
            argv += [f"--data_{key}", flag_value(value)]
        commands.append(argv)
    return commands

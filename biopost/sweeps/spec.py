"""Sweep specs: load and validate a YAML spec, expand it into stage cells with run ids.

A spec (see docs/sweeps.md) names stages (cpt / sft / grpo), each with a script, a config file
and swept values: a stage's `grid` is a product, the sweep-level `zip` couples equal-length lists
across stages (`stage.key`), `cells` lists explicit cells. Expansion:

  points = product of every stage's grid  x  zip rows  x  explicit cells  x  seeds
  the cells of stage S = the distinct projections of the points onto the keys of S and of the
                         stages it runs after (its lineage), plus the seed

so a downstream stage fans out: one grpo cell per (sft cell x grpo grid value).

Identity: run id = the cell's own swept values in readable form + "-" + 8 hex of the sha256 of
its resolved config (the stage's config file merged with its overrides and swept values, the data
mapping, the seed, and the upstream's run id), so a downstream id changes when its upstream's does.

Errors are SpecError and name the file and the key (`stages.grpo.after`, `zip.sft.num_train_epochs`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from biopost.errors import UserError

STAGE_KINDS = ("cpt", "sft", "grpo")
# (upstream kind, downstream kind) pairs that have an upstream binding (binding.py)
BINDINGS = {("cpt", "sft"), ("cpt", "grpo"), ("sft", "grpo")}
# flags the sweep itself sets on every stage: not sweepable, not overridable
RESERVED_KEYS = {"config", "output_dir", "sweep", "run_id", "cell", "seed"}
# flags of an evaluation the sweep sets (or that would send its outputs outside the run tree)
EVAL_RESERVED_KEYS = {"run_dir", "checkpoint", "eval_split", "output_dir", "run_id", "sweep",
                      "cell", "config"}


def eval_script_for(modality: str | None) -> str | None:
    """The evaluation script a modality package declares (a path relative to the repo root; never
    imported here), or None for an unknown modality."""
    from biopost.modality import MODALITIES
    if not modality or modality not in MODALITIES:
        return None
    return MODALITIES.get(modality).eval_script

TOP_KEYS = {
    "name": "sweep name, used in run ids and paths",
    "description": "free text",
    "modality": "a registered modality (dna, protein, ...)",
    "task": "a registered task name (kegg, vep, go, ...)",
    "data": "mapping handed to every stage as --data_<key> <value>",
    "stages": "mapping of stage name -> stage",
    "zip": "coupled axes across stages: {stage.key: [values]}, equal lengths",
    "cells": "explicit cells: a list of {stage.key: value}",
    "eval": "evaluation: splits, stages, script, config, checkpoint",
    "seeds": "list of integer seeds (default [0])",
    "resources": "SLURM resources of every job",
}
STAGE_KEYS = {
    "script": "entry script, relative to the repo root",
    "config": "stage config YAML, relative to the repo root",
    "kind": "cpt, sft or grpo (default: the stage name)",
    "after": "the stage this one runs after (its upstream)",
    "checkpoint": "upstream checkpoint label to start from: last (default) or best_ood_val",
    "grid": "swept values: {key: [values]}, a product",
    "overrides": "fixed config values for every cell: {key: value}",
    "data": "data mapping of this stage (replaces the sweep's)",
    "resources": "resource overrides of this stage's jobs",
    "select_best": "cpt only: later stages start from the best cpt run per text model",
}
EVAL_KEYS = {
    "splits": "evaluated splits (default [id, ood])",
    "stages": "stages whose cells are evaluated (default: every stage)",
    "script": "evaluation script (default by modality)",
    "config": "evaluation config YAML",
    "checkpoint": "checkpoint label(s) to evaluate (default last)",
    "overrides": "fixed evaluation flags: {key: value}",
    "data": "data mapping handed to the evaluation as --data_<key> <value> (default: none)",
    "resources": "resource overrides of the evaluation jobs",
}
RESOURCE_KEYS = {
    "partition": "SLURM partition (null: the cluster default)",
    "account": "SLURM account (null: no --account)",
    "gpus": "GPUs per cell (0: no GPU request), or 'type:n'",
    "cpus": "CPUs per cell",
    "mem": "memory per cell, e.g. 64G",
    "time": "time limit, e.g. 24:00:00 or 1-00:00:00",
    "array_limit": "at most this many tasks of one array run at once",
    "setup": "shell lines run before the stage (written verbatim: your own shell)",
    "est_hours": "estimated hours per cell, for `sweep plan`'s GPU-hour estimate",
    "signal_seconds": "SIGUSR1 this many seconds before the time limit (default 300)",
    "python": "python interpreter on the compute nodes (default: the one running submit)",
    "nodes": "nodes per cell (default 1); more than one process per cell runs the stage under srun + torchrun",
    "gpus_per_node": "GPUs per node (the --gres request; same meaning as gpus, which it replaces)",
    "procs_per_node": "processes (ranks) per node (default: gpus_per_node, else 1; set it for CPU ranks)",
}
RESOURCE_DEFAULTS = {"partition": None, "account": None, "gpus": 0, "cpus": None, "mem": None,
                     "time": None, "array_limit": None, "setup": [], "est_hours": None,
                     "signal_seconds": 300, "python": None, "nodes": 1, "gpus_per_node": None,
                     "procs_per_node": None}
EVAL_SPLITS = ("id", "ood", "id_val", "ood_val")

# Used with fullmatch() only: `$` alone also accepts a trailing newline, and a stage named
# "sft\n" would end an #SBATCH line early. ASCII: \d is [0-9], not every Unicode digit.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", re.ASCII)  # sweep names: path parts
_STAGE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}", re.ASCII)
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}", re.ASCII)
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)
_TIME = re.compile(r"(\d+-)?\d+(:\d{1,2}){0,2}", re.ASCII)
_GPUS = re.compile(r"([A-Za-z0-9_.-]+:)?\d+", re.ASCII)
_MEM = re.compile(r"\d+[KMGT]?", re.IGNORECASE | re.ASCII)
# Deeper YAML is not a spec (and would exhaust the recursion of later steps).
MAX_YAML_DEPTH = 32


class SpecError(UserError, ValueError):
    """A bad sweep spec; the message names the file and the key."""


# ---------------------------------------------------------------------------------- YAML
class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus: YAML 1.2 floats (`1e-4` is a float, not a string) and
    duplicate keys are errors instead of silently keeping the last one."""


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:  # a list or mapping as a key (`? [a, b]`)
            raise SpecError(f"a {type(key).__name__} cannot be a key "
                            f"(line {key_node.start_mark.line + 1})") from None
        if key in seen:
            raise SpecError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_SpecLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: Path, what: str) -> dict:
    try:
        raw = Path(path).read_bytes()
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise SpecError(f"{what}: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    from biopost.config import flow_depth_exceeds  # PyYAML is quadratic in the nesting depth
    if flow_depth_exceeds(raw):
        raise SpecError(f"{path}: nested too deeply to be a spec")
    try:
        data = yaml.load(raw, Loader=_SpecLoader)  # bytes: YAML's encoding detection and errors
    except SpecError as e:
        raise SpecError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    except ValueError as e:  # int() of an integer of more than 4,300 digits
        what = ("an integer of more than 4,300 digits (quote it if it is text)"
                if "digits" in str(e) else str(e)[:160])
        raise SpecError(f"{path}: unreadable value: {what}") from None
    except RecursionError:
        raise SpecError(f"{path}: nested too deeply to be a spec") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level")
    _check_plain(path, data)
    return data


_JSON_SCALARS = (str, int, float, bool, type(None))


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_plain(path, data) -> None:
    """Every value of a spec or stage config must be JSON (it is hashed into run ids and
    passed to stages as JSON): strings, numbers, booleans, null, lists, mappings with scalar
    keys; no recursive anchor (`&a [*a]`), at most MAX_YAML_DEPTH levels. YAML dates, sets
    and binary are errors naming the key. Iterative, so no input exhausts the recursion."""
    stack = [(data, (), "")]  # (value, ids of the containers above it, key path)
    seen: set = set()  # a shared anchor (`<<: *defaults`) is checked once
    while stack:
        value, above, where = stack.pop()
        if isinstance(value, str):
            if not _is_unicode(value):
                _fail(path, where or "(top level)", "text with a lone surrogate (a \\ud800-"
                      "\\udfff escape) is not Unicode")
            continue
        if isinstance(value, _JSON_SCALARS):
            continue
        if not isinstance(value, (dict, list)):
            _fail(path, where or "(top level)", f"a YAML {type(value).__name__} is not a "
                  "string, number, boolean, list or mapping (quote it)")
        if id(value) in above:
            _fail(path, where or "(top level)", "a recursive YAML anchor (a value that "
                  "contains itself)")
        if len(above) >= MAX_YAML_DEPTH:
            _fail(path, where.split("[", 1)[0] or "(top level)",
                  f"nested deeper than {MAX_YAML_DEPTH} levels")
        if id(value) in seen:
            continue
        seen.add(id(value))
        inner = (*above, id(value))
        if isinstance(value, dict):
            for k, v in value.items():
                key = f"{where}.{_shown(k, 40)}" if where else _shown(k, 40)
                if not isinstance(k, str):  # JSON keys are strings: 1 and "1" would collide
                    _fail(path, key, f"a YAML {type(k).__name__} cannot be a key (quote it)")
                if not _is_unicode(k):
                    _fail(path, key, "a key with a lone surrogate is not Unicode")
                stack.append((v, inner, key))
        else:
            stack.extend((v, inner, f"{where}[{i}]") for i, v in enumerate(value))


# ---------------------------------------------------------------------------------- the spec
@dataclass
class StageSpec:
    name: str
    kind: str
    script: str
    config: str | None
    after: str | None
    checkpoint: str
    grid: dict
    overrides: dict
    data: dict | None
    resources: dict
    select_best: bool


@dataclass
class EvalSpec:
    splits: list
    stages: list
    script: str
    config: str | None
    checkpoints: list
    overrides: dict
    data: dict | None
    resources: dict


@dataclass
class Spec:
    path: Path
    name: str
    description: str
    modality: str | None
    task: str | None
    data: dict
    stages: dict  # name -> StageSpec, upstream before downstream
    zip: dict
    cells: list
    eval: EvalSpec | None
    seeds: list
    resources: dict

    def where(self, key: str) -> str:
        return f"{self.path}: {key}"


def _fail(path, key, msg):
    raise SpecError(f"{path}: {key}: {msg}")


def _check_keys(path, where, data, allowed: dict):
    if not isinstance(data, dict):
        _fail(path, where, f"expected a mapping, got {type(data).__name__}")
    unknown = [k for k in data if k not in allowed]
    if unknown:
        prefix = f"{where}." if where else ""
        _fail(path, f"{prefix}{_shown(unknown[0])}", f"unknown key (allowed: {', '.join(allowed)})")


def _is_scalar(v) -> bool:
    return isinstance(v, (str, int, float, bool)) and not (isinstance(v, float) and math.isnan(v))


def _shown(value, limit: int = 80) -> str:
    """A name from the spec as it can be printed on one line: plain names as they are, any
    other value (a newline in it, a list, a number) as its repr, cut to `limit` characters."""
    text = value if isinstance(value, str) and value.isprintable() and value else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_flag_name(path, key, name):
    if not isinstance(name, str) or not _KEY.fullmatch(name):
        _fail(path, key, "not a valid flag name (letters, digits, _)")
    if name in RESERVED_KEYS:
        _fail(path, key, f"{name!r} is set by the sweep itself"
              + (" (list seeds under `seeds:`)" if name == "seed" else ""))


def _check_values(path, key, values):
    """A list of swept values: non-empty, scalars, no duplicates."""
    if not isinstance(values, list):
        _fail(path, key, f"expected a list of values, got {values!r}")
    if not values:
        _fail(path, key, "empty list of values")
    for i, v in enumerate(values):
        if not _is_scalar(v):
            _fail(path, f"{key}[{i}]", f"expected a string, number or boolean, got {v!r}")
    seen = set()
    for v in values:
        marker = json.dumps(v)
        if marker in seen:
            _fail(path, key, f"duplicate value {v!r}")
        seen.add(marker)


def _check_data(path, key, data):
    if data is None:
        return None
    if not isinstance(data, dict):
        _fail(path, key, f"expected a mapping {{key: value}}, got {data!r}")
    for k, v in data.items():
        if not isinstance(k, str) or not _KEY.fullmatch(k):
            _fail(path, f"{key}.{_shown(k)}", "not a valid key (letters, digits, _)")
        if not _is_scalar(v):
            _fail(path, f"{key}.{k}", f"expected a string, number or boolean, got {v!r}")
    return dict(data)


def check_resources(path, key, res) -> dict:
    """Validate a (partial) resources mapping; returns it unchanged. Values that end up in
    #SBATCH lines may not hold newlines (a newline would end the line)."""
    if res is None:
        return {}
    _check_keys(path, key, res, RESOURCE_KEYS)
    for k, v in res.items():
        where = f"{key}.{k}"
        if v is None and k in ("partition", "account", "cpus", "mem", "time", "array_limit",
                               "est_hours", "python", "gpus_per_node", "procs_per_node"):
            continue
        if k in ("partition", "account", "python"):
            if not isinstance(v, str) or not v or "\n" in v:
                _fail(path, where, f"expected a non-empty one-line string, got {v!r}")
        elif k in ("gpus", "gpus_per_node"):
            if isinstance(v, bool) or not (isinstance(v, int) and v >= 0
                                           or isinstance(v, str) and _GPUS.fullmatch(v)):
                _fail(path, where, f"expected an integer >= 0 or 'type:n', got {v!r}")
        elif k in ("cpus", "array_limit", "signal_seconds", "nodes", "procs_per_node"):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                _fail(path, where, f"expected an integer >= 1, got {v!r}")
        elif k == "mem":
            if isinstance(v, bool) or not (isinstance(v, int) and v > 0 or isinstance(v, str) and _MEM.fullmatch(v)):
                _fail(path, where, f"expected e.g. 64G or a number of megabytes, got {v!r}")
        elif k == "time":
            if isinstance(v, bool) or not (isinstance(v, int) and v > 0 or isinstance(v, str) and _TIME.fullmatch(v)):
                _fail(path, where, f"expected a SLURM time like 24:00:00, 1-00:00:00 or minutes, got {v!r}")
        elif k == "est_hours":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                _fail(path, where, f"expected a number of hours >= 0, got {v!r}")
        elif k == "setup":
            if not isinstance(v, list) or not all(isinstance(line, str) for line in v):
                _fail(path, where, "expected a list of shell lines (strings)")
    if res.get("gpus") not in (None, 0) and res.get("gpus_per_node") is not None \
            and str(res["gpus"]) != str(res["gpus_per_node"]):
        _fail(path, f"{key}.gpus_per_node", f"gpus ({res['gpus']!r}) and gpus_per_node ({res['gpus_per_node']!r}) "
              "both set the GPUs of a node: keep one")
    return dict(res)


def _split_stage_key(path, where, full, stages) -> tuple[str, str]:
    if not isinstance(full, str) or full.count(".") != 1:
        _fail(path, where, "expected 'stage.key' (e.g. sft.num_train_epochs)")
    stage, key = full.split(".")
    if stage not in stages:
        _fail(path, where, f"no stage named {stage!r} (stages: {', '.join(stages)})")
    _check_flag_name(path, where, key)
    return stage, key


def _order_stages(path, raw: dict) -> list[str]:
    """Upstream before downstream; `after` must name another stage; no cycles."""
    order, state = [], {}

    def visit(name, chain):
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            _fail(path, f"stages.{name}.after", f"cycle: {' -> '.join(chain + [name])}")
        state[name] = "visiting"
        after = raw[name].get("after")
        if after is not None:
            if not isinstance(after, str) or after not in raw:
                _fail(path, f"stages.{name}.after",
                      f"no stage named {after!r} to run after (stages: {', '.join(raw)})")
            visit(after, chain + [name])
        state[name] = "done"
        order.append(name)

    for name in raw:
        visit(name, [])
    return order


def _check_registered(path, modality, task) -> None:
    """Modality and task names must be registered (by an installed modality package); neither
    lookup imports the package's torch-using modules."""
    from biopost.modality import MODALITIES
    from biopost.tasks import TASKS
    if modality is not None and modality not in MODALITIES:
        _fail(path, "modality", f"{modality!r} is not a registered modality (registered: "
                                f"{', '.join(MODALITIES.names()) or 'none'}; is its package installed?)")
    if task is not None and task not in TASKS:
        _fail(path, "task", f"{task!r} is not a registered task (registered: {', '.join(TASKS.names()) or 'none'})")


def load_spec(path) -> Spec:
    """Read and validate a spec. Does not read the stage config files (expand() does)."""
    path = Path(path)
    raw = load_yaml(path, "spec")
    _check_keys(path, "", raw, TOP_KEYS)

    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        _fail(path, "name", f"required: letters, digits, '.', '_', '-', at most 100 characters "
              f"(got {_shown(name)})")
    description = raw.get("description") or ""
    modality = raw.get("modality")
    task = raw.get("task")
    for key, v in (("modality", modality), ("task", task), ("description", description)):
        if v is not None and not isinstance(v, str):
            _fail(path, key, f"expected a string, got {v!r}")
    _check_registered(path, modality, task)
    data = _check_data(path, "data", raw.get("data")) or {}
    resources = check_resources(path, "resources", raw.get("resources"))

    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in seeds):
        _fail(path, "seeds", f"expected a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        _fail(path, "seeds", "duplicate seed")

    raw_stages = raw.get("stages")
    if not isinstance(raw_stages, dict) or not raw_stages:
        _fail(path, "stages", "required: a mapping of stage name -> {script, config, grid, ...}")
    for sname, sraw in raw_stages.items():
        if not isinstance(sname, str) or not _STAGE.fullmatch(sname) or sname == "eval":
            _fail(path, f"stages.{_shown(sname)}", "a stage name is letters, digits, '_', '-' "
                  "(at most 64 characters, starting with a letter) and not 'eval'")
        _check_keys(path, f"stages.{sname}", sraw, STAGE_KEYS)

    stages = {}
    for sname in _order_stages(path, raw_stages):
        s = raw_stages[sname]
        where = f"stages.{sname}"
        kind = s.get("kind", sname if sname in STAGE_KINDS else None)
        if kind not in STAGE_KINDS:
            _fail(path, f"{where}.kind", f"expected one of {', '.join(STAGE_KINDS)} "
                  f"(required when the stage name is not one of them), got {kind!r}")
        script = s.get("script")
        if not isinstance(script, str) or not script:
            _fail(path, f"{where}.script", "required: the stage's entry script")
        config = s.get("config")
        if config is not None and (not isinstance(config, str) or not config):
            _fail(path, f"{where}.config", f"expected a path to a YAML file, got {config!r}")
        after = s.get("after")
        if after is not None:
            up_kind = stages[after].kind
            if (up_kind, kind) not in BINDINGS:
                _fail(path, f"{where}.after", f"a {kind} stage cannot run after a {up_kind} stage "
                      f"(supported: {', '.join(f'{a} -> {b}' for a, b in sorted(BINDINGS))})")
        checkpoint = s.get("checkpoint", "last")
        if not isinstance(checkpoint, str) or not _LABEL.fullmatch(checkpoint):
            _fail(path, f"{where}.checkpoint", f"expected a checkpoint label such as last or "
                  f"best_ood_val, got {checkpoint!r}")
        if "checkpoint" in s and (not after or stages[after].kind != "sft"):
            _fail(path, f"{where}.checkpoint", "only a stage that runs after an sft stage starts from "
                  "one of its checkpoints")
        grid = s.get("grid") or {}
        if not isinstance(grid, dict):
            _fail(path, f"{where}.grid", f"expected a mapping {{key: [values]}}, got {grid!r}")
        for k, values in grid.items():
            _check_flag_name(path, f"{where}.grid.{_shown(k)}", k)
            _check_values(path, f"{where}.grid.{k}", values)
        overrides = s.get("overrides") or {}
        if not isinstance(overrides, dict):
            _fail(path, f"{where}.overrides", f"expected a mapping {{key: value}}, got {overrides!r}")
        for k, v in overrides.items():
            _check_flag_name(path, f"{where}.overrides.{_shown(k)}", k)
            if v is None:
                _fail(path, f"{where}.overrides.{k}", "null is not a value (leave the key out)")
            if k in grid:
                _fail(path, f"{where}.overrides.{k}", "also swept in the grid")
        select_best = s.get("select_best", False)
        if not isinstance(select_best, bool):
            _fail(path, f"{where}.select_best", f"expected true or false, got {select_best!r}")
        if select_best and kind != "cpt":
            _fail(path, f"{where}.select_best", "only a cpt stage can select its best run")
        stages[sname] = StageSpec(
            name=sname, kind=kind, script=script, config=config, after=after, checkpoint=checkpoint,
            grid=dict(grid), overrides=dict(overrides),
            data=_check_data(path, f"{where}.data", s.get("data")),
            resources=check_resources(path, f"{where}.resources", s.get("resources")),
            select_best=select_best)

    swept = {f"{st.name}.{k}" for st in stages.values() for k in st.grid}

    zip_ = raw.get("zip") or {}
    if not isinstance(zip_, dict):
        _fail(path, "zip", f"expected a mapping {{stage.key: [values]}}, got {zip_!r}")
    lengths = {}
    for full, values in zip_.items():
        stage, key = _split_stage_key(path, f"zip.{_shown(full)}", full, stages)
        _check_values(path, f"zip.{full}", values)
        if full in swept:
            _fail(path, f"zip.{full}", "also swept elsewhere (grid or another axis)")
        if key in stages[stage].overrides:
            _fail(path, f"zip.{full}", f"also fixed in stages.{stage}.overrides")
        lengths[full] = len(values)
    if len(set(lengths.values())) > 1:
        (k1, n1), *_ = lengths.items()
        k2, n2 = next((k, n) for k, n in lengths.items() if n != n1)
        _fail(path, f"zip.{k2}", f"lists of unequal length: zip.{k1} has {n1} values, zip.{k2} has {n2}")
    swept |= set(zip_)

    cells = raw.get("cells") or []
    if not isinstance(cells, list):
        _fail(path, "cells", "expected a list of {stage.key: value} mappings")
    cell_keys = set()
    for i, c in enumerate(cells):
        if not isinstance(c, dict) or not c:
            _fail(path, f"cells[{i}]", "expected a non-empty mapping {stage.key: value}")
        for full, v in c.items():
            stage, key = _split_stage_key(path, f"cells[{i}].{_shown(full)}", full, stages)
            if not _is_scalar(v):
                _fail(path, f"cells[{i}].{full}", f"expected a string, number or boolean, got {v!r}")
            if full in swept:
                _fail(path, f"cells[{i}].{full}", "also swept by a grid or zip")
            if key in stages[stage].overrides:
                _fail(path, f"cells[{i}].{full}", f"also fixed in stages.{stage}.overrides")
            cell_keys.add(full)
    if len({json.dumps(c, sort_keys=True) for c in cells}) != len(cells):
        _fail(path, "cells", "duplicate cell")

    ev = raw.get("eval")
    eval_spec = None
    if ev is not None:
        _check_keys(path, "eval", ev, EVAL_KEYS)
        splits = ev.get("splits", ["id", "ood"])
        if not isinstance(splits, list) or not splits or any(s not in EVAL_SPLITS for s in splits):
            _fail(path, "eval.splits", f"expected a list from {', '.join(EVAL_SPLITS)}, got {splits!r}")
        ev_stages = ev.get("stages", list(stages))
        if not isinstance(ev_stages, list) or not ev_stages:
            _fail(path, "eval.stages", f"expected a list of stage names, got {ev_stages!r}")
        for s in ev_stages:
            if not isinstance(s, str) or s not in stages:
                _fail(path, "eval.stages", f"no stage named {_shown(s)} (stages: {', '.join(stages)})")
        script = ev.get("script") or eval_script_for(modality)
        if not isinstance(script, str) or not script:
            _fail(path, "eval.script", "required when the modality's package names no evaluation script")
        config = ev.get("config")
        if config is not None and (not isinstance(config, str) or not config):
            _fail(path, "eval.config", f"expected a path to a YAML file, got {config!r}")
        checkpoints = ev.get("checkpoint", "last")
        checkpoints = checkpoints if isinstance(checkpoints, list) else [checkpoints]
        if not checkpoints or any(not isinstance(c, str) or not _LABEL.fullmatch(c) for c in checkpoints):
            _fail(path, "eval.checkpoint", f"expected a checkpoint label or a list of them, got {checkpoints!r}")
        overrides = ev.get("overrides") or {}
        if not isinstance(overrides, dict):
            _fail(path, "eval.overrides", f"expected a mapping {{key: value}}, got {overrides!r}")
        for k, v in overrides.items():
            if not isinstance(k, str) or not _KEY.fullmatch(k):
                _fail(path, f"eval.overrides.{_shown(k)}", "not a valid flag name (letters, digits, _)")
            if k in EVAL_RESERVED_KEYS:
                _fail(path, f"eval.overrides.{k}", "set by the sweep itself (an evaluation writes "
                      "into <run dir>/eval/ of the run it evaluates)")
            if v is None:
                _fail(path, f"eval.overrides.{k}", "null is not a value (leave the key out)")
        eval_spec = EvalSpec(splits=list(splits), stages=[s for s in stages if s in ev_stages],
                             script=script, config=config, checkpoints=list(dict.fromkeys(checkpoints)),
                             overrides=dict(overrides), data=_check_data(path, "eval.data", ev.get("data")),
                             resources=check_resources(path, "eval.resources", ev.get("resources")))

    spec = Spec(path=path, name=name, description=description, modality=modality, task=task, data=data,
                stages=stages, zip=dict(zip_), cells=list(cells), eval=eval_spec, seeds=list(seeds),
                resources=resources)
    return spec


def resources_for(spec: Spec, stage: str, overrides: dict | None = None) -> dict:
    """Effective resources of a stage's jobs (`stage="eval"` for evaluation): defaults < the
    spec's `resources` < the stage's own `resources` < command-line overrides."""
    res = dict(RESOURCE_DEFAULTS)
    res.update(spec.resources)
    if stage == "eval":
        res.update(spec.eval.resources if spec.eval else {})
    else:
        res.update(spec.stages[stage].resources)
    res.update({k: v for k, v in (overrides or {}).items() if v is not None})
    res["setup"] = list(res.get("setup") or [])
    return res


# ---------------------------------------------------------------------------------- cells
@dataclass
class Cell:
    """One stage cell (a training run) or one eval cell (the evaluation of a stage cell)."""
    sweep: str
    stage: str  # the stage name; "eval" for an eval cell
    kind: str  # cpt / sft / grpo / eval
    index: int  # position among the cells of its stage
    task_id: int  # SLURM array task id: its own index for a root stage, else its upstream's
    run_id: str
    run_dir: Path
    values: dict  # this stage's own swept values {key: value}
    cell: dict  # swept values of this stage and its lineage {"stage.key": value}
    seed: int
    config: dict  # the resolved stage config: config file + overrides + swept values
    resolved: dict  # what the run id hashes
    skipped: bool = False  # num_train_epochs 0: no job, the input passes through
    upstream: "Cell | None" = None
    select_best_group: list = field(default_factory=list)  # cpt cells a select-best picks from
    target: "Cell | None" = None  # eval cells: the evaluated stage cell

    @property
    def label(self) -> str:
        return f"eval/{self.target.stage}/{self.run_id}" if self.kind == "eval" else f"{self.stage}/{self.run_id}"

    @property
    def status_path(self) -> Path:
        return self.run_dir / ("eval/status.json" if self.kind == "eval" else "status.json")

    def effective_upstream(self) -> "Cell | None":
        """The nearest upstream that actually runs: skipped stages pass their input through."""
        u = self.target if self.kind == "eval" else self.upstream
        while u is not None and u.skipped:
            u = u.upstream
        return u


@dataclass
class Expansion:
    spec: Spec
    work_root: Path
    stages: dict  # stage name -> [Cell]
    evals: dict  # evaluated stage name -> [Cell]

    def all_cells(self) -> list:
        """Every cell in dependency order: each stage's cells, then its eval cells."""
        out = []
        for name, cells in self.stages.items():
            out += cells
            out += self.evals.get(name, [])
        return out


# short forms of common keys in run ids ("e4_lr1e-4"); any other key reads "key-value"
ABBREVIATIONS = {"num_train_epochs": "e", "learning_rate": "lr", "gradient_accumulation_steps": "ga",
                 "train_data_fraction": "frac", "lora_rank": "r", "beta": "beta", "max_steps": "steps",
                 "text_model_name": ""}


def format_value(v) -> str:
    """Compact text of a swept value for run ids: 1e-4 (not 0.0001), 0.5, 8, true."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        if abs(v) < 1e-2:
            mantissa, exponent = f"{v:.6e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{v:.6g}"
    return str(v)


def sanitize(text: str, limit: int = 80) -> str:
    """Keep [A-Za-z0-9._-]: safe in paths, job names and shell words."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return text[:limit].rstrip("-.")


def readable(values: dict, seed: int | None) -> str:
    """Swept values in readable form: {"sft.num_train_epochs": 4, "grpo.learning_rate": 1e-4}
    -> "e4_lr1e-4". A key swept in several stages is prefixed: "sft-e2_grpo-e6"."""
    keys = [k.split(".", 1)[1] for k in values]
    parts = []
    for full, v in values.items():
        stage, key = full.split(".", 1)
        value = format_value(v)
        if key == "text_model_name":
            value = value.rstrip("/").rsplit("/", 1)[-1]
        abbrev = ABBREVIATIONS.get(key)
        part = f"{key}-{value}" if abbrev is None else f"{abbrev}{value}"
        parts.append(f"{stage}-{part}" if keys.count(key) > 1 else part)
    if seed is not None:
        parts.append(f"s{seed}")
    return sanitize("_".join(parts))


def config_hash(resolved: dict) -> str:
    canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _points(spec: Spec) -> list:
    """Every combination of swept values across stages, as {stage.key: value}."""
    points = [{}]
    for stage in spec.stages.values():
        for key, values in stage.grid.items():
            points = [{**p, f"{stage.name}.{key}": v} for p in points for v in values]
    if spec.zip:
        n = len(next(iter(spec.zip.values())))
        rows = [{k: vs[i] for k, vs in spec.zip.items()} for i in range(n)]
        points = [{**p, **r} for p in points for r in rows]
    if spec.cells:
        points = [{**p, **c} for p in points for c in spec.cells]
    return points


def _lineage(spec: Spec, stage: StageSpec) -> tuple[set, set]:
    """(stages whose swept keys identify a cell of `stage`, single keys that do too).
    A select-best cpt upstream contributes only its text model: its runs are pooled."""
    names, keys = {stage.name}, set()
    up = stage.after
    while up is not None:
        st = spec.stages[up]
        if st.select_best:
            keys.add(f"{st.name}.text_model_name")
            break
        names.add(up)
        up = st.after
    return names, keys


def _is_zero_epochs(config: dict) -> bool:
    v = config.get("num_train_epochs")
    try:
        return v is not None and not isinstance(v, bool) and float(v) == 0
    except (TypeError, ValueError):
        return False


def _read_config(spec: Spec, key: str, rel: str | None, root: Path) -> dict:
    if rel is None:
        return {}
    path = Path(rel) if Path(rel).is_absolute() else root / rel
    if not path.is_file():
        raise SpecError(f"{spec.path}: {key}: config file not found: {path}")
    return load_yaml(path, key)


def stage_data(spec: Spec, stage: StageSpec) -> dict:
    """A stage's own `data:` replaces the sweep's whole mapping (a CPT corpus shares no keys
    with the SFT data, and a stage rejects flags it does not know)."""
    return dict(stage.data) if stage.data is not None else dict(spec.data)


def expand(spec: Spec, work_root, root=None) -> Expansion:
    """Expand a validated spec into cells. `root` is the directory the spec's relative paths
    (stage configs, scripts) are relative to: the repo root, default the current directory."""
    root = Path(root) if root is not None else Path.cwd()
    work_root = Path(work_root)
    sweep_dir = work_root / spec.name
    points = _points(spec)
    several_seeds = len(spec.seeds) > 1
    stages: dict = {}  # stage name -> [Cell]
    by_ident: dict = {}  # stage name -> {identity of a cell: Cell}, to find a cell's upstream

    for stage in spec.stages.values():
        base_config = _read_config(spec, f"stages.{stage.name}.config", stage.config, root)
        names, extra_keys = _lineage(spec, stage)
        data = stage_data(spec, stage)
        by_key: dict = {}
        for point in points:
            for seed in spec.seeds:
                cell_values = {k: v for k, v in point.items() if k.split(".")[0] in names or k in extra_keys}
                ident = json.dumps([sorted(cell_values.items()), seed])
                if ident in by_key:
                    continue
                own = {k.split(".", 1)[1]: v for k, v in point.items() if k.split(".")[0] == stage.name}
                config = {**base_config, **stage.overrides, **own}
                upstream, group, up_ident = None, [], None
                if stage.after:
                    up_stage = spec.stages[stage.after]
                    if up_stage.select_best:
                        tm_key = f"{up_stage.name}.text_model_name"
                        group = [c for c in stages[up_stage.name]
                                 if not c.skipped and (tm_key not in point or c.cell.get(tm_key) == point[tm_key])]
                        up_ident = {"select_best": sorted(c.run_id for c in group)}
                    else:
                        up_names, up_keys = _lineage(spec, up_stage)
                        up_values = {k: v for k, v in point.items() if k.split(".")[0] in up_names or k in up_keys}
                        upstream = by_ident[up_stage.name][json.dumps([sorted(up_values.items()), seed])]
                        up_ident = {"run_id": upstream.run_id}
                    up_ident["checkpoint"] = stage.checkpoint
                resolved = {"stage": stage.name, "kind": stage.kind, "script": stage.script,
                            "config_file": stage.config, "config": config, "data": data, "seed": seed,
                            "modality": spec.modality, "task": spec.task, "upstream": up_ident}
                ordered = {k: cell_values[k] for name in spec.stages for k in cell_values
                           if k.split(".")[0] == name}
                words = readable(ordered, seed if several_seeds else None)
                run_id = f"{words or stage.name}-{config_hash(resolved)[:8]}"
                index = len(by_key)
                by_key[ident] = Cell(
                    sweep=spec.name, stage=stage.name, kind=stage.kind, index=index,
                    task_id=upstream.task_id if upstream is not None else index,
                    run_id=run_id, run_dir=sweep_dir / stage.name / run_id, values=own,
                    cell=cell_values, seed=seed, config=config, resolved=resolved,
                    skipped=_is_zero_epochs(config), upstream=upstream, select_best_group=group)
        cells = list(by_key.values())
        ids = [c.run_id for c in cells]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise SpecError(f"{spec.path}: stages.{stage.name}: two cells resolve to the same run id {dup}")
        stages[stage.name] = cells
        by_ident[stage.name] = by_key

    evals: dict = {}
    if spec.eval:
        _read_config(spec, "eval.config", spec.eval.config, root)  # fail early when missing
        for name in spec.eval.stages:
            evals[name] = [
                Cell(sweep=spec.name, stage="eval", kind="eval", index=i, task_id=c.task_id,
                     run_id=c.run_id, run_dir=c.run_dir, values={}, cell=c.cell, seed=c.seed,
                     config={}, resolved={"target": c.run_id, "script": spec.eval.script,
                                          "splits": spec.eval.splits, "checkpoints": spec.eval.checkpoints},
                     target=c)
                for i, c in enumerate(x for x in stages[name] if not x.skipped)]
    return Expansion(spec=spec, work_root=work_root, stages=stages, evals=evals)


def default_work_root() -> Path:
    return Path(os.environ.get("BIOPOST_WORK_ROOT") or "runs")


def expected_evaluations(spec_path, work_root=None) -> list[dict]:
    """For the harvester: one dict per expected evaluation of a stage cell at a checkpoint,
    with keys sweep, stage, run_id, checkpoint, cell ({"stage.key": value}), seed, splits
    (and run_dir). Relative config paths in the spec are read from the current directory."""
    spec = load_spec(spec_path)
    if spec.eval is None:
        return []
    exp = expand(spec, work_root if work_root is not None else default_work_root())
    out = []
    for cells in exp.evals.values():
        for c in cells:
            for label in spec.eval.checkpoints:
                out.append({"sweep": spec.name, "stage": c.target.stage, "run_id": c.run_id,
                            "checkpoint": label, "cell": dict(c.cell), "seed": c.seed,
                            "splits": list(spec.eval.splits), "run_dir": str(c.run_dir)})
    return out

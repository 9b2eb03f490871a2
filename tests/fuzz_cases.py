"""Generated malformed inputs for the four parsers users feed: the row loaders, the config
parser, the sweep-spec parser and the harvester. Shared by tests/test_fuzz_parsers.py (a few
hundred derandomized cases, part of the suite) and bench/fuzz_parsers.py (10,000 per parser).

Each `*_cases()` strategy yields a case: the files to write. Each `run_*` writes them under a
fresh directory, runs the parser, and returns an outcome:
  "ok"        parsed (the harvester: harvested, every bad file listed as a Problem with its path)
  "named"     the project's own error (DataError, ConfigError, SpecError), naming the file
              (and, for a row, the row or line)
and raises `Unexpected` for anything else: any other exception, a named error that does not
name the file, or a harvest problem about a file without its path.

Cases start from valid documents and are mutated: a field replaced by an arbitrary JSON /
YAML value (NaN, 4,000-digit integers, newlines in names, lone surrogates, deep nesting), a
field deleted or added, recursive YAML anchors, non-string keys, and byte-level damage
(truncation, non-UTF-8 bytes, a `.gz` that is not gzip).
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import math
import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from hypothesis import strategies as st

from biopost.config import ConfigError, F, from_dict, load_yaml as load_config_yaml
from biopost.data.io import DataError, read_file
from biopost.data.schema import RowSchema, SeqField, Truncation, validate_rows
from biopost.sweeps.spec import SpecError, expand, load_spec


class Unexpected(AssertionError):
    """A parser ended in something other than a parse or a named error that names the file."""


# ------------------------------------------------------------------------- values
SPECIAL_INTS = [0, -1, 1, 2**63, -(2**64) - 1, 10**400, int("9" * 4300)]
SPECIAL_FLOATS = [math.nan, math.inf, -math.inf, 1e308, 5e-324, -0.0, 0.5]
SPECIAL_STRINGS = ["", " ", "\n", "sft\n", "a\nb", "x" * 300, "../../etc/passwd", "$(touch /tmp/x)",
                   "a,b", "é", "\ud800", "\x00", "|", "--output_dir", "last", "id", "ood", "sft",
                   "grpo", "eval", "accuracy", "1e-4", "true", "null", "0", "#SBATCH --x", "ACGT",
                   "acgtn", "ACGU"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from(SPECIAL_INTS),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(SPECIAL_FLOATS),
    st.sampled_from(SPECIAL_STRINGS), st.text(max_size=12),
    st.text(st.characters(codec=None, categories=None), max_size=6),  # surrogates, controls
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.one_of(st.sampled_from(SPECIAL_STRINGS), st.text(max_size=6)), inner, max_size=3),
    max_leaves=6)


_DEEP = re.compile(rb"['\"]?__DEEP_(\d+)__['\"]?")


def _deep(depth: int) -> str:
    """A marker for `depth` nested lists, expanded in the serialized bytes (building the real
    value would exhaust the generator's own recursion)."""
    return f"__DEEP_{depth}__"


def _expand_deep(data: bytes) -> bytes:
    return _DEEP.sub(lambda m: b"[" * int(m.group(1)) + b"1" + b"]" * int(m.group(1)), data)


@st.composite
def mutated(draw, doc: dict, keys: list[str]):
    """`doc` with a few random edits: a known key replaced by any value, removed, or an
    unknown key added; nested mappings (`a.b`) are edited in place."""
    doc = json.loads(json.dumps(doc))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(keys)).split(".")
        parent = doc
        for part in path[:-1]:
            child = parent.get(part) if isinstance(parent, dict) else None
            if not isinstance(child, dict):
                break
            parent = child
        else:
            op = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "deep"]))
            if op == "replace":
                parent[path[-1]] = draw(json_values)
            elif op == "delete":
                parent.pop(path[-1], None)
            elif op == "add":
                parent[draw(st.sampled_from(SPECIAL_STRINGS) | st.text(max_size=8))] = draw(json_values)
            else:
                parent[path[-1]] = _deep(draw(st.sampled_from([40, 200, 3000])))
    return doc


@st.composite
def damaged(draw, data: bytes) -> bytes:
    """Byte-level damage, sometimes: truncation, a byte that is not UTF-8, junk, nothing."""
    kind = draw(st.sampled_from(["none", "none", "none", "truncate", "bad_utf8", "junk", "empty"]))
    if kind == "truncate" and data:
        return data[:draw(st.integers(0, len(data) - 1))]
    if kind == "bad_utf8":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00"])) + data[at:]
    if kind == "junk":
        return draw(st.binary(max_size=64))
    if kind == "empty":
        return b""
    return data


def _json_bytes(obj) -> bytes:
    # allow_nan: a NaN is what a hostile (or buggy) writer can put in a file
    return _expand_deep(json.dumps(obj, allow_nan=True).encode("utf-8", "surrogatepass"))


# ------------------------------------------------------------------------- row loaders
KEGG_ROW = {"question": "Which disease does this variant cause?", "answer": "Parkinson disease",
            "reference_sequence": "ACGTACGTNN", "variant_sequence": "ACGTACCTNN",
            "reasoning": {"reasoning_steps": ["step one", "step two"], "labels": {"a": 1}}}
ROW_KEYS = ["question", "answer", "reference_sequence", "variant_sequence", "reasoning",
            "reasoning.reasoning_steps", "mutated_sequence", "split"]
ROW_SCHEMA = RowSchema(name="kegg", text=("question", "answer"),
                       sequences=(SeqField("reference_sequence", "dna"),
                                  SeqField("variant_sequence", "dna", aliases=("mutated_sequence",))),
                       text_or_struct=("reasoning",))
ROW_FORMATS = ("jsonl", "json", "csv", "jsonl.gz", "csv.gz", "parquet")


def _csv_bytes(rows: list, draw) -> bytes:
    import csv
    import io
    header = list(dict.fromkeys(k for r in rows if isinstance(r, dict) for k in r)) or ["question"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for r in rows:
        if not isinstance(r, dict):
            w.writerow([json.dumps(r, allow_nan=True)])
            continue
        cells = [v if isinstance(v, str) else json.dumps(v, allow_nan=True) for v in
                 (r.get(k, "") for k in header)]
        extra = draw(st.integers(-1, 1))  # a short row, a long row (an unquoted comma)
        cells = cells[:extra] if extra < 0 else cells + ["x"] * extra
        w.writerow(cells)
    if draw(st.integers(0, 30)) == 0:  # a field over the csv module's 131,072-character limit
        w.writerow(["Q", "A", "ACGT" * 40000, "ACGT" * 40000, "r"])
    return buf.getvalue().encode("utf-8", "surrogatepass")


@st.composite
def row_cases(draw):
    fmt = draw(st.sampled_from(ROW_FORMATS))
    rows = draw(st.lists(mutated(KEGG_ROW, ROW_KEYS), min_size=0, max_size=4))
    if draw(st.integers(0, 9)) == 0:
        rows.append(draw(json_values))  # a row that is not an object
    if fmt.startswith("jsonl"):
        data = b"".join(_json_bytes(r) + b"\n" for r in rows)
    elif fmt == "json":
        data = _json_bytes(draw(st.sampled_from([rows, {"data": rows}, {"rows": rows}])))
    elif fmt.startswith("csv"):
        data = _csv_bytes(rows, draw)
    else:  # parquet: a real one is built by pyarrow; a user's damaged one is just bytes
        data = b"PAR1" + draw(st.binary(max_size=32)) + b"PAR1"
    data = draw(damaged(data))
    if fmt.endswith(".gz"):
        how = draw(st.sampled_from(["gzip", "gzip", "plain", "truncated"]))
        if how == "gzip":
            data = gzip.compress(data, mtime=0)
        elif how == "truncated":
            z = gzip.compress(data, mtime=0)
            data = z[:max(1, len(z) // 2)]
    name = draw(st.sampled_from(["train", "id_test", "ood_test_network_split"]))
    return {"files": {f"{name}.{fmt}": data}, "skip_invalid": draw(st.booleans())}


_ROW_WHERE = re.compile(r"\b(row|line) \d+")


def run_rows(case, workdir) -> str:
    (rel, data), = case["files"].items()
    path = Path(workdir) / rel
    path.write_bytes(data)
    try:
        rows = read_file(path)
        validate_rows(rows, ROW_SCHEMA, "train", {"dna": Truncation(max_length=8)},
                      skip_invalid=case["skip_invalid"])
    except DataError as e:
        msg = str(e)
        if str(path) not in msg:
            raise Unexpected(f"DataError without the file name: {msg[:300]}") from e
        if "field" in msg and not _ROW_WHERE.search(msg):
            raise Unexpected(f"DataError about a field without its row: {msg[:300]}") from e
        return "named"
    except Exception as e:  # noqa: BLE001 - this is what the fuzzer is looking for
        raise Unexpected(f"{type(e).__name__}: {str(e)[:300]}") from e
    return "ok"


# ------------------------------------------------------------------------- config parser
@dataclasses.dataclass
class FuzzConfig:
    """Every kind of field a stage config has."""
    learning_rate: float = F(1e-4)
    num_train_epochs: int = F(1)
    save_steps: int = F(500)
    gradient_checkpointing: bool = F(False)
    text_model_name: str = F("tiny:qwen3")
    sft_checkpoint: Optional[str] = F(None)
    reward_funcs: list[str] = F(["correctness", "format"])
    reward_weights: list[float] = F([])
    cell: dict = F({})
    run_id: Optional[str] = F(None)


CONFIG_DOC = {"learning_rate": 1e-4, "num_train_epochs": 2, "save_steps": 10,
              "gradient_checkpointing": "false", "text_model_name": "tiny:qwen3",
              "sft_checkpoint": None, "reward_funcs": ["correctness"], "reward_weights": [1.0],
              "cell": {"sft.num_train_epochs": 2}, "run_id": "e2-abc"}
CONFIG_KEYS = list(CONFIG_DOC) + ["cell.sft.num_train_epochs", "unknown_key"]
YAML_SNIPPETS = [
    "a: &a [*a]\n", "a: &a {b: *a}\n", "1: 2\n", "? [a, b]\n: 1\n", "null: 1\n", "2020-01-01: x\n",
    "learning_rate: " + "9" * 4400 + "\n", "num_train_epochs: 0x1F\n", "x: !!python/object:os.system {}\n",
    "save_steps: .inf\n", "save_steps: .nan\n", "a: [" * 60 + "]" * 60 + "\n", "- 1\n- 2\n",
    "text_model_name: |\n  multi\n  line\n", "learning_rate: 1e-4\nlearning_rate: 2e-4\n",
    "reward_funcs: !!set {a, b}\n", "reward_funcs: !!binary aGVsbG8=\n", "\t: bad\n",
    "a: *undefined\n", "%YAML 1.1\n---\nx: 1\n", "base: &b {learning_rate: 1}\n<<: *b\n",
]


def _yaml_bytes(obj) -> bytes:
    import yaml
    try:
        return _expand_deep(yaml.safe_dump(obj, allow_unicode=True).encode("utf-8", "surrogatepass"))
    except (yaml.YAMLError, ValueError, RecursionError):
        return _json_bytes(obj)  # JSON is YAML


@st.composite
def config_cases(draw):
    kind = draw(st.sampled_from(["doc", "doc", "doc", "snippet", "snippet+doc", "scalar"]))
    if kind == "scalar":
        data = _json_bytes(draw(json_values))
    else:
        data = _yaml_bytes(draw(mutated(CONFIG_DOC, CONFIG_KEYS))) if kind != "snippet" else b""
        if kind.startswith("snippet"):
            data = draw(st.sampled_from(YAML_SNIPPETS)).encode() + data
    data = draw(damaged(data))
    name = draw(st.sampled_from(["sft.yaml", "c.yml", "x" * 300 + ".yaml"]))
    return {"files": {name: data}}


def run_config(case, workdir) -> str:
    (rel, data), = case["files"].items()
    path = Path(workdir) / rel
    try:
        path.write_bytes(data)
    except OSError:  # a name over NAME_MAX: the parser gets a path it cannot open
        pass
    try:
        data = load_config_yaml(path)
        from_dict(FuzzConfig, data, where=str(path))
    except ConfigError as e:
        msg = str(e)
        if str(path) not in msg:
            raise Unexpected(f"ConfigError without the file name: {msg[:300]}") from e
        return "named"
    except Exception as e:  # noqa: BLE001
        raise Unexpected(f"{type(e).__name__}: {str(e)[:300]}") from e
    return "ok"


# ------------------------------------------------------------------------- spec parser
SPEC_DOC = {
    "name": "fuzz_sweep", "description": "generated", "modality": "dna", "task": "kegg",
    "data": {"path": "data/kegg", "seed": 3},
    "stages": {
        "sft": {"script": "train.py", "config": "sft.yaml", "grid": {"num_train_epochs": [1, 2]},
                "overrides": {"learning_rate": 1e-4}, "resources": {"time": "01:00:00"}},
        "grpo": {"script": "train.py", "after": "sft", "checkpoint": "last",
                 "grid": {"beta": [1e-4, 1e-3]}},
    },
    "zip": {},
    "eval": {"splits": ["id", "ood"], "stages": ["sft", "grpo"], "script": "eval.py",
             "checkpoint": "last", "overrides": {"batch_size": 4}},
    "seeds": [0],
    "resources": {"partition": "gpu", "gpus": 1, "cpus": 4, "mem": "16G", "time": "02:00:00",
                  "array_limit": 2, "setup": ["module load cuda"]},
}
SPEC_KEYS = ["name", "description", "modality", "task", "data", "data.path", "stages",
             "stages.sft", "stages.grpo", "stages.sft.script", "stages.sft.config",
             "stages.sft.grid", "stages.sft.grid.num_train_epochs", "stages.sft.overrides",
             "stages.sft.overrides.learning_rate", "stages.sft.resources",
             "stages.sft.resources.time", "stages.grpo.after", "stages.grpo.checkpoint",
             "stages.grpo.grid", "stages.grpo.grid.beta", "stages.grpo.kind", "zip", "cells",
             "eval", "eval.splits", "eval.stages", "eval.checkpoint", "eval.overrides",
             "eval.overrides.output_dir", "eval.overrides.run_id", "eval.script", "seeds",
             "resources", "resources.gpus", "resources.mem", "resources.time",
             "resources.partition", "resources.setup", "resources.array_limit"]
SPEC_EXTRAS = [
    {"stages.sft\n": None}, {"zip": {"sft.num_train_epochs": [0, 2], "grpo.beta": [1e-3, 1e-4]}},
    {"cells": [{"grpo.init": "base"}, {"grpo.init": "sft"}]}, {"eval": {"stages": [["sft"]]}},
    {"eval": {"overrides": {"output_dir": "/tmp/elsewhere"}}}, {"name": "sft\n"},
    {"name": "n" * 300}, {"seeds": [0, 10**400]}, {"resources": {"time": "1:00:00\n#SBATCH --x"}},
]


@st.composite
def spec_cases(draw):
    doc = draw(mutated(SPEC_DOC, SPEC_KEYS))
    if draw(st.integers(0, 3)) == 0:
        extra = draw(st.sampled_from(SPEC_EXTRAS))
        for k, v in extra.items():
            if v is None:  # a stage renamed to something hostile
                stages = doc.get("stages")
                if isinstance(stages, dict) and "sft" in stages:
                    stages[k.split(".", 1)[1]] = stages.pop("sft")
            elif isinstance(v, dict) and isinstance(doc.get(k), dict):
                doc[k].update(v)
            else:
                doc[k] = v
    if draw(st.integers(0, 5)) == 0:
        data = draw(st.sampled_from(YAML_SNIPPETS)).encode() + _yaml_bytes(doc)
    else:
        data = _yaml_bytes(doc)
    files = {"spec.yaml": draw(damaged(data)),
             "sft.yaml": _yaml_bytes(draw(mutated({"learning_rate": 1e-4, "max_steps": 2},
                                                  ["learning_rate", "max_steps"])))}
    return {"files": files}


def run_spec(case, workdir) -> str:
    workdir = Path(workdir)
    for rel, data in case["files"].items():
        (workdir / rel).write_bytes(data)
    path = workdir / "spec.yaml"
    try:
        spec = load_spec(path)
        exp = expand(spec, workdir / "runs", root=workdir)
        _check_scripts(spec, workdir)
        for cells in exp.stages.values():
            for c in cells:
                json.dumps(c.cell, allow_nan=True)  # the cell reaches stages as JSON
    except SpecError as e:
        msg = str(e)
        if str(path) not in msg and str(workdir / "sft.yaml") not in msg:
            raise Unexpected(f"SpecError without the file name: {msg[:300]}") from e
        if "\n" in msg.split(" (line ")[0] and "not valid YAML" not in msg:
            raise Unexpected(f"SpecError message of several lines: {msg[:300]!r}") from e
        return "named"
    except Exception as e:  # noqa: BLE001
        raise Unexpected(f"{type(e).__name__}: {str(e)[:300]}") from e
    return "ok"


def _check_scripts(spec, workdir: Path) -> None:
    """The sbatch scripts of a spec that loads: every header line stays one #SBATCH line."""
    import sys

    from biopost.sweeps.plan import Options, Plan
    options = Options(work_root=workdir / "runs", repo_root=workdir, executor="slurm",
                      python=sys.executable, cluster_env=str(workdir / "cluster_env.sh"))
    plan = Plan(spec, options, queue={})
    for job in plan.jobs:
        script = plan.script(job, workdir / "manifest.json", symbolic=True)
        lines = script.splitlines()
        header = [line for line in lines[1:] if line.startswith("#SBATCH")]
        first_code = next(i for i, line in enumerate(lines[1:], 1)
                          if line and not line.startswith("#"))
        if any(not line.startswith("#") for line in lines[1:first_code] if line):
            raise Unexpected(f"a spec value broke the #SBATCH header: {script[:500]!r}")
        if not header:
            raise Unexpected("no #SBATCH line in the script")


# ------------------------------------------------------------------------- harvester
METRICS_DOC = {"schema": "biopost.metrics/v1", "run_id": "e1-abc", "sweep": "fuzz",
               "cell": {"sft.num_train_epochs": 1}, "stage": "sft", "checkpoint": "last",
               "modality": "dna", "task": "kegg", "split": "id", "headline": "accuracy", "n": 10,
               "n_unparsed": 1, "metrics": {"accuracy": 0.5, "macro_f1": 0.4,
                                            "per_class": {"a": {"f1": 0.1}}},
               "ci95": {"accuracy": [0.4, 0.6]}, "seed": 0, "created": "2026-01-01T00:00:00Z",
               "computed": "accuracy and macro-F1"}
METRICS_KEYS = list(METRICS_DOC) + ["metrics.accuracy", "metrics.macro_f1", "ci95.accuracy",
                                    "cell.sft.num_train_epochs", "metrics.per_class"]
STATUS_DOC = {"schema": "biopost.status/v1", "sweep": "fuzz", "stage": "sft", "run_id": "e1-abc",
              "cell": {"sft.num_train_epochs": 1}, "seed": 0, "state": "done", "job_id": "7_1",
              "target": None, "exit_code": 0, "reason": None, "updated": "2026-01-01T00:00:00Z",
              "skipped": False}
EVAL_STATUS_DOC = dict(STATUS_DOC, stage="eval", target={"stage": "sft", "run_id": "e1-abc",
                                                         "checkpoint": "last,best_ood_val"})
STATUS_KEYS = list(STATUS_DOC) + ["target.stage", "target.run_id", "target.checkpoint"]


@st.composite
def harvest_cases(draw):
    files = {}
    for i in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["metrics", "metrics", "status", "eval_status"]))
        if kind == "metrics":
            base = dict(METRICS_DOC, split=draw(st.sampled_from(["id", "ood", "id_val", "ood_val"])),
                        run_id=draw(st.sampled_from(["e1-abc", "e2-def"])))
            doc, keys = draw(mutated(base, METRICS_KEYS)), None
            rel = f"fuzz/sft/run{i}/eval/{base['split']}/metrics.json"
        else:
            base = STATUS_DOC if kind == "status" else EVAL_STATUS_DOC
            doc = draw(mutated(base, STATUS_KEYS))
            rel = f"fuzz/sft/run{i}/status.json" if kind == "status" else \
                f"fuzz/sft/run{i}/eval/status.json"
        files[rel] = draw(damaged(_json_bytes(doc)))
    return {"files": files}


def run_harvest(case, workdir, plots: bool = True) -> str:
    from biopost.harvest import plots as plots_mod
    from biopost.harvest.collect import collect
    from biopost.harvest.report import write

    workdir = Path(workdir)
    root = workdir / "runs"
    for rel, data in case["files"].items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    draw_all = plots_mod.draw_all
    try:
        if not plots:
            plots_mod.draw_all = lambda jobs: None
        h = collect(str(root))
        write(h, str(workdir / "out"))
        for p in h.problems:
            if p.kind in ("corrupt", "invalid", "foreign") and not p.path:
                raise Unexpected(f"a {p.kind} problem without its path: {p}")
        with open(workdir / "out" / "results_id_ood.json") as f:
            json.load(f)  # strict JSON: no NaN
    except Unexpected:
        raise
    except Exception as e:  # noqa: BLE001 - a malformed file must never crash the harvest
        raise Unexpected(f"{type(e).__name__}: {str(e)[:300]}") from e
    finally:
        plots_mod.draw_all = draw_all
    return "ok"


PARSERS = {"rows": (row_cases, run_rows), "config": (config_cases, run_config),
           "spec": (spec_cases, run_spec), "harvest": (harvest_cases, run_harvest)}


def fresh_dir(base: str | None = None) -> str:
    return tempfile.mkdtemp(prefix="fuzz-", dir=base)


def remove(path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def in_dir(fn, case, **kw) -> str:
    """Run one case in a fresh temp directory, removed afterwards."""
    d = fresh_dir()
    try:
        return fn(case, d, **kw)
    finally:
        remove(d)


__all__ = ["PARSERS", "Unexpected", "in_dir"]

"""The files an evaluation leaves in `<stage run dir>/eval/<split>[@<label>]/`.

  predictions.jsonl  one row per example: id, prompt_hash, generation, parsed, gold, and
                     correct (bool) or score -- enough to recompute every metric
  metrics.json       schema biopost.metrics/v1 (docs/contracts.md, DESIGN.md section 5): what
                     the harvester reads

Both are written atomically (temp file + rename) and metrics.json last, after removing an old
one, so a reader never sees metrics whose predictions are missing or from another evaluation.
The harvester has its own, more forgiving reader (biopost/harvest/read.py); the checks here
are the same ones, made strict, because a writer should never produce a file it would skip.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from biopost.errors import UserError
from biopost.files import OutputError, ensure_dir, write_text_atomic

SCHEMA = "biopost.metrics/v1"
SPLITS = ("id", "ood", "id_val", "ood_val")  # as biopost.harvest.read.SPLITS
REQUIRED = ("schema", "run_id", "stage", "task", "split", "headline", "n", "metrics")
PREDICTION_FIELDS = ("id", "prompt_hash", "generation", "parsed", "gold")
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
DEFAULT_LABEL = "last"
_GIT_TIMEOUT_S = 10
_READ_CHUNK = 1 << 20


class MetricsFileError(UserError, ValueError):
    """A metrics record or file that does not follow biopost.metrics/v1."""


# --- where ------------------------------------------------------------------------------------

def eval_dir(run_dir, split: str, label: str | None = DEFAULT_LABEL) -> Path:
    """`<run_dir>/eval/<split>` for the `last` checkpoint, `<run_dir>/eval/<split>@<label>`
    for any other label (best_ood_val, step-00000100)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    label = label or DEFAULT_LABEL
    if "/" in label or "@" in label or label in (".", ".."):
        raise ValueError(f"checkpoint label {label!r} cannot be part of a directory name")
    name = split if label == DEFAULT_LABEL else f"{split}@{label}"
    return Path(run_dir) / "eval" / name


# --- provenance -------------------------------------------------------------------------------

def provenance(config_path=None, data_paths=(), device=None) -> dict:
    """What the numbers came from: code (git commit, dirty tree), config, data, software, device.

    Each unknown is null rather than an error: a missing git, an install outside a checkout, a
    run without config.yaml. Data files are hashed (a missing one is an error: it was just read).
    """
    commit, dirty = _git_state(Path(__file__).resolve().parent.parent)
    return {"git_commit": commit, "git_dirty": dirty,
            "config_sha256": _config_sha256(config_path),
            "data_sha256": data_sha256(data_paths),
            "python": platform.python_version(),
            "torch": _version("torch"), "transformers": _version("transformers"),
            "device": None if device is None else str(device)}


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                             timeout=_GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):  # no git binary, hung filesystem
        return None
    return out.stdout if out.returncode == 0 else None


def _git_state(package_dir: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout this package is tracked in; (None, None) when it is in
    none -- e.g. installed into site-packages of a venv that lives inside some other repo."""
    if _git(["ls-files", "--error-unmatch", "__init__.py"], package_dir) is None:
        return None, None
    commit = _git(["rev-parse", "HEAD"], package_dir)
    status = _git(["status", "--porcelain"], package_dir)
    return (commit.strip() if commit else None,
            None if status is None else bool(status.strip()))


def _config_sha256(config_path) -> str | None:
    if config_path is None or not Path(config_path).is_file():
        return None
    return hashlib.sha256(Path(config_path).read_bytes()).hexdigest()


def _data_files(paths) -> list[tuple[str, Path]]:
    """(name, path) of every file: a file by its base name, a directory's files by their path
    under it -- so the hash does not depend on where the data directory lives."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += [(f.relative_to(p).as_posix(), f) for f in p.rglob("*") if f.is_file()]
        elif p.is_file():
            files.append((p.name, p))
        else:
            raise FileNotFoundError(f"data file {p} does not exist")
    return sorted(files, key=lambda nf: (nf[0], str(nf[1])))


def data_sha256(paths) -> str | None:
    """sha256 over the data files, in name order, streamed; each file contributes its name and
    size before its bytes, so that moving bytes between files changes the hash. None: no files."""
    files = _data_files(paths)
    if not files:
        return None
    h = hashlib.sha256()
    for name, path in files:
        h.update(f"{name}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            while chunk := f.read(_READ_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def _version(package: str) -> str | None:
    """The version in use if the package is imported already, else the installed one (read
    from its metadata: importing torch to learn its version would cost seconds)."""
    module = sys.modules.get(package)
    if module is not None and isinstance(getattr(module, "__version__", None), str):
        return module.__version__
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version(package)
    except PackageNotFoundError:
        return None


# --- validation -------------------------------------------------------------------------------

def _nonempty_str(x) -> bool:
    return isinstance(x, str) and x != ""


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate_record(record: dict) -> list[str]:
    """What is wrong with a metrics record ([] when nothing): the harvester's checks, strict."""
    if not isinstance(record, dict):
        return [f"a metrics record is a JSON object, not a {type(record).__name__}"]
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        return [f"missing required field(s): {', '.join(missing)}"]
    errors = []
    if record["schema"] != SCHEMA:
        errors.append(f"schema {record['schema']!r} is not {SCHEMA!r}")
    for k in ("run_id", "stage", "task", "headline"):
        if not _nonempty_str(record[k]):
            errors.append(f"field {k!r} must be a non-empty string, got {record[k]!r}")
    if record["split"] not in SPLITS:
        errors.append(f"split {record['split']!r} is not one of {', '.join(SPLITS)}")
    if not _int(record["n"]) or record["n"] < 0:
        errors.append(f"field 'n' must be a non-negative integer, got {record['n']!r}")
    metrics = record["metrics"]
    if not isinstance(metrics, dict):
        errors.append("field 'metrics' must be an object")
    elif record["headline"] not in metrics:
        errors.append(f"headline {record['headline']!r} missing from metrics "
                      f"(has: {', '.join(map(str, metrics)) or 'nothing'})")
    elif not _finite(metrics[record["headline"]]):
        errors.append(f"headline {record['headline']!r} is not a finite number: "
                      f"{metrics[record['headline']]!r}")
    for k in ("sweep", "checkpoint"):
        if record.get(k) is not None and not _nonempty_str(record[k]):
            errors.append(f"field {k!r} must be a non-empty string or null, got {record[k]!r}")
    if record.get("cell") is not None and not isinstance(record["cell"], dict):
        errors.append(f"field 'cell' must be an object, got {record['cell']!r}")
    for k in ("seed", "n_unparsed"):
        if record.get(k) is not None and not _int(record[k]):
            errors.append(f"field {k!r} must be an integer, got {record[k]!r}")
    ci95 = record.get("ci95")
    if ci95 is not None:
        if not isinstance(ci95, dict):
            errors.append("field 'ci95' must be an object of [lo, hi] pairs")
        else:
            for name, interval in ci95.items():
                if not (isinstance(interval, (list, tuple)) and len(interval) == 2
                        and all(map(_finite, interval)) and interval[0] <= interval[1]):
                    errors.append(f"ci95[{name!r}] must be [lo, hi] with lo <= hi, "
                                  f"got {interval!r}")
    return errors


def _validate_predictions(predictions: list[dict], n) -> list[str]:
    errors = []
    if _int(n) and len(predictions) != n:
        errors.append(f"n is {n} but there are {len(predictions)} predictions "
                      "(one row per example)")
    for i, row in enumerate(predictions):
        if not isinstance(row, dict):
            errors.append(f"prediction {i} is not an object")
            continue
        missing = [k for k in PREDICTION_FIELDS if k not in row]
        if "correct" not in row and "score" not in row:
            missing.append("correct or score")
        if missing:
            errors.append(f"prediction {i} misses {', '.join(missing)}")
        elif "correct" in row and not isinstance(row["correct"], bool):
            errors.append(f"prediction {i}: 'correct' must be true/false, got {row['correct']!r}")
        if len(errors) >= 5:  # enough to see the pattern
            break
    return errors


# --- writing and reading ----------------------------------------------------------------------

def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _write_atomic(path: Path, text: str) -> None:
    # temp file + fsync + rename, mode 0o666 & ~umask; a full disk is an OutputError
    write_text_atomic(path, text)


def _dumps(doc) -> str:
    # allow_nan=False: NaN / Infinity are not JSON, and other readers choke on them.
    return json.dumps(doc, ensure_ascii=False, allow_nan=False)


def write_eval_outputs(out_dir, record: dict, predictions: list[dict]) -> Path:
    """Validate, then write `predictions.jsonl` and `metrics.json` into out_dir (created);
    returns the metrics.json path. `schema` and `created` (UTC) are filled in when missing; the
    caller's record is not modified. Raises MetricsFileError before writing anything when the
    record or the predictions are invalid."""
    record = dict(record)
    record.setdefault("schema", SCHEMA)
    record.setdefault("created", _utc_now())
    errors = validate_record(record) + _validate_predictions(predictions, record.get("n"))
    if errors:
        raise MetricsFileError("invalid evaluation output for "
                               f"{out_dir}: " + "; ".join(errors))
    try:  # serialize both before touching the directory: a NaN must not leave half a result
        metrics_text = json.dumps(record, ensure_ascii=False, allow_nan=False, indent=1) + "\n"
        predictions_text = "".join(_dumps(row) + "\n" for row in predictions)
    except (TypeError, ValueError) as e:
        raise MetricsFileError(f"evaluation output for {out_dir} is not JSON: {e}") from e

    out = ensure_dir(out_dir)
    metrics_path = out / METRICS_FILE
    try:
        metrics_path.unlink(missing_ok=True)  # an old one must not sit beside the new predictions
    except OSError as e:
        raise OutputError(metrics_path, e) from None
    _write_atomic(out / PREDICTIONS_FILE, predictions_text)
    _write_atomic(metrics_path, metrics_text)
    return metrics_path


def read_metrics(path) -> dict:
    """The record of a metrics.json (or of the metrics.json in the directory `path`).
    FileNotFoundError when missing, MetricsFileError when unreadable, not JSON, of another
    schema, or lacking a required field."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics file")
    try:
        doc = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise MetricsFileError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(doc, dict):
        raise MetricsFileError(f"{path}: top level is a {type(doc).__name__}, not an object")
    if doc.get("schema") != SCHEMA:
        what = f"schema {doc['schema']!r}" if "schema" in doc else "no 'schema' field"
        raise MetricsFileError(f"{path}: {what}; expected {SCHEMA}")
    errors = validate_record(doc)
    if errors:
        raise MetricsFileError(f"{path}: " + "; ".join(errors))
    return doc


def read_predictions(path) -> list[dict]:
    """The rows of a predictions.jsonl (or of the one in the directory `path`)."""
    path = Path(path)
    if path.is_dir():
        path = path / PREDICTIONS_FILE
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise MetricsFileError(f"{path}:{lineno}: not valid JSON ({e})") from e
    return rows


def recompute_from_predictions(predictions, task=None) -> dict:
    """The metrics of the `gold` and `parsed` fields of predictions (rows, or a predictions.jsonl
    path / its directory), computed by the task's own `metrics` (without bootstrap): what
    metrics.json must agree with. `task` is a Task or a registered name; by default, the task the
    `metrics.json` beside a predictions path names, and for bare rows a single-label task's metric.
    Returns the metrics plus `n` and `n_unparsed` (and the task's extra fields, e.g. per_class)."""
    if isinstance(predictions, (str, os.PathLike)):
        path = Path(predictions)
        metrics_path = (path if path.is_dir() else path.parent) / METRICS_FILE
        if task is None and metrics_path.is_file():
            task = read_metrics(metrics_path).get("task")
        predictions = read_predictions(predictions)
    golds = [row["gold"] for row in predictions]
    parsed = [row["parsed"] for row in predictions]
    from biopost.tasks import classification_metrics as single_label, get_task
    if isinstance(task, str):
        task = get_task(task)
    metric = task.metrics if task is not None else single_label
    result = metric(golds, parsed, bootstrap_resamples=0)
    return {**result.metrics, **result.extra, "n": len(golds), "n_unparsed": sum(p is None for p in parsed)}

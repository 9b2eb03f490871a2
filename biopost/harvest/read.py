"""Find every metrics.json and status.json under a root and validate it against its schema.

Only these two file names are opened: results come from the files evaluation and the sweep
runner write (docs/contracts.md), never from logs. A bad file becomes a Problem and the scan
goes on.
"""
import json
import math
import os
from dataclasses import dataclass, field

from biopost.harvest.problems import Problem

METRICS_SCHEMA = "biopost.metrics/v1"
STATUS_SCHEMA = "biopost.status/v1"
SPLITS = ("id", "ood", "id_val", "ood_val")  # id/ood are the headline test splits
STATES = ("running", "done", "failed", "requeued")
DEFAULT_CHECKPOINT = "last"
# Never hold a metrics or status file, but a checkpoint folder can hold thousands of files.
SKIP_DIRS = frozenset({"checkpoints", "logs"})


@dataclass
class Metrics:
    """One validated metrics.json: one split of one evaluated checkpoint."""
    path: str
    sweep: str | None
    stage: str
    run_id: str
    checkpoint: str
    split: str
    task: str
    headline: str
    n: int
    metrics: dict
    cell: dict = field(default_factory=dict)
    seed: int | None = None
    modality: str | None = None
    n_unparsed: int | None = None
    ci95: dict = field(default_factory=dict)  # metric -> [lo, hi], only well-formed entries
    computed: object = None

    @property
    def key(self) -> tuple:
        return (self.sweep, self.stage, self.run_id, self.checkpoint)


@dataclass
class Status:
    """One validated status.json, of a training cell or (stage "eval") an evaluation cell."""
    path: str
    sweep: str | None
    stage: str
    run_id: str
    state: str
    # Evaluation cell: (stage, run_id, (checkpoint labels,)); one evaluation job can cover
    # several labels, which the sweep runner writes comma-joined ("last,best_ood_val").
    target: tuple | None = None
    skipped: bool = False  # a 0-epoch stage the runner skipped: nothing to evaluate
    cell: dict = field(default_factory=dict)
    seed: int | None = None
    job_id: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    updated: str | None = None

    @property
    def is_eval(self) -> bool:
        return self.stage == "eval"


@dataclass
class Scan:
    metrics: list[Metrics] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    n_metrics_files: int = 0
    n_status_files: int = 0


def find_files(root: str):
    """Yield (path, name) for every metrics.json / status.json under root, in a stable order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in ("metrics.json", "status.json"):
            if name in filenames:
                yield os.path.join(dirpath, name), name


def scan(root: str) -> Scan:
    out = Scan()
    for path, name in find_files(root):
        if name == "metrics.json":
            out.n_metrics_files += 1
        else:
            out.n_status_files += 1
        doc = _load(path, out.problems)
        if doc is None:
            continue
        schema = doc.get("schema")
        if schema == METRICS_SCHEMA:
            record = parse_metrics(doc, path, out.problems)
            if record is not None:
                out.metrics.append(record)
        elif schema == STATUS_SCHEMA:
            record = parse_status(doc, path, out.problems)
            if record is not None:
                out.statuses.append(record)
        else:
            what = f"schema {schema!r}" if "schema" in doc else "no 'schema' field"
            out.problems.append(Problem("foreign", f"{what}; expected {METRICS_SCHEMA} or "
                                                   f"{STATUS_SCHEMA}", path))
    return out


def _load(path: str, problems: list) -> dict | None:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        problems.append(Problem("corrupt", f"cannot read: {e.strerror or e}", path))
        return None
    if not raw.strip():
        problems.append(Problem("corrupt", "empty file", path))
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        problems.append(Problem("corrupt", f"not valid JSON ({e})", path))
        return None
    if not isinstance(doc, dict):
        problems.append(Problem("corrupt", f"top level is a {type(doc).__name__}, "
                                           "not a JSON object", path))
        return None
    return doc


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_str(x) -> bool:
    return isinstance(x, str) and x != ""


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse_metrics(doc: dict, path: str, problems: list) -> Metrics | None:
    def invalid(detail):
        problems.append(Problem("invalid", detail, path, sweep=doc.get("sweep"),
                                stage=doc.get("stage"), run_id=doc.get("run_id"),
                                checkpoint=doc.get("checkpoint")))

    missing = [k for k in ("run_id", "stage", "task", "split", "headline", "n", "metrics")
               if k not in doc]
    if missing:
        invalid(f"missing required field(s): {', '.join(missing)}")
        return None
    for k in ("run_id", "stage", "task", "headline"):
        if not _is_str(doc[k]):
            invalid(f"field {k!r} must be a non-empty string, got {doc[k]!r}")
            return None
    if doc["split"] not in SPLITS:
        invalid(f"split {doc['split']!r} is not one of {', '.join(SPLITS)}")
        return None
    if not _is_int(doc["n"]) or doc["n"] < 0:
        invalid(f"field 'n' must be a non-negative integer, got {doc['n']!r}")
        return None
    metrics, headline = doc["metrics"], doc["headline"]
    if not isinstance(metrics, dict):
        invalid("field 'metrics' must be an object")
        return None
    if headline not in metrics:
        invalid(f"headline {headline!r} missing from metrics")
        return None
    if not is_number(metrics[headline]) or not math.isfinite(metrics[headline]):
        invalid(f"headline {headline!r} is not a finite number: {metrics[headline]!r}")
        return None
    sweep, cell, checkpoint = doc.get("sweep"), doc.get("cell") or {}, doc.get("checkpoint")
    if sweep is not None and not _is_str(sweep):
        invalid(f"field 'sweep' must be a string or null, got {sweep!r}")
        return None
    if not isinstance(cell, dict):
        invalid(f"field 'cell' must be an object, got {cell!r}")
        return None
    if checkpoint is None:
        checkpoint = DEFAULT_CHECKPOINT
    elif not _is_str(checkpoint):
        invalid(f"field 'checkpoint' must be a string, got {checkpoint!r}")
        return None
    seed = doc.get("seed")
    if seed is not None and not _is_int(seed):
        invalid(f"field 'seed' must be an integer, got {seed!r}")
        return None

    # Optional extras: a malformed one is reported and ignored, the result is still used.
    n_unparsed = doc.get("n_unparsed")
    if n_unparsed is not None and not _is_int(n_unparsed):
        invalid(f"field 'n_unparsed' ignored: not an integer ({n_unparsed!r})")
        n_unparsed = None
    ci95 = {}
    raw_ci = doc.get("ci95") or {}
    if not isinstance(raw_ci, dict):
        invalid("field 'ci95' ignored: not an object")
        raw_ci = {}
    for name, interval in raw_ci.items():
        if (isinstance(interval, (list, tuple)) and len(interval) == 2
                and all(is_number(v) and math.isfinite(v) for v in interval)):
            ci95[name] = list(interval)
        else:
            invalid(f"ci95[{name!r}] ignored: not a [lo, hi] pair of numbers ({interval!r})")
    modality = doc.get("modality")
    return Metrics(path=path, sweep=sweep, stage=doc["stage"], run_id=doc["run_id"],
                   checkpoint=checkpoint, split=doc["split"], task=doc["task"],
                   headline=headline, n=doc["n"], metrics=metrics, cell=cell, seed=seed,
                   modality=modality if isinstance(modality, str) else None,
                   n_unparsed=n_unparsed, ci95=ci95, computed=doc.get("computed"))


def parse_status(doc: dict, path: str, problems: list) -> Status | None:
    def invalid(detail):
        problems.append(Problem("invalid", detail, path, sweep=doc.get("sweep"),
                                stage=doc.get("stage"), run_id=doc.get("run_id")))

    missing = [k for k in ("stage", "run_id", "state") if k not in doc]
    if missing:
        invalid(f"missing required field(s): {', '.join(missing)}")
        return None
    for k in ("stage", "run_id"):
        if not _is_str(doc[k]):
            invalid(f"field {k!r} must be a non-empty string, got {doc[k]!r}")
            return None
    if doc["state"] not in STATES:
        invalid(f"state {doc['state']!r} is not one of {', '.join(STATES)}")
        return None
    sweep = doc.get("sweep")
    if sweep is not None and not _is_str(sweep):
        invalid(f"field 'sweep' must be a string or null, got {sweep!r}")
        return None
    target = None
    if doc["stage"] == "eval":
        t = doc.get("target")
        if not (isinstance(t, dict) and _is_str(t.get("stage")) and _is_str(t.get("run_id"))):
            invalid("an evaluation status needs target {stage, run_id[, checkpoint]}, "
                    f"got {t!r}")
            return None
        labels = [c.strip() for c in str(t.get("checkpoint") or "").split(",") if c.strip()]
        target = (t["stage"], t["run_id"], tuple(labels or [DEFAULT_CHECKPOINT]))
    cell = doc.get("cell") if isinstance(doc.get("cell"), dict) else {}
    seed = doc.get("seed") if _is_int(doc.get("seed")) else None
    exit_code = doc.get("exit_code") if _is_int(doc.get("exit_code")) else None
    job_id = doc.get("job_id")
    return Status(path=path, sweep=sweep, stage=doc["stage"], run_id=doc["run_id"],
                  state=doc["state"], target=target, skipped=doc.get("skipped") is True,
                  cell=cell, seed=seed,
                  job_id=None if job_id is None else str(job_id), exit_code=exit_code,
                  reason=doc.get("reason") if isinstance(doc.get("reason"), str) else None,
                  updated=doc.get("updated") if isinstance(doc.get("updated"), str) else None)

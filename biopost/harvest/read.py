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
# Deeper JSON is refused as invalid: every later step (flattening extras, writing the json
# output) recurses, and no file the project writes nests more than a few levels.
MAX_DEPTH = 64


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
    summary: dict | None = None  # what the stage left in train_summary.json (GRPO: reward spread)

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
        raw_path, path = path, unicode_text(path)  # a non-UTF-8 directory name, escaped
        doc = _load(raw_path, out.problems, path)
        if doc is None:
            continue
        doc, escaped = _unicode_doc(doc)
        if escaped:
            out.problems.append(Problem("invalid", "text that is not Unicode (a lone surrogate "
                                                   "escape); kept with it escaped as \\udXXX", path))
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
            what = f"schema {_show(schema)}" if "schema" in doc else "no 'schema' field"
            out.problems.append(Problem("foreign", f"{what}; expected {METRICS_SCHEMA} or "
                                                   f"{STATUS_SCHEMA}", path))
    return out


def unicode_text(text: str) -> str:
    """`text` without lone surrogates (from a non-UTF-8 file name, or a `\\ud800` escape in a
    JSON file): each is written as its backslash escape. Every output (md, csv, the plots, the
    console) then takes it; the json output would too, but the csv's pandas and matplotlib
    do not."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _unicode_doc(value) -> tuple:
    """(value with every string and key made Unicode, whether anything was escaped). Called
    after the depth check, so the recursion is bounded."""
    if isinstance(value, str):
        clean = unicode_text(value)
        return clean, clean is not value
    if isinstance(value, list):
        pairs = [_unicode_doc(v) for v in value]
        return [v for v, _ in pairs], any(c for _, c in pairs)
    if isinstance(value, dict):
        out, changed = {}, False
        for k, v in value.items():
            ck, kc = _unicode_doc(k)
            cv, vc = _unicode_doc(v)
            out[ck] = cv
            changed = changed or kc or vc
        return out, changed
    return value, False


def _load(path: str, problems: list, shown: str | None = None) -> dict | None:
    """The JSON object in `path` (problems name it as `shown`), or None with a Problem."""
    raw_path, path = path, shown or path
    try:
        with open(raw_path, "rb") as f:
            raw = f.read()
    except OSError as e:
        problems.append(Problem("corrupt", f"cannot read: {e.strerror or e}", path))
        return None
    if not raw.strip():
        problems.append(Problem("corrupt", "empty file", path))
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError; a 4,300+ digit integer
        problems.append(Problem("corrupt", f"not valid JSON ({_short(e)})", path))
        return None
    except RecursionError:
        problems.append(Problem("corrupt", "not readable JSON (nested too deeply)", path))
        return None
    if not isinstance(doc, dict):
        problems.append(Problem("corrupt", f"top level is a {type(doc).__name__}, "
                                           "not a JSON object", path))
        return None
    if _depth(doc) > MAX_DEPTH:
        problems.append(Problem("invalid", f"JSON nested deeper than {MAX_DEPTH} levels; "
                                           "skipped", path))
        return None
    return doc


def _short(e: BaseException, limit: int = 200) -> str:
    text = str(e)
    return text if len(text) <= limit else text[:limit] + "..."


def _show(value, limit: int = 120) -> str:
    """repr() of a value from a file, cut to `limit` characters for a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _depth(doc) -> int:
    """Nesting depth of a JSON value, without recursion."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            break
        if isinstance(value, dict):
            stack.extend((v, d + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, d + 1) for v in value)
    return deepest


def label(value) -> str | None:
    """A field of a Problem: strings as they are, None as None, any other JSON value (a
    number, a list, an object in a malformed file) as its compact JSON text, cut to 120
    characters, so that problems always sort and print."""
    if value is None or isinstance(value, str):
        return value
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except (ValueError, TypeError, RecursionError):
        text = repr(type(value))
    return text if len(text) <= 120 else text[:117] + "..."


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def is_finite_number(x) -> bool:
    """A number that is not NaN or infinite and fits a float (JSON integers are unbounded:
    float(10**400) overflows)."""
    if not is_number(x):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _is_str(x) -> bool:
    return isinstance(x, str) and x != ""


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse_metrics(doc: dict, path: str, problems: list) -> Metrics | None:
    def invalid(detail):
        problems.append(Problem("invalid", detail, path, sweep=label(doc.get("sweep")),
                                stage=label(doc.get("stage")), run_id=label(doc.get("run_id")),
                                checkpoint=label(doc.get("checkpoint"))))

    missing = [k for k in ("run_id", "stage", "task", "split", "headline", "n", "metrics")
               if k not in doc]
    if missing:
        invalid(f"missing required field(s): {', '.join(missing)}")
        return None
    for k in ("run_id", "stage", "task", "headline"):
        if not _is_str(doc[k]):
            invalid(f"field {k!r} must be a non-empty string, got {_show(doc[k])}")
            return None
    if doc["split"] not in SPLITS:
        invalid(f"split {_show(doc['split'])} is not one of {', '.join(SPLITS)}")
        return None
    if not _is_int(doc["n"]) or doc["n"] < 0:
        invalid(f"field 'n' must be a non-negative integer, got {_show(doc['n'])}")
        return None
    metrics, headline = doc["metrics"], doc["headline"]
    if not isinstance(metrics, dict):
        invalid("field 'metrics' must be an object")
        return None
    if headline not in metrics:
        invalid(f"headline {_show(headline)} missing from metrics")
        return None
    if not is_finite_number(metrics[headline]):
        invalid(f"headline {_show(headline)} is not a finite number: {label(metrics[headline])}")
        return None
    sweep, cell, checkpoint = doc.get("sweep"), doc.get("cell") or {}, doc.get("checkpoint")
    if sweep is not None and not _is_str(sweep):
        invalid(f"field 'sweep' must be a string or null, got {_show(sweep)}")
        return None
    if not isinstance(cell, dict):
        invalid(f"field 'cell' must be an object, got {_show(cell)}")
        return None
    if checkpoint is None:
        checkpoint = DEFAULT_CHECKPOINT
    elif not _is_str(checkpoint):
        invalid(f"field 'checkpoint' must be a string, got {_show(checkpoint)}")
        return None
    seed = doc.get("seed")
    if seed is not None and not _is_int(seed):
        invalid(f"field 'seed' must be an integer, got {_show(seed)}")
        return None

    # Optional extras: a malformed one is reported and ignored, the result is still used.
    n_unparsed = doc.get("n_unparsed")
    if n_unparsed is not None and not _is_int(n_unparsed):
        invalid(f"field 'n_unparsed' ignored: not an integer ({_show(n_unparsed)})")
        n_unparsed = None
    ci95 = {}
    raw_ci = doc.get("ci95") or {}
    if not isinstance(raw_ci, dict):
        invalid("field 'ci95' ignored: not an object")
        raw_ci = {}
    for name, interval in raw_ci.items():
        if (isinstance(interval, (list, tuple)) and len(interval) == 2
                and all(is_finite_number(v) for v in interval)):
            ci95[name] = list(interval)
        else:
            invalid(f"ci95[{_show(name)}] ignored: not a [lo, hi] pair of numbers ({_show(interval)})")
    modality = doc.get("modality")
    return Metrics(path=path, sweep=sweep, stage=doc["stage"], run_id=doc["run_id"],
                   checkpoint=checkpoint, split=doc["split"], task=doc["task"],
                   headline=headline, n=doc["n"], metrics=metrics, cell=cell, seed=seed,
                   modality=modality if isinstance(modality, str) else None,
                   n_unparsed=n_unparsed, ci95=ci95, computed=doc.get("computed"))


def parse_status(doc: dict, path: str, problems: list) -> Status | None:
    def invalid(detail):
        problems.append(Problem("invalid", detail, path, sweep=label(doc.get("sweep")),
                                stage=label(doc.get("stage")), run_id=label(doc.get("run_id"))))

    missing = [k for k in ("stage", "run_id", "state") if k not in doc]
    if missing:
        invalid(f"missing required field(s): {', '.join(missing)}")
        return None
    for k in ("stage", "run_id"):
        if not _is_str(doc[k]):
            invalid(f"field {k!r} must be a non-empty string, got {_show(doc[k])}")
            return None
    if doc["state"] not in STATES:
        invalid(f"state {_show(doc['state'])} is not one of {', '.join(STATES)}")
        return None
    sweep = doc.get("sweep")
    if sweep is not None and not _is_str(sweep):
        invalid(f"field 'sweep' must be a string or null, got {_show(sweep)}")
        return None
    target = None
    if doc["stage"] == "eval":
        t = doc.get("target")
        if not (isinstance(t, dict) and _is_str(t.get("stage")) and _is_str(t.get("run_id"))):
            invalid("an evaluation status needs target {stage, run_id[, checkpoint]}, "
                    f"got {_show(t)}")
            return None
        checkpoint = t.get("checkpoint")
        if checkpoint is not None and not isinstance(checkpoint, str):
            invalid(f"target checkpoint must be a string (labels joined by commas), got "
                    f"{_show(checkpoint)}")
            return None
        labels = [c.strip() for c in (checkpoint or "").split(",") if c.strip()]
        target = (t["stage"], t["run_id"], tuple(labels or [DEFAULT_CHECKPOINT]))
    # Optional fields: a malformed one is reported and ignored, the status is still used.
    cell = doc.get("cell")
    if cell is not None and not isinstance(cell, dict):
        invalid(f"field 'cell' ignored: not an object ({_show(cell)})")
    cell = cell if isinstance(cell, dict) else {}
    seed = doc.get("seed")
    if seed is not None and not _is_int(seed):
        invalid(f"field 'seed' ignored: not an integer ({_show(seed)})")
        seed = None
    exit_code = doc.get("exit_code") if _is_int(doc.get("exit_code")) else None
    job_id = doc.get("job_id")
    if job_id is not None and not isinstance(job_id, (str, int)):
        invalid(f"field 'job_id' ignored: not a string ({_show(job_id)})")
        job_id = None
    return Status(path=path, sweep=sweep, stage=doc["stage"], run_id=doc["run_id"],
                  state=doc["state"], target=target, skipped=doc.get("skipped") is True,
                  cell=cell, seed=seed,
                  job_id=None if job_id is None else str(job_id), exit_code=exit_code,
                  reason=doc.get("reason") if isinstance(doc.get("reason"), str) else None,
                  updated=doc.get("updated") if isinstance(doc.get("updated"), str) else None,
                  summary=doc.get("summary") if isinstance(doc.get("summary"), dict) else None)

"""Matched ID/OOD rows: one per (sweep, stage, run id, checkpoint), and their seed aggregates.

Rows are plain dicts whose numbers are the very Python objects json.load returned, so that the
json and csv outputs carry them unchanged; pandas only computes the seed means and sds.
"""
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from biopost.harvest.problems import Problem
from biopost.harvest.read import DEFAULT_CHECKPOINT, SPLITS, Metrics, Scan, Status, is_number

HEADLINE_SPLITS = ("id", "ood")
STAGE_ORDER = ("cpt", "sft", "grpo")
BAD_STATES = ("failed", "running", "requeued")
# Columns every row has, in csv order; cell columns go after KEY_COLUMNS.
KEY_COLUMNS = ("sweep", "stage", "run_id", "checkpoint", "seed")
HEADLINE_COLUMNS = tuple(
    col for split in SPLITS
    for col in (split, f"{split}_ci95_lo", f"{split}_ci95_hi", f"n_{split}")
) + ("gap",)
STATE_COLUMNS = ("headline", "train_state", "eval_state", "notes", "task", "modality")
RESERVED = frozenset(KEY_COLUMNS + HEADLINE_COLUMNS + STATE_COLUMNS + ("cell",))
# Seed aggregates are computed for these row columns.
AGG_METRICS = ("id", "ood", "gap", "id_val", "ood_val")


def cell_column(key: str) -> str:
    """Column of a swept key; a key that would shadow a fixed column gets a prefix."""
    return f"cell:{key}" if key in RESERVED else key


def stage_rank(stage) -> tuple:
    """Pipeline order (cpt, sft, grpo), then any other stage by name."""
    if stage in STAGE_ORDER:
        return (STAGE_ORDER.index(stage), "")
    return (len(STAGE_ORDER), str(stage))


def as_number(value) -> float | None:
    """The value as a float when it is numeric (YAML reads `1e-4` as a string), else None."""
    if isinstance(value, bool) or not (is_number(value) or isinstance(value, str)):
        return None
    try:
        x = float(value)
    except (ValueError, OverflowError):  # not a number; an integer beyond a float's range
        return None
    return x if math.isfinite(x) else None  # NaN / inf: plotted as a category, not a position


def value_key(value) -> tuple:
    """Sort key of a swept value: numbers numerically, then other values by text, None last."""
    if value is None:
        return (2, 0.0, "")
    x = as_number(value)
    if x is not None:
        return (0, x, "")
    return (1, 0.0, value if isinstance(value, str) else json.dumps(value, sort_keys=True))


def group_key(row: dict) -> str:
    """Rows with equal group keys differ only in seed (and hence run id)."""
    return json.dumps([row["sweep"], row["stage"], row["checkpoint"], row["cell"]],
                      sort_keys=True, default=str)


@dataclass
class _Cell:
    """Everything known about one (sweep, stage, run id, checkpoint) before it becomes a row."""
    sweep: str | None
    stage: str
    run_id: str
    checkpoint: str | None
    splits: dict = field(default_factory=dict)  # split -> Metrics
    train: Status | None = None
    eval: Status | None = None
    expected: dict | None = None  # from --spec

    @property
    def where(self) -> dict:
        return dict(sweep=self.sweep, stage=self.stage, run_id=self.run_id,
                    checkpoint=self.checkpoint)


def build_rows(scan: Scan, expected: list[dict] = ()) -> tuple[list[dict], list[Problem]]:
    """Merge metrics, statuses and (optionally) the spec's expected cells into rows."""
    problems: list[Problem] = []
    cells: dict[tuple, _Cell] = {}

    for m in scan.metrics:
        c = cells.setdefault(m.key, _Cell(*m.key))
        if m.split in c.splits:
            problems.append(Problem("duplicate", f"split {m.split!r} already read from "
                                    f"{c.splits[m.split].path}", m.path, **c.where))
        else:
            c.splits[m.split] = m

    for e in expected:
        key = (e.get("sweep"), e["stage"], e["run_id"],
               e.get("checkpoint") or DEFAULT_CHECKPOINT)
        c = cells.setdefault(key, _Cell(*key))
        if c.expected is None:
            c.expected = dict(e, splits=list(e.get("splits") or HEADLINE_SPLITS))
        else:  # the same cell from two specs: expect the union of their splits
            c.expected["splits"] += [s for s in e.get("splits") or () if s not in
                                     c.expected["splits"]]

    for s in scan.statuses:
        if not s.is_eval:
            continue
        stage, run_id, labels = s.target
        for label in labels:
            key = (s.sweep, stage, run_id, label)
            c = cells.setdefault(key, _Cell(*key))
            if c.eval is not None:
                problems.append(Problem("duplicate", f"evaluation status already read from "
                                        f"{c.eval.path}", s.path, **c.where))
            else:
                c.eval = s

    spec_stages: dict[str, set] = {}
    for e in expected:
        spec_stages.setdefault(e["sweep"], set()).add(e["stage"])
    # A training status applies to every evaluated checkpoint of its run.
    by_run: dict[tuple, list[_Cell]] = {}
    for c in cells.values():
        by_run.setdefault((c.sweep, c.stage, c.run_id), []).append(c)
    for s in scan.statuses:
        if s.is_eval:
            continue
        run = (s.sweep, s.stage, s.run_id)
        if run not in by_run and s.skipped:
            continue  # a skipped 0-epoch stage is never evaluated
        if run not in by_run and s.state not in BAD_STATES and not _evaluated(s, spec_stages):
            continue  # e.g. a CPT stage: judged by its held-out loss, not by ID/OOD metrics
        if run not in by_run:  # trained (or tried to) but nothing evaluated: checkpoint unknown
            c = _Cell(*run, checkpoint=None)
            cells[(*run, None)] = c
            by_run[run] = [c]
        targets = by_run[run]
        if targets[0].train is not None:
            problems.append(Problem("duplicate", f"training status already read from "
                                    f"{targets[0].train.path}", s.path, sweep=s.sweep,
                                    stage=s.stage, run_id=s.run_id))
            continue
        for c in targets:
            c.train = s

    rows = [_row(c, problems) for c in cells.values()]
    return rows, problems


def _evaluated(s: Status, spec_stages: dict) -> bool:
    """Whether ID/OOD metrics are due for this training cell: a spec covering its sweep says so
    (spec_stages: sweep -> its evaluated stages); without one, every stage except a CPT run (the
    one that writes final_eval_metrics.json) is."""
    if s.sweep in spec_stages:
        return s.stage in spec_stages[s.sweep]
    return not os.path.exists(os.path.join(os.path.dirname(s.path), "final_eval_metrics.json"))


def _first(values):
    return next((v for v in values if v is not None), None)


def _row(c: _Cell, problems: list) -> dict:
    present = [c.splits[s] for s in SPLITS if s in c.splits]
    statuses = [s for s in (c.train, c.eval) if s is not None]
    spec = c.expected or {}
    cell = _first([m.cell for m in present] + [spec.get("cell")] + [s.cell for s in statuses]
                  ) or {}
    seed = _first([m.seed for m in present] + [spec.get("seed")] + [s.seed for s in statuses])

    row = dict(sweep=c.sweep, stage=c.stage, run_id=c.run_id, checkpoint=c.checkpoint,
               seed=seed, cell=cell)
    for key, value in cell.items():
        row[cell_column(key)] = value
    row["headline"] = present[0].headline if present else None
    for split in SPLITS:
        m = c.splits.get(split)
        lo_hi = m.ci95.get(m.headline) if m else None
        row[split] = m.metrics[m.headline] if m else None
        row[f"{split}_ci95_lo"] = lo_hi[0] if lo_hi else None
        row[f"{split}_ci95_hi"] = lo_hi[1] if lo_hi else None
        row[f"n_{split}"] = m.n if m else None
    row["gap"] = row["id"] - row["ood"] if row["id"] is not None and row["ood"] is not None \
        else None
    row["train_state"] = c.train.state if c.train else None
    row["eval_state"] = c.eval.state if c.eval else None
    row["task"] = _first(m.task for m in present)
    row["modality"] = _first(m.modality for m in present)

    notes = []
    _check_consistent(c, present, problems, notes)
    for status, what in ((c.train, "training"), (c.eval, "evaluation")):
        if status is not None and status.state in BAD_STATES:
            problems.append(Problem(status.state, _status_detail(status, what), status.path,
                                    **c.where))
            notes.append(f"{'train' if status is c.train else 'eval'} {status.state}")
    wanted = spec.get("splits") or HEADLINE_SPLITS
    missing = [s for s in wanted if s not in c.splits]
    if missing and not present and not statuses and c.expected is not None:
        problems.append(Problem("never_ran", "expected by the spec; no metrics.json and no "
                                f"status.json (splits {', '.join(missing)})", **c.where))
        notes.append("never ran")
    elif missing and not any(s.state in BAD_STATES for s in statuses):
        problems.append(Problem("missing_split", f"no metrics.json for split(s) "
                                f"{', '.join(missing)}", _first(m.path for m in present),
                                **c.where))
        notes.append("no " + "/".join(missing))
    notes += _signal_notes(c.train, present)
    row["notes"] = "; ".join(notes) or None

    for m in present:
        _add_extras(row, m)
    for m in present:
        row[f"path_{m.split}"] = m.path
    return row


def _signal_notes(train: Status | None, present: list[Metrics]) -> list[str]:
    """Notes for numbers that look like results but are not: a GRPO run whose every group had
    zero reward spread in every step (zero advantages: the policy term never moved it, so its
    metrics are about those of its initial model), and an evaluation that parsed no answer for
    more than half of its examples (its accuracy then measures the output format, not the task)."""
    notes = []
    summary = train.summary if train is not None else None
    if isinstance(summary, dict) and summary.get("no_learning_signal") is True:
        steps = summary.get("steps")
        notes.append("no learning signal" + (f" (zero reward std in every group of all {steps} steps)"
                                             if is_number(steps) else ""))
    for m in present:
        if m.n_unparsed is not None and m.n and m.n_unparsed > m.n / 2:
            notes.append(f"{m.split}: {m.n_unparsed}/{m.n} unparsed")
    return notes


def _status_detail(s: Status, what: str) -> str:
    parts = [f"{what} {s.state}"]
    if s.job_id:
        parts.append(f"job {s.job_id}")
    if s.exit_code is not None:
        parts.append(f"exit code {s.exit_code}")
    if s.reason:
        parts.append(f"reason: {s.reason}")
    if s.state == "running":
        parts.append(f"last update {s.updated}; lost if the job is no longer in squeue")
    return ", ".join(parts)


def _check_consistent(c: _Cell, present: list[Metrics], problems: list, notes: list):
    for name in ("headline", "task", "seed", "cell"):
        values = {json.dumps(getattr(m, name), sort_keys=True, default=str): m for m in present}
        if len(values) > 1:
            says = ", ".join(f"{m.split} says {getattr(m, name)!r}" for m in values.values())
            problems.append(Problem("inconsistent", f"{name} differs: {says}",
                                    present[0].path, **c.where))
            notes.append(f"{name} differs")


def _flatten(value, prefix: str, out: dict):
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}", out)
    else:
        out[prefix] = value


def _add_extras(row: dict, m: Metrics):
    """Non-headline metrics as `<split>/<metric>` columns (nested objects flattened with dots)."""
    split = m.split
    if m.n_unparsed is not None:
        row[f"n_unparsed_{split}"] = m.n_unparsed
    for name, value in m.metrics.items():
        if name != m.headline:
            _flatten(value, f"{split}/{name}", row)
    for name, (lo, hi) in m.ci95.items():
        if name != m.headline:
            row[f"{split}/{name}_ci95_lo"] = lo
            row[f"{split}/{name}_ci95_hi"] = hi
    if m.computed is not None:
        _flatten(m.computed, f"{split}/computed", row)


def sweep_axes(rows: list[dict]) -> dict:
    """Swept keys of each sweep (sweeps by name, standalone last): keys in the order first
    seen, grouped by the stage their prefix names (`sft.x` before `grpo.y`)."""
    seen: dict = {}
    for row in sorted(rows, key=lambda r: stage_rank(r["stage"])):
        keys = seen.setdefault(row["sweep"], {})
        for k in row["cell"]:
            keys.setdefault(k, None)
    def stage_of(key):
        return stage_rank(key.split(".", 1)[0]) if "." in key else (len(STAGE_ORDER) + 1, "")
    return {sweep: sorted(seen[sweep], key=stage_of) for sweep in sorted(seen, key=sweep_order)}


def sweep_order(sweep) -> tuple:
    return (sweep is None, sweep or "")  # standalone runs last


def sort_rows(rows: list[dict], axes: dict) -> list[dict]:
    def key(row):
        return (sweep_order(row["sweep"]), stage_rank(row["stage"]),
                tuple(value_key(row["cell"].get(a)) for a in axes.get(row["sweep"], ())),
                value_key(row["seed"]), row["checkpoint"] or "", row["run_id"])
    return sorted(rows, key=key)


def _float(x) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def seed_aggregate(rows: list[dict]) -> list[dict]:
    """Mean and sample sd (ddof=1; None for one seed) over rows that differ only in seed.

    Rows without an ID or OOD value (failed, never ran) do not count as seeds. The output keeps
    the order of `rows`, so aggregate the sorted rows.
    """
    members: dict[str, list[dict]] = {}
    for row in rows:
        if row["id"] is not None or row["ood"] is not None:
            members.setdefault(group_key(row), []).append(row)
    if not members:
        return []
    keys = [k for k, group in members.items() for _ in group]
    frame = pd.DataFrame(
        {m: np.array([np.nan if r[m] is None else r[m] for g in members.values() for r in g],
                     dtype=float) for m in AGG_METRICS})
    frame["group"] = keys
    stats = frame.groupby("group", sort=False)[list(AGG_METRICS)].agg(["mean", "std", "count"])
    stats = stats.reindex(list(members))
    # Column arrays once: a .at lookup per value is slow for thousands of groups.
    columns = {col: stats[col].to_numpy() for col in stats.columns}

    out = []
    for i, group in enumerate(members.values()):
        first = group[0]
        agg = dict(sweep=first["sweep"], stage=first["stage"], checkpoint=first["checkpoint"],
                   cell=first["cell"])
        for k, v in first["cell"].items():
            agg[cell_column(k)] = v
        agg["headline"] = first["headline"]
        agg["n_seeds"] = len(group)
        agg["seeds"] = [r["seed"] for r in group]
        agg["run_ids"] = [r["run_id"] for r in group]
        for m in AGG_METRICS:
            agg[f"{m}_mean"] = _float(columns[(m, "mean")][i])
            agg[f"{m}_sd"] = _float(columns[(m, "std")][i])
            agg[f"{m}_n"] = int(columns[(m, "count")][i])
        out.append(agg)
    return out


def members_by_group(rows: list[dict]) -> dict:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(group_key(row), []).append(row)
    return out

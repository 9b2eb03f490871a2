"""Write a Harvest: results_id_ood.{md,json,csv}, the seed table as csv, and the plots.

json and csv carry every number exactly as metrics.json had it (csv through str(), which is
the shortest repr that reads back to the same float); only the md rounds, to 3 decimals.
"""
import datetime
import json
import math
import os

import pandas as pd

from biopost.files import ensure_dir, write_json_atomic, write_text_atomic
from biopost.harvest.collect import Harvest
from biopost.harvest.plots import write_plots
from biopost.harvest.problems import KINDS
from biopost.harvest.table import (AGG_METRICS, HEADLINE_COLUMNS, KEY_COLUMNS, STATE_COLUMNS,
                                   cell_column, sweep_order)

JSON_SCHEMA = "biopost.harvest/v1"
STEM = "results_id_ood"


def write(h: Harvest, out: str) -> dict:
    """Write everything under out; return {what: path}. Each file is replaced atomically
    (biopost.files): a reader, or a harvest killed half-way, leaves every output either the
    earlier complete file or the new one. A full disk or an unwritable --out raises
    OutputError naming the file."""
    ensure_dir(out)
    plots = write_plots(h.aggregates, h.rows, h.axes, out)
    paths = dict(md=os.path.join(out, f"{STEM}.md"), json=os.path.join(out, f"{STEM}.json"),
                 csv=os.path.join(out, f"{STEM}.csv"),
                 seeds_csv=os.path.join(out, f"{STEM}_seeds.csv"))
    _csv(h.rows, row_columns(h), paths["csv"])
    _csv(h.aggregates, aggregate_columns(h), paths["seeds_csv"])
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(paths["json"], _finite(_json_doc(h, plots, created)), indent=1)
    # ±, —: not ASCII. backslashreplace: a lone surrogate (from a non-UTF-8 file name under
    # --root, or a malformed file's text) is written visibly instead of failing the harvest.
    write_text_atomic(paths["md"], markdown(h, plots, created), errors="backslashreplace")
    return paths


def _cell_columns(h: Harvest) -> list[str]:
    cols = {}
    for sweep in sorted(h.axes, key=sweep_order):
        for key in h.axes[sweep]:
            cols.setdefault(cell_column(key), None)
    return list(cols)


def row_columns(h: Harvest) -> list[str]:
    fixed = [*KEY_COLUMNS, *_cell_columns(h), *HEADLINE_COLUMNS, *STATE_COLUMNS]
    seen = set(fixed) | {"cell"}
    extra = sorted({k for row in h.rows for k in row if k not in seen})
    return fixed + [k for k in extra if not k.startswith("path_")] + \
        [k for k in extra if k.startswith("path_")]


def aggregate_columns(h: Harvest) -> list[str]:
    stats = [f"{m}_{s}" for m in AGG_METRICS for s in ("mean", "sd", "n")]
    return ["sweep", "stage", "checkpoint", *_cell_columns(h), "headline", "n_seeds", *stats,
            "seeds", "run_ids"]


def _csv(records: list[dict], columns: list[str], path: str):
    # object dtype: pandas would otherwise turn an int column with gaps into floats (146.0).
    def cell(v):
        return json.dumps(v) if isinstance(v, (list, dict)) else v
    frame = pd.DataFrame([[cell(r.get(c)) for c in columns] for r in records],
                         columns=columns, dtype=object)
    write_text_atomic(path, frame.to_csv(index=False), errors="backslashreplace")


def _finite(x):
    """NaN/inf are not JSON: write them as null (a metric may legitimately be undefined)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def _json_doc(h: Harvest, plots: list[dict], created: str) -> dict:
    return dict(
        schema=JSON_SCHEMA, root=h.root, created=created, specs=h.specs,
        files=dict(metrics=h.n_metrics_files, status=h.n_status_files),
        sweeps=[dict(sweep=s, axes=h.axes[s], rows=sum(r["sweep"] == s for r in h.rows))
                for s in sorted(h.axes, key=sweep_order)],
        rows=h.rows, seed_aggregates=h.aggregates,
        problems=[p.as_dict() for p in h.problems], plots=plots)


# --- markdown ---------------------------------------------------------------------------------

def _num(x, fmt="{:.3f}") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _text(v) -> str:
    if v is None:
        return ""
    s = v if isinstance(v, str) else str(v) if isinstance(v, (int, float)) else json.dumps(v)
    return s.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return lines + [""]


def _with_ci(row: dict, split: str) -> str:
    value, lo, hi = row[split], row[f"{split}_ci95_lo"], row[f"{split}_ci95_hi"]
    if value is None or lo is None or hi is None:
        return _num(value)
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def _mean_sd(agg: dict, m: str, fmt="{:.3f}") -> str:
    mean, sd = agg[f"{m}_mean"], agg[f"{m}_sd"]
    return _num(mean, fmt) + ("" if sd is None else f" ± {sd:.3f}")


def _headline_label(records: list[dict]) -> str:
    names = {r["headline"] for r in records if r["headline"]}
    return f" {names.pop()}" if len(names) == 1 else ""


def markdown(h: Harvest, plots: list[dict], created: str) -> str:
    n_rows = len(h.rows)
    lines = ["# ID / OOD results", "",
             f"Harvested `{h.root}` on {created}: {h.n_metrics_files} metrics.json and "
             f"{h.n_status_files} status.json files, {n_rows} rows in {len(h.axes)} section(s)."
             + (f" Specs: {', '.join(f'`{s}`' for s in h.specs)}." if h.specs else ""), ""]
    if h.problems:
        counts = {}
        for p in h.problems:
            counts[p.kind] = counts.get(p.kind, 0) + 1
        lines += [f"**{len(h.problems)} problem(s)**: "
                  + ", ".join(f"{n} {k}" for k, n in counts.items())
                  + " — listed under [Problems](#problems).", ""]
    else:
        lines += ["No problems found.", ""]
    lines += ["ID and OOD are the headline metric on the `id` and `ood` test splits, with the "
              "run's bootstrap ci95 in brackets; gap = ID − OOD. The probe splits (`id_val`, "
              "`ood_val`), all other metrics and the source paths are in "
              f"`{STEM}.json` / `{STEM}.csv` (seed aggregates also in `{STEM}_seeds.csv`).", ""]

    plots_by_sweep = {}
    for p in plots:
        plots_by_sweep.setdefault(p["sweep"], []).append(p)
    for sweep in sorted(h.axes, key=sweep_order):
        rows = [r for r in h.rows if r["sweep"] == sweep]
        aggs = [a for a in h.aggregates if a["sweep"] == sweep]
        lines += _sweep_section(sweep, h.axes[sweep], rows, aggs, plots_by_sweep.get(sweep, []))

    if h.problems:
        lines += ["## Problems", ""]
        lines += _table(["kind", "sweep", "stage", "run id", "checkpoint", "detail", "path"],
                        [[p.kind, _text(p.sweep), _text(p.stage),
                          f"`{p.run_id}`" if p.run_id else "", _text(p.checkpoint),
                          _text(p.detail), f"`{p.path}`" if p.path else ""]
                         for p in h.problems])
        lines += ["Kinds: " + "; ".join(f"`{k}` {v}" for k, v in KINDS.items()), ""]
    return "\n".join(lines)


def _sweep_section(sweep, axes: list, rows: list, aggs: list, plots: list) -> list[str]:
    lines = [f"## sweep `{sweep}`" if sweep is not None else "## standalone", ""]
    label = _headline_label(rows)
    header = ["stage", *axes, "seed", "checkpoint", f"ID{label}", f"OOD{label}", "gap",
              "n_id", "n_ood", "run id", "notes"]
    body = [[r["stage"], *[_text(r["cell"].get(a)) for a in axes], _text(r["seed"]),
             _text(r["checkpoint"]), _with_ci(r, "id"), _with_ci(r, "ood"),
             _num(r["gap"], "{:+.3f}"), _num(r["n_id"], "{}"), _num(r["n_ood"], "{}"),
             f"`{r['run_id']}`", _text(r["notes"])] for r in rows]
    if not label:  # tasks with different headline metrics share this section
        header.insert(len(axes) + 3, "headline")
        for cells, r in zip(body, rows):
            cells.insert(len(axes) + 3, _text(r["headline"]))
    lines += _table(header, body)

    if any(a["n_seeds"] >= 2 for a in aggs):
        lines += ["Mean ± sd over seeds (sample sd; blank for one seed):", ""]
        lines += _table(["stage", *axes, "checkpoint", f"ID{label}", f"OOD{label}", "gap",
                         "seeds"],
                        [[a["stage"], *[_text(a["cell"].get(k)) for k in axes],
                          _text(a["checkpoint"]), _mean_sd(a, "id"), _mean_sd(a, "ood"),
                          _mean_sd(a, "gap", "{:+.3f}"), f"{a['n_seeds']} ({_text(a['seeds'])})"]
                         for a in aggs])
    for p in plots:
        lines += [f"[![{sweep}: {p['axis']}]({p['png']})]({p['png']})  ",
                  f"{p['axis']}: [plotted series]({p['json']})", ""]
    return lines

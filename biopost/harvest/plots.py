"""One figure per swept key of a sweep: headline ID and OOD against the swept value.

The plotted numbers are written beside each PNG as JSON, so a figure can be checked (and
re-drawn elsewhere) without reading pixels. Points are seed aggregates: the mean over seeds,
with the sd as error bar when there are 2+ seeds and the run's bootstrap ci95 when there is one.
"""
import hashlib
import json
import math
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor

from biopost.files import atomic_path, write_json_atomic
from biopost.harvest.table import as_number, group_key, members_by_group, stage_rank, value_key

ERROR_BARS = ("sd over seeds where a point has 2+ seeds, else that run's bootstrap ci95; "
              "<split>_err_lo / <split>_err_hi are distances below / above the mean "
              "(null: not known)")
PLOTS_PER_WORKER = 8  # below this many figures per worker, forking costs more than it saves
SPLIT_STYLE = {"id": ("-", "o", "ID"), "ood": ("--", "s", "OOD")}  # line, marker, legend
DODGE_PT, DODGE_WIDTH_PT = 3.0, 30.0  # sideways step between series, and at most in all


# A file name may have 255 bytes: a longer stem keeps its start and a hash of the whole name.
MAX_STEM = 120


def file_stem(sweep, axis: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{sweep or 'standalone'}__{axis}")
    if stem.startswith("."):  # not a hidden file (nor `..`)
        stem = "_" + stem[1:]
    if len(stem) > MAX_STEM:
        digest = hashlib.sha256(f"{sweep}\0{axis}".encode("utf-8", "surrogatepass")).hexdigest()
        stem = f"{stem[:MAX_STEM - 17]}_{digest[:16]}"
    return stem


def axis_scale(axis: str, xs: list) -> str:
    numbers = [as_number(x) for x in xs]
    if any(x is None for x in numbers):
        return "categorical"
    if "epochs" in axis:
        # 0 epochs (a skipped stage in a fixed-budget sweep) has no log: symmetric log base 2.
        return "log2" if all(x > 0 for x in numbers) else "symlog2"
    return "linear"


def _error(agg: dict, split: str, members: list[dict]) -> tuple:
    """(err_lo, err_hi, kind) of one split of one seed aggregate."""
    count, mean = agg[f"{split}_n"], agg[f"{split}_mean"]
    if count >= 2:
        sd = agg[f"{split}_sd"]
        return sd, sd, "sd"
    if count == 1:
        row = next(r for r in members if r[split] is not None)
        lo, hi = row[f"{split}_ci95_lo"], row[f"{split}_ci95_hi"]
        if lo is not None and hi is not None:
            return mean - lo, hi - mean, "ci95"
    return None, None, None


def axis_series(sweep, axis: str, aggregates: list[dict], members: dict) -> dict:
    """The data of one figure: one series per (stage, checkpoint, values of the other keys).
    members: the rows of each seed aggregate (table.members_by_group), for single-seed ci95s."""
    lines: dict[str, list[dict]] = {}
    for agg in aggregates:
        if agg["sweep"] != sweep or axis not in agg["cell"]:
            continue
        fixed = {k: v for k, v in agg["cell"].items() if k != axis}
        line = json.dumps([agg["stage"], agg["checkpoint"], fixed], sort_keys=True, default=str)
        lines.setdefault(line, []).append(agg)

    series = []
    for points in lines.values():
        first = points[0]
        points.sort(key=lambda a: value_key(a["cell"][axis]))
        fixed = {k: v for k, v in first["cell"].items() if k != axis}
        label = ", ".join(f"{k}={v}" for k, v in fixed.items())
        if first["checkpoint"] not in (None, "last"):
            label = f"{label} @{first['checkpoint']}".strip()
        s = dict(stage=first["stage"], checkpoint=first["checkpoint"], fixed=fixed, label=label,
                 x=[a["cell"][axis] for a in points], n_seeds=[a["n_seeds"] for a in points])
        for split in ("id", "ood"):
            errors = [_error(a, split, members[group_key(a)]) for a in points]
            s[f"{split}_mean"] = [a[f"{split}_mean"] for a in points]
            s[f"{split}_err_lo"] = [e[0] for e in errors]
            s[f"{split}_err_hi"] = [e[1] for e in errors]
            s[f"{split}_err_kind"] = [e[2] for e in errors]
        series.append(s)
    series.sort(key=lambda s: (stage_rank(s["stage"]), s["checkpoint"] or "",
                               tuple(value_key(v) for v in s["fixed"].values())))
    xs = [x for s in series for x in s["x"]]
    headlines = sorted({a["headline"] for a in aggregates
                        if a["sweep"] == sweep and axis in a["cell"]})
    return dict(sweep=sweep, axis=axis, scale=axis_scale(axis, xs),
                headline=headlines[0] if len(headlines) == 1 else headlines,
                error_bars=ERROR_BARS, series=series)


def draw(spec: dict, path: str):
    # Figure + Agg canvas directly: no pyplot state, no backend switch, safe headless.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.transforms import ScaledTranslation

    axis, scale, series = spec["axis"], spec["scale"], spec["series"]
    stages = sorted({s["stage"] for s in series}, key=stage_rank)

    def legend_label(s):
        return _plain(s["label"] if len(stages) == 1 else f"{s['stage']}: {s['label']}")
    legend = {legend_label(s): None for s in series if s["label"]}  # colours set while drawing
    # Fixed margins in inches instead of a layout engine: constrained layout draws every
    # figure twice, and a sweep tree can have dozens of figures.
    left, bottom, top, panel, gap = 0.75, 0.6, 0.6, 3.8, 0.15
    right = 0.9 + 0.065 * max([len(label) for label in legend] + [4])
    width = left + len(stages) * panel + (len(stages) - 1) * gap + right
    height = 3.6
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=gap / panel)
    axes = fig.subplots(1, len(stages), sharey=True, squeeze=False)[0]

    all_x = sorted({json.dumps(x, sort_keys=True): x for s in series for x in s["x"]}.values(),
                   key=value_key)
    if scale == "categorical":
        position = {json.dumps(x, sort_keys=True): i for i, x in enumerate(all_x)}

        def to_plot(x):
            return position[json.dumps(x, sort_keys=True)]
    else:
        to_plot = as_number

    n_colors = max(sum(1 for s in series if s["stage"] == st) for st in stages)
    palette = _palette(n_colors)
    for ax, stage in zip(axes, stages):
        panel = [s for s in series if s["stage"] == stage]
        slots = len(SPLIT_STYLE) * len(panel)
        step = min(DODGE_PT, DODGE_WIDTH_PT / slots)
        for i, (color, s) in enumerate(zip(palette, panel)):
            xs = [to_plot(x) for x in s["x"]]
            for j, (split, (style, marker, _)) in enumerate(SPLIT_STYLE.items()):
                # Dodge each series and split a few points sideways (in points: the same on
                # any x scale), so that error bars at one x do not hide each other.
                dx = (len(SPLIT_STYLE) * i + j - (slots - 1) / 2) * step / 72
                dodged = ax.transData + ScaledTranslation(dx, 0, fig.dpi_scale_trans)
                ys = [math.nan if v is None else v for v in s[f"{split}_mean"]]
                (line,) = ax.plot(xs, ys, color=color, linestyle=style, marker=marker,
                                  markersize=4, linewidth=1.5)
                line.set_transform(dodged)  # after plot(): limits come from the true x
                segments = [[(x, y - lo), (x, y + hi)] for x, y, lo, hi in
                            zip(xs, ys, s[f"{split}_err_lo"], s[f"{split}_err_hi"])
                            if lo is not None and hi is not None and not math.isnan(y)]
                if segments:
                    ax.update_datalim([p for seg in segments for p in seg])
                    ax.add_collection(LineCollection(segments, colors=[color], linewidths=1,
                                                     transform=dodged), autolim=False)
            if s["label"]:
                legend[legend_label(s)] = color
        ax.autoscale_view()
        _set_x(ax, scale, [to_plot(x) for x in all_x], [_plain(_fmt(x), 24) for x in all_x])
        ax.set_title(_plain(stage), fontsize=10)
        ax.set_xlabel(_plain(axis))
        ax.grid(alpha=0.3)
    headline = spec["headline"]
    axes[0].set_ylabel(_plain(headline if isinstance(headline, str) else " / ".join(headline)))

    handles = [Line2D([], [], color="0.2", linestyle=st, marker=mk, label=lbl)
               for st, mk, lbl in SPLIT_STYLE.values()]
    handles += [Line2D([], [], color=c, linewidth=3, label=lbl) for lbl, c in legend.items()]
    fig.legend(handles=handles, loc="upper left", fontsize=8, frameon=False, handlelength=3,
               bbox_to_anchor=(1 - (right - 0.1) / width, 1 - top / height))
    fig.suptitle(_plain(f"{spec['sweep'] or 'standalone'}: {axis}", 120), fontsize=11)
    with atomic_path(path) as tmp:  # a killed or failed harvest leaves the earlier PNG
        fig.savefig(tmp, dpi=100, format="png")


def finite(x):
    """NaN / inf are not JSON (a swept value read from a malformed file may be one): null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


def _palette(n: int) -> list:
    from matplotlib import colormaps
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](i / (n - 1)) for i in range(n)]


def _plain(text: str, limit: int = 60) -> str:
    """Text as matplotlib draws it literally: `$` escaped (it starts mathtext, and a value like
    `a$b` would not parse), a lone surrogate and control characters escaped (FreeType takes
    valid UTF-8 only; a control character has no glyph), cut to `limit` characters (the
    legend sets the figure width)."""
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)  # \n, \x9b: no glyph
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return text.replace("$", r"\$")


def _fmt(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _set_x(ax, scale: str, positions: list, labels: list):
    from matplotlib.ticker import NullLocator
    if scale == "log2":
        ax.set_xscale("log", base=2)
    elif scale == "symlog2":
        ax.set_xscale("symlog", base=2, linthresh=1)
    if scale == "categorical":
        ax.set_xlim(-0.5, len(positions) - 0.5)
    # Ticks at the swept values themselves, labelled as written in the spec.
    if len(positions) <= 16:
        ax.set_xticks(positions, labels=labels)
        ax.xaxis.set_minor_locator(NullLocator())


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this job may use, not the whole node
    except AttributeError:
        return os.cpu_count() or 1


def draw_all(jobs: list[tuple]):
    """Draw (spec, path) jobs; many figures are spread over forked worker processes (about
    0.1 s of CPU each, and a tree can have dozens). Forking needs no re-import of matplotlib."""
    workers = min(_cpus(), len(jobs) // PLOTS_PER_WORKER, 8)
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        for spec, path in jobs:
            draw(spec, path)
        return
    # The first figure in this process warms what the forked workers then inherit: the
    # matplotlib imports and the font cache (otherwise each worker loads them again).
    draw(*jobs[0])
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        list(pool.map(draw, *zip(*jobs[1:]), chunksize=PLOTS_PER_WORKER // 2))


def write_plots(aggregates: list[dict], rows: list[dict], axes: dict, out: str) -> list[dict]:
    """Draw every sweep axis that has at least one point; return what was written."""
    written, used, jobs = [], set(), []
    members = members_by_group(rows)
    for sweep, keys in axes.items():
        for axis in keys:
            spec = axis_series(sweep, axis, aggregates, members)
            if not spec["series"]:
                continue
            stem = file_stem(sweep, axis)
            while stem in used:  # two names that sanitize alike
                stem += "_"
            used.add(stem)
            spec["png"] = f"{stem}.png"
            jobs.append((spec, os.path.join(out, spec["png"])))
            write_json_atomic(os.path.join(out, f"{stem}.json"), finite(spec), indent=1)
            written.append(dict(sweep=sweep, axis=axis, png=f"{stem}.png",
                                json=f"{stem}.json"))
    draw_all(jobs)
    return written

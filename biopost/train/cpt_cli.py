"""`biopost cpt select-best`: per backbone, the CPT run with the lowest held-out loss.

    biopost cpt select-best --runs RUN_OR_PARENT_DIR... [--out best.json]
    python -m biopost.train.cpt_cli select-best --runs runs/my_sweep/cpt

A path given to --runs is a run directory (it has config.yaml) or a directory of run directories
(e.g. a sweep's `<sweep>/cpt/`). The backbone of a run is `text_model_name` in its config.yaml; its
score is `eval_loss` in final_eval_metrics.json (written by biopost/train/cpt.py when the run
finished). A run that cannot be scored -- no config, no metrics file, corrupt JSON, no finite
eval_loss, no final/ model -- is listed under "problems" with the reason, never fatal.

JSON written by --out:
  {"best": {backbone: {"run_dir", "final", "eval_loss", "perplexity", "step", "run_id"}},
   "problems": [{"run_dir", "reason"}]}
Exit status: 0 when a best run was found for at least one backbone, 1 otherwise, 2 on usage errors.

Runs on login nodes (the sweep tool calls it): no torch, no transformers.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import yaml

from biopost.errors import UserError
from biopost.files import write_json_atomic
from biopost.train.cpt import METRICS_FILE  # cpt.py imports torch only inside train_cpt


def find_runs(paths) -> tuple[list[Path], list[dict]]:
    """Run directories under the given paths (each a run dir or a parent of run dirs), and problems."""
    runs, problems = [], []
    for raw in paths:
        p = Path(raw)
        if (p / "config.yaml").is_file():
            runs.append(p)
        elif p.is_dir():
            children = sorted(c for c in p.iterdir() if c.is_dir() and (c / "config.yaml").is_file())
            if children:
                runs.extend(children)
            else:
                problems.append({"run_dir": str(p), "reason": "no config.yaml here or in its subdirectories"})
        else:
            problems.append({"run_dir": str(p), "reason": "no such directory"})
    seen, unique = set(), []
    for r in runs:
        key = r.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return unique, problems


def score_run(run: Path) -> tuple[dict | None, str | None]:
    """(record, None) for a usable finished CPT run, else (None, reason)."""
    try:
        config = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, yaml.YAMLError) as e:
        return None, f"config.yaml unreadable: {e}"
    if not isinstance(config, dict) or not isinstance(config.get("text_model_name"), str):
        return None, "config.yaml has no text_model_name"
    if config.get("stage", "cpt") != "cpt":
        return None, f"not a CPT run (stage: {config.get('stage')!r})"
    path = run / METRICS_FILE
    if not path.is_file():
        return None, f"{METRICS_FILE} missing (run unfinished or failed)"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{METRICS_FILE} corrupt: {e}"
    loss = metrics.get("eval_loss") if isinstance(metrics, dict) else None
    if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not math.isfinite(loss):
        return None, f"{METRICS_FILE} has no finite eval_loss (got {loss!r})"
    final = run / "final"
    if not (final / "config.json").is_file():
        return None, "final/ model directory missing"
    ppl = metrics.get("perplexity")
    return {"backbone": config["text_model_name"], "run_dir": str(run.resolve()), "final": str(final.resolve()),
            "eval_loss": float(loss), "perplexity": ppl if isinstance(ppl, (int, float)) else math.exp(min(loss, 700)),
            "step": metrics.get("step"), "run_id": config.get("run_id") or run.name}, None


def select_best(paths) -> dict:
    """{"best": {backbone: record}, "problems": [...]}; ties go to the first run dir in sorted order."""
    runs, problems = find_runs(paths)
    best: dict[str, dict] = {}
    for run in sorted(runs, key=lambda r: str(r.resolve())):
        record, reason = score_run(run)
        if record is None:
            problems.append({"run_dir": str(run), "reason": reason})
            continue
        backbone = record.pop("backbone")
        if backbone not in best or record["eval_loss"] < best[backbone]["eval_loss"]:
            best[backbone] = record
    return {"best": dict(sorted(best.items())), "problems": problems}


def format_table(result: dict) -> str:
    rows = [("backbone", "eval_loss", "perplexity", "run_dir")]
    rows += [(b, f"{r['eval_loss']:.4f}", f"{r['perplexity']:.2f}", r["run_dir"]) for b, r in result["best"].items()]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    if not result["best"]:
        lines.append("(no usable CPT run)")
    if result["problems"]:
        lines += ["", f"problems ({len(result['problems'])}):"]
        lines += [f"  {p['run_dir']}: {p['reason']}" for p in result["problems"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="biopost cpt", description="continued pre-training helpers")
    sub = parser.add_subparsers(dest="command", required=True)
    sb = sub.add_parser("select-best", help="per backbone, the CPT run with the lowest held-out loss",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sb.add_argument("--runs", nargs="+", required=True, metavar="DIR",
                    help="CPT run directories, or directories containing them")
    sb.add_argument("--out", default=None, metavar="FILE", help="also write the selection as JSON here")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    result = select_best(args.runs)
    print(format_table(result))
    if args.out:
        try:  # atomic, 0o666 & ~umask; a full disk is one error line
            write_json_atomic(args.out, result, indent=1, allow_nan=True)
        except UserError as e:
            print(f"biopost cpt select-best: error: {e}", file=sys.stderr)
            return 1
    return 0 if result["best"] else 1


if __name__ == "__main__":
    sys.exit(main())

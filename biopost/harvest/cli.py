"""`biopost harvest` and `python harvest_results.py`: one command, same flags."""
import argparse
import os
import sys

DESCRIPTION = """\
Merge every cell's evaluation into one matched ID/OOD table.

Reads every metrics.json (schema biopost.metrics/v1) and status.json (biopost.status/v1)
under --root, recursively; never reads logs. Writes to --out:
  results_id_ood.md         one section per sweep: rows sorted by the swept values, seed
                            mean ± sd, plots, and the list of problems
  results_id_ood.json/.csv  every row with all metrics, numbers exactly as in metrics.json
  results_id_ood_seeds.csv  rows that differ only in seed: mean, sample sd, count
  <sweep>__<axis>.png/.json headline ID and OOD against each swept key, and the plotted data
"""

EPILOG = """\
Problems are listed, not dropped: corrupt or foreign files (with their path), cells that
failed, are running or requeued per status.json (the harvester does not ask squeue:
`biopost sweep status` tells a lost cell from a running one), cells missing a split, and,
with --spec, cells the spec expects that never ran.
Exit status: 0 when the harvest was written (even with problems), 1 when an output cannot
be written (full disk, read-only --out: the earlier outputs are left as they were), 2 on a
usage error such as a --root that does not exist.

example:
  python harvest_results.py --root $BIOPOST_WORK_ROOT --out figures \\
      --spec sweeps/dna_sft_epochs.yaml
"""


def build_parser(prog: str = "biopost harvest") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, metavar="DIR",
                   help="results tree to read, e.g. $BIOPOST_WORK_ROOT")
    p.add_argument("--out", default="figures", metavar="DIR",
                   help="output folder, created if missing (default: figures)")
    p.add_argument("--spec", action="append", default=[], metavar="SPEC",
                   help="sweep spec (sweeps/*.yaml) whose expected cells are matched against "
                        "the results, so that cells that never ran are listed; repeatable")
    return p


def _printable(line: str) -> str:
    """A line any terminal encoding can print: a lone surrogate (a non-UTF-8 file name) or a
    character the locale lacks is escaped instead of raising UnicodeEncodeError."""
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    return line.encode(encoding, "backslashreplace").decode(encoding, "replace")


def main(argv=None, prog: str = "biopost harvest") -> int:
    args = build_parser(prog).parse_args(argv)
    if not os.path.isdir(args.root):
        print(f"{prog}: --root {args.root!r} is not a directory", file=sys.stderr)
        return 2
    missing = [s for s in args.spec if not os.path.isfile(s)]
    if missing:
        print(f"{prog}: --spec file(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2

    from biopost.errors import UserError
    from biopost.harvest.collect import collect
    from biopost.harvest.report import write

    try:
        harvest = collect(args.root, args.spec)
        paths = write(harvest, args.out)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"harvested {harvest.n_metrics_files} metrics.json and {harvest.n_status_files} "
          f"status.json under {args.root}: {len(harvest.rows)} rows, "
          f"{len(harvest.problems)} problem(s)")
    for p in harvest.problems:
        where = p.path or "/".join(str(x) for x in (p.sweep, p.stage, p.run_id) if x)
        print(_printable(f"  {p.kind:<13} {where}: {p.detail}"))
    print(f"wrote {paths['md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

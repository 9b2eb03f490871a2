"""Harvest a results tree into memory: scan the files, merge them into rows, aggregate seeds.
Writing the outputs is report.py's job, so that tests and notebooks can use the data directly."""
from dataclasses import dataclass, field

from biopost.harvest.problems import Problem, sort_problems
from biopost.harvest.read import scan
from biopost.harvest.table import build_rows, seed_aggregate, sort_rows, sweep_axes


@dataclass
class Harvest:
    root: str
    rows: list[dict]  # sorted: sweep, stage, swept values, seed
    aggregates: list[dict]  # seed means / sds, in row order
    problems: list[Problem]
    axes: dict  # sweep (None: standalone) -> swept keys
    n_metrics_files: int = 0
    n_status_files: int = 0
    specs: list[str] = field(default_factory=list)


def expected_from_specs(specs: list[str], root: str, problems: list) -> list[dict]:
    """The evaluations the specs expect under root; a spec that cannot be expanded is a
    problem, not a crash, so the rest of the harvest still comes out."""
    if not specs:
        return []
    try:  # the sweep module is only needed (and only imported) with --spec
        from biopost.sweeps.spec import expected_evaluations
    except ImportError as e:
        problems += [Problem("spec_error", f"cannot expand specs: {e}", spec) for spec in specs]
        return []
    from biopost.errors import UserError
    expected = []
    for spec in specs:
        try:
            cells = list(expected_evaluations(spec, root))
        except (UserError, OSError) as e:  # a bad spec must not hide the results that exist
            problems.append(Problem("spec_error", f"{type(e).__name__}: {e}", spec))
            continue
        for e in cells:
            if not all(isinstance(e.get(k), str) for k in ("stage", "run_id")):
                problems.append(Problem("spec_error", f"expected cell without stage/run_id: "
                                        f"{e!r}", spec))
                continue
            expected.append(e)
    return expected


def collect(root: str, specs: list[str] = ()) -> Harvest:
    found = scan(root)
    problems = list(found.problems)
    expected = expected_from_specs(list(specs), root, problems)
    rows, row_problems = build_rows(found, expected)
    axes = sweep_axes(rows)
    rows = sort_rows(rows, axes)
    return Harvest(root=root, rows=rows, aggregates=seed_aggregate(rows),
                   problems=sort_problems(problems + row_problems), axes=axes,
                   n_metrics_files=found.n_metrics_files, n_status_files=found.n_status_files,
                   specs=list(specs))

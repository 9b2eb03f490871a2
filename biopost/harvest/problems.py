"""Problems found while harvesting. Nothing is dropped silently: every unreadable file and every
cell without a full result becomes one Problem, listed in the md, json and on the console."""
from dataclasses import asdict, dataclass

# Listing order: broken files first (they hide results), then cells that did not finish.
KINDS = {
    "corrupt": "file is not readable JSON (truncated or empty); skipped",
    "invalid": "required field missing or malformed; skipped (or field ignored)",
    "foreign": "JSON of another schema; skipped",
    "duplicate": "a second file for the same cell and split; the first (path order) is used",
    "inconsistent": "the splits of one cell disagree on a field",
    "spec_error": "a --spec could not be expanded",
    "failed": "status.json says failed",
    "requeued": "status.json says requeued (waiting to run again)",
    "running": "status.json says running (lost if its job is no longer in squeue)",
    "never_ran": "expected by a --spec, no metrics.json and no status.json",
    "missing_split": "a headline split has no metrics.json",
}


@dataclass(frozen=True)
class Problem:
    kind: str
    detail: str = ""
    path: str | None = None
    sweep: str | None = None
    stage: str | None = None
    run_id: str | None = None
    checkpoint: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown problem kind {self.kind!r}")

    def as_dict(self) -> dict:
        return asdict(self)


def sort_problems(problems: list[Problem]) -> list[Problem]:
    order = {kind: i for i, kind in enumerate(KINDS)}

    def text(x) -> str:  # the fields are strings or None; str() keeps a stray value sortable
        return x if isinstance(x, str) else "" if x is None else str(x)
    return sorted(problems, key=lambda p: (order[p.kind], text(p.sweep), text(p.stage),
                                           text(p.run_id), text(p.checkpoint), text(p.path)))

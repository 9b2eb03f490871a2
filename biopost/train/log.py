"""train_log.jsonl: one JSON object per logged step or evaluation, flushed as written.

On resume, entries past the checkpoint's step are dropped first (they belong to work that
the interruption threw away), so the log of a resumed run reads like that of one that was not.
"""
import json
import math
from pathlib import Path


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlLog:
    def __init__(self, path, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if entry.get("step", 0) <= resume_step:
                    kept.append(line)
            self.path.write_text("".join(k + "\n" for k in kept))
        self._fh = open(self.path, "a")

    def write(self, **entry):
        self._fh.write(json.dumps({k: _clean(v) for k, v in entry.items()}) + "\n")
        self._fh.flush()

    def close(self):
        self._fh.close()


def read_log(path) -> list:
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out


class NullLog:
    """What the ranks other than 0 of a multi-process run log to: nothing (rank 0 writes the file)."""

    def write(self, **entry):
        pass

    def close(self):
        pass

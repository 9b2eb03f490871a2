#!/usr/bin/env python3
"""Copy the small files of a sweep's output tree that `harvest_results.py` and a reader need —
status.json, metrics.json, config.yaml, train_summary.json, final_eval_metrics.json — to another
folder, leaving out checkpoints, logs, predictions and models: a results tree small enough to commit.

    python scripts/export_results.py runs/study_small_dna study/small/study_small_dna

Files are copied under their relative paths; an existing destination file is replaced atomically.
"""
import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

KEEP = {"status.json", "metrics.json", "config.yaml", "train_summary.json", "final_eval_metrics.json"}
SKIP_DIRS = {"checkpoints", "logs", "final", ".biopost"}


def export(src: Path, dst: Path) -> int:
    n = 0
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".partial"))
        for name in sorted(files):
            if name not in KEEP:
                continue
            rel = Path(root).relative_to(src) / name
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.")
            os.close(fd)
            try:
                shutil.copyfile(Path(root) / name, tmp)
                os.chmod(tmp, 0o666 & ~_umask())
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            n += 1
    return n


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="a sweep's folder under the work root (e.g. runs/study_small_dna)")
    p.add_argument("dst", type=Path, help="where the copy goes")
    args = p.parse_args(argv)
    if not args.src.is_dir():
        print(f"export_results: {args.src}: not a directory", file=sys.stderr)
        return 2
    n = export(args.src, args.dst)
    print(f"export_results: {n} file(s) from {args.src} -> {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

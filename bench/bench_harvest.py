"""Time `biopost harvest` on a synthetic results tree of N metrics.json files.

    python bench/bench_harvest.py [--n 10000] [--keep DIR]

The tree looks like a real one: sweeps of sft and grpo cells over two swept keys, three seeds,
the four evaluated splits (id, ood, id_val, ood_val) per cell, a status.json per run and per
evaluation. The time covers everything `harvest_results.py` does: scan, rows, seed aggregates,
md/json/csv and the PNGs. The target is under 10 s for N = 10,000 on a 2-core CPU.
"""
import argparse
import itertools
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time

EPOCHS = [1, 2, 4, 8, 16, 32]
RANKS = [8, 16, 32, 64, 128]
SEEDS = [0, 1, 2]
SPLITS = ["id", "ood", "id_val", "ood_val"]


def _write(path: str, doc: dict):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f)


def make_tree(root: str, n: int, seed: int = 0) -> int:
    """Write exactly n metrics.json files (plus status files) under root; return n."""
    rng = random.Random(seed)
    written = 0
    for s in itertools.count():
        sweep = f"bench_sweep_{s:03d}"
        for stage, epochs, rank, seed_ in itertools.product(("sft", "grpo"), EPOCHS, RANKS,
                                                             SEEDS):
            cell = {f"{stage}.num_train_epochs": epochs, f"{stage}.lora_rank": rank}
            run_id = f"e{epochs}-r{rank}-s{seed_}-{rng.getrandbits(32):08x}"
            run_dir = os.path.join(root, sweep, stage, run_id)
            status = dict(schema="biopost.status/v1", sweep=sweep, stage=stage, run_id=run_id,
                          cell=cell, seed=seed_, target=None, state="done", job_id="1_1",
                          exit_code=0)
            _write(os.path.join(run_dir, "status.json"), status)
            _write(os.path.join(run_dir, "eval", "status.json"),
                   dict(status, stage="eval", target=dict(stage=stage, run_id=run_id,
                                                          checkpoint="last")))
            for split in SPLITS:
                acc = rng.random()
                _write(os.path.join(run_dir, "eval", split, "metrics.json"), dict(
                    schema="biopost.metrics/v1", run_id=run_id, sweep=sweep, cell=cell,
                    stage=stage, checkpoint="last", modality="dna", task="kegg", split=split,
                    headline="accuracy", n=146, n_unparsed=rng.randrange(5),
                    metrics=dict(accuracy=acc, macro_f1=acc * 0.8,
                                 per_class={"benign": {"f1": acc}, "pathogenic": {"f1": acc}}),
                    ci95=dict(accuracy=[acc - 0.05, acc + 0.05]), seed=seed_,
                    created="2026-01-01T00:00:00Z",
                    provenance=dict(git_commit="0" * 40, git_dirty=False, device="cpu")))
                written += 1
                if written == n:
                    return n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000, help="number of metrics.json files")
    p.add_argument("--keep", metavar="DIR", help="build the tree here and keep it")
    args = p.parse_args(argv)

    import pandas as pd

    from biopost.harvest import collect, write

    tmp = args.keep or tempfile.mkdtemp(prefix="bench_harvest_")
    root, out = os.path.join(tmp, "runs"), os.path.join(tmp, "figures")
    try:
        t = time.perf_counter()
        make_tree(root, args.n)
        print(f"tree of {args.n} metrics.json written in {time.perf_counter() - t:.1f} s")

        t0 = time.perf_counter()
        harvest = collect(root)
        t1 = time.perf_counter()
        write(harvest, out)
        t2 = time.perf_counter()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    n_plots = sum(len(a) for a in harvest.axes.values())
    print(f"python {platform.python_version()}, pandas {pd.__version__}, "
          f"{os.cpu_count()} CPUs, {platform.machine()}")
    print(f"N={args.n} metrics.json: {len(harvest.rows)} rows, {len(harvest.aggregates)} seed "
          f"aggregates, {len(harvest.problems)} problems, {n_plots} plots")
    print(f"read+merge {t1 - t0:.2f} s, write md/json/csv/png {t2 - t1:.2f} s, "
          f"total {t2 - t0:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

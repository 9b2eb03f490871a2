"""Fuzz the four parsers users feed with 10,000 generated cases each, and count the outcomes.

    TMPDIR=/dev/shm/fuzz python bench/fuzz_parsers.py [--n 10000] [--seed 20261202] \
        [--parsers rows,config,spec,harvest]

(Each case runs in a fresh temp directory; on a tmpfs TMPDIR the harvester's fsyncs and the
directory removals cost nothing, on a virtual disk they are most of the time.)

Cases come from tests/fuzz_cases.py (hypothesis strategies; the suite runs a few hundred of
them derandomized, tests/test_fuzz_parsers.py): valid documents mutated field by field (NaN,
4,000-digit integers, newlines in names, lone surrogates, deep nesting, recursive YAML anchors,
non-string keys) and damaged bytes (truncation, non-UTF-8 bytes, a .gz that is not gzip).
Per parser it prints how many cases parsed (`ok`), how many ended in the project's named error
naming the file (`named`; rows: also the row or line) and how many in anything else
(`unexpected`, with the first messages): the acceptance is 0 unexpected. The harvester draws
its PNGs for every 10th case (drawing is 0.1 s a figure; the other cases write everything else).
Prints a markdown section for bench/RESULTS.md.
"""
import argparse
import warnings
import collections
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

import fuzz_cases as fc  # noqa: E402


def fuzz(name: str, n: int, base_seed: int) -> dict:
    strategy, runner = fc.PARSERS[name]
    counts: collections.Counter = collections.Counter()
    first: dict = {}
    index = [0]

    @seed(base_seed)
    @settings(max_examples=n, database=None, deadline=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=(Phase.generate,))
    @given(strategy())
    def run(case):
        index[0] += 1
        kw = {"plots": index[0] % 10 == 0} if name == "harvest" else {}
        try:
            counts[fc.in_dir(runner, case, **kw)] += 1
        except fc.Unexpected as e:
            counts["unexpected"] += 1
            first.setdefault(str(e)[:120], repr(case)[:400])

    t0 = time.monotonic()
    run()
    return {"parser": name, "cases": sum(counts.values()), "ok": counts["ok"],
            "named": counts["named"], "unexpected": counts["unexpected"],
            "seconds": round(time.monotonic() - t0, 1), "examples": first}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=10_000, help="cases per parser (default 10,000)")
    p.add_argument("--seed", type=int, default=20261202, help="hypothesis seed")
    p.add_argument("--parsers", default=",".join(fc.PARSERS), help="comma-separated subset")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message="Glyph .* missing")  # fuzzed labels, by design
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), "fuzz-mpl"))
    results = []
    for name in args.parsers.split(","):
        r = fuzz(name, args.n, args.seed)
        results.append(r)
        print(f"{name:<8} {r['cases']:>6} cases: {r['ok']:>6} ok, {r['named']:>6} named errors, "
              f"{r['unexpected']} unexpected ({r['seconds']} s)", flush=True)
        for msg, case in list(r["examples"].items())[:10]:
            print(f"    unexpected: {msg}\n      case: {case}")
    print("\n| parser | cases | parsed | named error | other exception | time |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['parser']} | {r['cases']:,} | {r['ok']:,} | {r['named']:,} | {r['unexpected']} "
              f"| {r['seconds']:.0f} s |")
    print(f"\nseed {args.seed}; python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    return 1 if any(r["unexpected"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

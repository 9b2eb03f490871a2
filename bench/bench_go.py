"""Time `biopost eval go` on the full Gene Ontology, and (with --cafaeval) cafaeval 1.3.0 on the
same files, with peak memory.

    python bench/bench_go.py [--cafaeval] [--replicas 20]

Inputs: the oracle test's three prediction sets (tests/fixtures/go/oracle_sets.py) over the 150
human proteins of tests/fixtures/go/truth_human_exp.tsv, the packaged GO 2022-07-01 and IA file;
and a larger set: those proteins replicated `--replicas` times under new ids, each with the
noisy method's predictions. Each tool runs in a subprocess (a fresh interpreter; wall time
includes start-up and reading the OBO file); peak RSS is the child's maximum resident set.
"""
import argparse
import gzip
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "go"))
OBO_GZ = ROOT / "BioReason-Pro/bioreason_pro/resources/go/go-basic.obo.gz"
IA_GZ = ROOT / "BioReason-Pro/bioreason_pro/resources/go/ia_human_exp.tsv.gz"
TRUTH = ROOT / "tests/fixtures/go/truth_human_exp.tsv"

# Each child reports its own peak RSS, VmHWM of /proc/self/status (getrusage's ru_maxrss keeps
# the high-water mark of the forked parent across exec: this parent holds the parsed ontology).
CAFAEVAL = """
import sys, time
from cafaeval.evaluation import cafa_eval
t = time.perf_counter()
df, best = cafa_eval(sys.argv[1], sys.argv[2], sys.argv[3], ia=sys.argv[4], n_cpu=1)
print(f"cafa_eval {time.perf_counter() - t:.2f} s")
print("MAXRSS", next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")))
"""
OURS = """
import sys
from biopost.cli import main
rc = main(sys.argv[1:])
print("MAXRSS", next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")))
sys.exit(rc)
"""


def timed(cmd) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB of this child, stdout)."""
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed:\n{p.stderr[-2000:]}")
    lines = p.stdout.splitlines()
    rss = next(int(l.split()[1]) for l in lines if l.startswith("MAXRSS"))
    return wall, rss / 1024, "\n".join(l for l in lines if not l.startswith("MAXRSS"))


def replicate(truth: Path, pred: Path, n: int, out: Path) -> tuple[Path, Path]:
    t_lines = truth.read_text().splitlines()
    p_lines = [l for l in pred.read_text().splitlines() if len(l.split()) >= 3]
    (out / "big_pred").mkdir(parents=True, exist_ok=True)
    with open(out / "big_truth.tsv", "w") as f:
        for k in range(n):
            f.writelines(f"r{k}_{l}\n" for l in t_lines)
    with open(out / "big_pred" / "noisy_x.tsv", "w") as f:
        for k in range(n):
            f.writelines(f"r{k}_{l}\n" for l in p_lines)
    return out / "big_truth.tsv", out / "big_pred"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cafaeval", action="store_true", help="also time cafaeval (minutes, ~1.3 GB)")
    ap.add_argument("--replicas", type=int, default=20)
    args = ap.parse_args()
    from bioreason_pro.ontology import load_ontology
    from oracle_sets import write_prediction_sets

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        import os
        env_cache = tmp / "cache"
        os.environ["BIOPOST_CACHE_DIR"] = str(env_cache)
        t = time.perf_counter()
        onto = load_ontology(OBO_GZ)
        print(f"ontology parse (obonet, cold cache): {time.perf_counter() - t:.2f} s; {len(onto)} terms")
        t = time.perf_counter()
        load_ontology(OBO_GZ)
        print(f"ontology load (cached): {(time.perf_counter() - t) * 1000:.0f} ms")
        write_prediction_sets(onto, TRUTH, tmp / "preds")
        n_lines = sum(len(p.read_text().splitlines()) for p in (tmp / "preds").iterdir())
        ours = [sys.executable, "-c", OURS, "eval", "go", "--obo", str(OBO_GZ), "--truth", str(TRUTH),
                "--pred", str(tmp / "preds"), "--ia", str(IA_GZ), "--out", str(tmp / "out")]
        wall, rss, _ = timed(ours)
        print(f"biopost eval go, 3 methods x 150 proteins ({n_lines} prediction lines): {wall:.2f} s wall, "
              f"{rss:.0f} MB peak (cached ontology)")
        big_truth, big_pred = replicate(TRUTH, tmp / "preds" / "noisy.tsv", args.replicas, tmp)
        n_big = sum(1 for _ in open(big_pred / "noisy_x.tsv"))
        ours_big = ours[:7] + ["--truth", str(big_truth), "--pred", str(big_pred), "--ia", str(IA_GZ),
                                 "--out", str(tmp / "out_big")]
        wall, rss, _ = timed(ours_big)
        print(f"biopost eval go, 1 method x {150 * args.replicas} proteins ({n_big} lines): {wall:.2f} s wall, "
              f"{rss:.0f} MB peak")
        if args.cafaeval:
            obo = tmp / "go-basic.obo"
            obo.write_bytes(gzip.decompress(OBO_GZ.read_bytes()))
            ia = tmp / "ia.tsv"
            ia.write_bytes(gzip.decompress(IA_GZ.read_bytes()))
            wall, rss, out = timed([sys.executable, "-c", CAFAEVAL, str(obo), str(tmp / "preds"), str(TRUTH), str(ia)])
            print(f"cafaeval 1.3.0, same 3 methods x 150 proteins: {wall:.1f} s wall ({out.strip()}), {rss:.0f} MB peak")


if __name__ == "__main__":
    main()

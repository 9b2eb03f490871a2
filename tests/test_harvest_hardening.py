"""The harvester against hostile trees and hostile conditions: malformed files become Problems
(never a crash), outputs are shareable (0o666 & ~umask) and atomic (kill -9 at any point
leaves every output the earlier complete file or the new one), a second user can harvest a tree
the first one wrote, and a full or read-only --out is one error line with earlier outputs kept.
"""
import csv
import io
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from disk_helpers import fill, remount_read_only, small_tmpfs  # noqa: E402

from biopost.eval.metrics_file import write_eval_outputs  # noqa: E402
from biopost.harvest import collect, write  # noqa: E402
from biopost.harvest.cli import main as harvest_main  # noqa: E402
from biopost.sweeps.status import write_json_atomic  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
STEM = "results_id_ood"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"


def make_tree(root: Path, sweeps=2, epochs=(1, 2, 4), seeds=(0, 1), shift=0.0) -> int:
    """A results tree written by the project's own writers (metrics.json, predictions.jsonl,
    status.json), as a sweep leaves it; returns the number of (run, checkpoint) rows."""
    rows = 0
    for s in range(sweeps):
        sweep = f"sweep{s}"
        for e in epochs:
            for seed in seeds:
                run_id = f"e{e}_s{seed}-{s:04d}{e:02d}{seed:02d}"
                run_dir = root / sweep / "sft" / run_id
                cell = {"sft.num_train_epochs": e}
                for split in ("id", "ood"):
                    acc = round(min(1.0, 0.5 + 0.05 * e - (0.1 if split == "ood" else 0) + shift), 4)
                    record = {"run_id": run_id, "sweep": sweep, "cell": cell, "stage": "sft",
                              "checkpoint": "last", "task": "kegg", "split": split, "seed": seed,
                              "headline": "accuracy", "n": 2, "metrics": {"accuracy": acc},
                              "ci95": {"accuracy": [max(0.0, acc - 0.1), acc]}}
                    preds = [{"id": str(i), "prompt_hash": "h", "generation": "g", "parsed": "a",
                              "gold": "a", "correct": True} for i in range(2)]
                    write_eval_outputs(run_dir / "eval" / split, record, preds)
                write_json_atomic(run_dir / "status.json", {
                    "schema": "biopost.status/v1", "sweep": sweep, "stage": "sft", "run_id": run_id,
                    "cell": cell, "seed": seed, "state": "done", "target": None})
                rows += 1
    return rows


def outputs(out: Path) -> dict:
    return {p.name: p for p in sorted(out.iterdir()) if p.is_file() and not p.name.startswith(".")}


def check_complete(path: Path) -> None:
    """Fail unless `path` is a complete output file."""
    data = path.read_bytes()
    assert data, f"{path} is empty"
    if path.suffix == ".png":
        assert data.startswith(PNG_SIGNATURE) and data.endswith(PNG_END), f"{path} is truncated"
    elif path.suffix == ".json":
        json.loads(data)
    elif path.suffix == ".csv":
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
        assert rows and all(len(r) == len(rows[0]) for r in rows), f"{path}: ragged csv"
    elif path.suffix == ".md":
        text = data.decode("utf-8")
        assert text.startswith("# ID / OOD results") and text.endswith("\n"), f"{path} is truncated"


# --------------------------------------------------------------------- malformed files
def _put(root: Path, rel: str, text: str):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8", errors="surrogatepass")
    return p


def test_any_json_value_in_any_field_is_a_problem_with_its_path_never_a_crash(tmp_path):
    root = tmp_path / "runs"
    make_tree(root, sweeps=1, epochs=(1,), seeds=(0,))
    base = {"schema": "biopost.metrics/v1", "run_id": "r", "stage": "sft", "task": "kegg",
            "split": "id", "headline": "accuracy", "n": 1, "metrics": {"accuracy": 0.5}}
    bad = {
        "int_stage": dict(base, stage=7, run_id={"a": 1}),  # used to crash sort_problems
        "list_sweep": dict(base, sweep=[1, 2], checkpoint={"x": None}),
        "huge_headline": dict(base, metrics={"accuracy": int("9" * 4000)}),
        "nan_cell": dict(base, run_id="nan", cell={"sft.x": float("nan"), "sft.y": 10 ** 400}),
        "huge_seed": dict(base, run_id="hs", seed=10 ** 300, cell={"sft.z": float("inf")}),
        "ci_junk": dict(base, run_id="ci", ci95={"accuracy": [10 ** 400, "a"], "x": None}),
        "surrogate": dict(base, run_id="s\ud800", sweep="w\udcff", cell={"k\ud800": "v\udcff"}),
        "long_sweep": dict(base, run_id="long", sweep="s" * 400, cell={"sft." + "k" * 300: 1}),
        "deep": dict(base, run_id="deep", computed=json.loads("[" * 500 + "]" * 500)),
    }
    for name, doc in bad.items():
        _put(root, f"bad/{name}/eval/id/metrics.json", json.dumps(doc))
    _put(root, "bad/status_junk/status.json", json.dumps(
        {"schema": "biopost.status/v1", "stage": ["sft"], "run_id": 3, "state": {"x": 1}}))
    _put(root, "bad/eval_junk/eval/status.json", json.dumps(
        {"schema": "biopost.status/v1", "stage": "eval", "run_id": "r", "state": "done",
         "target": {"stage": "sft", "run_id": "r", "checkpoint": [1]}, "cell": 5, "seed": "x"}))
    _put(root, "bad/toodeep/eval/id/metrics.json", "[" * 100000 + "]" * 100000)
    _put(root, "bad/bigint/eval/id/metrics.json", '{"n": ' + "9" * 5000 + "}")

    h = collect(str(root))
    write(h, str(tmp_path / "out"))  # md, json, csv and plots all come out
    for p in h.problems:
        if p.kind in ("corrupt", "invalid", "foreign"):
            assert p.path, p
        for field in (p.sweep, p.stage, p.run_id, p.checkpoint):
            assert field is None or isinstance(field, str)
    bad_paths = {p.path for p in h.problems}
    for name in ("int_stage", "list_sweep", "huge_headline", "deep"):
        assert str(root / f"bad/{name}/eval/id/metrics.json") in bad_paths, name
    assert str(root / "bad/toodeep/eval/id/metrics.json") in bad_paths
    assert str(root / "bad/bigint/eval/id/metrics.json") in bad_paths
    doc = json.loads((tmp_path / "out" / f"{STEM}.json").read_text())  # strict JSON: no NaN
    assert any(r["run_id"] == "nan" for r in doc["rows"])
    for p in (tmp_path / "out").iterdir():
        assert len(p.name) < 200


def test_harvest_cli_survives_surrogates_in_problems(tmp_path, capsys):
    root = tmp_path / "runs"
    _put(root, "x\udcff/eval/id/metrics.json", "{not json")
    assert harvest_main(["--root", str(root), "--out", str(tmp_path / "out")]) == 0
    assert "corrupt" in capsys.readouterr().out


# --------------------------------------------------------------------- modes and users
@pytest.mark.parametrize("mask", [0o022, 0o002], ids=["umask022", "umask002"])
def test_every_harvest_output_has_the_mode_open_gives(tmp_path, mask):
    make_tree(tmp_path / "runs", sweeps=1)
    old = os.umask(mask)
    try:
        write(collect(str(tmp_path / "runs")), str(tmp_path / "out"))
        written = outputs(tmp_path / "out")
        assert {"results_id_ood.md", "results_id_ood.json", "results_id_ood.csv",
                "results_id_ood_seeds.csv"} <= set(written)
        assert any(n.endswith(".png") for n in written) and any(n.startswith("sweep0__") and
                                                                n.endswith(".json") for n in written)
        # the run tree itself was written by the project's writers under umask 022
        tree = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
        assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in tree} == {"0o644"}
        assert {n: oct(stat.S_IMODE(p.stat().st_mode)) for n, p in written.items()} == \
            {n: oct(0o666 & ~mask) for n in written}
    finally:
        os.umask(old)


NOBODY_HARVEST = r"""
import os, sys, tempfile
# Everything the harvest imports, loaded while still root: this interpreter and its standard
# library may live where the other user cannot read (here: under /root), the tree may not.
from biopost.harvest.cli import main
from biopost.harvest import collect, write
# A harvest as root into a scratch directory imports what drawing needs; the tree is then
# read again, from scratch, as the other user.
write(collect(sys.argv[1]), tempfile.mkdtemp())
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
assert os.getuid() == 65534
sys.exit(main(["--root", sys.argv[1], "--out", sys.argv[2]]))
"""


def test_a_second_user_harvests_every_row_of_a_tree_written_with_umask_022():
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the unprivileged uid 65534 (nobody); CI runs as root")
    shared = Path(tempfile.mkdtemp(prefix="biopost-shared-"))
    try:
        shared.chmod(0o755)  # a shared results tree: others may read and traverse it
        old = os.umask(0o022)
        try:
            n_rows = make_tree(shared / "runs")
        finally:
            os.umask(old)
        out = shared / "theirs"
        out.mkdir()
        os.chown(out, 65534, 65534)
        env = {**os.environ, "MPLCONFIGDIR": str(out / ".mpl"), "HOME": str(out)}
        proc = subprocess.run([sys.executable, "-c", NOBODY_HARVEST, str(shared / "runs"), str(out)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Permission denied" not in proc.stdout + proc.stderr
        assert f": {n_rows} rows, 0 problem(s)" in proc.stdout, proc.stdout
        doc = json.loads((out / f"{STEM}.json").read_text())
        assert len(doc["rows"]) == n_rows and doc["problems"] == []
        assert os.stat(out / f"{STEM}.json").st_uid == 65534
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# --------------------------------------------------------------------- kill -9
HARVEST = [sys.executable, "-m", "biopost.harvest.cli"]


def _snapshot(out: Path) -> dict:
    snap = {}
    with os.scandir(out) as it:
        for e in it:
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:  # renamed away meanwhile
                continue
            snap[e.name] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return snap


def _kill_after_changes(proc, out: Path, changes: int, extra_s: float) -> bool:
    """SIGKILL `proc` once the directory `out` has changed `changes` times (a file created,
    grown, truncated or renamed into place), plus `extra_s`: kills aimed inside the writes,
    where a kill at a random time mostly lands in the imports. True when it was killed."""
    seen, before = 0, _snapshot(out)
    while proc.poll() is None:
        now = _snapshot(out)
        if now != before:
            seen, before = seen + 1, now
            if seen >= changes:
                time.sleep(extra_s)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
        time.sleep(0.0002)
    return False


def test_kill_9_at_random_points_never_leaves_an_empty_or_truncated_output(tmp_path):
    """A harvest killed with SIGKILL at 24 random points while it rewrites a directory that
    already holds earlier outputs: every file there is afterwards complete (the earlier or the
    new version), and every earlier file is still there. The kill points are random moments
    of the writes themselves: after the n-th change the directory shows (n random)."""
    root, out = tmp_path / "runs", tmp_path / "figures"
    make_tree(root, sweeps=4, epochs=(1, 2, 4, 8), seeds=(0, 1))
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    subprocess.run([*HARVEST, "--root", str(root), "--out", str(out)], check=True, env=env,
                   capture_output=True, timeout=300)
    earlier = {n: p.read_bytes() for n, p in outputs(out).items()}
    assert sum(n.endswith(".png") for n in earlier) == 4 and len(earlier) == 12
    # new results, so that every output changes
    shutil.rmtree(root)
    make_tree(root, sweeps=4, epochs=(1, 2, 4, 8), seeds=(0, 1), shift=0.03)

    rng = random.Random(13)
    killed = 0
    for _ in range(24):
        proc = subprocess.Popen([*HARVEST, "--root", str(root), "--out", str(out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killed += _kill_after_changes(proc, out, rng.randint(1, 16), rng.uniform(0, 0.02))
        proc.wait()
        now = outputs(out)
        assert set(earlier) <= set(now)
        for p in now.values():
            check_complete(p)
    assert killed >= 20, f"only {killed} of 24 runs were still running when killed"
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    assert len(leftovers) <= killed  # at most one stray temp file per kill, never a broken output


# --------------------------------------------------------------------- full / read-only --out
def test_full_disk_or_read_only_out_is_one_error_line_and_keeps_earlier_outputs(tmp_path):
    root = tmp_path / "runs"
    make_tree(root, sweeps=2)
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    with small_tmpfs(2048) as where:
        out = Path(where) / "figures"
        first = subprocess.run([*HARVEST, "--root", str(root), "--out", str(out)], env=env,
                               capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr
        earlier = {n: p.read_bytes() for n, p in outputs(out).items()}
        make_tree(root, sweeps=3, shift=0.02)  # more to write: a third sweep, other values
        fill(where)
        full = subprocess.run([*HARVEST, "--root", str(root), "--out", str(out)], env=env,
                              capture_output=True, text=True, timeout=300)
        err = full.stderr.strip()
        assert full.returncode == 1 and "Traceback" not in err, err
        assert len(err.splitlines()) == 1 and err.startswith("error: cannot write ")
        assert "(ENOSPC)" in err and str(out) in err
        assert {n: p.read_bytes() for n, p in outputs(out).items() if n in earlier} == earlier
        for p in outputs(out).values():
            check_complete(p)
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

        os.unlink(os.path.join(where, "filler.bin"))
        remount_read_only(where)
        ro = subprocess.run([*HARVEST, "--root", str(root), "--out", str(out)], env=env,
                            capture_output=True, text=True, timeout=300)
        assert ro.returncode == 1 and "(EROFS)" in ro.stderr and "Traceback" not in ro.stderr
        assert {n: p.read_bytes() for n, p in outputs(out).items() if n in earlier} == earlier

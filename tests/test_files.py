"""biopost.files and every writer that uses it: atomic replacement, the mode `0o666 & ~umask`
(what open() gives; mkstemp's 0600 hid results from a second user), and a full disk or a
read-only location as one OutputError line naming the path and errno, earlier files intact.

The full-disk and read-only cases mount a small tmpfs (root only; skipped with the reason
elsewhere; CI runs as root).
"""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from disk_helpers import fill, remount_read_only, small_tmpfs  # noqa: E402
from sweep_helpers import PYTHON, REPO, cli_env, two_stage_spec, write_spec  # noqa: E402

from biopost import files  # noqa: E402
from biopost.errors import UserError  # noqa: E402
from biopost.files import OutputError  # noqa: E402


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def stray_temps(root) -> list:
    return [str(p) for p in Path(root).rglob("*.tmp")]


def test_umask_is_read_without_changing_it(umask):
    assert files.umask() == umask
    assert files.file_mode() == 0o666 & ~umask
    assert os.umask(umask) == umask  # still what the fixture set


def test_atomic_writes_replace_the_file_with_the_mode_open_gives(tmp_path, umask):
    want = 0o666 & ~umask
    p = tmp_path / "sub" / "a.json"
    files.write_json_atomic(p, {"a": [1, 2]})
    assert json.loads(p.read_text()) == {"a": [1, 2]} and mode(p) == want
    files.write_text_atomic(p, "é\n")
    assert p.read_text(encoding="utf-8") == "é\n" and mode(p) == want
    files.write_bytes_atomic(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01" and mode(p) == want
    with files.atomic_path(tmp_path / "fig.png") as tmp:  # a writer that wants a file name
        assert tmp.parent == tmp_path and tmp.name.endswith(".tmp")
        Path(tmp).write_bytes(b"png")
    assert (tmp_path / "fig.png").read_bytes() == b"png" and mode(tmp_path / "fig.png") == want
    assert stray_temps(tmp_path) == []


def test_a_failed_write_leaves_the_earlier_file_and_no_temp_file(tmp_path):
    p = tmp_path / "out.json"
    files.write_json_atomic(p, {"v": 1})
    with pytest.raises(ValueError):  # NaN is not JSON: refused before any file is touched
        files.write_json_atomic(p, {"v": float("nan")})
    with pytest.raises(RuntimeError):
        with files.atomic_path(p) as tmp:
            Path(tmp).write_text("half")
            raise RuntimeError("the writer died")
    assert json.loads(p.read_text()) == {"v": 1}
    assert stray_temps(tmp_path) == []


def test_a_long_target_name_still_gets_a_temp_name_under_name_max(tmp_path):
    p = tmp_path / ("n" * 250 + ".json")
    files.write_json_atomic(p, [1])
    assert json.loads(p.read_text()) == [1]


def test_output_error_is_one_line_naming_the_path_and_the_errno(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OutputError) as e:
        files.write_text_atomic(blocker / "inside.txt", "x")  # a file where a directory should be
    msg = str(e.value)
    assert isinstance(e.value, UserError) and "\n" not in msg
    assert str(blocker) in msg and "(ENOTDIR)" in msg and e.value.errno is not None


def test_output_error_maps_library_errors_that_hide_the_errno(tmp_path):
    err = files.output_error(RuntimeError("Error while serializing: I/O error: No space left on "
                                          "device (os error 28)"), tmp_path / "x.safetensors")
    assert "(ENOSPC)" in str(err) and str(tmp_path / "x.safetensors") in str(err)
    assert files.output_error(ValueError("a bug"), tmp_path) is None  # not about the disk: kept


def test_read_only_location_is_an_output_error(tmp_path):
    with small_tmpfs(256) as where:
        files.write_json_atomic(Path(where) / "earlier.json", {"v": 1})
        remount_read_only(where)
        with pytest.raises(OutputError) as e:
            files.write_json_atomic(Path(where) / "earlier.json", {"v": 2})
        assert "(EROFS)" in str(e.value) and where in str(e.value)
        assert json.loads((Path(where) / "earlier.json").read_text()) == {"v": 1}


# --------------------------------------------------------------------- the project's writers
def _metrics_record(split="id"):
    return {"run_id": "r1", "sweep": "s", "stage": "sft", "task": "kegg", "split": split,
            "headline": "accuracy", "n": 2, "metrics": {"accuracy": 0.5}, "cell": {}, "seed": 0}


def _predictions():
    return [{"id": str(i), "prompt_hash": "h", "generation": "g", "parsed": "a", "gold": "a",
             "correct": True} for i in range(2)]


def test_every_writer_gives_other_users_read_access(tmp_path, umask):
    """status.json, the ledger, metrics.json / predictions.jsonl, config.yaml, the CPT
    select-best JSON: all 0o666 & ~umask (0644 under umask 022, 0664 under 002)."""
    from biopost.config import save_config
    from biopost.eval.metrics_file import write_eval_outputs
    from biopost.sweeps.ledger import Ledger
    from biopost.sweeps.status import write_json_atomic
    from biopost.train.cpt_cli import main as cpt_main

    write_json_atomic(tmp_path / "run" / "status.json", {"schema": "biopost.status/v1", "state": "done"})
    Ledger(tmp_path / "work", "sw").record("12", "sft", {0: "sft/r1"}, {0: "log"}, "m.json")
    write_eval_outputs(tmp_path / "run" / "eval" / "id", _metrics_record(), _predictions())

    import dataclasses

    @dataclasses.dataclass
    class Cfg:
        a: int = 1
    save_config(Cfg(), tmp_path / "run" / "config.yaml")
    cpt_main(["select-best", "--runs", str(tmp_path / "run"), "--out", str(tmp_path / "sb.json")])

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"status.json", "jobs.json", "metrics.json",
                                        "predictions.jsonl", "config.yaml", "sb.json"}
    assert {str(p): oct(mode(p)) for p in written} == {str(p): oct(0o666 & ~umask) for p in written}
    assert stray_temps(tmp_path) == []


def test_embedding_cache_shards_and_checkpoint_files_are_shareable(tmp_path, umask):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from biopost.encoders.cache import EmbeddingCache
    from biopost.train.checkpoint import latest_checkpoint, save_checkpoint

    class Encoder:
        backend, name, weights_id, layer = "toy", "toy", "w0", 1

        def encode(self, seqs):
            return [torch.ones(len(s), 2) for s in seqs]

    cache = EmbeddingCache(Encoder(), tmp_path / "cache")
    assert cache.ensure(["ACGT", "AC"]) == 2
    assert EmbeddingCache(Encoder(), tmp_path / "cache").get("AC").shape == (2, 2)  # read back

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ckpt = save_checkpoint(tmp_path / "run", 1, lambda d: save_file(
        {k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(d / "bio.safetensors")),
        opt, sched, {"epoch": 0})
    assert latest_checkpoint(tmp_path / "run") == ckpt
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len([p for p in written if p.suffix == ".safetensors"]) == 2
    assert {str(p): oct(mode(p)) for p in written} == {str(p): oct(0o666 & ~umask) for p in written}


def test_tiny_model_cache_directory_is_not_private(tmp_path, monkeypatch):
    """mkdtemp makes 0700 directories: the materialized tiny model must be readable by others."""
    pytest.importorskip("transformers")
    from biopost import tiny
    monkeypatch.setenv("BIOPOST_CACHE_DIR", str(tmp_path))
    tiny.TINY_BUILDERS.register("files_probe", lambda out: (out / "x.json").write_text("{}"))
    monkeypatch.setattr(tiny, "_inputs_hash", lambda kind: "h")
    try:
        path = Path(tiny.resolve_model_path(tiny.TINY_PREFIX + "files_probe"))
    finally:
        tiny.TINY_BUILDERS.unregister("files_probe")
    assert mode(path) == 0o777 & ~files.umask()


# --------------------------------------------------------------------- full disk
def test_full_disk_during_a_checkpoint_write_is_one_line_and_keeps_the_last_checkpoint():
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from biopost.train.checkpoint import latest_checkpoint, save_checkpoint

    with small_tmpfs(1024) as where:
        run = Path(where) / "run"
        small = torch.nn.Linear(4, 4)

        def saver(module):
            return lambda d: save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()},
                                       str(d / "bio.safetensors"))

        def opt_sched(module):
            opt = torch.optim.AdamW(module.parameters())
            module(torch.ones(1, module.in_features)).sum().backward()
            opt.step()  # AdamW state: as large as the model, twice
            return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

        first = save_checkpoint(run, 1, saver(small), *opt_sched(small), {"epoch": 0})
        before = {p.name: p.read_bytes() for p in first.iterdir()}
        fill(where, leave=64 * 1024)
        big = torch.nn.Linear(256, 256)  # 256 KiB of weights, 768 KiB with AdamW state
        with pytest.raises(OutputError) as e:
            save_checkpoint(run, 2, saver(big), *opt_sched(big), {"epoch": 0})
        msg = str(e.value)
        assert "\n" not in msg and "(ENOSPC)" in msg and str(run) in msg, msg
        assert latest_checkpoint(run) == first
        assert {p.name: p.read_bytes() for p in first.iterdir()} == before
        assert not list((run / "checkpoints").glob("*.partial"))


FAKE_SLURM = {
    "sbatch": '#!/bin/sh\necho 4242\n',
    "squeue": '#!/bin/sh\nexit 0\n',  # nothing queued: a submitted job that never started is "lost"
    "scancel": '#!/bin/sh\nexit 0\n',
    "scontrol": '#!/bin/sh\nexit 0\n',
}


def _fake_slurm_env(tmp_path) -> dict:
    bin_dir = tmp_path / "fakeslurm"
    bin_dir.mkdir(exist_ok=True)
    for name, text in FAKE_SLURM.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = cli_env(tmp_path)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env


def _submit(spec, work, env):
    return subprocess.run([PYTHON, "-m", "biopost.cli", "sweep", "submit", str(spec), "--work_root", str(work)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_sweep_submit_on_a_full_or_read_only_work_root_is_one_error_line(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", two_stage_spec("fulldisk", grid={"num_train_epochs": [1, 2]}))
    env = _fake_slurm_env(tmp_path)
    with small_tmpfs(512) as where:
        work = Path(where) / "runs"
        first = _submit(spec, work, env)
        assert first.returncode == 0, first.stdout + first.stderr
        ledger = work / "fulldisk" / ".biopost" / "jobs.json"
        earlier = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
        assert ledger in earlier and any(p.suffix == ".sh" for p in earlier)
        # the ledger, each job's manifest and sbatch script: readable by the other users
        assert {oct(mode(p)) for p in earlier} == {oct(files.file_mode())}
        fill(where)
        again = _submit(spec, work, env)  # the jobs never started: lost, so they are re-submitted
        err = again.stderr.strip()
        assert again.returncode == 1, again.stdout + again.stderr
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "error: cannot write" in err and "(ENOSPC)" in err and where in err
        now = {p: p.read_bytes() for p in earlier}
        assert now == earlier  # the ledger, manifests and scripts of the first submit are intact
        json.loads(ledger.read_text())
        os.unlink(os.path.join(where, "filler.bin"))
        remount_read_only(where)
        ro = _submit(spec, work, env)
        assert ro.returncode == 1 and "(EROFS)" in ro.stderr and "Traceback" not in ro.stderr, ro.stderr

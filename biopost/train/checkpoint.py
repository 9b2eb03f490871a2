"""Training checkpoints: everything needed to resume bit-identically.

A checkpoint directory `checkpoints/step-NNNNNNNN/` holds the model part (written by the
model's own `save`), `optimizer.pt`, `scheduler.pt`, `rng.pt` and `trainer_state.json` (and, from a
multi-process run, `rng-rank<r>.pt` for ranks 1..: rank 0 writes them all).
It is written under a temporary name, fsynced and renamed when complete, then
`checkpoints/last` is re-pointed atomically, so a job killed mid-save resumes from the previous
complete one. A full disk (or an unwritable run directory) during the save is an OutputError
naming the file and errno (biopost.files), the partial directory is removed and the earlier
checkpoints stay as they were. Tensors are read back with `torch.load(weights_only=True)` only.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from biopost.errors import CheckpointError, MissingCheckpointError
from biopost.files import OutputError, fsync_dir, fsync_tree, output_error, write_text_atomic

STEP_PREFIX = "step-"


def checkpoints_root(run_dir) -> Path:
    return Path(run_dir) / "checkpoints"


def step_dir(run_dir, step: int) -> Path:
    return checkpoints_root(run_dir) / f"{STEP_PREFIX}{step:08d}"


def fingerprint(ckpt: Path) -> str:
    """sha256 over the saved tensors of the model part: identifies what was trained."""
    h = hashlib.sha256()
    for f in sorted(ckpt.rglob("*.safetensors")):
        h.update(f.relative_to(ckpt).as_posix().encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def capture_rng() -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def point_label(run_dir, label: str, target: Path) -> None:
    """Atomically make `checkpoints/<label>` a relative symlink to `target`."""
    root = checkpoints_root(run_dir)
    link = root / label
    tmp = root / f".{label}.tmp-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.relpath(target, root), tmp)
    os.replace(tmp, link)


def save_checkpoint(run_dir, step: int, save_model, optimizer, scheduler, state: dict,
                    keep_last: int = 2, labels: tuple = ("last",), other_ranks_rng: list | None = None,
                    optimizer_state: dict | None = None) -> Path:
    """Write a complete checkpoint for optimizer step `step`; returns its directory. Under several
    ranks `other_ranks_rng` holds ranks 1.. random states (rank r's dropout stream is its own),
    written as rng-rank<r>.pt beside rng.pt (rank 0's), and `optimizer_state` the optimizer's
    state already gathered from the shards (biopost.distributed.optimizer_state) when sharded."""
    final = step_dir(run_dir, step)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        save_model(partial)
        save_torch(optimizer.state_dict() if optimizer_state is None else optimizer_state, partial / "optimizer.pt")
        save_torch(scheduler.state_dict(), partial / "scheduler.pt")
        save_torch(capture_rng(), partial / "rng.pt")
        for r, rng in enumerate(other_ranks_rng or (), start=1):
            save_torch(rng, partial / f"rng-rank{r}.pt")
        state = dict(state, step=step, fingerprint=fingerprint(partial))
        write_text_atomic(partial / "trainer_state.json", json.dumps(state, indent=1, sort_keys=True))
        fsync_tree(partial)
    except Exception as e:  # noqa: BLE001 - a file-system error becomes OutputError, others re-raise
        shutil.rmtree(partial, ignore_errors=True)
        err = output_error(e, partial)
        if err is None:
            raise
        raise err from None
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    fsync_dir(final.parent)
    for label in labels:
        point_label(run_dir, label, final)
    prune(run_dir, keep_last)
    return final


def save_torch(obj, path: Path) -> None:
    """torch.save into a file we opened: a full disk then raises OSError(ENOSPC) naming the
    file, where torch.save to a path reports "enforce fail ... unexpected pos"."""
    try:
        with open(path, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OutputError(path, e) from None


def labelled_targets(run_dir) -> set:
    root = checkpoints_root(run_dir)
    return {p.resolve() for p in root.iterdir() if p.is_symlink()} if root.is_dir() else set()


def prune(run_dir, keep_last: int) -> None:
    """Delete old step directories, keeping the newest `keep_last` and any labelled one."""
    if keep_last <= 0:
        return
    root = checkpoints_root(run_dir)
    steps = sorted(p for p in root.glob(f"{STEP_PREFIX}*") if p.is_dir() and not p.name.endswith(".partial"))
    protected = labelled_targets(run_dir)
    for old in steps[:-keep_last]:
        if old.resolve() not in protected:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run_dir) -> Path | None:
    """The checkpoint `last` points to, or the newest complete step directory."""
    root = checkpoints_root(run_dir)
    link = root / "last"
    if link.exists() and (link / "trainer_state.json").is_file():
        return link.resolve()
    complete = sorted(p for p in root.glob(f"{STEP_PREFIX}*")
                      if not p.name.endswith(".partial") and (p / "trainer_state.json").is_file())
    return complete[-1] if complete else None


def read_trainer_state(ckpt) -> dict:
    path = Path(ckpt) / "trainer_state.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingCheckpointError(f"{ckpt}: not a training checkpoint (no trainer_state.json)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt trainer state ({e})") from None


def load_optimizer_state(ckpt, optimizer, scheduler, restore_random_state: bool = True, rank: int = 0,
                         world: int = 1, load_optimizer=None) -> dict:
    """Restore optimizer, scheduler and RNG from `ckpt`; returns its trainer_state dict. Rank r of a
    run with the checkpoint's world size takes its own random state (rng-rank<r>.pt); under another
    world size the ranks' dropout streams cannot continue as they were and every rank takes rank 0's.
    `load_optimizer(state)` replaces optimizer.load_state_dict (a sharded optimizer's loader)."""
    ckpt = Path(ckpt)
    (load_optimizer or optimizer.load_state_dict)(torch.load(ckpt / "optimizer.pt", map_location="cpu",
                                                             weights_only=True))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", map_location="cpu", weights_only=True))
    state = read_trainer_state(ckpt)
    if restore_random_state:
        own = ckpt / f"rng-rank{rank}.pt"
        same_world = state.get("world_size", 1) == world
        restore_rng(torch.load(own if rank > 0 and same_world and own.is_file() else ckpt / "rng.pt",
                               map_location="cpu", weights_only=True))
    return state


def resolve_resume(resume: str, run_dir) -> Path | None:
    """`--resume auto|never|PATH`: the checkpoint to resume from, or None for a fresh start."""
    value = (resume or "auto").strip()
    if value.lower() in ("never", "false", "no", "none", "0"):
        return None
    if value.lower() in ("auto", "true", "yes", "1", "last"):
        return latest_checkpoint(run_dir)
    path = Path(value)
    if not (path / "trainer_state.json").is_file():
        raise MissingCheckpointError(f"--resume {value}: not a checkpoint directory (no trainer_state.json)")
    return path.resolve()

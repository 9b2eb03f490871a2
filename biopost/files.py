"""Atomic, shareable file writes: the one implementation every writer of the project uses.

Every file bio-post writes for others (harvest outputs, metrics and predictions, status.json,
the job ledger and manifests, checkpoint files, embedding-cache shards) goes through here:

  1. the content goes to a temp file in the target's directory (same filesystem, so the
     rename below is atomic), named `.<name>.<random>.tmp`;
  2. it is flushed and fsynced, given the mode `0o666 & ~umask` (what `open()` would have
     given it: mkstemp's 0600 would hide results and state from a second user of the tree);
  3. it is renamed over the target, and the directory is fsynced, so that after a crash the
     new name is there too.
A reader therefore sees the earlier complete file or the new complete one, never an empty or
truncated one; a kill -9 at any point leaves at most a stray `.tmp` file beside it.

A full disk, a read-only or unwritable location (ENOSPC, EROFS, EACCES, EDQUOT, ...) becomes
an `OutputError`: one line naming the path and the errno, which entry points print as
`error: ...`; the temp file is removed and the earlier output is left intact.

Only the standard library: sweeps and harvest use this on login nodes.
"""
from __future__ import annotations

import errno as _errno
import json
import os
import re
import secrets
import threading
from contextlib import contextmanager
from pathlib import Path

from biopost.errors import UserError

__all__ = ["OutputError", "atomic_path", "ensure_dir", "file_mode", "fsync_dir", "fsync_tree",
           "output_error", "umask", "write_bytes_atomic", "write_json_atomic",
           "write_text_atomic"]

# Longest part of the target's name kept in a temp name: the temp name must stay under
# NAME_MAX (255 bytes) even for a target whose own name is close to it.
_TMP_NAME_KEEP = 96
_umask_lock = threading.Lock()


class OutputError(UserError):
    """An output that cannot be written: full disk, read-only or unwritable location, ...
    `str()` is one line naming the path, the error and its errno name."""

    def __init__(self, path, error: OSError | None = None, detail: str | None = None):
        self.path = str(path)
        self.errno = getattr(error, "errno", None)
        self.strerror = detail or getattr(error, "strerror", None) or str(error or "failed")
        name = _errno.errorcode.get(self.errno) if self.errno else None
        super().__init__(f"cannot write {self.path}: {self.strerror}"
                         + (f" ({name})" if name else ""))

    def __reduce__(self):  # intact through pickling (a plot drawn in a worker process)
        error = OSError(self.errno, self.strerror) if self.errno else None
        return (type(self), (self.path, error, None if self.errno else self.strerror))


def umask() -> int:
    """The process umask. Read from /proc/self/status (Linux 4.7+), which changes nothing;
    elsewhere through `os.umask(0); os.umask(old)`, which briefly sets the umask to 0 for the
    whole process, so it is serialized here (a thread of ours creating a file at that instant
    could get the mode of umask 022 instead of its own: only where /proc is missing)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:
        old = os.umask(0o022)
        os.umask(old)
    return old


def file_mode() -> int:
    """The mode of a newly written file: what open() gives, 0o666 & ~umask."""
    return 0o666 & ~umask()


_RUST_OS_ERROR = re.compile(r"os error (\d+)")


def output_error(exc: BaseException, path, name_path: bool = False) -> OutputError | None:
    """The OutputError an exception raised while writing `path` stands for, or None when it is
    not about the file system (a bug, or bad data, which must keep its own type).
    Knows OSError, the Rust "(os error 28)" that safetensors reports, and torch's
    "enforce fail ... unexpected pos" that a full disk gives torch.save to a path. The message
    names the file the OSError names, or `path` (always `path` with name_path: the target of
    an atomic write, not its temp file)."""
    if isinstance(exc, OutputError):
        return exc
    if isinstance(exc, OSError) and exc.errno is not None:
        return OutputError(path if name_path else getattr(exc, "filename", None) or path, exc)
    text = str(exc)
    m = _RUST_OS_ERROR.search(text)
    if m:
        code = int(m.group(1))
        return OutputError(path, OSError(code, os.strerror(code)))
    if "unexpected pos" in text or "file write failed" in text:  # torch's inline_container
        if _disk_full(path):
            return OutputError(path, OSError(_errno.ENOSPC, os.strerror(_errno.ENOSPC)))
        return OutputError(path, detail=f"write failed ({text[:120]})")
    return None


def _disk_full(path) -> bool:
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)) or ".")
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)


def ensure_dir(path) -> Path:
    """mkdir -p, with a failure as an OutputError naming the directory."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as e:  # a file (or a dangling link) where a directory should be
        raise OutputError(e.filename or path, OSError(_errno.ENOTDIR, "exists and is not a "
                                                      "directory")) from None
    except OSError as e:
        raise OutputError(getattr(e, "filename", None) or path, e) from None
    return path


def _tmp_name(target: Path) -> Path:
    return target.with_name(f".{target.name[:_TMP_NAME_KEEP]}.{secrets.token_hex(4)}.tmp")


def fsync_dir(path) -> None:
    """fsync a directory so that a rename in it survives a crash; a no-op where the file
    system cannot (EINVAL) or the platform has no O_DIRECTORY."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path, mode: int | None = None):
    """Yield a temp path beside `path` for a writer that needs a file name (matplotlib's
    savefig (pass `format=`: the temp name ends in .tmp), safetensors' save_file, torch.save
    to an open file (torch.save to a *path* reports a full disk as an obscure RuntimeError));
    on a clean exit it is fsynced, given the
    mode (default `0o666 & ~umask`) and renamed over `path`. On any exception the temp file
    is removed and `path` is untouched; a file-system error becomes an OutputError.

        with atomic_path(out / "figure.png") as tmp:
            fig.savefig(tmp)
    """
    target = Path(path)
    ensure_dir(target.parent)
    tmp = _tmp_name(target)
    try:
        yield tmp
        _commit(tmp, target, file_mode() if mode is None else mode)
    except BaseException as e:
        _remove(tmp)
        err = output_error(e, target, name_path=True) if isinstance(e, Exception) else None
        if err is not None and err is not e:
            raise err from None
        raise


def _commit(tmp: Path, target: Path, mode: int) -> None:
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    fsync_dir(target.parent)


def fsync_tree(root) -> None:
    """fsync every file and directory under `root`, a directory written by a library (a model's
    save, save_pretrained) before it is renamed into place as a whole, and give its files the
    mode `0o666 & ~umask`, its directories `0o777 & ~umask`: safetensors' save_file creates
    0600 files, which a second user of the run tree could not read. Links are left alone."""
    mask = umask()
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.fchmod(fd, 0o666 & ~mask)
            finally:
                os.close(fd)
        os.chmod(dirpath, 0o777 & ~mask)
        fsync_dir(dirpath)


def _remove(tmp: Path) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def write_bytes_atomic(path, data: bytes, mode: int | None = None) -> Path:
    """Write `data` to `path` atomically (see the module docstring); returns the path."""
    target = Path(path)
    with atomic_path(target, mode) as tmp:
        # O_EXCL: never follow a link someone planted at the temp name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
    return target


def write_text_atomic(path, text: str, encoding: str = "utf-8", mode: int | None = None,
                      errors: str = "strict") -> Path:
    """Write `text` to `path` atomically; encoded before anything is created (`errors` as for
    str.encode: "backslashreplace" for text that may carry lone surrogates from a file name
    or a malformed input)."""
    return write_bytes_atomic(path, text.encode(encoding, errors), mode)


def write_json_atomic(path, obj, *, indent: int | None = 1, sort_keys: bool = False,
                      ensure_ascii: bool = True, allow_nan: bool = False,
                      mode: int | None = None) -> Path:
    """Write `obj` as JSON (plus a final newline) atomically. It is serialized first, so an
    object that is not JSON (TypeError, or NaN with allow_nan=False: ValueError) raises
    before any file is touched."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii,
                      allow_nan=allow_nan) + "\n"
    return write_text_atomic(path, text, mode=mode)

"""Atomic file writes (a reader never sees a half-written file) and the file lock that
serialises writers of one result folder (two writers never lose each other's work)."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
from pathlib import Path


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from the group on a shared folder
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_writable(folder: Path, what: str) -> None:
    """Create `folder` if needed and write a probe file there; a clear error naming `what` and
    the folder if that fails (before hours of training, not after)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{what} {folder}: cannot write there ({err.strerror or err})") from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_torch_save(path: Path, obj) -> None:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


_held_locks: dict[str, tuple[threading.RLock, int, int | None]] = {}
_held_guard = threading.Lock()


@contextlib.contextmanager
def file_lock(path: Path):
    """Exclusive advisory lock on `path` (created if missing) with `fcntl.flock`, held for the
    `with` block. Other processes (and other hosts on a shared file system whose NFS client
    maps flock to POSIX locks, as Linux does) wait for it; re-entrant within a process, so a
    function holding the lock may call another that takes it."""
    key = str(Path(path).resolve())
    with _held_guard:
        entry = _held_locks.setdefault(key, (threading.RLock(), 0, None))
    rlock = entry[0]
    with rlock:  # threads of one process queue here; flock would not tell them apart
        with _held_guard:
            _, depth, fd = _held_locks[key]
        if depth == 0:
            Path(key).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
        with _held_guard:
            _held_locks[key] = (rlock, depth + 1, fd)
        try:
            yield
        finally:
            with _held_guard:
                _, depth, fd = _held_locks[key]
                _held_locks[key] = (rlock, depth - 1, fd if depth > 1 else None)
            if depth == 1:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


def results_lock(results_dir: Path):
    """The lock every writer of a result folder and of the tables beside it takes."""
    return file_lock(Path(results_dir) / ".lock")

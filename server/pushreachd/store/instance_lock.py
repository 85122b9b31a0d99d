"""One `pushreach serve` per SQLite database: an exclusive lock file beside it.

The SQLite store assumes it is the only writer and the only scheduler of its fallbacks (its
timer wheel is loaded once, at start); a second instance on the same file would fire the same
fallbacks. So `serve` takes an exclusive `flock` on `<db>.lock` for the life of the process and
writes who holds it (pid, listen address, start time) into the file; a second `serve` refuses to
start and names the first. The kernel drops the lock when the process ends, however it ends
(SIGKILL included), so a stale file never blocks a restart. Several instances share a
PostgreSQL database instead, where this lock does not apply.

Most `pushreach apps` commands do not take it: they are short transactions that SQLite
serialises, documented to work beside a running service. `apps rotate-master-key` does, since
a running service holds the old key: it refuses while a service runs, and no service starts
while it re-seals.
"""

from __future__ import annotations

import fcntl
import json
import os
import time

__all__ = ["InstanceLock", "InstanceLocked", "lock_path"]


class InstanceLocked(Exception):
    """Another process holds the database; the message names it and what to do, `holder` names it."""

    def __init__(self, message: str, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


def lock_path(db: str) -> str:
    return f"{db}.lock"


class InstanceLock:
    """`acquire()` takes the lock or raises InstanceLocked; `release()` lets it go."""

    def __init__(self, db: str, holder: str) -> None:
        """`holder` says who takes it, for whoever finds it taken: "pushreach serve on 127.0.0.1:50051"."""
        self.db = db
        self.path = lock_path(db)
        self._holder = holder
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = f"{_describe(_read(fd))} (lock file {self.path})"
            os.close(fd)
            raise InstanceLocked(
                f"database {self.db} is in use by {holder}: one SQLite database serves one instance. "
                "Stop that one, or give this one another --db (several instances share a PostgreSQL --db)",
                holder,
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # Ours now: say who holds it, for the next one that tries.
        holder = {"pid": os.getpid(), "holder": self._holder, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode() + b"\n", 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # the file stays (removing it would race a starting instance)
        finally:
            os.close(fd)  # closing drops the flock


def _read(fd: int) -> bytes:
    try:
        return os.pread(fd, 4096, 0)
    except OSError:
        return b""


def _describe(raw: bytes) -> str:
    try:
        holder = json.loads(raw)
        return f"{holder['holder']} (pid {int(holder['pid'])}, since {holder['started']})"
    except (ValueError, KeyError, TypeError):
        return "a process that is still starting"  # it took the lock and has not written yet

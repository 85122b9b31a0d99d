"""Group commit on one SQLite connection: a writer thread, a queue, a savepoint per write.

Every write is a small function of the connection. The writer task takes whatever writes are
queued, runs them on the writer thread in one transaction (each inside its own SAVEPOINT, so
one failing write does not undo the others) and commits once; only then are the callers'
futures resolved. Under load many callers share one fsync; alone, a write commits at once.

Writes that only add rows to the same statement (e.g. delivery marks) may *join*: callers
queued between two commits share one write and one future (`join`).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ...supervisor import Supervisor

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BATCH = 512  # writes per transaction; bounds how long one commit holds the writer


@dataclass
class _Write:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None


@dataclass
class _Joined:
    """Calls waiting for the same commit that share one write: their rows, one future."""

    rows: list[Any]
    write: _Write


@dataclass
class WriteStats:
    """Group-commit figures, read by the metrics module."""

    commits: int = 0
    writes: int = 0
    last_batch: int = 0
    commit_seconds: list[float] = field(default_factory=list)


class GroupCommitWriter:
    """The single writer of one database file."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], supervisor: Supervisor | None = None) -> None:
        self._connect = connect
        self._supervisor = supervisor or Supervisor()
        self._dead: BaseException | None = None  # why the writer task died, if it did
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="pushreach-db-writer")
        self._conn: sqlite3.Connection | None = None
        self._queue: asyncio.Queue[_Write | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._joined: dict[str, _Joined] = {}  # groups still open to more rows, by name
        self.stats = WriteStats()
        self.on_commit: Callable[[int, float], None] | None = None  # (batch size, seconds)

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The writer task (for its owner to watch); None when not open."""
        return self._task

    async def open(self, setup: Callable[[sqlite3.Connection], None]) -> None:
        """Connect, run `setup` (migrations) on the writer thread, start the writer task."""
        loop = asyncio.get_running_loop()

        def connect() -> sqlite3.Connection:
            conn = self._connect()
            setup(conn)
            return conn

        self._conn = await loop.run_in_executor(self._pool, connect)
        self._queue = asyncio.Queue()
        self._task = self._supervisor.spawn(self._loop(), name="pushreach-db-writer", forever=True)

    async def close(self) -> None:
        """Commit what is queued, stop the task, close the connection."""
        if self._queue is not None and self._task is not None:
            self._supervisor.release(self._task)
            if not self._task.done():
                await self._queue.put(None)  # the writer finishes what is queued, then stops
            await asyncio.gather(self._task, return_exceptions=True)  # a death is the supervisor's
            self._task = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._pool, conn.close)
        self._pool.shutdown(wait=True)

    def _check_open(self) -> asyncio.Queue[_Write | None]:
        if self._dead is not None:
            raise RuntimeError(f"the store writer died: {self._dead!r}")
        if self._queue is None or self._task is None or self._task.done():
            raise RuntimeError("store is not open")
        return self._queue

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in the next group commit; return its result once committed."""
        queue = self._check_open()
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Write(fn, fut))
        return await fut

    async def join(self, name: str, row: Any, flush: Callable[[sqlite3.Connection, list[Any]], None]) -> None:
        """Add `row` to the open group `name` (or open one): its rows are written together by
        one `flush(conn, rows)` in the next commit. Returns once committed."""
        group = self._joined.get(name)
        if group is None:
            queue = self._check_open()
            rows: list[Any] = []
            group = self._joined[name] = _Joined(
                rows, _Write(lambda conn: flush(conn, rows), asyncio.get_running_loop().create_future())
            )
            queue.put_nowait(group.write)
        group.rows.append(row)
        # shield: one caller cancelled must not cancel the future the others wait on
        await asyncio.shield(group.write.future)

    async def _loop(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # A bug in the loop itself: no caller may wait forever on a write that will never be
            # committed. Fail every queued write, refuse new ones, and die (the supervisor stops
            # the service).
            self._dead = exc
            self._fail_queued(exc)
            raise

    def _fail_queued(self, exc: BaseException) -> None:
        assert self._queue is not None
        while not self._queue.empty():
            w = self._queue.get_nowait()
            if w is not None and not w.future.done():
                w.future.set_exception(RuntimeError(f"the store writer died: {exc!r}"))
        self._joined.clear()

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            in_batch = {id(w) for w in batch}
            for name, group in list(self._joined.items()):
                if id(group.write) in in_batch:
                    del self._joined[name]  # its rows are fixed from here on; later rows start a new group
            started = loop.time()
            try:
                await loop.run_in_executor(self._pool, self._commit, batch)
            except asyncio.CancelledError:
                # Cancelled mid-commit (a torn-down loop): the thread finishes the transaction on
                # its own, but nobody may be told it is durable, and the task must end.
                for w in batch:
                    if not w.future.done():
                        w.future.cancel()
                raise
            except Exception as exc:  # the commit itself failed: nothing in it is durable
                log.error("store commit failed: %s", exc)
                for w in batch:
                    w.error = w.error or exc
            try:
                self._account(len(batch), loop.time() - started)
            finally:
                self._settle(batch)

    @staticmethod
    def _settle(batch: list[_Write]) -> None:
        """Tell each caller: its result once committed, or its error."""
        for w in batch:
            if w.future.done():  # the caller was cancelled; the write still happened
                continue
            if w.error is not None:
                w.future.set_exception(w.error)
            else:
                w.future.set_result(w.result)

    def _account(self, size: int, seconds: float) -> None:
        self.stats.commits += 1
        self.stats.writes += size
        self.stats.last_batch = size
        if self.on_commit is not None:
            self.on_commit(size, seconds)

    def _commit(self, batch: list[_Write]) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            for w in batch:
                conn.execute("SAVEPOINT w")
                try:
                    w.result = w.fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO w")
                    w.error = exc
                conn.execute("RELEASE w")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

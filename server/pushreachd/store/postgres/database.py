"""Connections to PostgreSQL: the group-commit writer, a pool for reads and engine
transactions, and what a lost connection turns into.

Group commit as in the SQLite store: every ingest write is a small async function; the writer
task takes whatever writes are queued, runs them on its one connection in one transaction
(each inside its own savepoint, so one failing write does not undo the others) and commits
once; only then are the callers' futures resolved.

Engine writes (claims, reservations, finishes) run in their own short transactions on a pool
connection instead: they are already grouped by the scheduler, and they take row and advisory
locks that another instance may hold; a deadlock or serialization failure there is retried.

While the server is unreachable every call raises `Unavailable` (the API answers UNAVAILABLE,
clients retry with their request_id); the writer reconnects by itself, the pool likewise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ...errors import DomainError, Unavailable
from ...supervisor import Supervisor

log = logging.getLogger(__name__)
T = TypeVar("T")
Op = Callable[[psycopg.AsyncConnection], Awaitable[T]]

MAX_BATCH = 512  # writes per transaction; bounds how long one commit holds the writer
_RETRIES = 5  # engine transactions retried after a deadlock / serialization failure
_IDLE_CHECK = 1.0  # seconds a writer connection may sit idle before it is checked again


@dataclass
class _Write:
    fn: Op[Any]
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = None


@dataclass
class WriteStats:
    """Group-commit figures, read by the metrics module."""

    commits: int = 0
    writes: int = 0
    last_batch: int = 0
    commit_seconds: list[float] = field(default_factory=list)


def unavailable(exc: BaseException) -> Unavailable:
    return Unavailable(f"the database is unreachable: {type(exc).__name__}")


def is_connection_error(exc: BaseException) -> bool:
    """The server is gone or going (not a fault of the statement)."""
    if isinstance(exc, PoolTimeout | psycopg.OperationalError) and not isinstance(exc, pg_errors.QueryCanceled):
        return True
    return isinstance(exc, pg_errors.AdminShutdown | pg_errors.CannotConnectNow | pg_errors.CrashShutdown)


class Database:
    """Group-commit writers, one pool; `healthy` follows the connections."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 8,
        writers: int = 4,
        connect_timeout: float = 5.0,
        prepare_threshold: int | None = 5,
        supervisor: Supervisor | None = None,
    ) -> None:
        self._supervisor = supervisor or Supervisor()
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        # None: never prepare statements on the server (PgBouncer < 1.21 in transaction mode).
        self._prepare_threshold = prepare_threshold
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=connect_timeout,
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, int(connect_timeout)),
                "prepare_threshold": prepare_threshold,
            },
            check=AsyncConnectionPool.check_connection,
            reconnect_timeout=0,  # keep trying for as long as the server is away
            name="pushreach",
        )
        # Several writers take batches from one queue, each on its own connection: while one
        # waits for its commit, the next batch is already running (PostgreSQL, unlike SQLite,
        # commits concurrent transactions in parallel).
        self._writers = writers
        self._conns: list[psycopg.AsyncConnection | None] = [None] * writers
        self._used = [0.0] * writers  # loop time each writer connection last committed
        self._queue: asyncio.Queue[_Write | None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._taking = asyncio.Lock()
        self.stats = WriteStats()
        self.on_commit: Callable[[int, float], None] | None = None
        self.healthy = True
        self.on_health: Callable[[bool], None] | None = None  # called when `healthy` changes

    # -- life cycle ---------------------------------------------------------------------

    async def connect(self) -> psycopg.AsyncConnection:
        return await psycopg.AsyncConnection.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=max(1, int(self._connect_timeout)),
            prepare_threshold=self._prepare_threshold,
        )

    async def open(self, setup: Callable[[psycopg.AsyncConnection], Awaitable[None]]) -> None:
        """Connect, run `setup` (the migrations) on the writer connection, start the writer."""
        self._conns[0] = await self.connect()
        await setup(self._conns[0])
        await self._pool.open(wait=True, timeout=self._connect_timeout)
        self._queue = asyncio.Queue()
        self._tasks = [
            self._supervisor.spawn(self._writer_loop(i), name=f"pushreach-db-writer-{i}", forever=True)
            for i in range(self._writers)
        ]

    async def close(self) -> None:
        if self._queue is not None and self._tasks:
            for task in self._tasks:
                self._supervisor.release(task)
            for _ in self._tasks:
                await self._queue.put(None)  # the writers finish what is queued, then stop
            await asyncio.gather(*self._tasks)
            self._tasks = []
        for i in range(self._writers):
            await self._drop_writer(i)
        await self._pool.close()

    def _set_healthy(self, healthy: bool) -> None:
        if healthy != self.healthy:
            self.healthy = healthy
            if healthy:
                log.warning("database reachable again")
            else:
                log.error("database unreachable; calls answer UNAVAILABLE until it returns")
            if self.on_health is not None:
                self.on_health(healthy)

    # -- group commit -------------------------------------------------------------------

    async def write(self, fn: Op[T]) -> T:
        if self._queue is None or not self._tasks or all(t.done() for t in self._tasks):
            raise RuntimeError("store is not open")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(fn, fut))
        return await fut

    def enqueue(self, fn: Op[Any]) -> asyncio.Future[Any]:
        """Queue a write without waiting: its future resolves after its commit."""
        if self._queue is None or not self._tasks or all(t.done() for t in self._tasks):
            raise RuntimeError("store is not open")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Write(fn, fut))
        return fut

    async def _writer_loop(self, index: int) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            # One writer at a time takes from the queue, and takes all that is there: calls
            # made together share a transaction instead of one writer each.
            async with self._taking:
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
            started = loop.time()
            try:
                await self._commit_batch(batch, index)
                self._set_healthy(True)
            except asyncio.CancelledError:
                for w in batch:
                    if not w.future.done():
                        w.future.cancel()
                raise
            except Exception as exc:  # the commit itself failed: nothing in it is known durable
                if is_connection_error(exc):
                    self._set_healthy(False)
                    error: BaseException = unavailable(exc)
                    await self._drop_writer(index)
                else:
                    log.error("store commit failed: %s", exc)
                    error = exc
                for w in batch:
                    w.error = w.error if isinstance(w.error, DomainError) else error
            self._account(len(batch), loop.time() - started)
            for w in batch:
                if w.future.done():  # the caller was cancelled; the write still happened
                    continue
                if w.error is not None:
                    w.future.set_exception(w.error)
                else:
                    w.future.set_result(w.result)

    async def _drop_writer(self, index: int) -> None:
        conn, self._conns[index] = self._conns[index], None
        if conn is not None:
            try:
                await conn.close()
            except Exception:
                pass

    async def _writer_conn(self, index: int) -> psycopg.AsyncConnection:
        conn = self._conns[index]
        if conn is not None and not conn.closed and not conn.broken:
            # A connection idle for a while may have been cut (a server restart) without
            # knowing it: check it first, so a batch never fails on a stale connection.
            if asyncio.get_running_loop().time() - self._used[index] < _IDLE_CHECK:
                return conn
            try:
                await conn.execute("SELECT 1")
                return conn
            except psycopg.Error:
                await self._drop_writer(index)
        self._conns[index] = None
        conn = self._conns[index] = await self.connect()
        return conn

    def _account(self, size: int, seconds: float) -> None:
        self.stats.commits += 1
        self.stats.writes += size
        self.stats.last_batch = size
        if self.on_commit is not None:
            self.on_commit(size, seconds)

    async def _commit_batch(self, batch: list[_Write], index: int) -> None:
        conn = await self._writer_conn(index)
        self._used[index] = asyncio.get_running_loop().time()
        async with conn.transaction():
            for w in batch:
                w.result, w.error = None, None
                try:
                    async with conn.transaction():  # a savepoint
                        w.result = await w.fn(conn)
                except Exception as exc:
                    if is_connection_error(exc) or conn.broken:
                        raise
                    w.error = exc if isinstance(exc, DomainError) else _domain(exc)

    # -- reads and engine transactions on the pool ----------------------------------------

    async def read(self, fn: Op[T]) -> T:
        """`fn` on a pool connection in autocommit mode (each statement sees committed data)."""
        try:
            async with self._pool.connection() as conn:
                result = await fn(conn)
        except Exception as exc:
            if is_connection_error(exc):
                await self._lost(exc)
                raise unavailable(exc) from exc
            raise
        if not self.healthy:
            self._set_healthy(True)
        return result

    async def transaction(self, fn: Op[T]) -> T:
        """`fn` in its own transaction on a pool connection; retried after a deadlock or a
        serialization failure (another instance took the same rows)."""
        for attempt in range(_RETRIES):
            try:
                async with self._pool.connection() as conn:
                    async with conn.transaction():
                        result = await fn(conn)
                if not self.healthy:
                    self._set_healthy(True)
                return result
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                if attempt == _RETRIES - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
            except Exception as exc:
                if is_connection_error(exc):
                    await self._lost(exc)
                    raise unavailable(exc) from exc
                raise
        raise AssertionError("unreachable")

    async def _lost(self, exc: BaseException) -> None:
        """A pool call failed for want of a connection. A pool that is only busy (every
        connection taken) answers this call UNAVAILABLE but leaves health alone; one that
        cannot reach the server turns health NOT_SERVING."""
        if isinstance(exc, PoolTimeout):
            try:
                conn = await self.connect()
            except Exception:
                self._set_healthy(False)
                return
            await conn.close()
            return
        self._set_healthy(False)


async def lock_keys(conn: psycopg.AsyncConnection, keys: list[str]) -> None:
    """Transaction-level advisory locks on `keys`, taken in one order, so two transactions
    locking some of the same keys wait for each other instead of deadlocking."""
    if keys:
        await conn.execute(
            "SELECT count(pg_advisory_xact_lock(k)) FROM "
            "(SELECT hashtextextended(x, 0) AS k FROM unnest(%s::text[]) AS x ORDER BY 1) s",
            (sorted(set(keys)),),
        )


def _domain(exc: Exception) -> Exception:
    """A statement error that concerns one write only: itself, unless it is a lock conflict
    with another instance, which the caller may retry."""
    if isinstance(exc, pg_errors.DeadlockDetected | pg_errors.SerializationFailure):
        return Unavailable("conflicting write on another instance; retry")
    return exc

"""PostgreSQL driver choice: psycopg 3 (async, psycopg-pool) against asyncpg on our ingest shape.

Both drivers run the same work against the same server, alternating, in one run:
- "push writes": `concurrency` callers each submit what one Push stores (the push row with its
  spec JSON, one target, the idempotency row) and wait for its commit; one writer connection
  takes whatever is queued and runs it in one transaction, each write in its own savepoint
  (the store's group commit);
- "point reads": `concurrency` callers read a push and its targets through a pool of 4
  connections (GetPush, the authenticator's app lookup).
The figure is psycopg's rate; the baseline is asyncpg's; ratio > 1 means psycopg is faster.

    python -m bench pgdriver [--quick]      (PUSHREACH_BENCH_POSTGRES_DSN, default the local server)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from .common import Config, Figure

DSN = os.environ.get("PUSHREACH_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
SCHEMA = """
CREATE TABLE pushes (id BIGSERIAL PRIMARY KEY, app_id BIGINT NOT NULL, push_id TEXT NOT NULL UNIQUE,
    request_id TEXT NOT NULL, spec TEXT NOT NULL, accepted_at DOUBLE PRECISION NOT NULL,
    target_count INTEGER NOT NULL, fallback_state SMALLINT NOT NULL, fallback_due_at DOUBLE PRECISION);
CREATE TABLE targets (push BIGINT NOT NULL, token TEXT NOT NULL, seq INTEGER NOT NULL,
    account TEXT NOT NULL DEFAULT '', PRIMARY KEY (push, token));
CREATE TABLE idempotency (app_id BIGINT NOT NULL, method TEXT NOT NULL, request_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL, response TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (app_id, method, request_id));
"""
SPEC = json.dumps({"audience_type": 1, "message": {"title": "Payment received", "content": "x" * 120},
                   "resend_by_sms": True, "sms_info": {"delay_trigger_time": 300, "sms_template_id": "123456"}})
# One statement per Push (as the store writes it): the push row, its target, its idempotency row.
INSERT_PUSH = (
    "WITH p AS (INSERT INTO pushes (app_id, push_id, request_id, spec, accepted_at, target_count, fallback_state, "
    "fallback_due_at) VALUES ({0}, {1}, {2}, {3}, {4}, 1, 2, {5}) RETURNING id), "
    "t AS (INSERT INTO targets (push, token, seq) SELECT id, {6}, 0 FROM p), "
    "i AS (INSERT INTO idempotency (app_id, method, request_id, fingerprint, response, created_at) "
    "VALUES ({0}, 'Push', {2}, 'fp', '{{\"push_id\": \"x\"}}', {4})) SELECT id FROM p"
)
READ_PUSH = "SELECT id, push_id, spec, accepted_at, fallback_state FROM pushes WHERE push_id = {}"
READ_TARGETS = "SELECT token FROM targets WHERE push = {} ORDER BY seq"


def _sql(template: str, style: str) -> str:
    n = len(set(re.findall(r"(?<!\{)\{(\d*)\}(?!\})", template)))
    if style == "psycopg":
        return template.format(*[f"%({i})s" for i in range(n)]) if "{0}" in template else template.format(*["%s"] * n)
    return template.format(*[f"${i + 1}" for i in range(n)])


class _GroupCommit:
    """The store's writer, driver-neutral: `run(batch)` commits a list of writes at once."""

    def __init__(self, run: Callable[[list[Any]], Awaitable[None]]) -> None:
        self._run = run
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future[None]]] = asyncio.Queue()
        self.commits = 0

    async def submit(self, args: Any) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((args, fut))
        await fut

    async def loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < 512:
                batch.append(self._queue.get_nowait())
            try:
                await self._run([a for a, _ in batch])
            except Exception as exc:
                for _, f in batch:
                    f.set_exception(exc)
                continue
            self.commits += 1
            for _, f in batch:
                f.set_result(None)


async def _closed_loop(op: Callable[[int], Awaitable[None]], concurrency: int, count: int) -> float:
    """`count` calls, `concurrency` at a time; calls per second."""
    it = iter(range(count))

    async def worker() -> None:
        for i in it:
            await op(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


def _push_args(tag: str, i: int) -> tuple[Any, ...]:
    now = time.time()
    return (1, f"{tag}-{i}", f"r-{tag}-{i}", SPEC, now, now + 300, f"tok-{tag}-{i}")


async def _psycopg(dsn: str, concurrency: int, count: int, tag: str, pipeline: bool = False) -> tuple[float, float]:
    import contextlib

    import psycopg
    from psycopg_pool import AsyncConnectionPool

    ins_push = _sql(INSERT_PUSH, "psycopg")
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)

    async def run(batch: list[tuple[Any, ...]]) -> None:
        # pipeline mode: statements go out without waiting for each answer (fetchone syncs)
        async with conn.pipeline() if pipeline else contextlib.nullcontext(), conn.transaction():
            for a in batch:
                async with conn.transaction():  # a savepoint: one write failing spares the others
                    cur = await conn.execute(ins_push, {str(i): v for i, v in enumerate(a)})
                    assert await cur.fetchone() is not None

    gc = _GroupCommit(run)
    writer = asyncio.create_task(gc.loop())
    try:
        writes = await _closed_loop(lambda i: gc.submit(_push_args(tag, i)), concurrency, count)
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await conn.close()
    read_push, read_targets = _sql(READ_PUSH, "psycopg"), _sql(READ_TARGETS, "psycopg")
    async with AsyncConnectionPool(dsn, min_size=4, max_size=4, open=False, kwargs={"autocommit": True}) as pool:

        async def read(i: int) -> None:
            async with pool.connection() as c:
                cur = await c.execute(read_push, (f"{tag}-{i % count}",))
                row = await cur.fetchone()
                assert row is not None
                await (await c.execute(read_targets, (row[0],))).fetchall()

        reads = await _closed_loop(read, concurrency, count)
    return writes, reads


async def _asyncpg(dsn: str, concurrency: int, count: int, tag: str) -> tuple[float, float]:
    import asyncpg

    ins_push = _sql(INSERT_PUSH, "asyncpg")
    conn = await asyncpg.connect(dsn)

    async def run(batch: list[tuple[Any, ...]]) -> None:
        async with conn.transaction():
            for a in batch:
                async with conn.transaction():  # a savepoint, as above
                    assert await conn.fetchval(ins_push, *a) is not None

    gc = _GroupCommit(run)
    writer = asyncio.create_task(gc.loop())
    try:
        writes = await _closed_loop(lambda i: gc.submit(_push_args(tag, i)), concurrency, count)
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await conn.close()
    read_push, read_targets = _sql(READ_PUSH, "asyncpg"), _sql(READ_TARGETS, "asyncpg")
    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=4)
    try:

        async def read(i: int) -> None:
            async with pool.acquire() as c:
                row = await c.fetchrow(read_push, f"{tag}-{i % count}")
                assert row is not None
                await c.fetch(read_targets, row[0])

        reads = await _closed_loop(read, concurrency, count)
    finally:
        await pool.close()
    return writes, reads


async def _measure(cfg: Config) -> list[Figure]:
    import psycopg

    concurrency = 64
    count = 2_000 if cfg.quick else 20_000
    db = f"pushreach_bench_driver_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{db}"')
    dsn = DSN.rsplit("/", 1)[0] + "/" + db
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
            await c.execute(SCHEMA)
        best: dict[str, list[float]] = {"psycopg": [0.0, 0.0], "asyncpg": [0.0, 0.0], "pipeline": [0.0, 0.0]}

        async def piped(dsn: str, concurrency: int, count: int, tag: str) -> tuple[float, float]:
            return await _psycopg(dsn, concurrency, count, tag, pipeline=True)

        for r in range(cfg.rounds):  # alternate, keep the best of each
            for name, fn in (("psycopg", _psycopg), ("asyncpg", _asyncpg), ("pipeline", piped)):
                w, rd = await fn(dsn, concurrency, count, f"{name}{r}")
                best[name] = [max(best[name][0], w), max(best[name][1], rd)]
    finally:
        async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as admin:
            await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    extra = {"concurrency": concurrency, "count": count}
    return [
        Figure("pgdriver", "push writes, group commit (psycopg 3)", best["psycopg"][0], "writes/s",
               "asyncpg", best["asyncpg"][0], extra=extra),
        Figure("pgdriver", "push writes, group commit (psycopg 3, pipeline mode)", best["pipeline"][0], "writes/s",
               "asyncpg", best["asyncpg"][0], extra=extra),
        Figure("pgdriver", "point reads, pool of 4 (psycopg 3)", best["psycopg"][1], "reads/s",
               "asyncpg", best["asyncpg"][1], extra=extra),
    ]


def run(cfg: Config) -> list[Figure]:
    return asyncio.run(_measure(cfg))

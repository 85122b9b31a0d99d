"""Push ingest on PostgreSQL: against SQLite, and two instances against one.

- "PostgreSQL vs SQLite": the same client (single-target Push with an SMS fallback, 64 callers)
  against `pushreach serve --db postgresql://...` and against `--db FILE`, alternating.
- "two instances vs one": two `pushreach serve` processes on one PostgreSQL database, the
  callers spread over both (as a load balancer would), against one instance alone.

Needs a PostgreSQL server (PUSHREACH_BENCH_POSTGRES_DSN, default the local one); each run
creates its own database and drops it afterwards.

    python -m bench pgingest [--quick]
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import uuid
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import grpc
from pushreach import basic_auth as basic
from pushreach.v1 import push_pb2_grpc

from . import procs
from .common import Config, Figure
from .load import CHANNEL_OPTIONS, Run, closed_loop, push_request
from .pgdriver import DSN


@contextmanager
def _database() -> Iterator[str]:
    import psycopg

    name = f"pushreach_bench_ingest_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield DSN.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _create_app(db: str, key: Path) -> tuple[str, str]:
    out = subprocess.run(
        [procs.PY, "-m", "pushreachd", "apps", "create", "bench", "--db", db, "--master-key-file", str(key), "--json"],
        env=procs.ENV, check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    d = json.loads(out)
    return d["access_id"], d["secret_key"]


@contextmanager
def _serve(db: str, key: Path, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = procs.free_port()
    proc = subprocess.Popen(
        [procs.PY, "-m", "pushreachd", "serve", "--db", db, "--master-key-file", str(key),
         "--listen", f"127.0.0.1:{port}", "--min-delay-seconds", "1", "--log-level", "WARNING"],
        env=procs.ENV, stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
    )
    try:
        target = f"127.0.0.1:{port}"
        procs.wait_serving(target, proc)
        yield target, proc
    finally:
        procs.stop(proc)


async def _spread_run(targets: list[str], md: tuple, *, concurrency: int, count: int, seconds: float,
                      offset: int) -> Run:
    """Single-target pushes, call i to targets[i % len(targets)]: the client spread evenly."""
    channels = [grpc.aio.insecure_channel(t, options=CHANNEL_OPTIONS) for t in targets]
    try:
        stubs = [push_pb2_grpc.PushServiceStub(c) for c in channels]
        requests = [push_request([f"tok-{offset + i}"]) for i in range(count)]

        async def call(i: int) -> None:
            await stubs[i % len(stubs)].Push(requests[i], metadata=md, timeout=30)

        await closed_loop(call, concurrency=min(concurrency, 8), count=min(count, 50), seconds=5)  # warm-up
        return await closed_loop(call, concurrency=concurrency, count=count, seconds=seconds)
    finally:
        for c in channels:
            await c.close()


def run(cfg: Config) -> list[Figure]:
    q = cfg.quick
    count, seconds, conc = (3000, 8.0, 64) if q else (15000, 20.0, 64)
    rounds = 1 if q else cfg.rounds
    best = {"sqlite": Run(), "pg1": Run(), "pg2": Run()}
    with tempfile.TemporaryDirectory(prefix="pushreach-bench-") as tmp, _database() as dsn, ExitStack() as stack:
        key = Path(tmp) / "master.key"
        sqlite_db = str(Path(tmp) / "ingest.db")
        md_sqlite = basic(*_create_app(sqlite_db, key))
        md_pg = basic(*_create_app(dsn, key))
        lite, _ = stack.enter_context(_serve(sqlite_db, key, Path(tmp) / "sqlite.log"))
        pg_a, _ = stack.enter_context(_serve(dsn, key, Path(tmp) / "pg-a.log"))
        pg_b, _ = stack.enter_context(_serve(dsn, key, Path(tmp) / "pg-b.log"))
        for r in range(rounds):
            for name, targets, md in (("sqlite", [lite], md_sqlite), ("pg1", [pg_a], md_pg), ("pg2", [pg_a, pg_b], md_pg)):
                res = asyncio.run(_spread_run(targets, md, concurrency=conc, count=count, seconds=seconds,
                                              offset=(r * 3 + len(name)) * count * 10))
                if res.rate > best[name].rate:
                    best[name] = res
    s, one, two = best["sqlite"], best["pg1"], best["pg2"]

    def extra(x: Run) -> dict[str, object]:
        return {"concurrency": conc, "calls": x.calls, "errors": x.errors, "first_error": x.first_error,
                "p50_ms": x.pct(50) * 1e3, "p99_ms": x.pct(99) * 1e3}

    return [
        Figure("push ingest", "single-target Push, durable, on PostgreSQL", one.rate, "req/s",
               baseline="the same on SQLite", baseline_value=s.rate, extra=extra(one)),
        Figure("push ingest", "two instances on one PostgreSQL, client spread over both", two.rate, "req/s",
               baseline="one instance on PostgreSQL", baseline_value=one.rate, extra=extra(two)),
    ]

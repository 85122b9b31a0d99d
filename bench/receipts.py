"""Device receipts through `POST /v1/receipts` (single and batches of 100) against an aiohttp
no-op handler, in the same run.

`pushreach serve` runs with the HTTP API on and its HTTP budgets off (they are an operator's
choice, not a capacity); pushes with 1,000 tokens are made over gRPC, and this process mints
their receipts with the same database and master key (exactly the receipts the log channel
delivered). Each receipt is reported once as an arrival: every report is verified (HMAC) and
recorded durably. The no-op server (`bench.noop_http`) gets the same bodies.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import grpc
from pushreach import basic_auth as basic
from pushreach.v1 import push_pb2_grpc

from . import procs
from .common import Config, Figure
from .load import CHANNEL_OPTIONS, Run, push_request

HTTP_ENV = {"PUSHREACH_HTTP_ADDRESS_RATE_LIMIT": "0", "PUSHREACH_HTTP_TOKEN_RATE_LIMIT": "0"}


def _wait_http(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("HTTP server exited before serving")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not listening after {timeout}s")


async def _make_pushes(target: str, md: tuple, count: int) -> list[str]:
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as ch:
        stub = push_pb2_grpc.PushServiceStub(ch)
        request = push_request([f"tok-{j}" for j in range(1000)])
        return [(await stub.Push(request, metadata=md, timeout=60)).push_id for _ in range(count)]


async def _mint(db: Path, access_id: str, push_ids: list[str]) -> list[str]:
    from pushreachd.clock import SystemClock
    from pushreachd.secrets import SecretBox, load_master_key
    from pushreachd.services.receipts import Receipts
    from pushreachd.store.sqlite import SqliteStore

    store = SqliteStore(str(db))
    await store.open()
    try:
        app = await store.get_app(access_id)
        assert app is not None
        receipts = Receipts(store, SecretBox(load_master_key("", f"{db}.key")), SystemClock())
        expires = time.time() + 86400
        return [await receipts.mint(app.id, p, f"tok-{j}", expires) for p in push_ids for j in range(1000)]
    finally:
        await store.close()


async def _post_run(url: str, bodies: list[bytes], per_body: int, *, concurrency: int, seconds: float) -> tuple[Run, int]:
    run = Run()
    accepted = 0
    next_index = 0
    deadline = time.perf_counter() + seconds
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def caller() -> None:
            nonlocal next_index, accepted
            while next_index < len(bodies) and time.perf_counter() < deadline:
                i = next_index
                next_index += 1
                t0 = time.perf_counter()
                async with session.post(url, data=bodies[i], headers=headers) as response:
                    text = await response.read()
                if response.status != 200:
                    run.errors += 1
                    run.first_error = run.first_error or f"{response.status}: {text[:200]!r}"
                    continue
                answer = json.loads(text)
                results = answer.get("results", [answer])
                accepted += sum(1 for r in results if r.get("outcome") == "ACCEPTED")
                run.latencies.append(time.perf_counter() - t0)
                run.calls += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        run.elapsed = time.perf_counter() - t0
    return run, accepted


def _bodies(receipts: list[str], per_body: int) -> list[bytes]:
    if per_body == 1:
        return [json.dumps({"receipt": r, "event": "arrived"}).encode() for r in receipts]
    return [
        json.dumps({"receipts": [{"receipt": r, "event": "arrived"} for r in receipts[i : i + per_body]]}).encode()
        for i in range(0, len(receipts) - per_body + 1, per_body)
    ]


def run(cfg: Config) -> list[Figure]:
    q = cfg.quick
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="pushreach-bench-") as tmp:
        db = Path(tmp) / "receipts.db"
        access_id, secret = procs.create_app(db)
        http_port, noop_port = procs.free_port(), procs.free_port()
        env_before = dict(procs.ENV)
        procs.ENV.update(HTTP_ENV)
        try:
            server_ctx = procs.pushreach(db, "--http-listen", f"127.0.0.1:{http_port}")
            with server_ctx as (target, server):
                _wait_http(http_port, server)
                single_n, batch_n = (3_000, 20_000) if q else (20_000, 200_000)
                push_ids = asyncio.run(_make_pushes(target, basic(access_id, secret), (single_n + batch_n) // 1000 + 1))
                receipts = asyncio.run(_mint(db, access_id, push_ids))
                noop = subprocess.Popen([procs.PY, "-m", "bench.noop_http", f"127.0.0.1:{noop_port}"], env=procs.ENV)
                try:
                    _wait_http(noop_port, noop)
                    seconds = 10.0 if q else 30.0
                    for label, per_body, pool, conc in (
                        ("single receipt per request", 1, receipts[:single_n], 32),
                        ("batches of 100 receipts", 100, receipts[single_n : single_n + batch_n], 8),
                    ):
                        bodies = _bodies(pool, per_body)
                        n_cpu = procs.cpu_seconds(noop.pid)
                        n, _ = asyncio.run(_post_run(f"http://127.0.0.1:{noop_port}/v1/receipts", bodies, per_body,
                                                     concurrency=conc, seconds=seconds))
                        noop_cpu = procs.cpu_seconds(noop.pid) - n_cpu
                        t_cpu = procs.cpu_seconds(server.pid)
                        p, accepted = asyncio.run(_post_run(f"http://127.0.0.1:{http_port}/v1/receipts", bodies, per_body,
                                                            concurrency=conc, seconds=seconds))
                        server_cpu = procs.cpu_seconds(server.pid) - t_cpu
                        p_rate, n_rate = p.rate * per_body, n.rate * per_body
                        figures.append(Figure(
                            "device receipts", f"POST /v1/receipts, {label}, verified and durable", p_rate, "receipts/s",
                            baseline="aiohttp no-op handler, same bodies", baseline_value=n_rate,
                            extra={"requests": p.calls, "accepted": accepted, "errors": p.errors,
                                   "first_error": p.first_error, "concurrency": conc,
                                   "p50_ms": p.pct(50) * 1e3, "p99_ms": p.pct(99) * 1e3,
                                   "noop_p50_ms": n.pct(50) * 1e3,
                                   "server_cpu_ms_per_receipt": 1e3 * server_cpu / max(1, p.calls * per_body),
                                   "noop_cpu_ms_per_receipt": 1e3 * noop_cpu / max(1, n.calls * per_body)},
                        ))
                finally:
                    procs.stop(noop)
        finally:
            procs.ENV.clear()
            procs.ENV.update(env_before)
    return figures

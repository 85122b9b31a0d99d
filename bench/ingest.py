"""Push ingest, push fan-out and event ingest: pushreach against a no-op grpc.aio servicer (and,
for the event stream, against the store's own ceiling: the same events written without gRPC).

The pushreach server (`pushreach serve`, real SQLite with synchronous=FULL, console SMS) and
the no-op server each run in their own process; the client harness runs in this process, so
client and server never share an event loop. Both servers get the same client and requests.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from pushreach import basic_auth as basic
from pushreach.v1 import event_pb2, event_pb2_grpc, push_pb2_grpc
from pushreachd.model import EventIn, EventType
from pushreachd.store.sqlite import SqliteStore

from . import procs
from .common import Config, Figure
from .load import CHANNEL_OPTIONS, Run, closed_loop, push_request


async def _push_run(target: str, md: tuple, *, tokens_per_push: int, concurrency: int, count: int,
                    seconds: float, offset: int) -> tuple[Run, list[str]]:
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as ch:
        stub = push_pb2_grpc.PushServiceStub(ch)
        if tokens_per_push == 1:
            requests = [push_request([f"tok-{offset + i}"]) for i in range(count)]
        else:
            fixed = push_request([f"tok-{j}" for j in range(tokens_per_push)])
            requests = [fixed] * count
        ids: list[str] = []

        async def call(i: int) -> None:
            r = await stub.Push(requests[i], metadata=md, timeout=30)
            ids.append(r.push_id)

        # warm up: connections, server caches, first-call costs
        await closed_loop(call, concurrency=min(concurrency, 8), count=min(count, 50), seconds=5)
        ids.clear()
        run = await closed_loop(call, concurrency=concurrency, count=count, seconds=seconds)
        return run, ids


def _event_messages(pairs: list[tuple[str, str]], per_message: int, event_type: int) -> list[event_pb2.ReportEventsRequest]:
    now = Timestamp()
    now.FromSeconds(int(time.time()))
    out = []
    for i in range(0, len(pairs), per_message):
        out.append(event_pb2.ReportEventsRequest(events=[
            event_pb2.Event(push_id=p, token=t, event_type=event_type, event_time=now)
            for p, t in pairs[i:i + per_message]
        ]))
    return out


async def _stream_run(target: str, md: tuple, messages: list, *, streams: int, per_stream: int,
                      seconds: float) -> tuple[Run, int, int]:
    """`streams` concurrent ReportEvents calls, each sending `per_stream` messages."""
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as ch:
        stub = event_pb2_grpc.EventServiceStub(ch)
        chunks = [messages[i:i + per_stream] for i in range(0, len(messages), per_stream)]
        accepted = 0
        sent = 0

        async def call(i: int) -> None:
            nonlocal accepted, sent
            chunk = chunks[i]

            async def gen():  # type: ignore[no-untyped-def]
                for m in chunk:
                    yield m

            r = await stub.ReportEvents(gen(), metadata=md, timeout=120)
            accepted += r.accepted_count
            sent += sum(len(m.events) for m in chunk)

        run = await closed_loop(call, concurrency=streams, count=len(chunks), seconds=seconds)
        return run, sent, accepted


async def _unary_events(target: str, md: tuple, pairs: list[tuple[str, str]], *, concurrency: int,
                        seconds: float) -> Run:
    now = Timestamp()
    now.FromSeconds(int(time.time()))
    requests = [
        event_pb2.ReportEventRequest(push_id=p, token=t, event_type=event_pb2.EVENT_TYPE_CLICKED, event_time=now)
        for p, t in pairs
    ]
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as ch:
        stub = event_pb2_grpc.EventServiceStub(ch)

        async def call(i: int) -> None:
            await stub.ReportEvent(requests[i], metadata=md, timeout=30)

        await closed_loop(call, concurrency=8, count=min(50, len(requests)), seconds=5)  # warm up
        return await closed_loop(call, concurrency=concurrency, count=len(requests) - 50, seconds=seconds)


class _CpuUsed:
    seconds: float = 0.0

    def per_call_us(self, calls: int) -> float:
        return self.seconds / max(1, calls) * 1e6


@contextmanager
def _server_cpu(pid: int) -> Iterator[_CpuUsed]:
    """Server CPU (all threads, user + system) used inside the block. Unlike req/s, it does not
    move with what else runs on the machine, so it tells two versions apart on a shared box."""
    used = _CpuUsed()
    t0 = procs.cpu_seconds(pid)
    try:
        yield used
    finally:
        used.seconds = procs.cpu_seconds(pid) - t0


def _cpu_extra(cpu: dict[str, list[float]]) -> dict[str, object]:
    """Server CPU per call of every round (includes the warm-up's 50 calls: <1 % of a round)."""
    return {"server_cpu_us_per_call": min(cpu["pushreach"]), "noop_cpu_us_per_call": min(cpu["noop"]),
            "server_cpu_us_rounds": [round(x) for x in cpu["pushreach"]],
            "noop_cpu_us_rounds": [round(x) for x in cpu["noop"]]}


def _cpu_figure(bench: str, metric: str, cpu: dict[str, list[float]]) -> Figure:
    """Server CPU per call beside the req/s row: the lowest round of each server."""
    return Figure(bench, metric, min(cpu["pushreach"]), "µs CPU/call", baseline="no-op server, same calls",
                  baseline_value=min(cpu["noop"]), target="- (for the req/s row above)",
                  extra={"server_cpu_us_rounds": [round(x) for x in cpu["pushreach"]],
                         "noop_cpu_us_rounds": [round(x) for x in cpu["noop"]]})


def _copy_store(db: Path, to: Path) -> None:
    """An online copy of the running server's SQLite store (the backup API, WAL included)."""
    src, dst = sqlite3.connect(db), sqlite3.connect(to)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


async def _store_ceiling(db: Path, messages: list[event_pb2.ReportEventsRequest], *, streams: int) -> tuple[int, float, float]:
    """Record `messages` through SqliteStore.record_events (one call per message, `streams`
    callers at once, as the server's stream handlers do): events, seconds taken and CPU seconds
    used (this process does nothing else meanwhile)."""
    store = SqliteStore(str(db))
    await store.open()
    try:
        (app_id,) = sqlite3.connect(db).execute("SELECT min(id) FROM apps").fetchone()
        batches = [
            [EventIn(e.push_id, e.token, EventType(e.event_type), e.event_time.seconds) for e in m.events]
            for m in messages
        ]
        queue = iter(batches)
        started, cpu0 = time.perf_counter(), time.process_time()

        async def caller() -> int:
            n = 0
            for batch in queue:
                await store.record_events(app_id, batch, time.time())
                n += len(batch)
            return n

        counts = await asyncio.gather(*(caller() for _ in range(streams)))
        return sum(counts), time.perf_counter() - started, time.process_time() - cpu0
    finally:
        await store.close()


def run(cfg: Config, which: set[str]) -> list[Figure]:
    figures: list[Figure] = []
    q = cfg.quick
    rounds = 1 if q else cfg.rounds
    with tempfile.TemporaryDirectory(prefix="pushreach-bench-") as tmp:
        db = Path(tmp) / "ingest.db"
        access_id, secret = procs.create_app(db)
        md = basic(access_id, secret)
        with procs.pushreach(db) as (target, server), procs.noop_server() as (noop, noop_proc):
            # -- push ingest ---------------------------------------------------------------
            if "push" in which:
                count, seconds, conc = (3000, 8.0, 64) if q else (15000, 20.0, 64)
                best = {"pushreach": Run(), "noop": Run()}
                cpu = {"pushreach": [], "noop": []}  # server CPU µs per call, every round
                for r in range(rounds):
                    for name, tgt, pid in (("noop", noop, noop_proc.pid), ("pushreach", target, server.pid)):
                        with _server_cpu(pid) as used:
                            res, _ = asyncio.run(_push_run(tgt, md, tokens_per_push=1, concurrency=conc,
                                                           count=count, seconds=seconds, offset=r * count))
                        cpu[name].append(used.per_call_us(res.calls))
                        if res.rate > best[name].rate:
                            best[name] = res
                p, n = best["pushreach"], best["noop"]
                figures.append(Figure(
                    "push ingest", "single-target Push, durable", p.rate, "req/s",
                    baseline="no-op grpc.aio servicer, same client", baseline_value=n.rate,
                    target=">= 0.8 x no-op", met=p.rate >= 0.8 * n.rate,
                    extra={"concurrency": conc, "calls": p.calls, "errors": p.errors, "first_error": p.first_error,
                           "p50_ms": p.pct(50) * 1e3, "p99_ms": p.pct(99) * 1e3,
                           "noop_p50_ms": n.pct(50) * 1e3, "noop_p99_ms": n.pct(99) * 1e3,
                           **_cpu_extra(cpu)},
                ))
                figures.append(_cpu_figure("push ingest", "server CPU per single-target Push", cpu))
            # -- fan-out (also makes the pushes the events below are about) ------------------
            push_ids: list[str] = []
            if "fanout" in which or "events" in which:
                count, seconds, conc = (60, 10.0, 8) if q else (250, 30.0, 8)
                t_cpu = procs.cpu_seconds(server.pid)
                p, push_ids = asyncio.run(_push_run(target, md, tokens_per_push=1000, concurrency=conc,
                                                    count=count, seconds=seconds, offset=0))
                server_cpu = procs.cpu_seconds(server.pid) - t_cpu
                n, _ = asyncio.run(_push_run(noop, md, tokens_per_push=1000, concurrency=conc,
                                             count=count, seconds=seconds, offset=0))
                if "fanout" in which:
                    figures.append(Figure(
                        "push fan-out", "Push with 1,000 tokens, durable", p.rate * 1000, "targets/s",
                        baseline="no-op servicer (for scale)", baseline_value=n.rate * 1000,
                        target=">= 100,000 targets/s", met=p.rate * 1000 >= 100_000,
                        extra={"pushes": p.calls, "errors": p.errors, "first_error": p.first_error,
                               "p50_ms": p.pct(50) * 1e3, "p99_ms": p.pct(99) * 1e3,
                               "server_cpu_s_per_1k_targets": server_cpu / max(1, p.calls)},
                    ))
            # -- event ingest --------------------------------------------------------------
            if "events" in which:
                pairs = [(pid, f"tok-{j}") for pid in push_ids for j in range(1000)]
                n_stream = min(len(pairs), 40_000 if q else 200_000)
                per_message, per_stream = 500, 20
                messages = _event_messages(pairs[:n_stream], per_message, event_pb2.EVENT_TYPE_ARRIVED)
                seconds = 20.0 if q else 60.0
                # The store's own ceiling: the same events through the same writer path, no gRPC,
                # on a copy of the store taken now (so they are fresh arrivals there too).
                ceiling_db = Path(tmp) / "ceiling.db"
                _copy_store(db, ceiling_db)
                with _server_cpu(server.pid) as used:
                    p, p_sent, p_accepted = asyncio.run(_stream_run(target, md, messages, streams=4,
                                                                    per_stream=per_stream, seconds=seconds))
                c_sent, c_seconds, c_cpu = asyncio.run(_store_ceiling(ceiling_db, messages, streams=4))
                p_rate, c_rate = p_sent / p.elapsed, c_sent / c_seconds
                figures.append(Figure(
                    "event ingest", "ReportEvents stream, 500 events/message, durable", p_rate, "events/s",
                    baseline="the store's own ceiling: same events, same writer, no gRPC", baseline_value=c_rate,
                    target=">= 100,000 events/s and >= 0.5 x the store's ceiling",
                    met=p_rate >= 100_000 and p_rate >= 0.5 * c_rate,
                    extra={"events": p_sent, "accepted": p_accepted, "streams": 4, "errors": p.errors,
                           "first_error": p.first_error},
                ))
                figures.append(Figure(
                    "event ingest", "server CPU per streamed event", used.per_call_us(p_sent), "µs CPU/event",
                    baseline="the store's ceiling: CPU per event, no gRPC", baseline_value=c_cpu / max(1, c_sent) * 1e6,
                    target="- (for the events/s row above)",
                ))
                n_unary = min(len(pairs), 5000 if q else 15000)
                conc = 64
                best = {"pushreach": Run(), "noop": Run()}
                cpu = {"pushreach": [], "noop": []}
                for r in range(rounds):
                    for name, tgt, pid in (("noop", noop, noop_proc.pid), ("pushreach", target, server.pid)):
                        lo = (r * n_unary) % max(1, len(pairs) - n_unary)  # fresh pairs each round
                        with _server_cpu(pid) as used:
                            res = asyncio.run(_unary_events(tgt, md, pairs[lo:lo + n_unary], concurrency=conc,
                                                            seconds=8.0 if q else 20.0))
                        cpu[name].append(used.per_call_us(res.calls))
                        if res.rate > best[name].rate:
                            best[name] = res
                p, n = best["pushreach"], best["noop"]
                figures.append(Figure(
                    "event ingest", "unary ReportEvent, durable", p.rate, "req/s",
                    baseline="no-op unary, same client", baseline_value=n.rate,
                    target=">= 0.8 x no-op", met=p.rate >= 0.8 * n.rate,
                    extra={"concurrency": conc, "calls": p.calls, "errors": p.errors, "first_error": p.first_error,
                           "p50_ms": p.pct(50) * 1e3, "p99_ms": p.pct(99) * 1e3, **_cpu_extra(cpu)},
                ))
                figures.append(_cpu_figure("event ingest", "server CPU per unary ReportEvent", cpu))
    return figures

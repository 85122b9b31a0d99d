"""Firing: a burst of due fallbacks, SMS through the Tencent provider to the loopback emulator.

N single-target pushes, each with a PENDING NOT_ARRIVED fallback and a device bound to its
own phone, are written by direct SQL with due times spread evenly over a window that opens a
few seconds after the server starts. pushreach (`--sms-provider tencent`, pointed at
`pushreach sms-emulator`) loads them on start and fires them. Meanwhile a probe sends one
single-target Push every 20 ms, before the burst (the baseline) and during it.

Afterwards the store says it all: fire lateness = sms_records.created_at (the fire's start,
when the phone was judged) - pushes.fallback_due_at; SMS numbers/s from the SENT records'
sent_at. Three processes (server, emulator, this client) share the machine's cores.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

import grpc
from pushreach import basic_auth as basic
from pushreach.v1 import push_pb2_grpc
from pushreachd.model import FallbackState, SmsStatus

from . import dbgen, procs
from .common import Config, Figure
from .load import CHANNEL_OPTIONS, percentile, push_request

SECRET_ID, SECRET_KEY = "AKIDbenchmark000000000000000000000", "benchmark-secret-key-000000000000"


async def _probe(target: str, md: tuple, db: Path, n: int, until: float) -> tuple[list[tuple[float, float]], int]:
    """Push every 20 ms until every fallback is done (or `until`); (sent_at, latency) each."""
    samples: list[tuple[float, float]] = []
    done = 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30, check_same_thread=False)
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as ch:
        stub = push_pb2_grpc.PushServiceStub(ch)
        last_check = 0.0
        i = 0
        while time.time() < until:
            t0 = time.perf_counter()
            sent_at = time.time()
            await stub.Push(push_request([f"probe-{i}"]), metadata=md, timeout=30)
            samples.append((sent_at, time.perf_counter() - t0))
            i += 1
            if sent_at - last_check > 0.5:
                last_check = sent_at
                (done,) = await asyncio.to_thread(
                    lambda: conn.execute(
                        "SELECT count(*) FROM pushes WHERE fallback_state=? AND push_id LIKE 'b%'",
                        (int(FallbackState.DONE),),
                    ).fetchone()
                )
                if done >= n:
                    break
            await asyncio.sleep(max(0.0, 0.02 - (time.perf_counter() - t0)))
    conn.close()
    return samples, done


def _results(db: Path) -> tuple[list[tuple[float, float]], list[float]]:
    """([(due_at, lateness)] per fired fallback, [sent_at] of every SENT number)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        late = conn.execute(
            "SELECT p.fallback_due_at, r.created_at - p.fallback_due_at FROM sms_records r "
            "JOIN pushes p ON p.id = r.push ORDER BY p.fallback_due_at"
        ).fetchall()
        sent = [r[0] for r in conn.execute(
            "SELECT sent_at FROM sms_records WHERE status=? ORDER BY sent_at", (int(SmsStatus.SENT),))]
        return late, sent
    finally:
        conn.close()


def plot(late: list[tuple[float, float]], t0: float, window: float, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [lt * 1000 for _, lt in late]
    p50, p99 = percentile(values, 50), percentile(values, 99)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    a.hist(values, bins=60, color="tab:blue")
    a.set_yscale("log")
    for v, name, style in ((p50, "p50", "--"), (p99, "p99", ":")):
        a.axvline(v, color="black", linestyle=style, linewidth=1, label=f"{name} {v:,.0f} ms")
    a.set_xlabel("fire lateness (ms)")
    a.set_ylabel("fallbacks")
    a.set_title(f"{len(values):,} fallbacks due within {window:g} s")
    a.legend()
    step = max(1, len(late) // 5000)
    b.plot([d - t0 for d, _ in late[::step]], [lt * 1000 for _, lt in late[::step]], ".", markersize=2)
    b.set_xlabel("due time (s from the first)")
    b.set_ylabel("fire lateness (ms)")
    b.set_title("lateness over the burst")
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(cfg: Config, plots: bool = True, n: int = 0, window: float = -1.0) -> list[Figure]:
    """`n`, `window`: another burst than the default (e.g. 100,000 within 60 s)."""
    dn, dwindow, lead, limit = (10_000, 6.0, 5.0, 90.0) if cfg.quick else (100_000, 60.0, 6.0, 150.0)
    n, window = n or dn, dwindow if window < 0 else window
    with tempfile.TemporaryDirectory(prefix="pushreach-bench-") as tmp:
        db = Path(tmp) / "firing.db"
        access_id, secret = procs.create_app(db)
        procs.set_sms_credentials(db, access_id, SECRET_ID, SECRET_KEY)
        md = basic(access_id, secret)
        now = time.time()
        # Due "fraction of the window" first, made absolute just before the server starts.
        dbgen.add_pending(db, n, lambda i: i / n, accepted_at=now - 1, delay=1, phones=True)
        with procs.sms_emulator(SECRET_ID, SECRET_KEY) as endpoint:
            t0 = time.time() + lead
            conn = sqlite3.connect(db, isolation_level=None)
            conn.execute("UPDATE pushes SET fallback_due_at = ? + fallback_due_at * ? WHERE push_id LIKE 'b%'",
                         (t0, window))
            conn.close()
            with procs.pushreach(db, "--sms-provider", "tencent", "--tencent-sms-endpoint", endpoint) as (target, _):
                started = time.time()
                samples, done = asyncio.run(_probe(target, md, db, n, until=t0 + window + limit))
        late, sent = _results(db)
    lat = [lt for _, lt in late]
    idle = [l for s, l in samples if s < t0 - 0.2]
    burst_end = max((d + lt for d, lt in late), default=t0 + window)
    during = [l for s, l in samples if t0 <= s <= burst_end]
    span = (sent[-1] - sent[0]) if len(sent) > 1 else 0.0
    rate = len(sent) / span if span > 0 else 0.0
    per_second: dict[int, int] = {}
    for s in sent:
        per_second[int(s)] = per_second.get(int(s), 0) + 1
    if plots and late:
        plot(late, t0, window, str(procs.ROOT / "docs" / "img" / "fire-lateness.png"))
    common = {"fallbacks": n, "window_s": window, "fired": len(late), "done": done,
              "server_start_before_window_s": t0 - started}
    return [
        Figure("firing", f"fire lateness p50 ({n:,} due within {window:g} s)", percentile(lat, 50), "s",
               target="-", extra=common),
        Figure("firing", f"fire lateness p99 ({n:,} due within {window:g} s)", percentile(lat, 99), "s",
               target="<= 1 s", met=percentile(lat, 99) <= 1.0, extra={"max_s": max(lat, default=float("nan"))}),
        Figure("firing", "SMS numbers/s (first to last SENT)", rate, "numbers/s",
               target=">= 10,000 numbers/s", met=rate >= 10_000,
               extra={"sent": len(sent), "peak_1s": max(per_second.values(), default=0),
                      "arrival_rate_per_s": n / window if window else float("inf")}),
        Figure("firing", "Push p99 latency during the burst", percentile(during, 99) * 1e3, "ms",
               baseline="Push p99 before the burst, same probe", baseline_value=percentile(idle, 99) * 1e3,
               target="<= 50 ms", met=percentile(during, 99) <= 0.05,
               extra={"probes_during": len(during), "probes_before": len(idle),
                      "p50_during_ms": percentile(during, 50) * 1e3, "p50_before_ms": percentile(idle, 50) * 1e3}),
    ]


def run_capacity(cfg: Config) -> list[Figure]:
    """The SMS capacity: every fallback due at once (as after a downtime), so the pipeline, not
    the arrival rate, sets the pace."""
    n = 5_000 if cfg.quick else 20_000
    figures = run(cfg, plots=False, n=n, window=0.0)
    keep = {"SMS numbers/s (first to last SENT)": f"SMS numbers/s, {n:,} due at once",
            f"fire lateness p99 ({n:,} due within 0 s)": f"fire lateness p99, {n:,} due at once"}
    out = []
    for f in figures:
        if f.metric in keep:
            f.bench, f.metric = "firing capacity", keep[f.metric]
            if f.metric.startswith("fire lateness"):
                f.target, f.met = "-", None  # everything is late by the time it takes: reported, not judged
            out.append(f)
    return out


if __name__ == "__main__":  # python -m bench.firing [N [WINDOW_SECONDS]]
    import json
    import sys

    args = sys.argv[1:]
    for fig in run(Config(), plots=False, n=int(args[0]) if args else 0, window=float(args[1]) if len(args) > 1 else -1.0):
        print(json.dumps({"metric": fig.metric, "value": fig.value, "unit": fig.unit, **(fig.extra or {})}))

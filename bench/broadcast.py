"""Broadcast: one ALL push to N devices (1,000,000 by default), each bound to its own phone.

The devices are inserted by direct SQL; pushreach (`--sms-provider tencent`, pointed at the
loopback `pushreach sms-emulator`) then takes one Push with AUDIENCE_TYPE_ALL and an SMS
fallback (NOT_ARRIVED, 5 s). Figures:
- accept time: the Push RPC's latency as the client sees it, beside a one-token Push's
  latency in the same run (the baseline): the targets are resolved after the answer;
- delivery rate: targets found, stored and handed to the push channel per second (accepted
  until the resolution's end, from the store);
- fallback SMS/s: numbers SENT per second, first to last, and when the fallback ended.
No device reports arrival, so every phone is judged to need its SMS: N SMS in all.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

import grpc
from pushreach import basic_auth as basic
from pushreach.v1 import push_pb2, push_pb2_grpc
from pushreachd.model import SmsStatus
from pushreachd.store.sqlite.migrations import migrate

from . import procs
from .common import Config, Figure
from .load import CHANNEL_OPTIONS, push_request

SECRET_ID, SECRET_KEY = "AKIDbenchmark000000000000000000000", "benchmark-secret-key-000000000000"
DELAY = 5


def add_devices(db: Path, n: int) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        migrate(conn)
        (app_id,) = conn.execute("SELECT min(id) FROM apps").fetchone()
        now = time.time()
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO devices (app_id, token, phone, updated_at) VALUES (?,?,?,?)",
            ((app_id, f"dev-{i:07d}", f"+86139{i:08d}", now) for i in range(n)),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


async def _push(target: str, md: tuple, rounds: int) -> tuple[float, list[float], str]:
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as ch:
        stub = push_pb2_grpc.PushServiceStub(ch)
        single = []
        for i in range(rounds):  # the baseline: a one-token push (fallback an hour away), same server
            t0 = time.perf_counter()
            await stub.Push(push_request([f"one-{i}"]), metadata=md, timeout=30)
            single.append(time.perf_counter() - t0)
        r = push_request([], DELAY)
        r.audience_type = push_pb2.AUDIENCE_TYPE_ALL
        t0 = time.perf_counter()
        answer = await stub.Push(r, metadata=md, timeout=30)
        return time.perf_counter() - t0, single, answer.push_id


def _wait(db: Path, push_id: str, limit: float) -> dict[str, float]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        deadline = time.time() + limit
        while time.time() < deadline:
            row = conn.execute(
                "SELECT accepted_at, delivered_at, fallback_state, fallback_ended_at, target_count, fallback_due_at "
                "FROM pushes WHERE push_id=?", (push_id,)).fetchone()
            if row and row[3] is not None:
                break
            time.sleep(0.5)
        accepted, delivered, _, ended, targets, due = row
        sent = conn.execute(
            "SELECT count(*), min(sent_at), max(sent_at), min(created_at) FROM sms_records r JOIN pushes p "
            "ON p.id = r.push WHERE p.push_id=? AND r.status=?", (push_id, int(SmsStatus.SENT))).fetchone()
        return {"accepted": accepted, "delivered": delivered or float("nan"), "ended": ended or float("nan"),
                "targets": targets, "due": due, "sent": sent[0], "first_sent": sent[1] or 0.0,
                "last_sent": sent[2] or 0.0, "judged": sent[3] or float("nan")}
    finally:
        conn.close()


def run(cfg: Config, n: int = 0) -> list[Figure]:
    n = n or (100_000 if cfg.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="pushreach-bench-") as tmp:
        db = Path(tmp) / "broadcast.db"
        access_id, secret = procs.create_app(db)
        procs.set_sms_credentials(db, access_id, SECRET_ID, SECRET_KEY)
        add_devices(db, n)
        with procs.sms_emulator(SECRET_ID, SECRET_KEY) as endpoint:
            with procs.pushreach(db, "--sms-provider", "tencent", "--tencent-sms-endpoint", endpoint) as (target, _):
                accept, single, push_id = asyncio.run(_push(target, basic(access_id, secret), 20))
                r = _wait(db, push_id, limit=1800)
    single.sort()
    baseline = single[len(single) // 2]
    resolve_s = r["delivered"] - r["accepted"]
    sms_span = r["last_sent"] - r["first_sent"]
    sms_rate = r["sent"] / sms_span if sms_span > 0 else 0.0
    extra = {"devices": n, "targets": r["targets"], "sms_sent": r["sent"], "resolution_s": resolve_s,
             "fallback_judged_after_due_s": r["judged"] - r["due"],
             "fallback_end_after_accept_s": r["ended"] - r["accepted"]}
    return [
        Figure("broadcast", f"ALL push to {n:,} devices: accept time", accept * 1e3, "ms",
               baseline="one-token Push, median of 20, same server", baseline_value=baseline * 1e3,
               target="well under 1 s", met=accept < 0.5, extra=extra),
        Figure("broadcast", "delivery rate (targets resolved, stored, handed to the channel)",
               r["targets"] / resolve_s if resolve_s > 0 else 0.0, "targets/s", target="-", extra=extra),
        Figure("broadcast", "fallback SMS/s for that broadcast (first to last SENT)", sms_rate, "numbers/s",
               target="-", extra=extra),
    ]


if __name__ == "__main__":  # python -m bench.broadcast [N]
    import json
    import sys

    for fig in run(Config(), n=int(sys.argv[1]) if len(sys.argv) > 1 else 0):
        print(json.dumps({"metric": fig.metric, "value": fig.value, "unit": fig.unit, **fig.extra}))

"""Firing on PostgreSQL: due fallbacks across three instances, against one instance.

On one fresh PostgreSQL database (PUSHREACH_BENCH_POSTGRES_DSN, default the local server),
in one run: N single-target pushes, each with a PENDING NOT_ARRIVED fallback and a device
bound to its own phone, are written by direct SQL (COPY) with every fallback due at once a
few seconds after the servers start; first one `pushreach serve` fires them, then N more
(other phones) are fired by three `pushreach serve` processes on the same database, every one
of which loads and arms all of them: the claims (`FOR UPDATE SKIP LOCKED`) split the work.
SMS go through `--sms-provider tencent` to one SMS emulator, run here as a subprocess that
counts what each number received.

Reported: SMS numbers/s (first to last SENT record) of three instances against one; fire
lateness p99; and that every phone got exactly one SMS, counted both in the store (records)
and at the emulator (the handsets' view). Servers, emulator, PostgreSQL and this client share
the machine's cores.

    python -m bench pgfire [--quick]
    python -m bench.pgfire [N]           # another count per phase (default 100,000)
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

from pushreachd.model import FallbackState, SmsStatus

from . import dbgen, procs
from .common import Config, Figure
from .firing import SECRET_ID, SECRET_KEY
from .load import percentile
from .pgingest import _create_app, _database


@contextmanager
def _serve(db: str, key: Path, log: Path, endpoint: str) -> Iterator[str]:
    port = procs.free_port()
    proc = subprocess.Popen(
        [procs.PY, "-m", "pushreachd", "serve", "--db", db, "--master-key-file", str(key),
         "--listen", f"127.0.0.1:{port}", "--min-delay-seconds", "1", "--log-level", "WARNING",
         "--sms-provider", "tencent", "--tencent-sms-endpoint", endpoint],
        env=procs.ENV, stdout=subprocess.DEVNULL, stderr=open(log, "ab"),
    )
    try:
        procs.wait_serving(f"127.0.0.1:{port}", proc, timeout=300)
        yield f"127.0.0.1:{port}"
    finally:
        procs.stop(proc, grace=60)


@contextmanager
def _counting_emulator(out: Path) -> Iterator[str]:
    """The SMS emulator in a subprocess that writes {phone: SMS received} to `out` when stopped."""
    port = procs.free_port()
    proc = subprocess.Popen([procs.PY, "-m", "bench.pgfire", "emulator", str(port), str(out)], env=procs.ENV)
    try:
        deadline = time.monotonic() + 60
        while not out.with_suffix(".ready").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the SMS emulator did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.stop(proc, grace=60)


async def _emulate(port: int, out: Path) -> None:
    from pushreachd.sms.emulator import SmsEmulator

    emulator = SmsEmulator(report_delay=3600)  # no delivery reports during the run
    emulator.add_credentials(SECRET_ID, SECRET_KEY)
    await emulator.start("127.0.0.1", port)
    out.with_suffix(".ready").touch()
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    await stopped.wait()
    counts: dict[str, int] = {}
    for sms in emulator.sent:
        counts[sms.phone_number] = counts.get(sms.phone_number, 0) + 1
    out.write_text(json.dumps(counts))
    await emulator.stop()


def _add_pending(dsn: str, prefix: str, n: int, first_phone: int, due_at: float) -> None:
    """n single-target pushes (push ids PREFIX..., tokens PREFIX-i, phone first_phone + i), a
    PENDING fallback due at `due_at`, already handed to the push channel."""
    import psycopg

    spec = dbgen.spec_json(1)
    pending, now = int(FallbackState.PENDING), time.time()
    with psycopg.connect(dsn) as conn:
        (app_id,) = conn.execute("SELECT min(id) FROM apps").fetchone()  # type: ignore[misc]
        (base,) = conn.execute("SELECT coalesce(max(id), 0) FROM pushes").fetchone()  # type: ignore[misc]
        with conn.cursor() as cur:
            with cur.copy("COPY pushes (id, app_id, push_id, spec, accepted_at, target_count, fallback_state, "
                          "fallback_due_at, delivered_at) FROM STDIN") as copy:
                for i in range(n):
                    copy.write_row((base + i + 1, app_id, f"{prefix}{i:010d}", spec, now - 1, 1, pending, due_at, now))
            with cur.copy("COPY targets (push, token, seq) FROM STDIN") as copy:
                for i in range(n):
                    copy.write_row((base + i + 1, f"{prefix}-{i}", 0))
            with cur.copy("COPY devices (app_id, token, phone, updated_at) FROM STDIN") as copy:
                for i in range(n):
                    copy.write_row((app_id, f"{prefix}-{i}", dbgen.phone(first_phone + i), now))
            cur.execute("SELECT setval(pg_get_serial_sequence('pushes', 'id'), %s)", (base + n,))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE pushes, targets, devices")


def _done(conn: Any, prefix: str) -> int:
    row = conn.execute("SELECT count(*) FROM pushes WHERE push_id LIKE %s AND fallback_state = %s",
                       (prefix + "%", int(FallbackState.DONE))).fetchone()
    return int(row[0]) if row else 0


def _phase(dsn: str, key: Path, tmp: Path, prefix: str, n: int, first_phone: int, instances: int,
           lead: float, limit: float) -> dict[str, Any]:
    import psycopg

    counts_file = tmp / f"{prefix}-emulator.json"
    t0 = time.time() + lead
    _add_pending(dsn, prefix, n, first_phone, t0)
    # Opened before the servers: the database server is shared, its connection slots may run out.
    with psycopg.connect(dsn, autocommit=True) as conn, _counting_emulator(counts_file) as endpoint, \
            ExitStack() as stack:
        started = time.time()
        for i in range(instances):
            stack.enter_context(_serve(dsn, key, tmp / f"{prefix}-{i}.log", endpoint))
        serving = time.time()
        done = 0
        while time.time() < t0 + limit:
            time.sleep(1.0)
            done = _done(conn, prefix)
            if done >= n:
                break
        time.sleep(1.0)  # the last answers recorded
    received = json.loads(counts_file.read_text())
    with psycopg.connect(dsn) as conn:
        like = prefix + "%"
        sent = [r[0] for r in conn.execute(
            "SELECT r.sent_at FROM sms_records r JOIN pushes p ON p.id = r.push "
            "WHERE p.push_id LIKE %s AND r.status = %s ORDER BY r.sent_at", (like, int(SmsStatus.SENT)))]
        late = [r[0] for r in conn.execute(
            "SELECT r.created_at - p.fallback_due_at FROM sms_records r JOIN pushes p ON p.id = r.push "
            "WHERE p.push_id LIKE %s", (like,))]
        (records, phones) = conn.execute(
            "SELECT count(*), count(DISTINCT r.phone) FROM sms_records r JOIN pushes p ON p.id = r.push "
            "WHERE p.push_id LIKE %s", (like,)).fetchone()  # type: ignore[misc]
        owners = dict(conn.execute(
            "SELECT fire_owner, count(*) FROM pushes WHERE push_id LIKE %s GROUP BY fire_owner", (like,)).fetchall())
    expected = {dbgen.phone(first_phone + i) for i in range(n)}
    span = (sent[-1] - sent[0]) if len(sent) > 1 else 0.0
    return {
        "instances": instances, "fallbacks": n, "done": done, "sms_sent": len(sent),
        "rate": len(sent) / span if span > 0 else 0.0,
        "late_p50_s": percentile(late, 50), "late_p99_s": percentile(late, 99),
        "records": records, "record_phones": phones,
        "emulator_numbers": len(received), "emulator_sms": sum(received.values()),
        "doubles": sum(1 for c in received.values() if c > 1),
        "missing": len(expected - set(received)), "unexpected": len(set(received) - expected),
        "fires_per_instance": sorted(owners.values(), reverse=True),
        "servers_start_s": serving - started, "due_after_serving_s": t0 - serving,
    }


def run(cfg: Config, n: int = 0) -> list[Figure]:
    n = n or (2_000 if cfg.quick else 100_000)
    lead = 30.0 if n <= 20_000 else 60.0  # three servers arm every fallback on start
    limit = max(120.0, n / 50)
    with tempfile.TemporaryDirectory(prefix="pushreach-bench-") as tmp_, _database() as dsn:
        tmp = Path(tmp_)
        key = tmp / "master.key"
        access_id, _ = _create_app(dsn, key)
        subprocess.run(
            [procs.PY, "-m", "pushreachd", "apps", "set-sms-credentials", access_id, "--secret-id", SECRET_ID,
             "--secret-key", SECRET_KEY, "--db", dsn, "--master-key-file", str(key)],
            env=procs.ENV, check=True, capture_output=True, text=True, timeout=60,
        )
        one = _phase(dsn, key, tmp, "one", n, 0, 1, lead, limit)
        three = _phase(dsn, key, tmp, "three", n, n, 3, lead, limit)
    exact = all(p["doubles"] == 0 and p["missing"] == 0 and p["unexpected"] == 0 and p["records"] == n
                and p["record_phones"] == n and p["emulator_sms"] == n for p in (one, three))
    return [
        Figure("pgfire", f"SMS numbers/s, {n:,} fallbacks due at once, three instances on one PostgreSQL",
               three["rate"], "numbers/s", baseline="one instance, same database, same run",
               baseline_value=one["rate"], extra={"three": three, "one": one}),
        Figure("pgfire", f"fire lateness p99, {n:,} due at once, three instances", three["late_p99_s"], "s",
               baseline="one instance", baseline_value=one["late_p99_s"]),
        Figure("pgfire", "phones that got exactly one SMS (store and emulator), both runs",
               float(n if exact else 0), "phones", target=f"{n:,} of {n:,}, no double", met=exact),
    ]


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["emulator"]:  # python -m bench.pgfire emulator PORT OUT (used by the bench itself)
        asyncio.run(_emulate(int(args[1]), Path(args[2])))
    else:  # python -m bench.pgfire [N]
        for fig in run(Config(), n=int(args[0]) if args else 0):
            print(json.dumps(fig.as_json()), flush=True)

"""Big fires: Push latency while 100 pushes of 1,000 targets each fire at once.

100 pushes x 1,000 targets (100,000 phones, each bound to its own device) have PENDING
NOT_ARRIVED fallbacks due together a few seconds after the server starts (`--sms-provider
tencent` against `pushreach sms-emulator`). A probe sends one single-target Push every 20 ms
before the fires (the baseline, same run) and while they fire. A fire's reservations are
written at most 500 phones per transaction, so a Push waits behind at most one such slice,
not behind a group's 100,000 phones.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

from pushreach import basic_auth as basic
from pushreachd.model import FallbackState, SmsStatus

from . import dbgen, procs
from .common import Config, Figure
from .firing import SECRET_ID, SECRET_KEY, _probe
from .load import percentile


def run(cfg: Config, pushes: int = 0, targets: int = 1_000) -> list[Figure]:
    pushes = pushes or (10 if cfg.quick else 100)
    # The lead leaves room for the server to load the fires and for an idle baseline.
    lead, limit = (10.0, 120.0) if cfg.quick else (20.0, 300.0)
    with tempfile.TemporaryDirectory(prefix="pushreach-bench-") as tmp:
        db = Path(tmp) / "bigfire.db"
        access_id, secret = procs.create_app(db)
        procs.set_sms_credentials(db, access_id, SECRET_ID, SECRET_KEY)
        md = basic(access_id, secret)
        now = time.time()
        dbgen.add_pending_fanout(db, pushes, targets, due_at=0.0, accepted_at=now - 1, delay=1)
        with procs.sms_emulator(SECRET_ID, SECRET_KEY) as endpoint:
            t0 = time.time() + lead
            conn = sqlite3.connect(db, isolation_level=None)
            conn.execute("UPDATE pushes SET fallback_due_at = ? WHERE push_id LIKE 'b%'", (t0,))
            conn.close()
            with procs.pushreach(db, "--sms-provider", "tencent", "--tencent-sms-endpoint", endpoint) as (target, _):
                samples, done = asyncio.run(_probe(target, md, db, pushes, until=t0 + limit))
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            (ended,) = conn.execute(
                "SELECT max(fallback_ended_at) FROM pushes WHERE push_id LIKE 'b%' AND fallback_state=?",
                (int(FallbackState.DONE),),
            ).fetchone()
            (sent,) = conn.execute("SELECT count(*) FROM sms_records WHERE status=?", (int(SmsStatus.SENT),)).fetchone()
        finally:
            conn.close()
    idle = [lat for s, lat in samples if s < t0 - 0.2]
    during = [lat for s, lat in samples if t0 <= s <= (ended or t0)]
    return [
        Figure("bigfire", f"Push p99 while {pushes} x {targets:,}-target fallbacks fire", percentile(during, 99) * 1e3,
               "ms", baseline="Push p99 before the fires, same probe", baseline_value=percentile(idle, 99) * 1e3,
               target="<= 50 ms", met=percentile(during, 99) <= 0.05,
               extra={"pushes": pushes, "targets_per_push": targets, "done": done, "sms_sent": sent,
                      "fire_seconds": (ended or t0) - t0, "probes_during": len(during), "probes_before": len(idle),
                      "p50_during_ms": percentile(during, 50) * 1e3, "p50_before_ms": percentile(idle, 50) * 1e3}),
    ]


if __name__ == "__main__":  # python -m bench.bigfire [PUSHES [TARGETS]]
    import json
    import sys

    args = sys.argv[1:]
    for fig in run(Config(), pushes=int(args[0]) if args else 0, targets=int(args[1]) if len(args) > 1 else 1_000):
        print(json.dumps(fig.as_json()))

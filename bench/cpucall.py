"""Server CPU per call of two (or more) versions of the server, alternating, same client.

    python -m bench.cpucall ROOT [ROOT ...] [--calls N] [--rounds R]

Each ROOT is a checkout (or `git archive <commit> server | tar -x -C DIR`): its `server/` goes
first on the server's PYTHONPATH. For each round and each ROOT in turn: a fresh `pushreach
serve` on a fresh store, N single-target Push calls (64 callers), then N unary ReportEvent
calls on their targets; printed per ROOT: req/s, p50/p99 and µs of server CPU per call (all
threads, /proc/<pid>/stat). CPU per call moves less with the machine's load than req/s, and
alternating the versions spreads what load there is over both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from pushreach import basic_auth as basic

from . import procs
from .ingest import _push_run, _unary_events


def measure(root: Path, calls: int) -> dict[str, object]:
    env = {**procs.ENV, "PYTHONPATH": os.pathsep.join([str(root / "server"), procs.ENV["PYTHONPATH"]])}
    with tempfile.TemporaryDirectory(prefix="pushreach-cpucall-") as tmp:
        db = Path(tmp) / "cpucall.db"
        out = subprocess.run([procs.PY, "-m", "pushreachd", "apps", "create", "bench", "--db", str(db), "--json"],
                             env=env, check=True, capture_output=True, text=True, timeout=60).stdout
        app = json.loads(out)
        md = basic(app["access_id"], app["secret_key"])
        port = procs.free_port()
        proc = subprocess.Popen(
            [procs.PY, "-m", "pushreachd", "serve", "--db", str(db), "--listen", f"127.0.0.1:{port}",
             "--min-delay-seconds", "1", "--log-level", "WARNING"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            target = f"127.0.0.1:{port}"
            procs.wait_serving(target, proc)
            c0 = procs.cpu_seconds(proc.pid)
            push, ids = asyncio.run(_push_run(target, md, tokens_per_push=1, concurrency=64, count=calls,
                                              seconds=120, offset=0))
            c1 = procs.cpu_seconds(proc.pid)
            time.sleep(0.5)  # deliveries settle
            pairs = [(pid, f"tok-{i}") for i, pid in enumerate(ids)]
            c2 = procs.cpu_seconds(proc.pid)
            event = asyncio.run(_unary_events(target, md, pairs, concurrency=64, seconds=120))
            c3 = procs.cpu_seconds(proc.pid)
        finally:
            procs.stop(proc)
    warm = 50  # both loops make 50 warm-up calls, counted in the CPU
    return {
        "root": str(root),
        "push_rps": round(push.rate), "push_p50_ms": round(push.pct(50) * 1e3, 1),
        "push_p99_ms": round(push.pct(99) * 1e3, 1), "push_cpu_us": round((c1 - c0) / (push.calls + warm) * 1e6),
        "event_rps": round(event.rate), "event_p50_ms": round(event.pct(50) * 1e3, 1),
        "event_cpu_us": round((c3 - c2) / (event.calls + warm) * 1e6),
        "errors": push.errors + event.errors, "load": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.cpucall", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("roots", nargs="+", type=Path)
    ap.add_argument("--calls", type=int, default=6000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for _ in range(args.rounds):
        for root in args.roots:
            print(json.dumps(measure(root.resolve(), args.calls)), flush=True)


if __name__ == "__main__":
    main()

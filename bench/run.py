"""`python -m bench`: run the benchmarks, print one JSON line per figure and a table."""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import traceback

from .common import Config, Figure

ALL = ("push", "fanout", "events", "capacity", "restart", "firing", "bigfire", "vendors", "apns", "console", "receipts", "broadcast", "pgdriver", "pgingest", "pgfire")


def machine() -> dict[str, object]:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.splitlines()
    import os

    return {"nproc": os.cpu_count(), "cpu": cpu, "mem": mem[1].split()[1] if len(mem) > 1 else "",
            "python": platform.python_version()}


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def table(figures: list[Figure]) -> str:
    rows = [("benchmark", "metric", "pushreach", "unit", "baseline", "ratio", "target", "met")]
    for f in figures:
        rows.append((f.bench, f.metric, fmt(f.value), f.unit, fmt(f.baseline_value),
                     "-" if f.ratio is None else f"{f.ratio:.2f}", f.target,
                     {True: "yes", False: "NO", None: "-"}[f.met]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("only", nargs="*", metavar="BENCH", help=f"benchmarks to run (default: all): {', '.join(ALL)}")
    ap.add_argument("--quick", action="store_true", help="smaller counts (about a minute in all)")
    ap.add_argument("--no-plots", action="store_true", help="do not write docs/img/*.png")
    args = ap.parse_args(argv)
    unknown = set(args.only) - set(ALL)
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}")
    which = set(args.only or ALL)
    cfg = Config(quick=args.quick)
    print(json.dumps({"machine": machine(), "quick": cfg.quick, "benchmarks": sorted(which)}), flush=True)
    figures: list[Figure] = []
    started = time.monotonic()

    def emit(new: list[Figure]) -> None:
        for f in new:
            print(json.dumps(f.as_json()), flush=True)
        figures.extend(new)

    steps = []
    if which & {"push", "fanout", "events"}:
        from . import ingest

        steps.append(("ingest", lambda: ingest.run(cfg, which)))
    if "capacity" in which:
        from . import capacity

        steps.append(("capacity", lambda: capacity.run(cfg, plots=not args.no_plots)))
    if "restart" in which:
        from . import restart

        steps.append(("restart", lambda: restart.run(cfg)))
    if "firing" in which:
        from . import firing

        steps.append(("firing", lambda: firing.run(cfg, plots=not args.no_plots)))
        steps.append(("firing capacity", lambda: firing.run_capacity(cfg)))
    if "bigfire" in which:
        from . import bigfire

        steps.append(("bigfire", lambda: bigfire.run(cfg)))
    if "vendors" in which:
        from . import vendors

        steps.append(("vendors", lambda: vendors.run(cfg)))
    if "apns" in which:
        from . import apns

        steps.append(("apns", lambda: apns.run(cfg)))
    if "console" in which:
        from . import console

        steps.append(("console", lambda: console.run(cfg)))
    if "receipts" in which:
        from . import receipts

        steps.append(("receipts", lambda: receipts.run(cfg)))
    if "broadcast" in which:
        from . import broadcast

        steps.append(("broadcast", lambda: broadcast.run(cfg)))
    if "pgdriver" in which:
        from . import pgdriver

        steps.append(("pgdriver", lambda: pgdriver.run(cfg)))
    if "pgingest" in which:
        from . import pgingest

        steps.append(("pgingest", lambda: pgingest.run(cfg)))
    if "pgfire" in which:
        from . import pgfire

        steps.append(("pgfire", lambda: pgfire.run(cfg)))
    for name, step in steps:
        t0 = time.monotonic()
        try:
            emit(step())
        except Exception:  # a benchmark that breaks reports it and the others still run
            traceback.print_exc()
            print(json.dumps({"bench": name, "error": traceback.format_exc(limit=1).strip().splitlines()[-1]}), flush=True)
        print(f"# {name}: {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
    print()
    print(table(figures))
    print(f"\n{len(figures)} figures in {time.monotonic() - started:.0f}s", flush=True)
    return 0  # benchmarks report; they never fail the build

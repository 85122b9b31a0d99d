"""Pending capacity: RSS growth of a process holding N pending single-target fallbacks.

Three ways, each in its own fresh subprocess (`python -m bench.capacity WAY N STEP`):
  pushreach  Scheduler.arm(push_row_id, due_at) for each fallback: the hierarchical wheel;
  tasks      one asyncio task per fallback, sleeping until its due time;
  call_at    one loop.call_at per fallback.
Delays are spread from 300 s to 3 days, as real fallbacks are. RSS is sampled (after a
gc.collect) every STEP fallbacks; the figure is RSS at N minus RSS before the first one.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import time

from . import procs
from .common import Config, Figure

WAYS = ("pushreach", "tasks", "call_at")
NAIVE_NOTE = {"tasks": "one asyncio task per fallback", "call_at": "one loop.call_at per fallback"}


def _delay(i: int) -> float:
    return 300 + (i * 7919) % (259200 - 300)


async def _measure(way: str, n: int, step: int) -> dict[str, object]:
    import os

    loop = asyncio.get_running_loop()
    pid = os.getpid()
    holders: list[object] = []
    if way == "pushreach":
        from pushreachd.clock import SystemClock
        from pushreachd.engine.ratelimit import RateLimiter
        from pushreachd.engine.scheduler import Scheduler

        clock = SystemClock()
        scheduler = Scheduler(None, None, clock, limiter=RateLimiter("Asia/Shanghai"),  # type: ignore[arg-type]
                              credentials=lambda a, b: None)

        def add(i: int, now: float) -> None:
            scheduler.arm(i + 1, now + _delay(i))
    elif way == "tasks":
        async def fallback(delay: float) -> None:
            await asyncio.sleep(delay)

        def add(i: int, now: float) -> None:
            holders.append(loop.create_task(fallback(_delay(i))))
    else:
        def fire(i: int) -> None: ...

        def add(i: int, now: float) -> None:
            holders.append(loop.call_at(loop.time() + _delay(i), fire, i))

    await asyncio.sleep(0)
    gc.collect()
    base = procs.rss_mb(pid)
    samples = [(0, 0.0)]
    t0 = time.perf_counter()
    now = time.time()
    for start in range(0, n, step):
        for i in range(start, min(n, start + step)):
            add(i, now)
        await asyncio.sleep(0)  # let new tasks run to their first await
        await asyncio.sleep(0)
        gc.collect()
        samples.append((min(n, start + step), procs.rss_mb(pid) - base))
    return {"way": way, "n": n, "base_mb": base, "samples": samples, "seconds": time.perf_counter() - t0}


def measure_in_subprocess(way: str, n: int, step: int) -> dict[str, object]:
    out = subprocess.run([procs.PY, "-m", "bench.capacity", way, str(n), str(step)], env=procs.ENV,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def plot(results: list[dict[str, object]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    labels = {"pushreach": "pushreach (timing wheel)", "tasks": "asyncio task per fallback",
              "call_at": "loop.call_at per fallback"}
    for r in results:
        xs, ys = zip(*r["samples"])  # type: ignore[misc]
        ax.plot([x / 1e6 for x in xs], ys, marker=".", label=labels[str(r["way"])])
    ax.axhline(100, color="grey", linestyle=":", linewidth=1, label="target: 100 MB")
    ax.set_xlabel("pending fallbacks (millions)")
    ax.set_ylabel("RSS growth (MB)")
    ax.set_title("Memory held by pending SMS fallbacks")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(cfg: Config, plots: bool = True) -> list[Figure]:
    n = 200_000 if cfg.quick else 1_000_000
    step = n // 10
    results = [measure_in_subprocess(way, n, step) for way in WAYS]
    by = {r["way"]: r for r in results}
    growth = {w: float(by[w]["samples"][-1][1]) for w in WAYS}  # type: ignore[index]
    figures = [Figure(
        "pending capacity", f"RSS growth, {n:,} pending fallbacks", growth["pushreach"], "MB",
        baseline=NAIVE_NOTE[w], baseline_value=growth[w],
        target="<= 100 MB" if not cfg.quick else "<= 100 MB at 1M (quick: 200k)",
        met=growth["pushreach"] * (1_000_000 / n) <= 100,
        extra={"pending": n, "bytes_per_fallback": growth["pushreach"] * 2**20 / n,
               "baseline_bytes_per_fallback": growth[w] * 2**20 / n,
               "arm_seconds": by["pushreach"]["seconds"], "baseline_arm_seconds": by[w]["seconds"]},
    ) for w in ("tasks", "call_at")]
    if plots:
        plot(results, str(procs.ROOT / "docs" / "img" / "pending-rss.png"))
    return figures


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))))

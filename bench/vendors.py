"""Vendor channels against the loopback emulator: what per-token receipts cost on the
vendors that send one payload per call (Huawei, Honor, Xiaomi, vivo).

Huawei sends one payload to up to 1,000 tokens, so a batch whose targets share a receipt is
one call, while per-token receipts make one call per token. OPPO's unicast_batch carries
one message per token, so per-token receipts still go 1,000 a call. Figures: tokens per
second delivered to the emulator, each beside the shared-receipt Huawei batch measured in
the same run.
"""

from __future__ import annotations

import asyncio
import time

from pushreachd.channels import hms, oppo
from pushreachd.channels.base import Backoff, PushDelivery, TargetPayload
from pushreachd.channels.emulator.android import EmulatorState, running
from pushreachd.clock import SystemClock
from pushreachd.model import AudienceType, PushSpec

from .common import Config, Figure

HMS = {"app_id": "10086", "client_secret": "s"}
OPPO = {"app_key": "k", "master_secret": "m"}


def _delivery(tokens: list[str], shared: bool, clock: SystemClock) -> PushDelivery:
    spec = PushSpec(AudienceType.TOKEN_LIST, tuple(tokens), (), "Approval needed", "Expense #42 waits for you")
    targets = tuple(TargetPayload(t, "r" if shared else f"r-{t}-" + "x" * 60) for t in tokens)
    return PushDelivery("acc", "p", spec, targets, clock.time() + 3600)


async def _rate(vendor: str, tokens: list[str], shared: bool, url: str, rounds: int) -> tuple[float, int]:
    clock = SystemClock()
    best, calls = 0.0, 0
    for _ in range(rounds):
        if vendor == "hms":
            ch = hms.HmsChannel(HMS, endpoint=url, token_endpoint=f"{url}/oauth2/v3/token", clock=clock, backoff=Backoff(attempts=0))
        else:
            ch = oppo.OppoChannel(OPPO, endpoint=url, clock=clock, backoff=Backoff(attempts=0))
        try:
            await ch.send(_delivery(tokens[:1], True, clock))  # auth token and connection warm
            ch.calls = 0
            t0 = time.perf_counter()
            outcomes = await ch.send(_delivery(tokens, shared, clock))
            elapsed = time.perf_counter() - t0
        finally:
            await ch.aclose()
        assert len(outcomes) == len(tokens)
        best, calls = max(best, len(tokens) / elapsed), ch.calls
    return best, calls


async def _run(cfg: Config) -> list[Figure]:
    n = 200 if cfg.quick else 2000
    tokens = [f"tok-{i:06d}" for i in range(n)]
    state = EmulatorState()
    state.add_app("hms", HMS["app_id"], **HMS)
    state.add_app("oppo", OPPO["app_key"], **OPPO)
    async with running(state) as url:
        shared, shared_calls = await _rate("hms", tokens, True, url, cfg.rounds)
        per_token, per_token_calls = await _rate("hms", tokens, False, url, cfg.rounds)
        oppo_rate, oppo_calls = await _rate("oppo", tokens, False, url, cfg.rounds)
    base = "Huawei, one receipt shared by the batch"
    return [
        Figure("vendors", "Huawei per-token receipts", per_token, "tokens/s", base, shared,
               extra={"tokens": n, "calls": per_token_calls, "baseline_calls": shared_calls}),
        Figure("vendors", "OPPO per-token receipts (unicast_batch)", oppo_rate, "tokens/s", base, shared,
               extra={"tokens": n, "calls": oppo_calls, "baseline_calls": shared_calls}),
    ]


def run(cfg: Config) -> list[Figure]:
    return asyncio.run(_run(cfg))

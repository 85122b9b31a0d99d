"""Vendor channels against the loopback emulator, on the path production takes.

Huawei sends one payload to up to 1,000 tokens, so it carries no per-token receipt
(`per_token_receipts` False: the push id only; devices sign their reports with the device key)
and batches 1,000 tokens a call. OPPO's unicast_batch carries one message per token, so it
keeps a receipt per token (minted as services/deliveries.py mints them) and still goes 1,000
a call. Figures: tokens per second delivered to the emulator, each beside a Huawei batch whose
targets share one receipt (the most a one-payload call can carry), measured in the same run.
"""

from __future__ import annotations

import asyncio
import os
import time

from pushreachd.channels import hms, oppo
from pushreachd.channels.base import Backoff, PushDelivery, TargetPayload
from pushreachd.channels.emulator.android import EmulatorState, running
from pushreachd.channels.vendor import VendorChannel
from pushreachd.clock import SystemClock
from pushreachd.model import AudienceType, PushSpec
from pushreachd.services.receipts import ReceiptClaims, encode_receipt

from .common import Config, Figure

HMS = {"app_id": "10086", "client_secret": "s"}
OPPO = {"app_key": "k", "master_secret": "m"}
PUSH_ID = "0123456789abcdef01234567"
KEY = os.urandom(32)


def _delivery(tokens: list[str], receipts: list[str], clock: SystemClock) -> PushDelivery:
    spec = PushSpec(AudienceType.TOKEN_LIST, tuple(tokens), (), "Approval needed", "Expense #42 waits for you")
    expires = clock.time() + 3600
    return PushDelivery("acc", PUSH_ID, spec, tuple(map(TargetPayload, tokens, receipts)), expires)


def _receipts(ch: VendorChannel, tokens: list[str], shared: bool, clock: SystemClock) -> list[str]:
    """What deliveries hands the channel: a receipt per token when it carries them, else none;
    `shared` is the baseline, one receipt for the whole batch."""
    if shared:
        return ["r"] * len(tokens)
    if not ch.per_token_receipts:
        return [""] * len(tokens)
    expires = clock.time() + 7200
    return [encode_receipt(KEY, ReceiptClaims(1, 1, PUSH_ID, t, expires)) for t in tokens]


async def _rate(vendor: str, tokens: list[str], shared: bool, url: str, rounds: int) -> tuple[float, int]:
    clock = SystemClock()
    best, calls = 0.0, 0
    for _ in range(rounds):
        ch: VendorChannel
        if vendor == "hms":
            ch = hms.HmsChannel(HMS, endpoint=url, token_endpoint=f"{url}/oauth2/v3/token", clock=clock, backoff=Backoff(attempts=0))
        else:
            ch = oppo.OppoChannel(OPPO, endpoint=url, clock=clock, backoff=Backoff(attempts=0))
        try:
            await ch.send(_delivery(tokens[:1], [""], clock))  # auth token and connection warm
            ch.calls = 0
            t0 = time.perf_counter()
            outcomes = await ch.send(_delivery(tokens, _receipts(ch, tokens, shared, clock), clock))
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
        state.delivered.clear()
        push_id_only, push_id_only_calls = await _rate("hms", tokens, False, url, cfg.rounds)
        assert all("pushreach_receipt" not in d.data for d in state.delivered)  # the production payload
        oppo_rate, oppo_calls = await _rate("oppo", tokens, False, url, cfg.rounds)
    base = "Huawei, one receipt shared by the batch"
    return [
        Figure("vendors", "Huawei, push id only (devices sign their reports)", push_id_only, "tokens/s", base, shared,
               extra={"tokens": n, "calls": push_id_only_calls, "baseline_calls": shared_calls}),
        Figure("vendors", "OPPO per-token receipts (unicast_batch)", oppo_rate, "tokens/s", base, shared,
               extra={"tokens": n, "calls": oppo_calls, "baseline_calls": shared_calls}),
    ]


def run(cfg: Config) -> list[Figure]:
    return asyncio.run(_run(cfg))

"""APNs channel against the loopback APNs emulator (HTTP/2 + TLS), the emulator in its own
process so the figures are the client's cost, not the emulator's.

Figures:
- deliveries/s through `ApnsChannel.send` beside a bare `httpx.AsyncClient(http2=True)`
  sending the same requests (same JWT, headers and payloads, the same bound on requests in
  flight) to the same emulator, alternated in the same run, best of each (target >= 0.8x);
- seconds to deliver one 10,000-token push through one `send()`, with the process's peak RSS.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pushreachd.channels import apns
from pushreachd.channels.base import Backoff, PushDelivery, TargetPayload
from pushreachd.channels.vendor import trust
from pushreachd.clock import SystemClock
from pushreachd.model import AudienceType, PushOutcome, PushSpec

from .common import Config, Figure

TEAM, KID, TOPIC = "TEAM123456", "ABC123DEFG", "com.example.bench"
BIG_PUSH = 10_000


def _key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _start_emulator(directory: str, key_pem: str) -> tuple[subprocess.Popen[str], str, str]:
    keys = os.path.join(directory, "keys.json")
    with open(keys, "w", encoding="utf-8") as f:
        json.dump([{"team_id": TEAM, "key_id": KID, "private_key": key_pem, "topics": [TOPIC]}], f)
    ca_file = os.path.join(directory, "ca.pem")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pushreachd.channels.emulator.apns", "--keys", keys, "--listen", "127.0.0.1:0",
         "--ca-file", ca_file],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        found = re.search(r"on (https://\S+) ", line)
        if found:
            # Keep reading its stderr so a chatty emulator never blocks on a full pipe.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, found.group(1), ca_file
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("the APNs emulator did not start")


def _delivery(tokens: list[str], clock: SystemClock) -> PushDelivery:
    spec = PushSpec(AudienceType.TOKEN_LIST, (), (), "Approval needed", "Expense #42 waits for you")
    targets = tuple(TargetPayload(t, f"r-{t[:16]}-" + "x" * 40) for t in tokens)
    return PushDelivery("acc", "p-bench", spec, targets, clock.time() + 3600)


async def _channel_rate(channel: apns.ApnsChannel, tokens: list[str], clock: SystemClock) -> float:
    t0 = time.perf_counter()
    outcomes = await channel.send(_delivery(tokens, clock))
    elapsed = time.perf_counter() - t0
    assert all(o.outcome == PushOutcome.ACCEPTED for o in outcomes), {o.code for o in outcomes}
    return len(tokens) / elapsed


async def _bare_rate(client: httpx.AsyncClient, url: str, bearer: str, tokens: list[str], clock: SystemClock) -> float:
    """What a hand-written sender does: the same requests, bounded the same way, no retries."""
    delivery = _delivery(tokens, clock)
    headers = {"authorization": f"bearer {bearer}", "apns-topic": TOPIC, "apns-push-type": "alert",
               "apns-priority": "10", "apns-expiration": str(int(delivery.expires_at))}
    limit = asyncio.Semaphore(apns.MAX_STREAMS)

    async def one(target: TargetPayload) -> str:
        body = json.dumps(
            {"aps": {"alert": {"title": delivery.spec.title, "body": delivery.spec.content}, "sound": "default"},
             "pushreach": {"push_id": delivery.push_id, "receipt": target.receipt}},
            ensure_ascii=False, separators=(",", ":"),
        ).encode()
        async with limit:
            response = await client.post(f"{url}/3/device/{target.token}", content=body, headers=headers)
        assert response.status_code == 200, response.text
        return response.headers["apns-id"]

    t0 = time.perf_counter()
    await asyncio.gather(*(one(t) for t in delivery.targets))
    return len(tokens) / (time.perf_counter() - t0)


async def _run(cfg: Config, url: str, ca_file: str, key_pem: str) -> list[Figure]:
    n = 500 if cfg.quick else 3000
    tokens = [f"{i:064x}" for i in range(max(n, BIG_PUSH))]
    clock = SystemClock()
    creds = {"key_id": KID, "team_id": TEAM, "topic": TOPIC, "private_key": key_pem}
    verify = trust(ca_file)
    channel = apns.ApnsChannel(creds, clock=clock, endpoint=url, verify=verify, backoff=Backoff(attempts=0))
    bare = httpx.AsyncClient(http1=False, http2=True, verify=verify, timeout=30.0)
    bearer = jwt.encode({"iss": TEAM, "iat": int(clock.time())}, key_pem, algorithm="ES256", headers={"kid": KID})
    try:
        await _channel_rate(channel, tokens[:20], clock)  # connections and TLS warm on both sides
        await _bare_rate(bare, url, bearer, tokens[:20], clock)
        ours, base = 0.0, 0.0
        for _ in range(cfg.rounds + 1):
            ours = max(ours, await _channel_rate(channel, tokens[:n], clock))
            base = max(base, await _bare_rate(bare, url, bearer, tokens[:n], clock))
        big = min(BIG_PUSH, 2000) if cfg.quick else BIG_PUSH
        t0 = time.perf_counter()
        outcomes = await channel.send(_delivery(tokens[:big], clock))
        big_seconds = time.perf_counter() - t0
        accepted = sum(o.outcome == PushOutcome.ACCEPTED for o in outcomes)
    finally:
        await channel.aclose()
        await bare.aclose()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ratio = ours / base if base else 0.0
    return [
        Figure("apns", "deliveries/s through ApnsChannel", ours, "deliveries/s", "bare httpx HTTP/2, same requests",
               base, ">= 0.8x", ratio >= 0.8,
               extra={"tokens": n, "provider_tokens_minted": channel.provider_token.minted,
                      "in_flight_bound": apns.MAX_STREAMS}),
        Figure("apns", f"one {big:,}-token push", big_seconds, "s", extra={
            "tokens": big, "accepted": accepted, "deliveries_per_s": round(big / big_seconds),
            "peak_rss_mb": round(rss_mb, 1)}),
    ]


def run(cfg: Config) -> list[Figure]:
    key_pem = _key_pem()
    with tempfile.TemporaryDirectory(prefix="bench-apns-") as directory:
        proc, url, ca_file = _start_emulator(directory, key_pem)
        try:
            return asyncio.run(_run(cfg, url, ca_file, key_pem))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

"""SIGKILL a real `pushreach serve` in the middle of a busy run, restart it, and check that
everything it answered for is still there, every due SMS went out, and none went out twice.

Three rounds: each starts the server on the same database, runs concurrent pushes (1-2 s
delays, so fallbacks of the previous round fire while this one runs), unary and streamed
events, then kills the process without warning. A last start lets every due fallback finish.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pushreach import basic_auth
from pushreach.v1 import device_pb2, event_pb2, push_pb2
from pushreachd.engine.fallback import Recipient, decide
from pushreachd.model import FallbackState, PushSpec, SmsStatus
from pushreachd.phone import mask_phone

from tests.harness import Caller, sms_push

PUSHREACH = [sys.executable, "-m", "pushreachd"]
TOKENS = 240
ROUNDS = 3
CONDITIONS = [push_pb2.TRIGGER_CONDITION_NOT_ARRIVED, push_pb2.TRIGGER_CONDITION_NOT_CLICKED]


def phone_of(i: int) -> str:
    return f"+86139{i:08d}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Ledger:
    """What the server answered for: each entry was acknowledged by a returned RPC."""

    pushes: dict[str, list[str]] = field(default_factory=dict)  # push_id -> tokens
    events: set[tuple[str, str, int]] = field(default_factory=set)  # (push_id, token, type)
    seq: int = 0


class Server:
    def __init__(self, tmp: Path) -> None:
        self.db = tmp / "crash.db"
        self.log = tmp / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def create_app(self) -> tuple[str, str]:
        out = subprocess.run(
            [*PUSHREACH, "apps", "create", "crash-test", "--db", str(self.db), "--json"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        creds = json.loads(out.stdout)
        return creds["access_id"], creds["secret_key"]

    async def start(self) -> grpc.aio.Channel:
        self.port = free_port()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *PUSHREACH, "serve",
                    "--listen", f"127.0.0.1:{self.port}",
                    "--db", str(self.db),
                    "--min-delay-seconds", "1",
                    "--tick-ms", "20",
                    "--sms-provider", "console",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):  # up to ~15 s
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return channel
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError("server did not become healthy")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)
        self.proc = None


async def push_loop(app: Caller, ledger: Ledger, rng: random.Random) -> None:
    while True:
        ledger.seq += 1
        tokens = rng.sample(range(TOKENS), rng.randint(1, 4))
        # Every push has its own parameters: the same-content rate limit never interferes.
        request = sms_push([f"tok{i}" for i in tokens], rng.choice(CONDITIONS), delay=rng.randint(1, 2))
        request.sms_info.sms_template_params[:] = [str(ledger.seq), "crash"]
        try:
            answer = await app.push.Push(request, metadata=app.metadata, timeout=5)
        except grpc.aio.AioRpcError:
            continue
        ledger.pushes[answer.push_id] = list(request.token_list)


async def event_loop(app: Caller, ledger: Ledger, rng: random.Random, streamed: bool) -> None:
    while True:
        if not ledger.pushes:
            await asyncio.sleep(0.01)
            continue
        picks = []
        for _ in range(rng.randint(1, 20) if streamed else 1):
            push_id = rng.choice(list(ledger.pushes))
            token = rng.choice(ledger.pushes[push_id])
            picks.append((push_id, token, rng.choice([event_pb2.EVENT_TYPE_ARRIVED, event_pb2.EVENT_TYPE_CLICKED])))
        try:
            if streamed:

                async def messages():  # type: ignore[no-untyped-def]
                    yield event_pb2.ReportEventsRequest(
                        events=[event_pb2.Event(push_id=p, token=t, event_type=e) for p, t, e in picks]
                    )

                answer = await app.event.ReportEvents(messages(), metadata=app.metadata, timeout=5)
                assert answer.accepted_count + answer.duplicate_count == len(picks), answer
            else:
                p, t, e = picks[0]
                request = event_pb2.ReportEventRequest(push_id=p, token=t, event_type=e)
                outcome = (await app.event.ReportEvent(request, metadata=app.metadata, timeout=5)).outcome
                assert outcome in (event_pb2.EVENT_OUTCOME_ACCEPTED, event_pb2.EVENT_OUTCOME_DUPLICATE)
        except grpc.aio.AioRpcError:
            continue
        ledger.events.update(picks)


async def busy_round(app: Caller, ledger: Ledger, rng: random.Random, seconds: float) -> None:
    tasks = [asyncio.create_task(push_loop(app, ledger, rng)) for _ in range(6)]
    tasks += [asyncio.create_task(event_loop(app, ledger, rng, streamed=i % 2 == 0)) for i in range(4)]
    try:
        await asyncio.sleep(seconds)
        for t in tasks:
            assert not t.done() or t.cancelled(), t.exception()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def wait_all_done(app: Caller, ledger: Ledger, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    waiting = set(ledger.pushes)
    while waiting:
        for push_id in list(waiting):
            got = await app.push.GetPush(push_pb2.GetPushRequest(push_id=push_id), metadata=app.metadata, timeout=5)
            if got.push.fallback_state == push_pb2.FALLBACK_STATE_DONE:
                waiting.discard(push_id)
        assert asyncio.get_running_loop().time() < deadline, f"{len(waiting)} fallbacks never finished"
        if waiting:
            await asyncio.sleep(0.1)


async def test_sigkill_mid_run_loses_nothing_answered_and_sends_no_sms_twice(tmp_path: Path) -> None:
    rng = random.Random(20250615)
    server = Server(tmp_path)
    access_id, secret = server.create_app()
    metadata = basic_auth(access_id, secret)
    ledger = Ledger()
    channel: grpc.aio.Channel | None = None
    try:
        for round_no in range(ROUNDS + 1):
            channel = await server.start()
            app = Caller(channel, metadata, access_id)
            if round_no == 0:
                await asyncio.gather(
                    *(
                        app.device.BindPhone(
                            device_pb2.BindPhoneRequest(token=f"tok{i}", phone_number=phone_of(i)), metadata=metadata
                        )
                        for i in range(TOKENS)
                    )
                )
            if round_no < ROUNDS:
                await busy_round(app, ledger, rng, seconds=rng.uniform(1.2, 2.2))
                server.kill()
                await channel.close()
                channel = None
        # The last start: everything accepted is there, and every fallback comes due and ends.
        assert channel is not None
        app = Caller(channel, metadata, access_id)
        assert len(ledger.pushes) > 50 and len(ledger.events) > 50, "the run was busy"
        await wait_all_done(app, ledger)
        await channel.close()
        channel = None
        server.kill(signal.SIGTERM)
    finally:
        if channel is not None:
            await channel.close()
        server.kill()

    check_database(server.db, ledger)
    check_provider_log(server.log)


def check_database(db: Path, ledger: Ledger) -> None:
    conn = sqlite3.connect(db)
    try:
        pushes = {
            push_id: (row, FallbackState(state), PushSpec.from_json(spec))
            for row, push_id, state, spec in conn.execute("SELECT id, push_id, fallback_state, spec FROM pushes")
        }
        assert set(ledger.pushes) <= set(pushes), "every answered push is stored"
        assert {s for _, s, _ in pushes.values()} == {FallbackState.DONE}, "every due fallback ended"

        for push_id, token, event_type in ledger.events:
            arrived, clicked = conn.execute(
                "SELECT t.arrived_at, t.clicked_at FROM targets t JOIN pushes p ON p.id = t.push "
                "WHERE p.push_id=? AND t.token=?",
                (push_id, token),
            ).fetchone()
            assert arrived is not None, "an answered event is stored (a click implies arrival)"
            if event_type == event_pb2.EVENT_TYPE_CLICKED:
                assert clicked is not None

        per_pair = conn.execute("SELECT push, phone, count(*) FROM sms_records GROUP BY push, phone").fetchall()
        assert per_pair and max(n for *_, n in per_pair) == 1, "at most one record per (push, phone)"
        statuses = Counter(SmsStatus(s) for (s,) in conn.execute("SELECT status FROM sms_records"))
        assert SmsStatus.SENDING not in statuses
        assert statuses[SmsStatus.SENT] > 0

        # Every phone that still needs the SMS by the final state of events has a record: events
        # only ever add arrivals and clicks, so such a phone needed it when the timer fired too.
        for row, _, spec in pushes.values():
            assert spec.sms_info is not None
            targets = conn.execute(
                "SELECT t.token, coalesce(d.phone, ''), t.arrived_at IS NOT NULL, t.clicked_at IS NOT NULL "
                "FROM targets t LEFT JOIN devices d ON d.token = t.token WHERE t.push=?",
                (row,),
            ).fetchall()
            needs = decide([Recipient(t, p, bool(a), bool(c), None) for t, p, a, c in targets], spec.sms_info.trigger_condition)
            recorded = {p for (p,) in conn.execute("SELECT phone FROM sms_records WHERE push=?", (row,))}
            assert set(needs.phones) <= recorded, f"a due SMS was never sent for push #{row}"
            assert recorded <= {p for _, p, _, _ in targets}, "no SMS to a phone the push did not target"
    finally:
        conn.close()


def check_provider_log(log: Path) -> None:
    """The console provider's own log, across all four processes: no (push, phone) twice."""
    sent = Counter()
    for line in log.read_text().splitlines():
        m = re.search(r"console sms: .* params=\['(\d+)', 'crash'\] to=(\S+)", line)
        if m:
            for masked in m.group(2).split(","):
                sent[(m.group(1), masked)] += 1
    assert sent, "the provider was called"
    assert max(sent.values()) == 1, [k for k, n in sent.items() if n > 1]
    assert mask_phone(phone_of(1)) != mask_phone(phone_of(2)), "masked numbers still tell phones apart"

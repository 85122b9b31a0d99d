"""Three `pushreach serve` processes on one PostgreSQL database; one is SIGKILLed mid-burst.

Pushes and events go to all three in turn. Their fallbacks come due together against a slow
SMS emulator (Tencent's wire protocol, real SDK), and one instance is killed while it fires.
The two others finish its fires once its leases expire: every answered push and event is
stored, every fallback ends, every phone that needs an SMS has a record (SENT, or UNKNOWN when
the dead instance may have sent it), and no (push, phone) reaches the provider twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pushreach import basic_auth
from pushreach.v1 import device_pb2, event_pb2, push_pb2
from pushreachd.engine.fallback import Recipient, decide
from pushreachd.model import FallbackState, PushSpec, SmsStatus
from pushreachd.sms.emulator import SmsEmulator

from tests.harness import Caller, sms_push
from tests.integration.test_crash_recovery import free_port, phone_of
from tests.stores import create_database, drop_database, dsn_for, require_postgres

PUSHREACH = [sys.executable, "-m", "pushreachd"]
SECRET_ID, SECRET_KEY = "AKIDmultiinstance", "multi-instance-key"
TOKENS = 120
LEASE = 5  # seconds: the smallest fire_lease_seconds


@pytest.fixture
def database() -> object:
    require_postgres()
    name = create_database("pushreach_multi")
    try:
        yield dsn_for(name)
    finally:
        drop_database(name)


class Instance:
    def __init__(self, n: int, dsn: str, key: Path, sms_url: str, log: Path) -> None:
        self.n, self.dsn, self.key, self.sms_url, self.log = n, dsn, key, sms_url, log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.aio.Channel | None = None

    async def start(self) -> grpc.aio.Channel:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    *PUSHREACH, "serve",
                    "--listen", f"127.0.0.1:{self.port}",
                    "--db", self.dsn,
                    "--master-key-file", str(self.key),
                    "--min-delay-seconds", "1",
                    "--tick-ms", "20",
                    "--fire-lease-seconds", str(LEASE),
                    "--instance-id", f"instance-{self.n}",
                    "--sms-provider", "tencent",
                    "--tencent-sms-endpoint", self.sms_url,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        health = health_pb2_grpc.HealthStub(self.channel)
        for _ in range(600):  # up to ~30 s on a loaded machine
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return self.channel
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"instance {self.n} did not become healthy")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)
        self.proc = None

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
            self.channel = None


def cli(*args: str) -> str:
    out = subprocess.run([*PUSHREACH, *args], check=True, capture_output=True, timeout=60, text=True)
    return out.stdout


async def test_a_killed_instance_s_fires_are_finished_by_the_others_once_each(
    database: str, tmp_path: Path
) -> None:
    dsn = database
    key = tmp_path / "master.key"
    creds = json.loads(cli("apps", "create", "multi", "--db", dsn, "--master-key-file", str(key), "--json"))
    access_id = creds["access_id"]
    cli("apps", "set-sms-credentials", access_id, "--secret-id", SECRET_ID, "--secret-key", SECRET_KEY,
        "--db", dsn, "--master-key-file", str(key))
    metadata = basic_auth(access_id, creds["secret_key"])

    emulator = SmsEmulator()
    emulator.add_credentials(SECRET_ID, SECRET_KEY)
    emulator.set_delay(0.4)  # a slow provider: fires are in flight when the kill comes
    await emulator.start()
    log = tmp_path / "instances.log"
    instances = [Instance(n, dsn, key, emulator.url, log) for n in range(3)]
    rng = random.Random(20261202)
    answered: dict[str, list[str]] = {}
    events: set[tuple[str, str, int]] = set()
    try:
        apps = [Caller(await i.start(), metadata, access_id) for i in instances]
        await asyncio.gather(*(
            apps[i % 3].device.BindPhone(device_pb2.BindPhoneRequest(token=f"tok{i}", phone_number=phone_of(i)),
                                         metadata=metadata)
            for i in range(TOKENS)
        ))
        # Pushes spread over the three, all due in 2-3 s: one burst of fallbacks.
        seq = 0

        async def push(app: Caller) -> None:
            nonlocal seq
            seq += 1
            tokens = [f"tok{i}" for i in rng.sample(range(TOKENS), rng.randint(1, 3))]
            request = sms_push(tokens, rng.choice([push_pb2.TRIGGER_CONDITION_NOT_ARRIVED,
                                                   push_pb2.TRIGGER_CONDITION_NOT_CLICKED]),
                               delay=rng.randint(2, 3))
            request.sms_info.sms_template_params[:] = [str(seq), "multi"]  # no same-content limit
            answer = await app.push.Push(request, metadata=metadata, timeout=10)
            answered[answer.push_id] = tokens

        for round_ in range(8):
            await asyncio.gather(*(push(apps[(round_ * 10 + k) % 3]) for k in range(10)))
        picks = [(p, rng.choice(t), rng.choice([event_pb2.EVENT_TYPE_ARRIVED, event_pb2.EVENT_TYPE_CLICKED]))
                 for p, t in rng.sample(sorted(answered.items()), 30)]
        for k, (p, t, e) in enumerate(picks):
            outcome = (await apps[k % 3].event.ReportEvent(
                event_pb2.ReportEventRequest(push_id=p, token=t, event_type=e), metadata=metadata, timeout=10)).outcome
            assert outcome in (event_pb2.EVENT_OUTCOME_ACCEPTED, event_pb2.EVENT_OUTCOME_DUPLICATE)
            events.add((p, t, e))

        # Mid-burst: the provider has started answering, instance 0 is firing; kill it.
        for _ in range(600):
            if emulator.calls >= 2:
                break
            await asyncio.sleep(0.02)
        assert emulator.calls >= 2, "the burst never reached the provider"
        instances[0].kill()
        killed_at = asyncio.get_running_loop().time()

        # The two others finish everything: instance 0's pending pushes at their due time (plus
        # a takeover delay), its fires in flight when its leases expire.
        waiting = set(answered)
        deadline = killed_at + LEASE + 60  # bounded, generous: a loaded machine
        while waiting:
            for push_id in sorted(waiting):
                got = await apps[1 + len(waiting) % 2].push.GetPush(
                    push_pb2.GetPushRequest(push_id=push_id), metadata=metadata, timeout=10)
                if got.push.fallback_state == push_pb2.FALLBACK_STATE_DONE:
                    waiting.discard(push_id)
            assert asyncio.get_running_loop().time() < deadline, f"{len(waiting)} fallbacks never finished"
            if waiting:
                await asyncio.sleep(0.2)
    finally:
        for i in instances:
            i.kill(signal.SIGTERM)
            await i.close()
        await emulator.stop()

    # Nothing answered is lost; no SMS twice; every phone that needed one has a record.
    with psycopg.connect(dsn) as conn:
        pushes = {
            push_id: (row, FallbackState(state), PushSpec.from_json(spec))
            for row, push_id, state, spec in conn.execute("SELECT id, push_id, fallback_state, spec FROM pushes")
        }
        assert set(answered) <= set(pushes)
        assert {s for _, s, _ in pushes.values()} == {FallbackState.DONE}
        for push_id, token, event_type in events:
            arrived, clicked = conn.execute(
                "SELECT t.arrived_at, t.clicked_at FROM targets t JOIN pushes p ON p.id = t.push "
                "WHERE p.push_id=%s AND t.token=%s", (push_id, token)).fetchone()
            assert arrived is not None
            if event_type == event_pb2.EVENT_TYPE_CLICKED:
                assert clicked is not None
        statuses = Counter(SmsStatus(s) for (s,) in conn.execute("SELECT status FROM sms_records"))
        assert SmsStatus.SENDING not in statuses, statuses
        assert statuses[SmsStatus.SENT] > 0
        for row, _, spec in pushes.values():
            assert spec.sms_info is not None
            targets = conn.execute(
                "SELECT t.token, coalesce(d.phone, ''), t.arrived_at IS NOT NULL, t.clicked_at IS NOT NULL "
                "FROM targets t LEFT JOIN devices d ON d.token = t.token WHERE t.push=%s", (row,)).fetchall()
            needs = decide([Recipient(t, p, bool(a), bool(c), None) for t, p, a, c in targets],
                           spec.sms_info.trigger_condition)
            recorded = dict(conn.execute("SELECT phone, status FROM sms_records WHERE push=%s", (row,)).fetchall())
            assert set(needs.phones) <= set(recorded), f"push #{row}: a phone that needed an SMS has no record"
        owners = {o for (o,) in conn.execute("SELECT DISTINCT fire_owner FROM pushes WHERE fire_owner != ''")}
        assert owners - {"instance-0"}, "the survivors fired"
    sent = Counter((s.template_params, s.phone_number) for s in emulator.sent)
    assert sent and max(sent.values()) == 1, [k for k, n in sent.items() if n > 1]

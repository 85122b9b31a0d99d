"""The issue's table, reproduced: a real `pushreach serve` process sends through the real
Tencent SDK to the loopback emulator (each call answered after a delay), 300 single-target
fallbacks (one SendSms call each) come due together, and the process is stopped after the
first calls reached the endpoint. Then it is started again and left to settle.

- SIGTERM: every phone gets exactly one SMS, and none is recorded UNKNOWN;
- SIGKILL: at most the calls in flight (sms_per_app_concurrency numbers here) end UNKNOWN,
  every other phone gets exactly one SMS;
- never two SMS for one phone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pushreach import basic_auth
from pushreach.v1 import device_pb2, device_pb2_grpc, push_pb2_grpc
from pushreachd.model import FallbackState, SmsStatus
from pushreachd.sms.emulator import SmsEmulator

from tests.harness import sms_push

PUSHREACH = [sys.executable, "-m", "pushreachd"]
SECRET_ID, SECRET_KEY = "AKIDstopmidburst", "key-of-the-burst"
PHONES = 300
CONCURRENCY = 4  # provider calls in flight at most: what SIGKILL may leave UNKNOWN
CALL_SECONDS = 0.05  # the emulator's answer time per call
DELAY = 2  # the fallbacks' delay; all 300 pushes are accepted well within it


def phone_of(i: int) -> str:
    return f"+86137{i:08d}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args: str) -> str:
    return subprocess.run([*PUSHREACH, *args], check=True, capture_output=True, text=True, timeout=60).stdout


class Server:
    def __init__(self, tmp: Path, endpoint: str) -> None:
        self.db = tmp / "burst.db"
        self.log = tmp / "server.log"
        self.endpoint = endpoint
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> grpc.aio.Channel:
        port = free_port()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *PUSHREACH, "serve",
                    "--listen", f"127.0.0.1:{port}",
                    "--db", str(self.db),
                    "--min-delay-seconds", "1",
                    "--tick-ms", "20",
                    "--sms-provider", "tencent",
                    "--tencent-sms-endpoint", self.endpoint,
                    "--sms-per-app-concurrency", str(CONCURRENCY),
                    "--shutdown-grace-seconds", "3",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
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

    async def stop(self, sig: int) -> int:
        """Signal the process and wait for its end without blocking the loop (the emulator in
        this loop must go on answering the calls in flight)."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = await asyncio.to_thread(self.proc.wait, 30)
        self.proc = None
        return code

    def query(self, sql: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as conn:
            return conn.execute(sql).fetchall()


async def settle(server: Server, timeout: float = 60.0) -> None:
    """Wait (bounded) until every fallback is DONE."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    done = int(FallbackState.DONE)
    while True:
        (left,) = server.query(f"SELECT count(*) FROM pushes WHERE fallback_state != {done}")[0]
        if left == 0:
            return
        assert loop.time() < deadline, f"{left} fallback(s) never finished:\n{server.log.read_text()[-3000:]}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
async def test_a_stop_mid_burst_loses_no_sms_and_sends_none_twice(tmp_path: Path, sig: int) -> None:
    emulator = SmsEmulator()
    emulator.add_credentials(SECRET_ID, SECRET_KEY)
    emulator.set_delay(CALL_SECONDS)
    await emulator.start()
    server = Server(tmp_path, emulator.url)
    try:
        access_id, secret_key = run("apps", "create", "burst", "--db", str(server.db), "--json").split('"')[3::4][:2]
        run("apps", "set-sms-credentials", access_id, "--secret-id", SECRET_ID, "--secret-key", SECRET_KEY,
            "--db", str(server.db))
        channel = await server.start()
        metadata = basic_auth(access_id, secret_key)
        devices = device_pb2_grpc.DeviceServiceStub(channel)
        pushes = push_pb2_grpc.PushServiceStub(channel)
        await asyncio.gather(
            *(
                devices.BindPhone(device_pb2.BindPhoneRequest(token=f"t{i}", phone_number=phone_of(i)), metadata=metadata)
                for i in range(PHONES)
            )
        )
        requests = []
        for i in range(PHONES):
            request = sms_push([f"t{i}"], delay=DELAY)
            request.sms_info.sms_template_params[:] = [str(i), "burst"]  # one SendSms call each
            requests.append(request)
        await asyncio.gather(*(pushes.Push(r, metadata=metadata) for r in requests))
        await channel.close()

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while emulator.calls < 8:  # the first numbers reached the endpoint: stop now
            assert loop.time() < deadline, server.log.read_text()[-3000:]
            await asyncio.sleep(0.005)
        code = await server.stop(sig)
        if sig == signal.SIGTERM:
            assert code == 0, server.log.read_text()[-3000:]
        sent_before_restart = len(emulator.sent)
        assert sent_before_restart < PHONES, "the burst was over before the stop: nothing tested"

        channel = await server.start()
        await settle(server)
        code = await server.stop(signal.SIGTERM)
        await channel.close()
        assert code == 0
    finally:
        if server.proc is not None:
            server.proc.kill()
            server.proc.wait(timeout=15)
        await emulator.stop()

    received = Counter(s.phone_number for s in emulator.sent)
    assert max(received.values()) == 1, "a phone got two SMS"
    statuses = dict(server.query("SELECT phone, status FROM sms_records"))
    assert len(statuses) == PHONES
    unknown = {p for p, s in statuses.items() if s == SmsStatus.UNKNOWN}
    if sig == signal.SIGTERM:
        assert unknown == set(), "a graceful stop left SMS unknown"
        assert set(received) == {phone_of(i) for i in range(PHONES)}, "every phone got its SMS"
        assert set(statuses.values()) == {int(SmsStatus.SENT)}
    else:
        assert len(unknown) <= CONCURRENCY, "only the calls in flight may end UNKNOWN"
        others = {phone_of(i) for i in range(PHONES)} - unknown
        assert others <= set(received), "every phone not in flight got its SMS"
        assert {statuses[p] for p in others} == {int(SmsStatus.SENT)}

"""APNs end to end, and every channel through `pushreach push-emulator`: a real server, real
HTTP/2 over TLS to the APNs emulator (its own CA given as channel_ca_file), ES256 provider
tokens checked against the registered key."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pushreach.v1 import device_pb2, push_pb2
from pushreachd.channels.emulator import fcm as fcm_emulator
from pushreachd.channels.emulator.apns import ApnsEmulatorState, running, sandbox_url

from tests.harness import Running, plain_push, register, set_channel, settled, start_service, test_settings

TEAM, KID, TOPIC = "TEAM123456", "ABC123DEFG", "com.example.app"


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


KEY = pem(ec.generate_private_key(ec.SECP256R1()))
CREDS = {"key_id": KID, "team_id": TEAM, "topic": TOPIC, "private_key": KEY}


def tok(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture
async def apns_served(tmp_path: Path) -> AsyncIterator[tuple[ApnsEmulatorState, Running]]:
    state = ApnsEmulatorState()
    state.add_key(TEAM, KID, KEY, [TOPIC])
    async with running(state) as (url, ca_file):
        settings = test_settings(
            tmp_path, apns_endpoint=url, apns_sandbox_endpoint=sandbox_url(url), channel_ca_file=ca_file
        )
        server = await start_service(settings)
        yield state, server
        await server.close()
        await server.service.stop()


async def test_apns_devices_get_the_push_id_and_receipt_and_a_410_token_is_skipped_next_time(
    apns_served: tuple[ApnsEmulatorState, Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    state, server = apns_served
    app = await server.new_app()
    await set_channel(app, device_pb2.CHANNEL_APNS, CREDS)
    for n in (1, 2, 3):
        await register(app, tok(n), device_pb2.CHANNEL_APNS)
    state.unregister(tok(3))
    state.fail_next(503, 1)  # one ServiceUnavailable on the way: retried, delivered once

    first = await app.push.Push(plain_push([tok(1), tok(2), tok(3)], collapse_id="expense-42"), metadata=app.metadata)
    got = await settled(app, first.push_id)
    assert {t.token: (t.push_outcome, t.push_outcome_code) for t in got.targets} == {
        tok(1): (push_pb2.PUSH_OUTCOME_ACCEPTED, ""),
        tok(2): (push_pb2.PUSH_OUTCOME_ACCEPTED, ""),
        tok(3): (push_pb2.PUSH_OUTCOME_INVALID_TOKEN, "Unregistered"),
    }
    (one,) = state.delivered_to(tok(1))
    assert len(state.delivered_to(tok(2))) == 1
    assert one.payload["pushreach"]["push_id"] == first.push_id and one.payload["pushreach"]["receipt"]
    assert one.payload["aps"]["alert"] == {"title": "Approval needed", "body": "Expense #42 waits for you"}
    assert one.headers["apns-push-type"] == "alert" and one.headers["apns-collapse-id"] == "expense-42"
    assert not one.sandbox and one.topic == TOPIC

    second = await app.push.Push(
        plain_push([tok(1), tok(3)], environment=push_pb2.ENVIRONMENT_DEV, message_type=push_pb2.MESSAGE_TYPE_MESSAGE),
        metadata=app.metadata,
    )
    assert [(u.value, u.reason) for u in second.unused_targets] == [
        (tok(3), push_pb2.UNUSED_TARGET_REASON_INVALID_TOKEN)
    ]
    await settled(app, second.push_id)
    silent = state.delivered_to(tok(1))[-1]
    assert silent.sandbox and silent.headers["apns-push-type"] == "background"
    assert silent.payload["aps"] == {"content-available": 1}
    assert state.delivered_to(tok(3)) == []
    # Neither the device tokens nor the key reach the service's log. (httpx logs each request's
    # URL, token included, at INFO: `pushreach serve` keeps it at WARNING unless log_level is
    # DEBUG, see cli.CHATTY_LIBRARIES and test_cli_logging_keeps_request_urls_out.)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("pushreachd"))
    assert ours and tok(1)[-16:] not in ours and tok(3)[-16:] not in ours
    assert "PRIVATE KEY" not in ours and KEY.splitlines()[1] not in ours


def test_cli_logging_keeps_request_urls_out() -> None:
    from pushreachd import cli

    names = ["", *cli.CHATTY_LIBRARIES]
    saved = {name: logging.getLogger(name).level for name in names}
    try:
        cli._setup_logging("INFO")
        assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
        assert logging.getLogger("httpcore").getEffectiveLevel() >= logging.WARNING
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


async def test_a_wrong_apns_key_puts_apples_reason_in_every_targets_outcome(
    apns_served: tuple[ApnsEmulatorState, Running],
) -> None:
    _, server = apns_served
    app = await server.new_app()
    await set_channel(
        app, device_pb2.CHANNEL_APNS, {**CREDS, "private_key": pem(ec.generate_private_key(ec.SECP256R1()))}
    )
    await register(app, tok(7), device_pb2.CHANNEL_APNS)
    await register(app, tok(8), device_pb2.CHANNEL_APNS)
    pushed = await app.push.Push(plain_push([tok(7), tok(8)]), metadata=app.metadata)
    got = await settled(app, pushed.push_id)
    assert {(t.push_outcome, t.push_outcome_code) for t in got.targets} == {
        (push_pb2.PUSH_OUTCOME_FAILED, "InvalidProviderToken")
    }
    device = await app.device.GetDevice(device_pb2.GetDeviceRequest(token=tok(7)), metadata=app.metadata)
    assert device.device.token_state == device_pb2.TOKEN_STATE_VALID  # the key is at fault, not the device


async def test_a_push_through_pushreach_push_emulator_reaches_apns_fcm_huawei_and_webhook_devices(
    tmp_path: Path,
) -> None:
    """The command as docs/CHANNELS.md shows it: its ready line gives the serve settings."""
    (tmp_path / "apns-keys.json").write_text(
        json.dumps([{"team_id": TEAM, "key_id": KID, "private_key": KEY, "topics": [TOPIC]}])
    )
    hms = {"app_id": "10086", "client_secret": "hms-secret-value"}
    (tmp_path / "apps.json").write_text(json.dumps({"hms": [hms]}))
    # The FCM account's token_uri must name the emulator's port: a fixed free port it is.
    port = _free_port()
    account = fcm_emulator.new_service_account("pushreach-demo", f"http://127.0.0.1:{port}{fcm_emulator.TOKEN_PATH}")
    (tmp_path / "fcm.json").write_text(json.dumps(account))
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pushreachd.cli",
            "push-emulator",
            "--listen",
            f"127.0.0.1:{port}",
            "--apns-listen",
            "127.0.0.1:0",
            "--apns-keys",
            str(tmp_path / "apns-keys.json"),
            "--apps",
            str(tmp_path / "apps.json"),
            "--fcm-accounts",
            str(tmp_path / "fcm.json"),
            "--webhook",
            "app:whsec-0123456789abcdef",
            "--ca-file",
            str(tmp_path / "ca.pem"),
            "--seconds",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert emulator.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(emulator.stdout.readline), 30)
        ready = json.loads(line)
        server = await start_service(test_settings(tmp_path, **ready["serve_settings"]))
        try:
            app = await server.new_app()
            await set_channel(app, device_pb2.CHANNEL_APNS, CREDS)
            await set_channel(app, device_pb2.CHANNEL_FCM, account)
            await set_channel(app, device_pb2.CHANNEL_HMS, hms)
            await set_channel(
                app, device_pb2.CHANNEL_WEBHOOK, {"url": ready["webhooks"]["app"], "secret": "whsec-0123456789abcdef"}
            )
            await register(app, tok(1), device_pb2.CHANNEL_APNS)
            await register(app, "fcm-token-1", device_pb2.CHANNEL_FCM)
            await register(app, "hw-token-1", device_pb2.CHANNEL_HMS)
            await register(app, "web-token-1", device_pb2.CHANNEL_WEBHOOK)
            tokens = [tok(1), "fcm-token-1", "hw-token-1", "web-token-1"]
            pushed = await app.push.Push(plain_push(tokens), metadata=app.metadata)
            got = await settled(app, pushed.push_id)
            assert {t.token: t.push_outcome for t in got.targets} == {t: push_pb2.PUSH_OUTCOME_ACCEPTED for t in tokens}
            async with httpx.AsyncClient(base_url=ready["http"]) as client:
                fcm_got = (await client.get("/_emulator/fcm/delivered")).json()
                web_got = (await client.get("/_emulator/webhook/delivered")).json()
                hw_got = (await client.get("/_emulator/delivered")).json()
            assert pushed.push_id in json.dumps(fcm_got) and pushed.push_id in json.dumps(web_got)
            assert pushed.push_id in json.dumps(hw_got)
        finally:
            await server.close()
            await server.service.stop()
    finally:
        emulator.terminate()
        emulator.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

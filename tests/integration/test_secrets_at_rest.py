"""Secrets at rest and their rotation: the database files never hold a Tencent SecretKey,
SecretId or app secret in clear; the master key can be rotated without losing credentials;
a rotated app secret stops working at once on a running server."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import grpc
import pytest
from pushreach.v1 import admin_pb2, device_pb2
from pushreachd import cli
from pushreachd.clock import SystemClock
from pushreachd.secrets import SecretBox, SecretError, load_master_key
from pushreachd.services.apps import AUTH_CACHE_SECONDS, AppService
from pushreachd.store.sqlite import SqliteStore

from tests.harness import ADMIN_TOKEN, basic, start_service, test_settings

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
CLI_SECRET_ID = "AKIDcliSecretId0123456789abcdefghij"
CLI_SECRET_KEY = "cliSecretKey0123456789abcdefghijkl"
RPC_SECRET_ID = "AKIDrpcSecretId0123456789abcdefghij"
RPC_SECRET_KEY = "rpcSecretKey0123456789abcdefghijkl"


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    # The command runs its own event loop (asyncio.run), so not on this test's.
    assert await asyncio.to_thread(cli.main, list(argv)) == 0
    return capsys.readouterr().out


def db_args(tmp_path: Path, key_file: str = "master.key") -> list[str]:
    return ["--db", str(tmp_path / "pushreach.db"), "--master-key-file", str(tmp_path / key_file)]


def files_holding(tmp_path: Path, needles: list[str]) -> list[str]:
    found = []
    for suffix in ("", "-wal", "-shm"):
        path = tmp_path / f"pushreach.db{suffix}"
        if path.exists():
            data = path.read_bytes()
            found += [f"{path.name}: {n}" for n in needles if n.encode() in data]
    return found


async def test_database_files_hold_no_secret_in_clear(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    created = json.loads(await run_cli(capsys, "apps", "create", "by-cli", "--json", *db_args(tmp_path)))
    await run_cli(
        capsys, "apps", "set-sms-credentials", created["access_id"],
        "--secret-id", CLI_SECRET_ID, "--secret-key", CLI_SECRET_KEY, *db_args(tmp_path),
    )
    running = await start_service(test_settings(tmp_path))
    try:
        admin = running.anonymous().admin
        made = await admin.CreateApp(admin_pb2.CreateAppRequest(name="by-rpc"), metadata=ADMIN)
        answer = await admin.SetSmsCredentials(
            admin_pb2.SetSmsCredentialsRequest(
                access_id=made.app.access_id, secret_id=RPC_SECRET_ID, secret_key=RPC_SECRET_KEY
            ),
            metadata=ADMIN,
        )
        assert answer.app.sms_credentials_set
        listed = await admin.ListApps(admin_pb2.ListAppsRequest(), metadata=ADMIN)
        secrets = [CLI_SECRET_ID, CLI_SECRET_KEY, RPC_SECRET_ID, RPC_SECRET_KEY, created["secret_key"], made.secret_key]
        for message in (answer, listed):  # no RPC gives them back
            assert not any(s.encode() in message.SerializeToString() for s in secrets)
        # Both apps work, so the secrets are really in use...
        for access_id, secret in [(created["access_id"], created["secret_key"]), (made.app.access_id, made.secret_key)]:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await running.anonymous().device.GetDevice(
                    device_pb2.GetDeviceRequest(token="t"), metadata=basic(access_id, secret)
                )
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        opened = running.service.apps.sms_credentials(
            made.app.access_id, (await running.service.store.get_app(made.app.access_id)).sms_credentials_blob  # type: ignore[union-attr]
        )
        assert opened is not None and opened.secret_key == RPC_SECRET_KEY
        # ...and yet no database file (WAL included, while running) holds one in clear.
        assert files_holding(tmp_path, secrets) == []
    finally:
        await running.close()
        await running.service.stop()
    assert files_holding(tmp_path, secrets) == []
    logged = "\n".join(r.getMessage() for r in caplog.records) + capsys.readouterr().err
    assert not [s for s in secrets if s in logged]


async def test_master_key_rotation_reseals_every_app_and_is_safe_to_repeat(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    apps = []
    for i in range(3):
        app = json.loads(await run_cli(capsys, "apps", "create", f"app{i}", "--json", *db_args(tmp_path)))
        await run_cli(
            capsys, "apps", "set-sms-credentials", app["access_id"],
            "--secret-id", f"AKID{i}", "--secret-key", f"key-{i}", *db_args(tmp_path),
        )
        apps.append(app["access_id"])
    old_key = load_master_key("", str(tmp_path / "master.key"))
    new_file = tmp_path / "master.key.new"

    out = json.loads(await run_cli(capsys, "apps", "rotate-master-key", "--new-key-file", str(new_file), "--json", *db_args(tmp_path)))
    assert out["resealed_apps"] == 3
    assert new_file.stat().st_mode & 0o777 == 0o600
    new_key = load_master_key("", str(new_file))

    async def opened_with(key: bytes) -> list[str | None]:
        store = SqliteStore(str(tmp_path / "pushreach.db"))
        await store.open()
        try:
            service = AppService(store, SecretBox(key), SystemClock())
            result = []
            for access_id in apps:
                app = await store.get_app(access_id)
                assert app is not None
                creds = service.sms_credentials(access_id, app.sms_credentials_blob)
                result.append(creds.secret_key if creds else None)
            return result
        finally:
            await store.close()

    assert await opened_with(new_key) == ["key-0", "key-1", "key-2"]
    assert await opened_with(old_key) == [None, None, None]
    # A second run (say, the operator is unsure the first one finished) changes nothing.
    again = json.loads(await run_cli(capsys, "apps", "rotate-master-key", "--new-key-file", str(new_file), "--json", *db_args(tmp_path)))
    assert again["resealed_apps"] == 0
    # After the swap the service runs on the new key: same credentials.
    new_file.replace(tmp_path / "master.key")
    assert await opened_with(load_master_key("", str(tmp_path / "master.key"))) == ["key-0", "key-1", "key-2"]


async def test_a_rotation_that_fails_midway_changes_nothing(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "pushreach.db"))
    await store.open()
    try:
        old = SecretBox(bytes(32))
        service = AppService(store, old, SystemClock())
        ids = []
        for i in range(3):
            app, _ = await service.create_app(f"a{i}")
            await service.set_sms_credentials(app.access_id, f"AKID{i}", f"key-{i}")
            ids.append(app.access_id)
        before = [(await store.get_app(a)).sms_credentials_blob for a in ids]  # type: ignore[union-attr]

        class CrashingBox(SecretBox):
            calls = 0

            def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
                CrashingBox.calls += 1
                if CrashingBox.calls == 2:
                    raise OSError("disk on fire")
                return super().seal(plaintext, associated_data)

        with pytest.raises(OSError):
            await service.rotate_master_key(CrashingBox(bytes([1]) * 32))
        assert [(await store.get_app(a)).sms_credentials_blob for a in ids] == before  # type: ignore[union-attr]
        # A blob under neither key stops the rotation before anything is written.
        with pytest.raises(SecretError):
            await AppService(store, SecretBox(bytes([2]) * 32), SystemClock()).rotate_master_key(SecretBox(bytes([3]) * 32))
        assert [(await store.get_app(a)).sms_credentials_blob for a in ids] == before  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_a_rotated_app_secret_stops_working_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    running = await start_service(test_settings(tmp_path))
    try:
        admin = running.anonymous().admin
        made = await admin.CreateApp(admin_pb2.CreateAppRequest(name="rotating"), metadata=ADMIN)
        access_id = made.app.access_id
        device = running.anonymous().device
        request = device_pb2.BindPhoneRequest(token="t", phone_number="13800138000")

        async def works(secret: str) -> bool:
            try:
                await device.BindPhone(request, metadata=basic(access_id, secret))
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
                return False
            return True

        assert await works(made.secret_key) and await works(made.secret_key)  # now cached
        rotated = await admin.RotateAppSecret(admin_pb2.RotateAppSecretRequest(access_id=access_id), metadata=ADMIN)
        assert not await works(made.secret_key)
        assert await works(rotated.secret_key)
        # The CLI, on the database of the running service (another process, so the service
        # is not told): the new secret works at once, the old one within AUTH_CACHE_SECONDS.
        out = json.loads(await run_cli(capsys, "apps", "rotate-secret", access_id, "--json", *db_args(tmp_path)))
        assert await works(out["secret_key"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + AUTH_CACHE_SECONDS + 1
        while await works(rotated.secret_key):
            assert loop.time() < deadline, "the old secret still works"
            await asyncio.sleep(0.1)
        assert await works(out["secret_key"])
    finally:
        await running.close()
        await running.service.stop()


async def test_receipt_keys_rotate_and_follow_a_master_key_rotation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pushreachd.services.receipts import Receipts

    app = json.loads(await run_cli(capsys, "apps", "create", "a", "--json", *db_args(tmp_path)))
    rotated = json.loads(await run_cli(capsys, "apps", "rotate-receipt-key", app["access_id"], "--json", *db_args(tmp_path)))
    assert rotated["receipt_key_id"] == 1 and rotated["overlap_seconds"] == 7 * 86400  # the first key
    old_key = load_master_key("", str(tmp_path / "master.key"))
    store = SqliteStore(str(tmp_path / "pushreach.db"))
    await store.open()
    try:
        row = await store.get_app(app["access_id"])
        assert row is not None
        receipt = await Receipts(store, SecretBox(old_key), SystemClock()).mint(row.id, "p", "t", 4e9)
    finally:
        await store.close()
    new_file = tmp_path / "master.key.new"
    await run_cli(capsys, "apps", "rotate-master-key", "--new-key-file", str(new_file), "--json", *db_args(tmp_path))
    store = SqliteStore(str(tmp_path / "pushreach.db"))
    await store.open()
    try:
        claims = await Receipts(store, SecretBox(load_master_key("", str(new_file))), SystemClock()).verify(receipt)
        assert (claims.push_id, claims.token) == ("p", "t")
        # Nothing of the receipt key is readable under the old master key any more.
        assert all(key.blob for key in await store.receipt_keys(row.id))
        with pytest.raises(SecretError):
            await Receipts(store, SecretBox(old_key), SystemClock()).reseal(SecretBox(bytes(32)))
    finally:
        await store.close()

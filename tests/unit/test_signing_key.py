"""App secrets are kept sealed for TPNS signatures: they open again, and follow a master-key rotation."""

from __future__ import annotations

import os
from pathlib import Path

from pushreachd.secrets import SecretBox
from pushreachd.services.apps import AppService
from pushreachd.store.sqlite import SqliteStore

from tests.fakes import FakeClock


async def test_signing_key_survives_rotation_of_secret_and_master_key(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "k.db"))
    await store.open()
    try:
        apps = AppService(store, SecretBox(os.urandom(32)), FakeClock())
        app, secret = await apps.create_app("a")
        found = await apps.signing_key(app.access_id)
        assert found is not None and found[1] == secret
        raw = (tmp_path / "k.db").read_bytes() + (tmp_path / "k.db-wal").read_bytes()
        assert secret.encode() not in raw  # sealed, never in clear
        new_secret = await apps.rotate_secret(app.access_id)
        assert (await apps.signing_key(app.access_id))[1] == new_secret  # type: ignore[index]
        new_box = SecretBox(os.urandom(32))
        await apps.rotate_master_key(new_box)
        rotated = AppService(store, new_box, FakeClock())
        assert (await rotated.signing_key(app.access_id))[1] == new_secret  # type: ignore[index]
        assert await apps.signing_key("no-such-app") is None
    finally:
        await store.close()

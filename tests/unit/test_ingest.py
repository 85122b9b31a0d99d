"""The ingest paths made cheaper for speed keep their meaning: the stored spec and fingerprint,
delivery marks shared by one commit, events recorded in sets, redelivery on start in pages."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path

import pytest

from pushreachd.model import (
    App,
    AudienceType,
    NewPush,
    PushReceipt,
    PushSpec,
    SmsInfo,
    Target,
    TriggerCondition,
)
from pushreachd.store.sqlite import SqliteStore

NOW = 1_750_000_000.0
INFO = SmsInfo(300, TriggerCondition.NOT_ARRIVED, "签名", "123456", "1400000001", ("42", "Ünïcode"))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "ingest.db"))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def add_push(store: SqliteStore, app: App, push_id: str, tokens: list[str], *, at: float = NOW,
                   expire: int = 259200) -> int:
    spec = PushSpec(AudienceType.TOKEN_LIST, tuple(tokens), (), "t", "c", expire_time=expire)
    receipt = PushReceipt(push_id, len(tokens), (), at, None)
    new = NewPush(push_id, app.id, spec, tuple(Target(t) for t in tokens), at, None, "", receipt)
    _, row = await store.create_push(new, "")
    assert row is not None
    return row


# -- the stored spec and the fingerprint ----------------------------------------------------------


@pytest.mark.parametrize("info", [None, INFO])
def test_spec_json_is_byte_for_byte_what_asdict_made(info: SmsInfo | None) -> None:
    """Fingerprints already stored for idempotent retries must still match after an upgrade."""
    spec = PushSpec(AudienceType.TOKEN_LIST, ("a", "b"), (), "标题", "c\n", resend_by_sms=info is not None, sms_info=info)
    old = json.dumps(asdict(spec), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert spec.to_json() == old
    assert PushSpec.from_json(spec.to_json()) == spec
    assert json.loads(spec.to_json(tokens=False))["token_list"] == []


# -- delivery marks -------------------------------------------------------------------------------


async def test_delivery_marks_made_together_share_one_write_and_all_land(store: SqliteStore, tmp_path: Path) -> None:
    app = await store.create_app("app-1", "app", "verifier", NOW)
    rows = [await add_push(store, app, f"p{i}", [f"t{i}"]) for i in range(300)]
    writes_before = store.stats.writes
    await asyncio.gather(*(store.mark_delivered(r, NOW + i) for i, r in enumerate(rows)))
    assert store.stats.writes - writes_before == 1, "300 marks queued together are one write"
    # and a later mark starts a new group rather than joining one already committed
    late = await add_push(store, app, "late", ["x"])
    await store.mark_delivered(late, NOW + 1000)
    conn = sqlite3.connect(str(tmp_path / "ingest.db"))
    try:
        got = dict(conn.execute("SELECT id, delivered_at FROM pushes").fetchall())
    finally:
        conn.close()
    assert got == {**{r: NOW + i for i, r in enumerate(rows)}, late: NOW + 1000}


async def test_a_cancelled_waiter_does_not_cancel_the_others_marks(store: SqliteStore, tmp_path: Path) -> None:
    app = await store.create_app("app-1", "app", "verifier", NOW)
    a, b = await add_push(store, app, "a", ["t"]), await add_push(store, app, "b", ["t"])
    first = asyncio.create_task(store.mark_delivered(a, NOW))
    second = asyncio.create_task(store.mark_delivered(b, NOW))
    await asyncio.sleep(0)
    first.cancel()
    await second  # still answered once committed
    conn = sqlite3.connect(str(tmp_path / "ingest.db"))
    try:
        assert conn.execute("SELECT count(*) FROM pushes WHERE delivered_at IS NULL").fetchone() == (0,)
    finally:
        conn.close()

"""Push channels on PostgreSQL (as store/sqlite/channels.py): sealed channel credentials,
device routes and token state, each target's push outcome."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from ...model import App, Channel, Device, PushOutcome, Route, TargetOutcome
from ..base import FireJob
from .database import Database

Conn = psycopg.AsyncConnection

FINAL_FAILURES = [int(o) for o in PushOutcome if o.final_failure]


class ChannelQueries:
    _db: Database

    # Provided by PostgresStore.
    async def _app_by_id(self, conn: Conn, app_id: int) -> App: ...  # type: ignore[empty-body]
    def _device_op(  # type: ignore[empty-body]
        self, app_id: int, token: str, now: float, change: Callable[[Conn], Any]
    ) -> Callable[[Conn], Any]: ...
    async def _pending_job(self, conn: Conn, push: int) -> FireJob | None: ...  # type: ignore[empty-body]

    async def set_channel_credentials(self, app_id: int, channel: Channel, blob: bytes, now: float) -> App:
        async def op(conn: Conn) -> App:
            app = await self._app_by_id(conn, app_id)  # NotFound before the foreign key says less
            await conn.execute(
                "INSERT INTO channel_credentials (app_id, channel, blob, updated_at) VALUES (%s,%s,%s,%s) "
                "ON CONFLICT (app_id, channel) DO UPDATE SET blob=excluded.blob, updated_at=excluded.updated_at",
                (app_id, int(channel), blob, now),
            )
            return await self._app_by_id(conn, app.id)

        return await self._db.write(op)

    async def channel_credentials(self, app_id: int) -> dict[Channel, bytes]:
        async def q(c: Conn) -> dict[Channel, bytes]:
            cur = await c.execute("SELECT channel, blob FROM channel_credentials WHERE app_id=%s", (app_id,))
            return {Channel(ch): bytes(blob) for ch, blob in await cur.fetchall()}

        return await self._db.read(q)

    @staticmethod
    async def reseal_channels(conn: Conn, reseal: Callable[[str, Channel, bytes], bytes]) -> None:
        cur = await conn.execute(
            "SELECT c.app_id, a.access_id, c.channel, c.blob FROM channel_credentials c JOIN apps a ON a.id = c.app_id "
            "ORDER BY c.app_id, c.channel FOR UPDATE OF c"
        )
        for app_id, access_id, channel, blob in await cur.fetchall():
            old = bytes(blob)
            new = reseal(access_id, Channel(channel), old)
            if new != old:
                await conn.execute(
                    "UPDATE channel_credentials SET blob=%s WHERE app_id=%s AND channel=%s", (new, app_id, channel)
                )

    async def register_device(self, app_id: int, token: str, channel: Channel, phone: str, now: float) -> Device:
        async def change(c: Conn) -> None:
            await c.execute(
                "UPDATE devices SET channel=%s, invalid_at=NULL, invalid_reason='' WHERE app_id=%s AND token=%s",
                (int(channel), app_id, token),
            )
            if phone:
                await c.execute("UPDATE devices SET phone=%s WHERE app_id=%s AND token=%s", (phone, app_id, token))

        return await self._db.write(self._device_op(app_id, token, now, change))  # type: ignore[no-any-return]

    async def device_routes(self, app_id: int, tokens: list[str]) -> dict[str, Route]:
        async def q(c: Conn) -> dict[str, Route]:
            cur = await c.execute(
                "SELECT token, channel, invalid_at FROM devices WHERE app_id=%s AND token = ANY(%s) "
                "AND (channel IS NOT NULL OR invalid_at IS NOT NULL)",
                (app_id, tokens),
            )
            return {
                t: Route(None if ch is None else Channel(ch), invalid_at is not None)
                for t, ch, invalid_at in await cur.fetchall()
            }

        return await self._db.read(q)

    async def record_outcomes(
        self, push: int, app_id: int, outcomes: list[TargetOutcome], delivered_at: float | None = None
    ) -> None:
        async def op(c: Conn) -> None:
            if delivered_at is not None:
                await c.execute("UPDATE pushes SET delivered_at=%s WHERE id=%s", (delivered_at, push))
            async with c.cursor() as cur:
                await cur.executemany(
                    "UPDATE targets SET channel=%s, outcome=%s, outcome_code=%s, outcome_at=%s "
                    "WHERE push=%s AND token=%s AND outcome IS NULL",
                    [(int(o.channel), int(o.outcome), o.code, o.at, push, o.token) for o in outcomes],
                )
                invalid = [o for o in outcomes if o.outcome is PushOutcome.INVALID_TOKEN]
                if invalid:
                    # Only while the device is still on the channel that answered.
                    await cur.executemany(
                        "INSERT INTO devices (app_id, token, updated_at, channel, invalid_at, invalid_reason) "
                        "VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (app_id, token) DO UPDATE SET "
                        "invalid_at=excluded.invalid_at, invalid_reason=excluded.invalid_reason, "
                        "updated_at=excluded.updated_at WHERE coalesce(devices.channel, excluded.channel) = excluded.channel",
                        [(app_id, o.token, o.at, int(o.channel), o.at, o.code) for o in invalid],
                    )

        await self._db.write(op)

    async def pending_fallback_job(self, push: int) -> FireJob | None:
        return await self._db.read(lambda c: self._pending_job(c, push))

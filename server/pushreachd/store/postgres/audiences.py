"""Device tags and the resolution of TAG / ALL pushes ("broadcasts") on PostgreSQL, as
store/sqlite/audiences.py, shared by any number of instances.

- Tag limits are counted under transaction-level advisory locks (each token's, then the
  app's when the call adds a tag the app does not have yet), so two instances adding at once
  cannot both pass a limit.
- A page of targets is stored only if the broadcast's cursor is still where the resolver read
  it (the row is locked, then compared): two resolvers never store a target twice.
- Which instance resolves a broadcast: the one holding its lease (owner, lease_until on the
  database's clock, as fires). The accepting instance holds it from the start; an instance
  takes over only a broadcast whose lease is free or expired, with `FOR UPDATE SKIP LOCKED`
  (open_broadcasts, on start). The holder renews its leases every third of a lease while it
  resolves and frees them when it stops, so a restarted or another starting instance resumes
  them at once; after a crash they are free when the lease expires. Leases only decide who
  works; the cursor's compare-and-set alone keeps targets unique.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

from ...errors import FailedPrecondition
from ...model import Broadcast, PushSpec
from .database import Database, lock_keys
from .fallbacks import DB_NOW

log = logging.getLogger(__name__)
Conn = psycopg.AsyncConnection

# Free for this instance: its own, never held, or its holder's lease ran out.
_HOLDABLE = f"(owner = %(owner)s OR owner = '' OR lease_until IS NULL OR lease_until < {DB_NOW})"
_MOVED_ON = "the broadcast moved on: another resolver stored this page"
_HELD = "another instance is resolving this push's targets"


class BroadcastQueries:
    _db: Database
    owner: str
    lease_seconds: float

    def __init__(self) -> None:
        self._resolving: set[int] = set()  # broadcasts this instance holds and works on

    # -- tags -----------------------------------------------------------------------------

    async def modify_tags(
        self,
        app_id: int,
        now: float,
        *,
        clear: list[str] = (),  # type: ignore[assignment]
        remove: list[tuple[str, str]] = (),  # type: ignore[assignment]
        add: list[tuple[str, str]] = (),  # type: ignore[assignment]
        max_per_token: int,
        max_per_app: int,
    ) -> None:
        async def op(c: Conn) -> None:
            await _modify_tags(c, app_id, now, list(clear), list(remove), list(add), max_per_token, max_per_app)

        await self._db.write(op)

    @staticmethod
    async def _tags(conn: Conn, app_id: int, token: str) -> tuple[str, ...]:
        cur = await conn.execute(
            "SELECT tag FROM device_tags WHERE app_id=%s AND token=%s ORDER BY added_at, tag", (app_id, token)
        )
        return tuple(r[0] for r in await cur.fetchall())

    # -- broadcasts -----------------------------------------------------------------------

    def _lease_args(self, **more: Any) -> dict[str, Any]:
        return {"owner": self.owner, "lease": self.lease_seconds, **more}

    async def _open_broadcast(self, conn: Conn, push: int, app_id: int) -> None:
        """In create_push's transaction: the accepting instance resolves it, under its lease."""
        await conn.execute(
            f"INSERT INTO broadcasts (push, app_id, owner, lease_until) VALUES (%s, %s, %s, {DB_NOW} + %s)",
            (push, app_id, self.owner, self.lease_seconds),
        )

    def _resolves(self, push: int) -> None:
        self._resolving.add(push)

    async def open_broadcasts(self) -> list[Broadcast]:
        """The unfinished broadcasts this instance now holds: its own, and those no live
        instance holds (claimed here, skipping rows another instance is claiming)."""

        async def op(c: Conn) -> list[Broadcast]:
            cur = await c.execute(
                "WITH claimed AS ("
                f" UPDATE broadcasts b SET owner = %(owner)s, lease_until = {DB_NOW} + %(lease)s"
                f" FROM (SELECT push FROM broadcasts WHERE NOT done AND {_HOLDABLE}"
                "  ORDER BY push FOR UPDATE SKIP LOCKED) s"
                " WHERE b.push = s.push RETURNING b.push, b.cursor, b.next_seq, b.delivered_seq)"
                " SELECT c.push, p.push_id, p.app_id, a.access_id, p.spec, p.accepted_at, p.fallback_due_at,"
                " c.cursor, c.next_seq, c.delivered_seq FROM claimed c JOIN pushes p ON p.id = c.push"
                " JOIN apps a ON a.id = p.app_id ORDER BY c.push",
                self._lease_args(),
            )
            return [
                Broadcast(r[0], r[1], r[2], r[3], PushSpec.from_json(r[4]), r[5], r[6], r[7], r[8], r[9])
                for r in await cur.fetchall()
            ]

        # Renewed from the resolver's first use on (broadcast_tokens, store_broadcast_page): a
        # claim the resolver does not take up (a reload after a failure claims all it may)
        # lapses after one lease instead of being held forever.
        return await self._db.transaction(op)

    async def broadcast_page(
        self, app_id: int, after: str, limit: int, *, with_tags: bool
    ) -> list[tuple[str, frozenset[str]]]:
        async def q(c: Conn) -> list[tuple[str, frozenset[str]]]:
            cur = await c.execute(
                "SELECT token FROM devices WHERE app_id=%s AND token > %s ORDER BY token LIMIT %s", (app_id, after, limit)
            )
            tokens = [r[0] for r in await cur.fetchall()]
            if not with_tags or not tokens:
                return [(t, frozenset()) for t in tokens]
            tags: dict[str, set[str]] = {}
            cur = await c.execute(
                "SELECT token, tag FROM device_tags WHERE app_id=%s AND token = ANY(%s)", (app_id, tokens)
            )
            for token, tag in await cur.fetchall():
                tags.setdefault(token, set()).add(tag)
            return [(t, frozenset(tags.get(t, ()))) for t in tokens]

        return await self._db.read(q)

    async def store_broadcast_page(self, push: int, expected_cursor: str, tokens: list[str], cursor: str) -> int:
        async def op(c: Conn) -> int:
            # The row lock makes the compare-and-set: a second resolver waits here, then sees
            # the cursor the first one moved.
            cur = await c.execute(
                f"SELECT cursor, next_seq, done, {_HOLDABLE} FROM broadcasts WHERE push = %(push)s FOR UPDATE",
                self._lease_args(push=push),
            )
            row = await cur.fetchone()
            if row is None or row[2] or row[0] != expected_cursor:
                raise FailedPrecondition(_MOVED_ON)
            if not row[3]:
                raise FailedPrecondition(_HELD)
            first = row[1]
            if tokens:
                await c.execute(
                    "INSERT INTO targets (push, token, seq, account) "
                    "SELECT %s, t.token, %s + t.seq - 1, '' FROM unnest(%s::text[]) WITH ORDINALITY AS t(token, seq)",
                    (push, first, tokens),
                )
                await c.execute("UPDATE pushes SET target_count = target_count + %s WHERE id=%s", (len(tokens), push))
            await c.execute(
                f"UPDATE broadcasts SET cursor=%s, next_seq=%s, owner=%s, lease_until={DB_NOW} + %s WHERE push=%s",
                (cursor, first + len(tokens), self.owner, self.lease_seconds, push),
            )
            return int(first)

        first = await self._db.transaction(op)
        self._resolves(push)
        return first

    async def broadcast_tokens(self, push: int, from_seq: int, to_seq: int) -> list[str]:
        """The stored targets in [from_seq, to_seq), for a hand-over after a stop; taking the
        broadcast's lease first (refused while another instance holds it)."""

        async def op(c: Conn) -> list[str]:
            cur = await c.execute(
                f"UPDATE broadcasts SET owner = %(owner)s, lease_until = {DB_NOW} + %(lease)s "
                f"WHERE push = %(push)s AND NOT done AND {_HOLDABLE} RETURNING push",
                self._lease_args(push=push),
            )
            if await cur.fetchone() is None:
                cur = await c.execute("SELECT 1 FROM broadcasts WHERE push=%s AND NOT done", (push,))
                if await cur.fetchone() is not None:
                    raise FailedPrecondition(_HELD)
            else:
                self._resolves(push)
            cur = await c.execute(
                "SELECT token FROM targets WHERE push=%s AND seq >= %s AND seq < %s ORDER BY seq", (push, from_seq, to_seq)
            )
            return [r[0] for r in await cur.fetchall()]

        return await self._db.transaction(op)

    async def mark_broadcast_delivered(self, push: int, through_seq: int) -> None:
        async def op(c: Conn) -> None:
            await c.execute(
                "UPDATE broadcasts SET delivered_seq = greatest(delivered_seq, %s) WHERE push=%s", (through_seq, push)
            )

        await self._db.transaction(op)

    async def finish_broadcast(self, push: int, now: float) -> None:
        async def op(c: Conn) -> None:
            await c.execute("UPDATE broadcasts SET done = true, owner = '', lease_until = NULL WHERE push=%s", (push,))
            await c.execute("UPDATE pushes SET delivered_at = coalesce(delivered_at, %s) WHERE id=%s", (now, push))

        await self._db.transaction(op)
        self._resolving.discard(push)

    # -- leases -----------------------------------------------------------------------------

    async def broadcast_lease_loop(self) -> None:
        """Renew the leases of the broadcasts this instance resolves, every third of a lease;
        one taken over meanwhile (this instance was cut off) is let go. Never dies."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            held = sorted(self._resolving)
            if not held:
                continue

            async def op(c: Conn) -> set[int]:
                cur = await c.execute(
                    f"UPDATE broadcasts SET lease_until = {DB_NOW} + %s WHERE push = ANY(%s) AND owner = %s "
                    "AND NOT done RETURNING push",
                    (self.lease_seconds, held, self.owner),
                )
                return {r[0] for r in await cur.fetchall()}

            try:
                kept = await self._db.transaction(op)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("renewing %d broadcast lease(s) failed: %s", len(held), exc)
                continue
            self._resolving.difference_update(set(held) - kept)

    async def release_broadcasts(self) -> None:
        """On stop (the resolver stopped first): free this instance's unfinished broadcasts, so
        the next instance that starts resumes them without waiting for the lease."""
        self._resolving.clear()

        async def op(c: Conn) -> None:
            await c.execute(
                "UPDATE broadcasts SET owner = '', lease_until = NULL WHERE owner = %s AND NOT done", (self.owner,)
            )

        try:
            await self._db.transaction(op)
        except Exception as exc:  # the database away: the leases expire by themselves
            log.warning("freeing this instance's broadcasts failed: %s", exc)


async def _modify_tags(
    c: Conn,
    app_id: int,
    now: float,
    clear: list[str],
    remove: list[tuple[str, str]],
    add: list[tuple[str, str]],
    max_per_token: int,
    max_per_app: int,
) -> None:
    """As SQLite's: clear, then remove, then add (creating the devices); FailedPrecondition
    past a limit (the caller's savepoint undoes the call)."""
    if clear:
        await c.execute("DELETE FROM device_tags WHERE app_id=%s AND token = ANY(%s)", (app_id, clear))
    if remove:
        await c.execute(
            "DELETE FROM device_tags d USING unnest(%s::text[], %s::text[]) AS r(token, tag) "
            "WHERE d.app_id=%s AND d.token = r.token AND d.tag = r.tag",
            ([t for t, _ in remove], [g for _, g in remove], app_id),
        )
    if not add:
        return
    tokens = list(dict.fromkeys(t for t, _ in add))
    tags = list(dict.fromkeys(g for _, g in add))
    # Each token's count is checked under its lock: two instances adding to one token wait.
    await lock_keys(c, [f"tags:{app_id}:{t}" for t in tokens])
    await c.execute(
        "INSERT INTO devices (app_id, token, updated_at) SELECT %s, t, %s FROM unnest(%s::text[]) AS t ORDER BY t "
        "ON CONFLICT (app_id, token) DO UPDATE SET updated_at=excluded.updated_at",
        (app_id, now, sorted(tokens)),
    )
    new_tags = await _new_tags(c, app_id, tags)
    if new_tags:
        # The app's distinct tags are counted under the app's lock (after the tokens': one order).
        await lock_keys(c, [f"tags:{app_id}"])
        new_tags = await _new_tags(c, app_id, tags)
        cur = await c.execute("SELECT count(*) FROM app_tags WHERE app_id=%s", (app_id,))
        row = await cur.fetchone()
        if new_tags and row is not None and row[0] + len(new_tags) > max_per_app:
            raise FailedPrecondition(f"the app would have more than {max_per_app} distinct tags")
        await c.execute(
            "INSERT INTO app_tags (app_id, tag) SELECT %s, g FROM unnest(%s::text[]) AS g ON CONFLICT DO NOTHING",
            (app_id, new_tags),
        )
    await c.execute(
        "INSERT INTO device_tags (app_id, token, tag, added_at) "
        "SELECT %s, x.t, x.g, %s FROM unnest(%s::text[], %s::text[]) AS x(t, g) ON CONFLICT DO NOTHING",
        (app_id, now, [t for t, _ in add], [g for _, g in add]),
    )
    cur = await c.execute(
        "SELECT token, count(*) FROM device_tags WHERE app_id=%s AND token = ANY(%s) GROUP BY token", (app_id, tokens)
    )
    counts = dict(await cur.fetchall())
    for token in tokens:
        if counts.get(token, 0) > max_per_token:
            raise FailedPrecondition(f"token {token!r} would hold more than {max_per_token} tags")


async def _new_tags(c: Conn, app_id: int, tags: list[str]) -> list[str]:
    cur = await c.execute(
        "SELECT g FROM unnest(%s::text[]) WITH ORDINALITY AS x(g, n) WHERE NOT EXISTS "
        "(SELECT 1 FROM app_tags a WHERE a.app_id = %s AND a.tag = x.g) ORDER BY n",
        (tags, app_id),
    )
    return [r[0] for r in await cur.fetchall()]

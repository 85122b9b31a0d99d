"""Reads on a small pool of query-only connections, one per reader thread (WAL: readers never
wait for the writer).

Small reads that every call makes (a push's device routes) may *join*: while one read of a
kind is under way, callers asking for the same kind wait together and share the next trip to a
reader thread (`join`). A trip costs the event loop more than a small query does (a thread
hand-off, two futures, a wake-up of the loop), so under load this is most of their cost.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class _Joined:
    """Callers of one kind of read waiting for the next trip: their arguments, one future."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.args: list[Any] = []
        self.future: asyncio.Future[list[Any]] = loop.create_future()


class ReaderPool:
    def __init__(self, connect: Callable[[], sqlite3.Connection], threads: int = 2) -> None:
        self._connect = connect
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="pushreach-db-reader")
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._busy: set[str] = set()  # kinds of joined read under way
        self._waiting: dict[str, _Joined] = {}  # their next trip, open to more callers

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._conn()))

    async def join(self, name: str, arg: Any, fn: Callable[[sqlite3.Connection, list[Any]], list[T]]) -> T:
        """`fn(conn, args)[i]` for this caller's `arg` at index i: callers of kind `name` that
        ask while one of its reads is under way share the next one (alone: on the next turn of
        the loop). A failing `fn` fails every caller of its trip (keep it to reads that fail
        only with the database)."""
        group = self._waiting.get(name)
        if group is None:
            group = self._waiting[name] = _Joined(asyncio.get_running_loop())
            if name not in self._busy:
                self._start(name, fn)
        index = len(group.args)
        group.args.append(arg)
        # shield: one caller cancelled must not cancel the trip the others wait on
        results = await asyncio.shield(group.future)
        return results[index]

    def _start(self, name: str, fn: Callable[[sqlite3.Connection, list[Any]], list[Any]]) -> None:
        """Send the waiting trip of `name` on the next turn of the loop, so that callers asking
        in this turn join it too."""
        self._busy.add(name)
        asyncio.get_running_loop().call_soon(self._send, name, fn)

    def _send(self, name: str, fn: Callable[[sqlite3.Connection, list[Any]], list[Any]]) -> None:
        group = self._waiting.pop(name)  # its arguments are fixed from here on

        def done(trip: asyncio.Future[list[Any]]) -> None:
            self._busy.discard(name)
            if name in self._waiting:  # callers joined while this trip was out
                self._start(name, fn)
            if group.future.done():
                return
            if trip.cancelled():
                group.future.cancel()
            elif trip.exception() is not None:
                group.future.set_exception(trip.exception())  # type: ignore[arg-type]
            else:
                group.future.set_result(trip.result())

        try:
            trip = asyncio.get_running_loop().run_in_executor(self._pool, lambda: fn(self._conn(), group.args))
        except RuntimeError as exc:  # the pool is shut down: nobody may wait forever
            self._busy.discard(name)
            group.future.set_exception(exc)
            return
        trip.add_done_callback(done)

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._pool.shutdown(wait=True)

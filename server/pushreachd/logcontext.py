"""The request id of the call being served, attached to every log line it causes.

The RPC wrapper sets it (the request's own `request_id`, or a fresh short id); tasks started
while serving the call (a push's delivery, say) inherit it, as contextvars do.
"""

from __future__ import annotations

import contextvars
import logging
import random

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("pushreach_request_id", default="-")


def begin_request(request_id: str = "") -> str:
    """Name the call being served; returns the id used."""
    # Not `secrets`: the id only ties log lines together, and os.urandom is a system call that
    # gives up the GIL on every RPC.
    rid = request_id[:64] or f"{random.getrandbits(48):012x}"
    _request_id.set(rid)
    return rid


def current_request_id() -> str:
    return _request_id.get()


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (`-` outside a call), for the log format."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True

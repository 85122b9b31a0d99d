"""Opaque page tokens (AIP-158). A token is bound to the query it came from (its scope), so
a token reused with other filters is refused rather than silently skipping records."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from .validation import Violations


def _scope_digest(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:16]


def encode_token(position: Any, scope: str) -> str:
    raw = json.dumps({"p": position, "s": _scope_digest(scope)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_token(v: Violations, path: str, token: str, scope: str) -> Any:
    """The position stored in `token`, or None for the first page (or a bad token)."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if data["s"] != _scope_digest(scope):
            v.add(path, "does not belong to this query (the filters changed)")
            return None
        return data["p"]
    except (ValueError, KeyError, TypeError):
        v.add(path, "not a page token from this service")
        return None


def encode_offset_token(offset: int, scope: str) -> str:
    return encode_token(offset, scope)


def decode_offset_token(v: Violations, path: str, token: str, scope: str) -> int:
    position = decode_token(v, path, token, scope)
    if position is None:
        return 0
    if not isinstance(position, int) or position < 0:
        v.add(path, "not a page token from this service")
        return 0
    return position

"""Reading a JSON request body with bounded work, and typed field access that names the field
at fault (INVALID_ARGUMENT with a field path, like the gRPC API's BadRequest).

    data = await read_json(request, max_bytes=64 * 1024)
    v = Violations()
    f = Fields.root(data, v)            # 400 at once unless the body is a JSON object
    receipt = f.string("receipt", required=True, max_length=512)
    v.raise_if_any()                    # 400 naming every field at fault
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping
from typing import Any, TypeVar

from aiohttp import web

from ..errors import InvalidArgument
from ..services.validation import Violations

__all__ = ["Fields", "Violations", "parse_rfc3339", "read_json"]

T = TypeVar("T")


async def read_json(request: web.Request, max_bytes: int) -> Any:
    """The parsed JSON body; 413 past `max_bytes` (reading no further), 400 for bad JSON."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=request.content_length)
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(65536):
        size += len(chunk)
        if size > max_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=size)
        chunks.append(chunk)
    if not size:
        raise InvalidArgument.one("", "the request body must be a JSON object")
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise InvalidArgument.one("", "the request body is not valid JSON") from None


def parse_rfc3339(text: str) -> float | None:
    """Epoch seconds of an RFC 3339 date-time with an offset ("2026-12-02T01:02:03Z",
    "...+08:00", fractions allowed); None if it is not one."""
    if not 20 <= len(text) <= 40 or text[10:11] not in ("T", "t"):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None  # RFC 3339 needs an offset: a bare local time means nothing to the server
    return parsed.timestamp()


class Fields:
    """One JSON object of a request, read field by field; problems go to `v` under `prefix`."""

    def __init__(self, data: Mapping[str, Any], v: Violations, prefix: str = "") -> None:
        self.data = data
        self.v = v
        self.prefix = prefix

    @classmethod
    def root(cls, data: Any, v: Violations) -> Fields:
        if not isinstance(data, dict):
            raise InvalidArgument.one("", "the request body must be a JSON object")
        return cls(data, v)

    def path(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def string(self, name: str, *, required: bool = False, max_length: int = 4096) -> str:
        value = self.data.get(name)
        if value is None:
            if required:
                self.v.add(self.path(name), "required")
            return ""
        if not isinstance(value, str):
            self.v.add(self.path(name), "must be a string")
            return ""
        if required and not value:
            self.v.add(self.path(name), "required")
        elif len(value) > max_length:
            self.v.add(self.path(name), f"at most {max_length} characters")
            return ""
        return value

    def choice(self, name: str, choices: Mapping[str, T], *, required: bool = False) -> T | None:
        text = self.string(name, required=required, max_length=64)
        if not text:
            return None
        found = choices.get(text.lower())
        if found is None:
            self.v.add(self.path(name), f"must be one of {', '.join(repr(c) for c in choices)}")
        return found

    def time(self, name: str) -> float | None:
        """An RFC 3339 date-time, as epoch seconds; None when absent."""
        value = self.data.get(name)
        if value is None:
            return None
        parsed = parse_rfc3339(value) if isinstance(value, str) else None
        if parsed is None or not math.isfinite(parsed):
            self.v.add(self.path(name), "must be an RFC 3339 date-time with an offset, e.g. 2026-12-02T09:30:00Z")
        return parsed

    def integer(self, name: str, *, required: bool = False, low: int = 0, high: int = 2**53) -> int | None:
        value = self.data.get(name)
        if value is None:
            if required:
                self.v.add(self.path(name), "required")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.v.add(self.path(name), "must be an integer")
            return None
        if not low <= value <= high:
            self.v.add(self.path(name), f"between {low} and {high}")
            return None
        return value

    def objects(self, name: str, *, max_items: int, required: bool = False) -> list[Fields]:
        """A list of JSON objects, each as Fields under `name[i].`."""
        value = self.data.get(name)
        if value is None:
            if required:
                self.v.add(self.path(name), "required")
            return []
        if not isinstance(value, list):
            self.v.add(self.path(name), "must be a list")
            return []
        if not value and required:
            self.v.add(self.path(name), "must not be empty")
        if len(value) > max_items:
            self.v.add(self.path(name), f"at most {max_items} items")
            return []
        out = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                out.append(Fields(item, self.v, f"{self.path(name)}[{i}]."))
            else:
                self.v.add(f"{self.path(name)}[{i}]", "must be a JSON object")
        return out

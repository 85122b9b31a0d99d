"""Devices: a token's phone number (for the SMS fallback) and accounts (for audiences)."""

from __future__ import annotations

from .. import limits
from ..clock import Clock
from ..errors import NotFound
from ..model import App, Device
from ..store.base import Store
from .validation import (
    Violations,
    check_request_id,
    check_text,
    check_token,
    validate_phone,
)


class DeviceService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def bind_phone(self, app: App, token: str, phone_number: str, request_id: str = "") -> Device:
        v = Violations()
        check_token(v, "token", token)
        check_request_id(v, request_id)
        phone = validate_phone(v, "phone_number", phone_number)
        v.raise_if_any()
        return await self._store.bind_phone(app.id, token, phone, self._clock.time())

    async def unbind_phone(self, app: App, token: str, request_id: str = "") -> Device:
        self._check_token(token, request_id)
        return await self._store.unbind_phone(app.id, token, self._clock.time())

    async def bind_account(self, app: App, token: str, account: str, request_id: str = "") -> Device:
        self._check_token(token, request_id, account)
        return await self._store.bind_account(
            app.id, token, account, self._clock.time(), limits.MAX_TOKENS_PER_ACCOUNT
        )

    async def unbind_account(self, app: App, token: str, account: str, request_id: str = "") -> Device:
        self._check_token(token, request_id, account)
        return await self._store.unbind_account(app.id, token, account, self._clock.time())

    async def get_device(self, app: App, token: str) -> Device:
        self._check_token(token)
        device = await self._store.get_device(app.id, token)
        if device is None:
            raise NotFound(f"device {token!r} not found")
        return device

    @staticmethod
    def _check_token(token: str, request_id: str = "", account: str | None = None) -> None:
        v = Violations()
        check_token(v, "token", token)
        check_request_id(v, request_id)
        if account is not None:
            check_text(v, "account", account, limits.MAX_ACCOUNT_LENGTH)
        v.raise_if_any()

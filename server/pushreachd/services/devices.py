"""Devices: a token's phone number (for the SMS fallback) and accounts (for audiences)."""

from __future__ import annotations

from .. import limits
from ..clock import Clock
from ..errors import NotFound
from ..model import App, Channel, Device
from ..store.base import Store
from .validation import (
    Violations,
    check_request_id,
    check_tag,
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

    async def register_device(
        self, app: App, token: str, channel: int, phone_number: str = "", request_id: str = ""
    ) -> Device:
        """The device's channel (and phone, when given); a token marked invalid is valid again."""
        v = Violations()
        check_token(v, "token", token)
        check_request_id(v, request_id)
        chosen: Channel | None = None
        if channel == 0:
            v.add("channel", "required")
        else:
            try:
                chosen = Channel(channel)
            except ValueError:
                v.add("channel", f"unknown channel {channel}")
        phone = validate_phone(v, "phone_number", phone_number) if phone_number else ""
        v.raise_if_any()
        assert chosen is not None
        return await self._store.register_device(app.id, token, chosen, phone, self._clock.time())

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

    # -- tags (TPNS's tag API: limits as TPNS's) --------------------------------------------

    async def add_tags(
        self,
        app: App,
        tokens: list[str],
        tags: list[str],
        pairs: list[tuple[str, str]] = (),  # type: ignore[assignment]
        request_id: str = "",
    ) -> None:
        """Add every tag of `tags` to every token of `tokens`, and each (token, tag) pair."""
        wanted = self._tag_pairs(tokens, tags, pairs, request_id)
        await self._store.modify_tags(
            app.id,
            self._clock.time(),
            add=wanted,
            max_per_token=limits.MAX_TAGS_PER_TOKEN,
            max_per_app=limits.MAX_TAGS_PER_APP,
        )

    async def remove_tags(
        self,
        app: App,
        tokens: list[str],
        tags: list[str],
        pairs: list[tuple[str, str]] = (),  # type: ignore[assignment]
        request_id: str = "",
    ) -> None:
        """Remove every tag of `tags` from every token of `tokens`, and each (token, tag) pair."""
        unwanted = self._tag_pairs(tokens, tags, pairs, request_id)
        await self._store.modify_tags(
            app.id,
            self._clock.time(),
            remove=unwanted,
            max_per_token=limits.MAX_TAGS_PER_TOKEN,
            max_per_app=limits.MAX_TAGS_PER_APP,
        )

    async def set_tags(self, app: App, token: str, tags: list[str], request_id: str = "") -> Device:
        """Replace the token's tags by `tags` (an empty list clears them)."""
        v = Violations()
        check_token(v, "token", token)
        check_request_id(v, request_id)
        self._check_tags(v, "tags", tags, required=False)
        if len(set(tags)) > limits.MAX_TAGS_PER_TOKEN:
            v.add("tags", f"a token holds at most {limits.MAX_TAGS_PER_TOKEN} tags")
        v.raise_if_any()
        now = self._clock.time()
        await self._store.modify_tags(
            app.id,
            now,
            clear=[token],
            add=[(token, t) for t in dict.fromkeys(tags)],
            max_per_token=limits.MAX_TAGS_PER_TOKEN,
            max_per_app=limits.MAX_TAGS_PER_APP,
        )
        device = await self._store.get_device(app.id, token)
        return device if device is not None else Device(token=token, updated_at=now)

    async def clear_tags(self, app: App, tokens: list[str], request_id: str = "") -> None:
        v = Violations()
        check_request_id(v, request_id)
        self._check_tokens(v, tokens, required=True)
        v.raise_if_any()
        await self._store.modify_tags(
            app.id,
            self._clock.time(),
            clear=list(dict.fromkeys(tokens)),
            max_per_token=limits.MAX_TAGS_PER_TOKEN,
            max_per_app=limits.MAX_TAGS_PER_APP,
        )

    def _tag_pairs(
        self, tokens: list[str], tags: list[str], pairs: list[tuple[str, str]], request_id: str
    ) -> list[tuple[str, str]]:
        v = Violations()
        check_request_id(v, request_id)
        self._check_tokens(v, tokens, required=False)
        self._check_tags(v, "tags", tags, required=False)
        if len(pairs) > limits.MAX_TAG_CALL_PAIRS:
            v.add("pairs", f"at most {limits.MAX_TAG_CALL_PAIRS} pairs")
        else:
            for i, (token, tag) in enumerate(pairs):
                check_token(v, f"pairs[{i}].token", token)
                check_tag(v, f"pairs[{i}].tag", tag)
        if bool(tokens) != bool(tags):
            v.add("tags" if tokens else "tokens", "required with " + ("tokens" if tokens else "tags"))
        elif not tokens and not pairs:
            v.add("tokens", "required (or pairs)")
        v.raise_if_any()
        return list(dict.fromkeys([(t, g) for t in tokens for g in tags] + list(pairs)))

    @staticmethod
    def _check_tokens(v: Violations, tokens: list[str], *, required: bool) -> None:
        if not tokens:
            if required:
                v.add("tokens", "required")
        elif len(tokens) > limits.MAX_TAG_CALL_TOKENS:
            v.add("tokens", f"at most {limits.MAX_TAG_CALL_TOKENS} tokens")
        else:
            for i, token in enumerate(tokens):
                check_token(v, f"tokens[{i}]", token)

    @staticmethod
    def _check_tags(v: Violations, path: str, tags: list[str], *, required: bool) -> None:
        if not tags:
            if required:
                v.add(path, "required")
        elif len(tags) > limits.MAX_TAG_CALL_TAGS:
            v.add(path, f"at most {limits.MAX_TAG_CALL_TAGS} tags")
        else:
            for i, tag in enumerate(tags):
                check_tag(v, f"{path}[{i}]", tag)

    async def get_device_or_none(self, app: App, token: str) -> Device | None:
        self._check_token(token)
        return await self._store.get_device(app.id, token)

    async def unbind_account_everywhere(self, app: App, account: str) -> int:
        """Unbind the account from every token (TPNS batchoperate 5); how many it had."""
        v = Violations()
        check_text(v, "account", account, limits.MAX_ACCOUNT_LENGTH)
        v.raise_if_any()
        return await self._store.unbind_account_everywhere(app.id, account, self._clock.time())

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

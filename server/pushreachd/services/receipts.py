"""Receipts and device keys: what lets a device report for itself without an app secret.

A **receipt** travels in every delivered payload and comes back from the device as the
credential of one report (arrived, clicked). It binds app, push, token and an expiry:

    base64url(no padding) of
      version (1 byte, 1) | app id (uvarint) | key id (uvarint) | expires_at (uint32, epoch s)
      | push_id (string) | token (string) | MAC (16 bytes)
    string = kind byte (0: UTF-8, 1: lowercase hex packed as bytes) | length (uvarint) | bytes
    MAC    = HMAC-SHA256(app's receipt key <key id>, every byte before it), first 16 bytes

An APNs token (64 hex characters) makes a receipt of 92 characters. The MAC is checked
in constant time; the text must be the canonical base64url of its bytes, so no two texts name
the same receipt. A receipt of push P cannot report for push Q or token U: both are inside
the MACed bytes.

Each app has receipt keys (32 random bytes each), sealed at rest under the master key
(SecretBox, bound to app and key id) and created on first use. `rotate` adds a key that
mints from then on; the older keys keep verifying for `overlap` seconds (default 7 days, longer
than a receipt lives: expire_time and delay are at most 3 days each), then are refused.

A **device key** (handed out by BindPhone/RegisterDevice) is derived from the app's current
receipt key and the token: `<key id>.<base64url(HMAC-SHA256(receipt key, "pushreach device
key\\0" + token))>`. It signs the device's notification-state reports (`state_mac`) and, in
place of a receipt, its arrival and click reports (`event_mac`): the one-payload Android
vendors carry no receipt (one payload serves 1,000 tokens), so their devices sign instead. It
stays valid while its receipt key does (after a rotation, hand out new ones within the overlap).
A signed report names no expiry: its timestamp must be within STATE_SKEW_SECONDS of the
server's clock, and a replay within that window is harmless (events are idempotent: DUPLICATE).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import math
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..clock import Clock
from ..errors import Unauthenticated
from ..model import PushSpec, ReceiptKey
from ..secrets import SecretBox, SecretError
from ..store.base import Store

log = logging.getLogger(__name__)

VERSION = 1
MAC_BYTES = 16
KEY_BYTES = 32
MAX_RECEIPT_LENGTH = 1024  # characters; a receipt with a 256-character token is ~420
ROTATION_OVERLAP = 7 * 86400.0
CACHE_SECONDS = 30.0  # keys are read again after this (another instance may have rotated)
RELOAD_INTERVAL = 5.0  # an unknown key id reads the store again at most this often per app
CACHE_MAX_APPS = 10_000
STATE_SKEW_SECONDS = 300  # a state report's timestamp may be this far from the server's clock
_HEX = re.compile(r"(?:[0-9a-f]{2})+")
_DEVICE_KEY_LABEL = b"pushreach device key\x00"


class ReceiptError(Unauthenticated):
    """A receipt or device MAC that does not hold. One message for every cause (a caller
    learns nothing from it); `cause` says which for logs and metrics."""

    def __init__(self, cause: str, message: str = "invalid receipt") -> None:
        super().__init__(message)
        self.cause = cause  # malformed, unknown_key, retired_key, bad_mac, expired


@dataclass(frozen=True, slots=True)
class ReceiptClaims:
    app_id: int
    key_id: int
    push_id: str
    token: str
    expires_at: float


@dataclass
class _AppKeys:
    keys: dict[int, tuple[bytes, float | None]]  # key id -> (secret, retire_at)
    loaded_at: float

    def current(self, now: float) -> tuple[int, bytes] | None:
        live = [k for k, (_, retire) in self.keys.items() if retire is None or retire > now]
        if not live:
            return None
        newest = max(live)
        return newest, self.keys[newest][0]

    def valid(self, key_id: int, now: float) -> bytes | None:
        found = self.keys.get(key_id)
        if found is None or (found[1] is not None and found[1] <= now):
            return None
        return found[0]


def _ad(app_id: int, key_id: int) -> bytes:
    # Binds a sealed key to its row: a blob copied to another app or key id will not open.
    return f"receipt_key:{app_id}:{key_id}".encode()


# --- encoding ---------------------------------------------------------------------------------


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _pack_str(s: str) -> bytes:
    if len(s) <= 512 and _HEX.fullmatch(s):
        raw = bytes.fromhex(s)
        return b"\x01" + _uvarint(len(raw)) + raw
    raw = s.encode()
    return b"\x00" + _uvarint(len(raw)) + raw


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ValueError("short")
        self.pos += 1
        return self.data[self.pos - 1]

    def uvarint(self) -> int:
        n = shift = 0
        while True:
            b = self.byte()
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise ValueError("short")
        self.pos += size
        return self.data[self.pos - size : self.pos]

    def string(self) -> str:
        kind = self.byte()
        raw = self.take(self.uvarint())
        if kind == 1:
            return raw.hex()
        if kind == 0:
            return raw.decode()
        raise ValueError("string kind")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """Canonical base64url without padding only (re-encoding gives the same text)."""
    if not text.isascii():
        raise ValueError("not ASCII")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not canonical")
    return data


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()[:MAC_BYTES]


def encode_receipt(key: bytes, claims: ReceiptClaims) -> str:
    (receipt,) = encode_receipts(key, claims.app_id, claims.key_id, claims.push_id, [claims.token], claims.expires_at)
    return receipt


def encode_receipts(
    key: bytes, app_id: int, key_id: int, push_id: str, tokens: list[str], expires_at: float
) -> list[str]:
    """`encode_receipt` for each token of one push: the claims they share are encoded, and
    the HMAC keyed, once (a 1,000-token push mints 1,000 receipts)."""
    head = (
        bytes([VERSION])
        + _uvarint(app_id)
        + _uvarint(key_id)
        + struct.pack(">I", min(0xFFFFFFFF, max(0, math.ceil(expires_at))))
        + _pack_str(push_id)
    )
    keyed = hmac.new(key, digestmod=hashlib.sha256)
    receipts = []
    for token in tokens:
        body = head + _pack_str(token)
        mac = keyed.copy()
        mac.update(body)
        receipts.append(_b64(body + mac.digest()[:MAC_BYTES]))
    return receipts


def decode_receipt(text: str) -> tuple[ReceiptClaims, bytes, bytes]:
    """The claims, the MACed body and the MAC, before any check of the MAC."""
    if not text or len(text) > MAX_RECEIPT_LENGTH:
        raise ReceiptError("malformed")
    try:
        data = _unb64(text)
        if len(data) <= MAC_BYTES:
            raise ValueError("short")
        body, mac = data[:-MAC_BYTES], data[-MAC_BYTES:]
        r = _Reader(body)
        if r.byte() != VERSION:
            raise ValueError("version")
        app_id = r.uvarint()
        key_id = r.uvarint()
        (expires,) = struct.unpack(">I", r.take(4))
        push_id = r.string()
        token = r.string()
        if r.pos != len(body):
            raise ValueError("trailing bytes")
    except (ValueError, binascii.Error, UnicodeDecodeError, struct.error):
        raise ReceiptError("malformed") from None
    return ReceiptClaims(app_id, key_id, push_id, token, float(expires)), body, mac


def device_key_for(key_id: int, key: bytes, token: str) -> str:
    derived = hmac.new(key, _DEVICE_KEY_LABEL + token.encode(), hashlib.sha256).digest()
    return f"{key_id}.{_b64(derived)}"


def state_message(access_id: str, token: str, state: str, timestamp: int) -> bytes:
    """What a device signs to report its notification state (docs/DEVICES.md)."""
    return f"pushreach-device-state-v1\n{access_id}\n{token}\n{state}\n{timestamp}".encode()


def state_mac(device_key: str, access_id: str, token: str, state: str, timestamp: int) -> str:
    """Lowercase hex HMAC-SHA256, keyed with the device key's UTF-8 bytes."""
    return hmac.new(device_key.encode(), state_message(access_id, token, state, timestamp), hashlib.sha256).hexdigest()


def event_message(access_id: str, token: str, push_id: str, event: str, timestamp: int) -> bytes:
    """What a device signs to report an arrival or click without a receipt: the UTF-8 bytes of
    six lines joined by "\\n", no newline at the end (docs/DEVICES.md). `event` is "arrived" or
    "clicked" (lower case). Tokens and push ids hold no newline, so the layout is unambiguous."""
    return f"pushreach-device-event-v1\n{access_id}\n{token}\n{push_id}\n{event}\n{timestamp}".encode()


def event_mac(device_key: str, access_id: str, token: str, push_id: str, event: str, timestamp: int) -> str:
    """Lowercase hex HMAC-SHA256 of `event_message`, keyed with the device key's UTF-8 bytes."""
    message = event_message(access_id, token, push_id, event, timestamp)
    return hmac.new(device_key.encode(), message, hashlib.sha256).hexdigest()


def receipt_expiry(spec: PushSpec, push_expires_at: float) -> float:
    """Until when a push's receipts are good: while the push may still arrive and, after that,
    for the fallback's delay (a late report can still spare an SMS). Deliveries pass this to
    `mint`."""
    return push_expires_at + (spec.sms_info.delay_trigger_time if spec.sms_info is not None else 0)


# --- the service ------------------------------------------------------------------------------


class Receipts:
    """Mints and checks receipts and device keys with each app's sealed receipt keys."""

    def __init__(self, store: Store, box: SecretBox, clock: Clock, *, overlap: float = ROTATION_OVERLAP) -> None:
        self._store = store
        self._box = box
        self._clock = clock
        self.overlap = overlap
        self._cache: OrderedDict[int, _AppKeys] = OrderedDict()
        self._locks: dict[int, asyncio.Lock] = {}

    async def mint(self, app_id: int, push_id: str, token: str, expires_at: float) -> str:
        """A receipt for (app, push, token), valid until `expires_at` (epoch seconds)."""
        key_id, key = await self._current(app_id)
        return encode_receipt(key, ReceiptClaims(app_id, key_id, push_id, token, expires_at))

    async def mint_many(self, app_id: int, push_id: str, tokens: list[str], expires_at: float) -> list[str]:
        """One receipt per token, with one key lookup."""
        key_id, key = await self._current(app_id)
        return encode_receipts(key, app_id, key_id, push_id, tokens, expires_at)

    async def verify(self, text: str) -> ReceiptClaims:
        """The claims of a genuine, unexpired receipt; ReceiptError otherwise."""
        claims, body, mac = decode_receipt(text)
        now = self._clock.time()
        key = await self._key(claims.app_id, claims.key_id)
        if not hmac.compare_digest(_mac(key, body), mac):
            raise ReceiptError("bad_mac")
        if claims.expires_at < now:
            raise ReceiptError("expired", "receipt expired")
        return claims

    async def device_key(self, app_id: int, token: str) -> str:
        key_id, key = await self._current(app_id)
        return device_key_for(key_id, key, token)

    async def check_state_mac(
        self, app_id: int, access_id: str, token: str, state: str, timestamp: int, mac: str
    ) -> None:
        """ReceiptError unless `mac` was made with a valid device key of (app, token) and the
        timestamp is within STATE_SKEW_SECONDS of now."""
        await self._check_device_mac(
            app_id, token, timestamp, mac, lambda key: state_mac(key, access_id, token, state, timestamp)
        )

    async def check_event_mac(
        self, app_id: int, access_id: str, token: str, push_id: str, event: str, timestamp: int, mac: str
    ) -> None:
        """As `check_state_mac`, for an arrival or click report (`event_mac`). Whether the push
        is the app's and the token one of its targets is the store's to say (the caller's)."""
        await self._check_device_mac(
            app_id, token, timestamp, mac, lambda key: event_mac(key, access_id, token, push_id, event, timestamp)
        )

    async def _check_device_mac(
        self, app_id: int, token: str, timestamp: int, mac: str, expected: Callable[[str], str]
    ) -> None:
        now = self._clock.time()
        if abs(now - timestamp) > STATE_SKEW_SECONDS:
            raise ReceiptError("stale", f"timestamp more than {STATE_SKEW_SECONDS} s from the server's clock")
        keys = await self._load(app_id, create=False)
        ok = False
        for key_id in sorted(keys.keys):  # the current key and any retired one still overlapping
            key = keys.valid(key_id, now)
            if key is not None:
                ok |= hmac.compare_digest(expected(device_key_for(key_id, key, token)).encode(), mac.encode())
        if not ok:
            raise ReceiptError("bad_mac", "invalid device MAC")

    async def rotate(self, app_id: int) -> int:
        """A new receipt key mints from now on; older ones verify for `overlap` more seconds.
        Returns the new key id."""
        now = self._clock.time()
        secret = os.urandom(KEY_BYTES)
        row = await self._store.add_receipt_key(
            app_id, lambda key_id: self._box.seal(secret, _ad(app_id, key_id)), now, retire_others_at=now + self.overlap
        )
        self._cache.pop(app_id, None)
        return row.key_id

    async def reseal(self, new_box: SecretBox) -> int:
        """Re-seal every receipt key under `new_box` (master key rotation). Idempotent: a blob
        that already opens with the new key is left; one that opens with neither stops it."""

        def reseal(app_id: int, key_id: int, blob: bytes) -> bytes:
            ad = _ad(app_id, key_id)
            try:
                plain = self._box.open(blob, ad)
            except SecretError:
                new_box.open(blob, ad)
                return blob
            return new_box.seal(plain, ad)

        return await self._store.reseal_receipt_keys(reseal)

    # -- keys ----------------------------------------------------------------------------

    async def _current(self, app_id: int) -> tuple[int, bytes]:
        keys = await self._load(app_id, create=True)
        current = keys.current(self._clock.time())
        if current is None:  # every key retired (an old rotation): start a fresh one
            await self.rotate(app_id)
            keys = await self._load(app_id, create=True)
            current = keys.current(self._clock.time())
            assert current is not None
        return current

    async def _key(self, app_id: int, key_id: int) -> bytes:
        now = self._clock.time()
        keys = await self._load(app_id, create=False)
        if key_id not in keys.keys and now - keys.loaded_at >= RELOAD_INTERVAL:
            keys = await self._load(app_id, create=False, force=True)  # rotated elsewhere?
        found = keys.keys.get(key_id)
        if found is None:
            raise ReceiptError("unknown_key")
        if found[1] is not None and found[1] <= now:
            raise ReceiptError("retired_key")
        return found[0]

    async def _load(self, app_id: int, *, create: bool, force: bool = False) -> _AppKeys:
        seen = self._cache.get(app_id)
        if seen is not None and not force and self._fresh(seen, create):
            self._cache.move_to_end(app_id)
            return seen
        lock = self._locks.setdefault(app_id, asyncio.Lock())
        async with lock:
            cached = self._cache.get(app_id)
            if cached is not None and cached is not seen and self._fresh(cached, create):
                return cached  # loaded by the task we waited behind
            now = self._clock.time()
            rows = await self._store.receipt_keys(app_id)
            if not rows and create:
                secret = os.urandom(KEY_BYTES)
                await self._store.add_receipt_key(
                    app_id, lambda key_id: self._box.seal(secret, _ad(app_id, key_id)), now, only_if_none=True
                )
                rows = await self._store.receipt_keys(app_id)
            loaded = _AppKeys(self._open(app_id, rows), now)
            self._cache[app_id] = loaded
            self._cache.move_to_end(app_id)
            while len(self._cache) > CACHE_MAX_APPS:
                self._cache.popitem(last=False)
        if len(self._locks) > CACHE_MAX_APPS:
            self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        return loaded

    def _fresh(self, keys: _AppKeys, create: bool) -> bool:
        return self._clock.time() - keys.loaded_at < CACHE_SECONDS and (bool(keys.keys) or not create)

    def _open(self, app_id: int, rows: list[ReceiptKey]) -> dict[int, tuple[bytes, float | None]]:
        keys: dict[int, tuple[bytes, float | None]] = {}
        for row in rows:
            try:
                keys[row.key_id] = (self._box.open(row.blob, _ad(app_id, row.key_id)), row.retire_at)
            except SecretError:
                log.error("receipt key %d of app %d does not open with the master key; ignored", row.key_id, app_id)
        return keys


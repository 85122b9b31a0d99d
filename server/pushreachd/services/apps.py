"""Apps: credentials, authentication, SMS credentials kept encrypted, rate-limit policy."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .. import limits
from ..clock import Clock
from ..errors import AlreadyExists, NotFound, Unauthenticated
from ..model import App, RateLimitPolicy
from ..secrets import (
    SecretBox,
    SecretError,
    VerifierCache,
    make_verifier,
    new_access_id,
    new_secret_key,
)
from ..sms.provider import SmsCredentials
from ..store.base import Store
from .channels import credentials_ad
from .validation import Violations, check_text

log = logging.getLogger(__name__)

MAX_SAME_CONTENT_INTERVAL = 86400
MAX_DAILY_LIMIT = 1000
# Authenticated apps are remembered this long: an RPC then costs no store read and no trip to
# a worker thread. Changes made through this service drop the entry at once; a change made
# elsewhere (the CLI on the same database, another instance) is seen within this time.
AUTH_CACHE_SECONDS = 2.0
AUTH_CACHE_MAX = 10_000


def _secret_ad(access_id: str) -> bytes:
    return b"app_secret:" + access_id.encode()


def _credentials_ad(access_id: str) -> bytes:
    # Binds the sealed blob to its app: a blob copied onto another app's row will not open.
    return b"sms_credentials:" + access_id.encode()


class AppService:
    def __init__(self, store: Store, box: SecretBox, clock: Clock) -> None:
        self._store = store
        self._box = box
        self._clock = clock
        self._verified = VerifierCache()
        # access_id -> (sha256 of the secret that passed, the App, clock time it expires)
        self._authed: dict[str, tuple[bytes, App, float]] = {}
        self._changes = 0  # bumped by _forget: a check that overlapped a change is not cached

    async def create_app(self, name: str) -> tuple[App, str]:
        v = Violations()
        check_text(v, "name", name, limits.MAX_APP_NAME_LENGTH)
        v.raise_if_any()
        secret = new_secret_key()
        verifier = await asyncio.to_thread(make_verifier, secret)  # scrypt: keep it off the loop
        for _ in range(5):  # access ids are random; a collision just draws again
            access_id = new_access_id()
            sealed = self._box.seal(secret.encode(), _secret_ad(access_id))
            try:
                app = await self._store.create_app(access_id, name, verifier, self._clock.time(), sealed)
                return app, secret
            except AlreadyExists:
                continue
        raise RuntimeError("could not draw a free access id")

    async def authenticate(self, access_id: str, secret: str) -> App:
        """The app whose credentials these are; Unauthenticated otherwise (one message for
        every failure, so a caller cannot tell an unknown app from a wrong secret)."""
        digest = hashlib.sha256(secret.encode()).digest()
        now = self._clock.time()
        hit = self._authed.get(access_id)
        if hit is not None and hit[2] > now and hmac.compare_digest(hit[0], digest):
            return hit[1]
        changes = self._changes
        app = await self._store.get_app(access_id) if access_id else None
        verifier = app.secret_verifier if app is not None else _DUMMY_VERIFIER
        ok = await asyncio.to_thread(self._verified.check, access_id, secret, verifier)
        if app is None or not ok:
            raise Unauthenticated("invalid app credentials")
        if changes != self._changes:
            return app  # the app changed while we checked: answer, but do not remember it
        if len(self._authed) >= AUTH_CACHE_MAX:
            self._authed.pop(next(iter(self._authed)))  # the oldest entry
        self._authed[access_id] = (digest, app, now + AUTH_CACHE_SECONDS)
        return app

    def _forget(self, access_id: str) -> None:
        """Drop a cached authentication after the app changed (secret, credentials, policy)."""
        self._changes += 1
        self._authed.pop(access_id, None)

    def parts(self) -> tuple[Store, SecretBox]:
        """The store and the master-key box (for the CLI's other services on one database)."""
        return self._store, self._box

    async def get_app(self, access_id: str) -> App:
        app = await self._store.get_app(access_id) if access_id else None
        if app is None:
            raise NotFound(f"app {access_id!r} not found")
        return app

    async def list_apps(self, after_id: int, limit: int) -> list[App]:
        return await self._store.list_apps(after_id, limit)

    async def rotate_secret(self, access_id: str) -> str:
        app = await self.get_app(access_id)
        secret = new_secret_key()
        sealed = self._box.seal(secret.encode(), _secret_ad(access_id))
        await self._store.set_app_secret(app.id, await asyncio.to_thread(make_verifier, secret), sealed)
        self._forget(access_id)
        return secret

    async def signing_key(self, access_id: str) -> tuple[App, str] | None:
        """The app and its secret key in clear, to check a TPNS request signature; None for an
        unknown app, or one created before secrets were sealed (until its secret is rotated)."""
        app = await self._store.get_app(access_id) if access_id else None
        if app is None or app.secret_sealed is None:
            return None
        try:
            return app, self._box.open(app.secret_sealed, _secret_ad(access_id)).decode()
        except SecretError:
            log.error("the sealed secret of app %s does not open under the master key", access_id)
            return None

    async def set_sms_credentials(self, access_id: str, secret_id: str, secret_key: str) -> App:
        v = Violations()
        check_text(v, "secret_id", secret_id, limits.MAX_CREDENTIAL_LENGTH)
        check_text(v, "secret_key", secret_key, limits.MAX_CREDENTIAL_LENGTH)
        v.raise_if_any()
        app = await self.get_app(access_id)
        plain = f"{secret_id}\n{secret_key}".encode()
        updated = await self._store.set_sms_credentials(app.id, self._box.seal(plain, _credentials_ad(access_id)))
        self._forget(access_id)
        return updated

    async def check_sealed_credentials(self, key_setting: str) -> None:
        """At start: every app's stored SMS credentials must open with this master key. One
        that does not means the wrong key was given (every SMS would fail "no credentials"),
        so raise SecretError naming `key_setting` rather than start."""
        after = 0
        while True:
            apps = await self._store.list_apps(after, 500)
            for app in apps:
                blob = app.sms_credentials_blob
                if blob is None:
                    continue
                try:
                    self._box.open(blob, _credentials_ad(app.access_id))
                except SecretError:
                    raise SecretError(
                        f"{key_setting} cannot open the stored SMS credentials of app {app.access_id}: "
                        "it is not the key they were sealed with (give the right key, or rotate with "
                        "`pushreach apps rotate-master-key` using the old one)"
                    ) from None
            if len(apps) < 500:
                return
            after = apps[-1].id

    def sms_credentials(self, access_id: str, blob: bytes | None) -> SmsCredentials | None:
        """Open an app's sealed SMS credentials; None when unset or unreadable."""
        if blob is None:
            return None
        try:
            secret_id, secret_key = self._box.open(blob, _credentials_ad(access_id)).decode().split("\n", 1)
        except (SecretError, ValueError):
            return None
        return SmsCredentials(secret_id, secret_key)

    async def rotate_master_key(self, new_box: SecretBox) -> int:
        """Re-seal every app's SMS and channel credentials under `new_box`'s key, in one transaction.

        Idempotent: a blob that already opens with the new key (an earlier run that committed)
        is left as it is; one that opens with neither key stops the rotation, nothing changed.
        Returns how many apps were re-sealed."""

        def resealer(ad_of: Callable[..., bytes]) -> Callable[..., bytes]:
            def reseal(*key_and_blob: Any) -> bytes:
                *key, blob = key_and_blob
                ad = ad_of(*key)
                try:
                    plain = self._box.open(blob, ad)
                except SecretError:
                    new_box.open(blob, ad)  # raises SecretError if it is under neither key
                    return blob
                return new_box.seal(plain, ad)

            return reseal

        # The sealed app secrets (TPNS signatures) and channel credentials move to the new key
        # in the same transaction.
        return await self._store.reseal_sms_credentials(
            resealer(_credentials_ad), resealer(_secret_ad), resealer(credentials_ad)
        )

    async def set_rate_limit_policy(self, access_id: str, policy: RateLimitPolicy) -> App:
        v = Violations()
        if not 0 <= policy.same_content_interval_seconds <= MAX_SAME_CONTENT_INTERVAL:
            v.add("policy.same_content_interval_seconds", f"between 0 and {MAX_SAME_CONTENT_INTERVAL}")
        if not 0 <= policy.daily_limit <= MAX_DAILY_LIMIT:
            v.add("policy.daily_limit", f"between 0 and {MAX_DAILY_LIMIT}")
        if policy.time_zone:
            try:
                ZoneInfo(policy.time_zone)
            except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: e.g. a name too long for a path
                v.add("policy.time_zone", "not an IANA time zone")
        v.raise_if_any()
        app = await self.get_app(access_id)
        defaults = RateLimitPolicy()
        effective = RateLimitPolicy(
            same_content_interval_seconds=policy.same_content_interval_seconds
            or defaults.same_content_interval_seconds,
            daily_limit=policy.daily_limit or defaults.daily_limit,
            time_zone=policy.time_zone,
        )
        updated = await self._store.set_rate_limit_policy(app.id, effective)
        self._forget(access_id)
        return updated


# Checked against when the app does not exist, so both failures cost the same scrypt time.
_DUMMY_VERIFIER = make_verifier("pushreach-no-such-app")

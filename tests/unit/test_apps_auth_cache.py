"""AppService.authenticate remembers a passed check briefly, and forgets it on every change."""

from __future__ import annotations

import os

import pytest
from pushreachd.errors import Unauthenticated
from pushreachd.secrets import SecretBox
from pushreachd.services.apps import AUTH_CACHE_SECONDS, AppService
from pushreachd.store.sqlite import SqliteStore

from tests.fakes import FakeClock


@pytest.fixture
async def apps(tmp_path):  # type: ignore[no-untyped-def]
    store = SqliteStore(str(tmp_path / "apps.db"))
    await store.open()
    service = AppService(store, SecretBox(os.urandom(32)), FakeClock())
    yield service, store
    await store.close()


async def test_a_cached_app_skips_the_store_until_its_entry_expires(apps) -> None:  # type: ignore[no-untyped-def]
    service, store = apps
    app, secret = await service.create_app("a")
    assert (await service.authenticate(app.access_id, secret)).id == app.id
    # Change the secret behind the service's back: the cached answer stands for a while...
    await store.set_app_secret(app.id, "scrypt$garbage")
    assert (await service.authenticate(app.access_id, secret)).id == app.id
    # ...and no longer than AUTH_CACHE_SECONDS.
    await service._clock.advance(AUTH_CACHE_SECONDS + 0.1)
    with pytest.raises(Unauthenticated):
        await service.authenticate(app.access_id, secret)


async def test_rotation_through_the_service_takes_effect_at_once(apps) -> None:  # type: ignore[no-untyped-def]
    service, _ = apps
    app, old = await service.create_app("a")
    await service.authenticate(app.access_id, old)
    new = await service.rotate_secret(app.access_id)
    with pytest.raises(Unauthenticated):
        await service.authenticate(app.access_id, old)
    assert (await service.authenticate(app.access_id, new)).id == app.id


async def test_a_wrong_secret_is_never_answered_from_the_cache(apps) -> None:  # type: ignore[no-untyped-def]
    service, _ = apps
    app, secret = await service.create_app("a")
    await service.authenticate(app.access_id, secret)
    with pytest.raises(Unauthenticated):
        await service.authenticate(app.access_id, secret + "x")
    assert (await service.authenticate(app.access_id, secret)).id == app.id


async def test_a_policy_change_is_seen_by_the_next_call(apps) -> None:  # type: ignore[no-untyped-def]
    from pushreachd.model import RateLimitPolicy

    service, _ = apps
    app, secret = await service.create_app("a")
    await service.authenticate(app.access_id, secret)
    await service.set_rate_limit_policy(app.access_id, RateLimitPolicy(60, 5, ""))
    assert (await service.authenticate(app.access_id, secret)).policy.daily_limit == 5

"""Credentials files of the vendor channels: what is kept, and violations naming the field."""

from __future__ import annotations

import asyncio

import pytest
from pushreachd.channels import hms, honor, oppo, vivo, xiaomi
from pushreachd.channels.vendor import Failed, Retry, TokenCache
from pushreachd.errors import InvalidArgument

from tests.fakes import FakeClock

GOOD = {
    hms: {"app_id": "10086", "client_secret": "s"},
    honor: {"app_id": "104400", "client_id": "c", "client_secret": "s"},
    xiaomi: {"app_secret": "s", "package_name": "com.example.app"},
    oppo: {"app_key": "k", "master_secret": "m"},
    vivo: {"app_id": "1001", "app_key": "k", "app_secret": "s"},
}


def fields(exc: InvalidArgument) -> set[str]:
    return {v.field for v in exc.violations}


@pytest.mark.parametrize("module", list(GOOD))
def test_good_file_is_kept(module) -> None:  # type: ignore[no-untyped-def]
    assert dict(module.validate_credentials(GOOD[module])) == GOOD[module]


@pytest.mark.parametrize("module", list(GOOD))
def test_every_missing_field_is_named(module) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument) as info:
        module.validate_credentials({})
    assert fields(info.value) == {f"credentials.{name}" for name in GOOD[module]}


@pytest.mark.parametrize("module", list(GOOD))
@pytest.mark.parametrize("bad", [123, "", "  ", " padded", "line\nbreak", None])
def test_bad_values_are_named(module, bad) -> None:  # type: ignore[no-untyped-def]
    name = next(iter(GOOD[module]))
    with pytest.raises(InvalidArgument) as info:
        module.validate_credentials({**GOOD[module], name: bad})
    assert fields(info.value) == {f"credentials.{name}"}


@pytest.mark.parametrize("module", list(GOOD))
def test_unknown_field_is_named(module) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument) as info:
        module.validate_credentials({**GOOD[module], "appsecret": "typo"})
    assert fields(info.value) == {"credentials.appsecret"}


def test_not_an_object() -> None:
    with pytest.raises(InvalidArgument) as info:
        hms.validate_credentials(["app_id"])  # type: ignore[arg-type]
    assert fields(info.value) == {"credentials"}


def test_huawei_app_id_is_numeric() -> None:
    with pytest.raises(InvalidArgument) as info:
        hms.validate_credentials({"app_id": "com.example", "client_secret": "s"})
    assert fields(info.value) == {"credentials.app_id"}


@pytest.mark.parametrize(
    ("module", "name", "good", "bad"),
    [
        (hms, "category", "WORK", "work"),
        (hms, "channel_id", "orders", "has space"),
        (honor, "importance", "NORMAL", "HIGH"),
        (xiaomi, "channel_id", "service", "x" * 65),
        (oppo, "category", "ACCOUNT", "Account"),
        (vivo, "classification", 1, 2),
        (vivo, "classification", 0, True),
        (vivo, "category", "ORDER", 7),
    ],
)
def test_app_default_classification(module, name, good, bad) -> None:  # type: ignore[no-untyped-def]
    assert module.validate_credentials({**GOOD[module], name: good})[name] == good
    with pytest.raises(InvalidArgument) as info:
        module.validate_credentials({**GOOD[module], name: bad})
    assert fields(info.value) == {f"credentials.{name}"}


async def test_token_cache_shares_one_fetch_and_renews_before_expiry() -> None:
    clock = FakeClock()
    gate = asyncio.Event()
    fetched: list[int] = []

    async def fetch() -> tuple[str, float]:
        fetched.append(1)
        await gate.wait()
        return f"t{len(fetched)}", 3600.0

    cache = TokenCache(fetch, clock)
    waiters = [asyncio.create_task(cache.get()) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiters) == ["t1"] * 5
    await clock.advance(3600 * 0.85)
    assert await cache.get() == "t1"
    await clock.advance(3600 * 0.1)  # within the last tenth of its life
    assert await cache.get() == "t2"
    cache.invalidate("t1")  # a stale invalidation does not drop the renewed token
    assert await cache.get() == "t2"
    cache.invalidate("t2")
    assert await cache.get() == "t3"


async def test_token_cache_remembers_a_refusal_for_a_minute() -> None:
    clock = FakeClock()
    answers: list[object] = [Retry("oauth_http_503"), Failed("oauth:1101"), ("tok", 3600.0)]

    async def fetch() -> tuple[str, float]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]

    cache = TokenCache(fetch, clock)
    with pytest.raises(Retry):  # a transient failure is not remembered
        await cache.get()
    with pytest.raises(Failed):
        await cache.get()
    with pytest.raises(Failed):  # every batch of a big push fails at once, without asking again
        await cache.get()
    assert cache.fetches == 0 and answers == [("tok", 3600.0)]
    await clock.advance(TokenCache.FAILURE_MEMORY)
    assert await cache.get() == "tok"

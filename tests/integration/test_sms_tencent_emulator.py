"""The real SDK-based TencentSmsProvider against the loopback emulator."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from pushreachd.sms.emulator import SmsEmulator
from pushreachd.sms.provider import (
    SendOutcome,
    SmsBatch,
    SmsCredentials,
    SmsErrorKind,
    SmsProviderError,
)
from pushreachd.sms.sender import SmsSender
from pushreachd.sms.tencent import TencentSmsProvider
from tencentcloud.common.credential import Credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.sms.v20210111.sms_client_async import SmsClient

from tests.fakes import FakeClock

CREDS = SmsCredentials("AKIDtest", "secret-key")
APP_ID = "1400000001"


def phones(n: int, start: int = 0) -> tuple[str, ...]:
    return tuple(f"+86138{i:08d}" for i in range(start, start + n))


def batch(numbers: tuple[str, ...], credentials: SmsCredentials | None = CREDS, **kw: str) -> SmsBatch:
    return SmsBatch(
        app_access_id=kw.get("app", "app-a"), credentials=credentials, sms_app_id=APP_ID,
        sign_name="腾讯云", template_id="1110", template_params=("1234", "5"),
        phone_numbers=numbers, session_context=kw.get("context", "push-42"),
    )


@pytest.fixture
async def emulator() -> AsyncIterator[SmsEmulator]:
    emu = SmsEmulator()
    emu.add_credentials(CREDS.secret_id, CREDS.secret_key)
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
async def provider(emulator: SmsEmulator) -> AsyncIterator[TencentSmsProvider]:
    p = TencentSmsProvider(endpoint=emulator.url, timeout=5.0)
    yield p
    await p.close()


async def test_batch_of_200_arrives_with_params_and_context(
    emulator: SmsEmulator, provider: TencentSmsProvider
) -> None:
    numbers = phones(200)
    results = await provider.send(batch(numbers))
    assert [r.phone_number for r in results] == list(numbers)
    assert all(r.outcome is SendOutcome.SENT and r.code == "Ok" and r.fee == 1 for r in results)
    assert len({r.serial_no for r in results}) == 200
    assert [s.phone_number for s in emulator.sent] == list(numbers)
    first = emulator.sent[0]
    assert (first.template_params, first.session_context, first.sign_name, first.template_id) == (
        ("1234", "5"), "push-42", "腾讯云", "1110",
    )
    assert (first.sms_app_id, first.secret_id) == (APP_ID, CREDS.secret_id)
    assert {s.serial_no for s in emulator.sent} == {r.serial_no for r in results}
    assert emulator.calls == 1


async def test_client_is_reused_per_credentials(emulator: SmsEmulator, provider: TencentSmsProvider) -> None:
    await provider.send(batch(phones(1)))
    await provider.send(batch(phones(1, 1)))
    assert len(provider._clients) == 1


async def test_wrong_key_is_permanent_signature_failure(emulator: SmsEmulator, provider: TencentSmsProvider) -> None:
    with pytest.raises(SmsProviderError) as info:
        await provider.send(batch(phones(1), SmsCredentials(CREDS.secret_id, "wrong")))
    assert (info.value.kind, info.value.code) == (SmsErrorKind.PERMANENT, "AuthFailure.SignatureFailure")
    assert emulator.sent == []


async def test_unknown_secret_id(emulator: SmsEmulator, provider: TencentSmsProvider) -> None:
    with pytest.raises(SmsProviderError) as info:
        await provider.send(batch(phones(1), SmsCredentials("AKIDother", "k")))
    assert (info.value.kind, info.value.code) == (SmsErrorKind.PERMANENT, "AuthFailure.SecretIdNotFound")


async def test_signature_covers_host_and_port(emulator: SmsEmulator) -> None:
    # A request signed by the SDK for this emulator's host:port verifies; the same request
    # arriving with another Host header (as through a misconfigured proxy) does not.
    http = HttpProfile(protocol="http", endpoint=emulator.url.removeprefix("http://"))
    client = SmsClient(Credential(CREDS.secret_id, CREDS.secret_key), "ap-guangzhou", ClientProfile(httpProfile=http))
    params = {"PhoneNumberSet": [phones(1)[0]], "SmsSdkAppId": APP_ID, "TemplateId": "1", "SignName": "S"}

    async def post(host: str | None) -> dict:  # type: ignore[type-arg]
        req = client._build_req("SendSms", params, {}, {})
        if host is not None:
            req.headers["Host"] = host
        resp = await client.http_client.send(req)
        return resp.json()["Response"]

    assert (await post(None))["SendStatusSet"][0]["Code"] == "Ok"
    assert (await post("127.0.0.1:1"))["Error"]["Code"] == "AuthFailure.SignatureFailure"
    assert len(emulator.sent) == 1
    await client.close()


async def test_internal_error_is_transient(emulator: SmsEmulator, provider: TencentSmsProvider) -> None:
    emulator.fail_next(1, "InternalError.Timeout")
    with pytest.raises(SmsProviderError) as info:
        await provider.send(batch(phones(2)))
    assert (info.value.kind, info.value.code) == (SmsErrorKind.TRANSIENT, "InternalError.Timeout")
    assert len(await provider.send(batch(phones(2)))) == 2  # only the next call failed
    assert len(emulator.sent) == 2


async def test_read_timeout_is_unknown_because_the_sms_still_goes(emulator: SmsEmulator) -> None:
    emulator.set_delay(0.6)
    provider = TencentSmsProvider(endpoint=emulator.url, timeout=0.2)
    with pytest.raises(SmsProviderError) as info:
        await provider.send(batch(phones(1)))
    assert (info.value.kind, info.value.code) == (SmsErrorKind.UNKNOWN, "Timeout")
    for _ in range(100):  # the server carries the request out after the client gave up
        if emulator.sent:
            break
        await asyncio.sleep(0.02)
    assert [s.phone_number for s in emulator.sent] == list(phones(1))
    await provider.close()


@pytest.mark.parametrize(("how", "code"), [("drop", "NetworkError"), ("gateway", "ServerNetworkError")])
async def test_lost_answer_is_unknown(
    emulator: SmsEmulator, provider: TencentSmsProvider, how: str, code: str
) -> None:
    emulator.lose_next(1, how)
    with pytest.raises(SmsProviderError) as info:
        await provider.send(batch(phones(2)))
    assert (info.value.kind, info.value.code) == (SmsErrorKind.UNKNOWN, code)
    assert len(emulator.sent) == 2  # sent, though the client could not know
    assert (await provider.send(batch(phones(1, 5))))[0].code == "Ok"  # only one answer lost


async def test_sender_never_retries_an_ambiguous_failure(
    emulator: SmsEmulator, provider: TencentSmsProvider
) -> None:
    emulator.lose_next(1, "drop")
    sender = SmsSender(provider, FakeClock())
    results = await sender.send(batch(phones(3)))
    assert [(r.outcome, r.code) for r in results] == [(SendOutcome.UNKNOWN, "NetworkError")] * 3
    assert emulator.calls == 1 and len(emulator.sent) == 3  # each number got exactly one SMS


async def test_limit_exceeded_per_number(emulator: SmsEmulator, provider: TencentSmsProvider) -> None:
    numbers = phones(3)
    emulator.limit_numbers([numbers[1]])
    results = await provider.send(batch(numbers))
    assert [r.outcome for r in results] == [SendOutcome.SENT, SendOutcome.RATE_LIMITED, SendOutcome.SENT]
    assert results[1].code == "LimitExceeded.PhoneNumberDailyLimit"
    assert [s.phone_number for s in emulator.sent] == [numbers[0], numbers[2]]


async def test_daily_limit(provider: TencentSmsProvider, emulator: SmsEmulator) -> None:
    emulator.daily_limit = 1
    first = await provider.send(batch(phones(1)))
    second = await provider.send(batch(phones(1)))
    assert (first[0].outcome, second[0].outcome) == (SendOutcome.SENT, SendOutcome.RATE_LIMITED)


async def test_more_than_200_numbers_refused(emulator: SmsEmulator, provider: TencentSmsProvider) -> None:
    with pytest.raises(SmsProviderError) as info:
        await provider.send(batch(phones(201)))
    assert info.value.code == "LimitExceeded.PhoneNumberCountLimit"
    assert info.value.kind is SmsErrorKind.PERMANENT  # a caller bug, not a rate limit
    assert emulator.sent == []


async def test_mixed_regions_refused(emulator: SmsEmulator, provider: TencentSmsProvider) -> None:
    with pytest.raises(SmsProviderError) as info:
        await provider.send(batch((phones(1)[0], "+12025550101")))
    assert info.value.code == "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber"
    assert info.value.kind is SmsErrorKind.PERMANENT


async def test_invalid_number_fails_alone(emulator: SmsEmulator, provider: TencentSmsProvider) -> None:
    results = await provider.send(batch((phones(1)[0], "+861")))
    assert results[0].outcome is SendOutcome.SENT
    assert (results[1].outcome, results[1].code) == (SendOutcome.FAILED, "InvalidParameterValue.IncorrectPhoneNumber")


async def test_pull_send_status_once_each(emulator: SmsEmulator, provider: TencentSmsProvider) -> None:
    numbers = phones(3)
    emulator.fail_delivery([numbers[2]])
    sent = await provider.send(batch(numbers))
    receipts = await provider.pull_send_status(CREDS, APP_ID, limit=2)
    receipts += await provider.pull_send_status(CREDS, APP_ID, limit=100)
    assert [(r.phone_number, r.serial_no) for r in receipts] == [(r.phone_number, r.serial_no) for r in sent]
    assert [r.delivered for r in receipts] == [True, True, False]
    assert await provider.pull_send_status(CREDS, APP_ID) == []
    assert await provider.pull_send_status(CREDS, "1400009999") == []


async def test_sender_retries_until_success_sending_each_number_once(
    emulator: SmsEmulator, provider: TencentSmsProvider
) -> None:
    clock = FakeClock()
    emulator.fail_next(2, "InternalError.OtherError")
    sender = SmsSender(provider, clock)
    numbers = phones(5)
    task = asyncio.create_task(sender.send(batch(numbers)))
    while not task.done():
        await clock.advance(10)
        await asyncio.sleep(0.01)  # real I/O to the emulator happens between ticks
    results = task.result()
    assert all(r.outcome is SendOutcome.SENT for r in results)
    assert sorted(s.phone_number for s in emulator.sent) == sorted(numbers)
    assert emulator.calls == 3 and sender.attempts == 3


async def test_sender_gives_up_after_last_attempt(emulator: SmsEmulator, provider: TencentSmsProvider) -> None:
    clock = FakeClock()
    emulator.fail_next(10, "RequestLimitExceeded")
    sender = SmsSender(provider, clock, max_attempts=3)
    task = asyncio.create_task(sender.send(batch(phones(2))))
    while not task.done():
        await clock.advance(10)
        await asyncio.sleep(0.01)
    assert [(r.outcome, r.code) for r in task.result()] == [(SendOutcome.FAILED, "RequestLimitExceeded")] * 2
    assert emulator.calls == 3 and emulator.sent == []


async def test_per_app_delay(emulator: SmsEmulator, provider: TencentSmsProvider) -> None:
    other = SmsCredentials("AKIDother", "other-key")
    emulator.add_credentials(other.secret_id, other.secret_key)
    emulator.set_delay(3.0, secret_id=other.secret_id)
    slow = asyncio.create_task(provider.send(batch(phones(1), other)))
    started = asyncio.get_running_loop().time()
    assert (await provider.send(batch(phones(1, 1))))[0].code == "Ok"
    assert asyncio.get_running_loop().time() - started < 1.0
    assert not slow.done()
    slow.cancel()
    await asyncio.gather(slow, return_exceptions=True)

"""End to end through Tencent Cloud SMS: a real server with `sms_provider="tencent"`, the real
SDK, and the loopback emulator as the endpoint. Credentials go in through the real
AdminService/SetSmsCredentials RPC; results come back through ListSmsRecords and GetPush.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from pushreach.v1 import admin_pb2, push_pb2, sms_pb2
from pushreachd.sms.emulator import SmsEmulator
from pushreachd.sms.tencent import TencentSmsProvider
from pushreachd.wiring import Overrides

from tests.harness import (
    ADMIN_TOKEN,
    Caller,
    Running,
    sms_push,
    start_service,
    test_settings,
    wait_done,
)

SECRET_ID, SECRET_KEY = "AKIDpushreachA", "key-of-app-a"
OTHER_ID, OTHER_KEY = "AKIDpushreachB", "key-of-app-b"
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


def mainland(n: int, start: int = 0) -> list[str]:
    return [f"+86138{i:08d}" for i in range(start, start + n)]


def now() -> float:
    return asyncio.get_running_loop().time()


async def eventually(check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = now() + timeout
    while not check():
        assert now() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def emulator() -> AsyncIterator[SmsEmulator]:
    emu = SmsEmulator(report_delay=0.2)  # reports come after SendSms returned, as Tencent's do
    emu.add_credentials(SECRET_ID, SECRET_KEY)
    emu.add_credentials(OTHER_ID, OTHER_KEY)
    await emu.start()
    yield emu
    await emu.stop()


Serve = Callable[..., Awaitable[Running]]


@pytest.fixture
async def serve(tmp_path, emulator: SmsEmulator) -> AsyncIterator[Serve]:  # type: ignore[no-untyped-def]
    """Start a server whose SMS go to the emulator (more settings may be given)."""
    started: list[Running] = []

    async def start(overrides: Overrides | None = None, **changes: object) -> Running:
        settings = test_settings(tmp_path, sms_provider="tencent", tencent_sms_endpoint=emulator.url, **changes)
        running = await start_service(settings, overrides)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.close()
        await running.service.stop()


async def app_with_sms(
    running: Running, name: str = "app", secret_id: str = SECRET_ID, secret_key: str = SECRET_KEY
) -> Caller:
    """A new app whose Tencent credentials are set through AdminService/SetSmsCredentials."""
    app = await running.new_app(name)
    answer = await app.admin.SetSmsCredentials(
        admin_pb2.SetSmsCredentialsRequest(access_id=app.access_id, secret_id=secret_id, secret_key=secret_key),
        metadata=ADMIN,
    )
    assert answer.app.sms_credentials_set
    return app


async def bind_all(app: Caller, phones: list[str], prefix: str = "tok") -> list[str]:
    tokens = [f"{prefix}{i}" for i in range(len(phones))]
    await asyncio.gather(*(app.bind(t, p) for t, p in zip(tokens, phones)))
    return tokens


def push_request(tokens: list[str], *params: str) -> push_pb2.PushRequest:
    request = sms_push(tokens, delay=1)
    if params:  # another content, so the 30-second same-content rule does not apply
        request.sms_info.sms_template_params[:] = list(params)
    return request




async def push_and_wait(app: Caller, request: push_pb2.PushRequest) -> str:
    pushed = await app.push.Push(request, metadata=app.metadata)
    await wait_done(app, pushed.push_id)
    return pushed.push_id


async def records(app: Caller, push_id: str = "") -> list[sms_pb2.SmsRecord]:
    answer = await app.sms.ListSmsRecords(
        sms_pb2.ListSmsRecordsRequest(push_id=push_id, page_size=1000, show_full_phone_number=True),
        metadata=app.metadata,
    )
    assert not answer.next_page_token
    return list(answer.records)


def by_phone(recs: list[sms_pb2.SmsRecord]) -> dict[str, sms_pb2.SmsRecord]:
    table = {r.phone_number: r for r in recs}
    assert len(table) == len(recs)  # one record per (push, phone)
    return table


# -- batching ----------------------------------------------------------------------------


async def test_450_phones_arrive_as_three_calls(serve: Serve, emulator: SmsEmulator) -> None:
    running = await serve()
    app = await app_with_sms(running)
    phones = mainland(450)
    push_id = await push_and_wait(app, push_request(await bind_all(app, phones)))
    assert sorted(len(call) for call in emulator.send_calls) == [50, 200, 200]
    assert sorted(s.phone_number for s in emulator.sent) == sorted(phones)  # each exactly once
    recs = by_phone(await records(app, push_id))
    assert sorted(recs) == sorted(phones)
    serials = {s.phone_number: s.serial_no for s in emulator.sent}
    for phone, r in recs.items():
        assert (r.status, r.provider_code, r.fee, r.serial_no) == (sms_pb2.SMS_STATUS_SENT, "Ok", 1, serials[phone])
    sent = emulator.sent[0]
    assert (sent.sms_app_id, sent.template_id, sent.sign_name, sent.template_params, sent.session_context) == (
        "1400000001", "123456", "Pushreach", ("42", "Alice"), push_id,
    )
    assert sent.secret_id == SECRET_ID


async def test_mainland_and_international_go_as_separate_calls(serve: Serve, emulator: SmsEmulator) -> None:
    running = await serve()
    app = await app_with_sms(running)
    phones = ["+8613800000001", "+12025550101", "+8613800000002", "+6591234567"]
    push_id = await push_and_wait(app, push_request(await bind_all(app, phones)))
    assert sorted(sorted(call) for call in emulator.send_calls) == [
        ["+12025550101", "+6591234567"],
        ["+8613800000001", "+8613800000002"],
    ]
    assert {p: r.status for p, r in by_phone(await records(app, push_id)).items()} == dict.fromkeys(
        phones, sms_pb2.SMS_STATUS_SENT
    )


# -- rate limits -------------------------------------------------------------------------


async def test_eleventh_sms_of_the_day_is_rate_limited_and_never_sent(serve: Serve, emulator: SmsEmulator) -> None:
    running = await serve()
    app = await app_with_sms(running)
    phone = mainland(1)[0]
    tokens = await bind_all(app, [phone])
    pushed = [await app.push.Push(push_request(tokens, f"order-{i}"), metadata=app.metadata) for i in range(11)]
    for p in pushed:
        await wait_done(app, p.push_id)
    recs = await records(app)
    assert len(recs) == 11
    statuses = sorted(sms_pb2.SmsStatus.Name(r.status) for r in recs)
    assert statuses == ["SMS_STATUS_RATE_LIMITED"] + ["SMS_STATUS_SENT"] * 10
    limited = next(r for r in recs if r.status == sms_pb2.SMS_STATUS_RATE_LIMITED)
    assert (limited.rate_limit_rule, limited.provider_code, limited.serial_no) == ("daily_limit", "", "")
    assert len(emulator.sent) == 10 and len(emulator.send_calls) == 10  # the 11th never left


async def test_provider_daily_limit_is_rate_limited_by_provider(serve: Serve, emulator: SmsEmulator) -> None:
    running = await serve()
    app = await app_with_sms(running)
    phones = mainland(3)
    emulator.limit_numbers([phones[1]])
    recs = by_phone(await records(app, await push_and_wait(app, push_request(await bind_all(app, phones)))))
    limited = recs[phones[1]]
    assert (limited.status, limited.rate_limit_rule, limited.provider_code) == (
        sms_pb2.SMS_STATUS_RATE_LIMITED, "provider", "LimitExceeded.PhoneNumberDailyLimit",
    )
    assert recs[phones[0]].status == recs[phones[2]].status == sms_pb2.SMS_STATUS_SENT
    assert len(emulator.send_calls) == 1  # not retried


# -- faults ------------------------------------------------------------------------------


async def test_internal_error_is_retried_and_each_number_gets_one_sms(serve: Serve, emulator: SmsEmulator) -> None:
    running = await serve()
    app = await app_with_sms(running)
    phones = mainland(5)
    emulator.fail_next(1, "InternalError.OtherError")
    push_id = await push_and_wait(app, push_request(await bind_all(app, phones)))
    assert emulator.calls == 2  # the failed call, then the retry
    assert sorted(s.phone_number for s in emulator.sent) == phones  # exactly once each
    assert all(r.status == sms_pb2.SMS_STATUS_SENT for r in await records(app, push_id))


async def test_wrong_secret_key_fails_with_signature_failure(serve: Serve, emulator: SmsEmulator) -> None:
    running = await serve()
    app = await app_with_sms(running, secret_key="not-the-key")
    phones = mainland(2)
    recs = await records(app, await push_and_wait(app, push_request(await bind_all(app, phones))))
    assert [(r.status, r.provider_code) for r in recs] == [
        (sms_pb2.SMS_STATUS_FAILED, "AuthFailure.SignatureFailure")
    ] * 2
    assert all(r.provider_message for r in recs)
    assert emulator.sent == [] and emulator.calls == 1  # a permanent error is not retried


@pytest.mark.parametrize("fault", ["read_timeout", "drop", "gateway"])
async def test_ambiguous_failure_is_unknown_and_never_sent_twice(
    serve: Serve, emulator: SmsEmulator, fault: str
) -> None:
    overrides = None
    if fault == "read_timeout":
        # The real provider with a short client timeout; the emulator answers later.
        overrides = Overrides(sms_provider=TencentSmsProvider(endpoint=emulator.url, timeout=0.3))
        emulator.set_delay(1.0)
    else:
        emulator.lose_next(1, fault)
    running = await serve(overrides)
    app = await app_with_sms(running)
    phones = mainland(3)
    push_id = await push_and_wait(app, push_request(await bind_all(app, phones)))
    expected_code = {"read_timeout": "Timeout", "drop": "NetworkError", "gateway": "ServerNetworkError"}[fault]
    recs = await records(app, push_id)
    assert [(r.status, r.provider_code) for r in recs] == [(sms_pb2.SMS_STATUS_UNKNOWN, expected_code)] * 3
    done = await wait_done(app, push_id)
    assert done.funnel.sms_unknown_count == 3 and done.funnel.sms_sent_count == 0
    # The endpoint did send them, once: a retry would have sent every one twice.
    await eventually(lambda: len(emulator.sent) == 3)
    await asyncio.sleep(0.3)
    assert emulator.calls == 1 and sorted(s.phone_number for s in emulator.sent) == phones


# -- receipts ----------------------------------------------------------------------------


async def test_receipt_callback_marks_record_delivered(serve: Serve, emulator: SmsEmulator) -> None:
    running = await serve(sms_receipt_listen="127.0.0.1:0")
    assert running.service.receipt_server is not None
    emulator.callback_url = running.service.receipt_server.callback_url  # as set in Tencent's console
    app = await app_with_sms(running)
    phones = mainland(2)
    emulator.fail_delivery([phones[1]])
    push_id = await push_and_wait(app, push_request(await bind_all(app, phones)))
    await eventually(lambda: emulator.callbacks_posted == 2)
    recs = by_phone(await records(app, push_id))
    delivered, undelivered = recs[phones[0]], recs[phones[1]]
    assert (delivered.status, delivered.report_code) == (sms_pb2.SMS_STATUS_DELIVERED, "DELIVRD")
    assert abs(delivered.receive_time.seconds - emulator.sent[0].sent_at) <= 1  # second precision
    assert (undelivered.status, undelivered.report_code) == (sms_pb2.SMS_STATUS_UNDELIVERED, "UNDELIV")
    assert undelivered.report_description
    done = await wait_done(app, push_id)
    assert done.funnel.sms_delivered_count == 1


async def test_receipt_poller_marks_record_delivered(serve: Serve, emulator: SmsEmulator) -> None:
    running = await serve(sms_receipt_poll_seconds=0.2)
    app = await app_with_sms(running)
    phone = mainland(1)[0]
    push_id = await push_and_wait(app, push_request(await bind_all(app, [phone])))
    deadline = now() + 10
    while (recs := await records(app, push_id))[0].status != sms_pb2.SMS_STATUS_DELIVERED:
        assert recs[0].status == sms_pb2.SMS_STATUS_SENT
        assert now() < deadline
        await asyncio.sleep(0.05)
    assert recs[0].receive_time.seconds == int(emulator.sent[0].sent_at)
    assert recs[0].report_code == "SUCCESS"


# -- isolation ---------------------------------------------------------------------------


async def test_slow_provider_for_one_app_delays_neither_other_apps_nor_the_api(
    serve: Serve, emulator: SmsEmulator
) -> None:
    running = await serve()
    slow = await app_with_sms(running, "slow")
    fast = await app_with_sms(running, "fast", OTHER_ID, OTHER_KEY)
    emulator.set_delay(8.0, secret_id=SECRET_ID)  # well beyond the fast app's 2.5 s on a loaded machine
    # Four fallbacks of the slow app: their SendSms calls (the four numbers may share calls,
    # as they have one template and parameters) hang at the provider.
    slow_tokens = await bind_all(slow, mainland(4), "slow")
    slow_pushes = [(await slow.push.Push(push_request([t]), metadata=slow.metadata)).push_id for t in slow_tokens]
    await eventually(lambda: emulator.calls >= 1)
    deadline = now() + 10
    while [r.status for r in await records(slow)] != [sms_pb2.SMS_STATUS_SENDING] * 4:
        assert now() < deadline, "the slow app's four numbers never all went out together"
        await asyncio.sleep(0.02)
    fast_tokens = await bind_all(fast, mainland(2, 100), "fast")
    started = now()
    fast_push = await fast.push.Push(push_request(fast_tokens), metadata=fast.metadata)
    slow_again = await slow.push.Push(push_request(slow_tokens[:1], "again"), metadata=slow.metadata)
    assert now() - started < 0.5  # the API answers while the slow app's sends hang
    await wait_done(fast, fast_push.push_id, timeout=2.5)
    assert [r.status for r in await records(fast, fast_push.push_id)] == [sms_pb2.SMS_STATUS_SENT] * 2
    hanging = await slow.push.GetPush(push_pb2.GetPushRequest(push_id=slow_pushes[0]), metadata=slow.metadata)
    assert hanging.push.fallback_state == push_pb2.FALLBACK_STATE_FIRING  # still waiting on Tencent
    emulator.set_delay(0.0, secret_id=SECRET_ID)  # calls already received keep hanging
    for push_id in [*slow_pushes, slow_again.push_id]:  # and the slow app gets there in the end
        await wait_done(slow, push_id, timeout=15)
    assert len(emulator.sent) == 7

"""Phone numbers never appear in full in a log line: a whole fallback run on a real server,
logged at DEBUG, with SMS sent, failed and refused, shows only masked numbers."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from pushreach.v1 import device_pb2, push_pb2
from pushreachd.phone import PhoneMaskingFilter, redact_phone_numbers
from pushreachd.sms.provider import SendOutcome, SmsBatch, SmsResult
from pushreachd.wiring import Overrides

from tests.harness import sms_push, start_service, test_settings

PHONES = ["+8613800000001", "+8613800000002", "+447911123456"]


class HalfFailingProvider:
    """Sends to the first number of each batch; fails the others with a provider text that,
    like real providers' texts, repeats the number."""

    name = "half-failing"
    max_batch_size = 200

    async def send(self, batch: SmsBatch) -> list[SmsResult]:
        first, *rest = batch.phone_numbers
        return [SmsResult(first, SendOutcome.SENT, code="Ok", serial_no="s1", fee=1)] + [
            SmsResult(n, SendOutcome.FAILED, code="InvalidNumber", message=f"number {n} is invalid") for n in rest
        ]

    async def close(self) -> None:
        return None


def _leaks(text: str) -> list[str]:
    national = [p.removeprefix("+86") for p in PHONES if p.startswith("+86")]
    return [p for p in [*PHONES, *national, "7911123456"] if p in text]


async def test_a_fallback_run_logs_no_full_phone_number(tmp_path, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    running = await start_service(test_settings(tmp_path), Overrides(sms_provider=HalfFailingProvider()))
    try:
        app = await running.new_app()
        for i, phone in enumerate(PHONES):
            await app.bind(f"tok{i}", phone)
        with pytest.raises(grpc.aio.AioRpcError):  # an invalid number is refused, and not logged
            await app.bind("tok9", "+86100")
        mainland = await app.push.Push(sms_push(["tok0", "tok1"], delay=1), metadata=app.metadata)
        abroad = await app.push.Push(sms_push(["tok2"], delay=1), metadata=app.metadata)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        for push_id in (mainland.push_id, abroad.push_id):
            while True:
                got = await app.push.GetPush(push_pb2.GetPushRequest(push_id=push_id), metadata=app.metadata)
                if got.push.fallback_state == push_pb2.FALLBACK_STATE_DONE:
                    break
                assert loop.time() < deadline
                await asyncio.sleep(0.05)
        assert got.funnel.sms_sent_count == 1
        await app.device.UnbindPhone(device_pb2.UnbindPhoneRequest(token="tok0"), metadata=app.metadata)
    finally:
        await running.close()
        await running.service.stop()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "fallback of push" in text  # the run was logged...
    assert "****" in text  # ...with masked numbers
    assert _leaks(text) == []  # ...and nothing else


def test_the_log_filter_masks_numbers_whoever_logged_them() -> None:
    record = logging.LogRecord("sdk", logging.WARNING, __file__, 1, "send to %s failed: %s", ("+8613812345678", "13912345678 bad"), None)
    assert PhoneMaskingFilter().filter(record)
    assert record.getMessage() == "send to +86138****5678 failed: +86139****5678 bad"
    try:
        raise ValueError("no route to +8613812345678")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    PhoneMaskingFilter().filter(record)
    assert "+8613812345678" not in (record.exc_text or "") and "+86138****5678" in (record.exc_text or "")
    # Ids that are digits but no phone number stay readable.
    assert redact_phone_numbers("app 1234567890 push 9f1c13812345678ab") == "app 1234567890 push 9f1c13812345678ab"

"""Delivery receipts: the callback server, the emulator posting to it, and the poller."""

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from pushreachd.sms.emulator import SmsEmulator
from pushreachd.sms.provider import DeliveryReceipt, SmsBatch, SmsCredentials
from pushreachd.sms.receipts import ReceiptPoller, ReceiptServer
from pushreachd.sms.tencent import TencentSmsProvider

from tests.fakes import FakeClock

CREDS = SmsCredentials("AKIDtest", "secret-key")
APP_ID = "1400000001"
NUMBERS = ("+8613800000001", "+8613800000002")


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.receipts: list[DeliveryReceipt] = []
        self.fail = fail

    async def __call__(self, receipts: list[DeliveryReceipt]) -> int:
        if self.fail:
            raise RuntimeError("database is down")
        self.receipts.extend(receipts)
        return len(receipts)


@pytest.fixture
async def sink_server() -> AsyncIterator[tuple[Sink, ReceiptServer]]:
    sink = Sink()
    server = ReceiptServer(sink, "127.0.0.1", 0)
    await server.start()
    yield sink, server
    await server.stop()


CALLBACK = [{
    "user_receive_time": "2025-06-15 08:03:04", "nationcode": "86", "mobile": "13800000001",
    "report_status": "SUCCESS", "errmsg": "DELIVRD", "description": "用户短信送达成功", "sid": "2640:1",
}]


async def test_server_accepts_tencent_callback(sink_server: tuple[Sink, ReceiptServer]) -> None:
    sink, server = sink_server
    async with aiohttp.ClientSession() as http:
        async with http.post(server.callback_url, json=CALLBACK) as resp:
            assert resp.status == 200
            assert await resp.json() == {"result": 0, "errmsg": "OK"}
    assert [(r.phone_number, r.serial_no, r.delivered) for r in sink.receipts] == [("+8613800000001", "2640:1", True)]


@pytest.mark.parametrize("body", [b"not json", b'{"a": 1}', b'[{"sid": "x"}]', b"\xff\xfe"])
async def test_server_refuses_malformed(sink_server: tuple[Sink, ReceiptServer], body: bytes) -> None:
    sink, server = sink_server
    async with aiohttp.ClientSession() as http:
        async with http.post(server.callback_url, data=body) as resp:
            assert resp.status == 400
        async with http.post(server.callback_url, json=CALLBACK) as resp:  # still serving
            assert resp.status == 200
    assert len(sink.receipts) == 1


async def test_server_answers_500_when_applying_fails() -> None:
    server = ReceiptServer(Sink(fail=True), "127.0.0.1", 0)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(server.callback_url, json=CALLBACK) as resp:
                assert resp.status == 500
                assert (await resp.json())["result"] != 0
    finally:
        await server.stop()


def batch() -> SmsBatch:
    return SmsBatch("app-a", CREDS, APP_ID, "Sign", "1110", ("1",), NUMBERS, "push-1")


async def test_emulator_posts_callbacks_to_receipt_server(sink_server: tuple[Sink, ReceiptServer]) -> None:
    sink, server = sink_server
    emulator = SmsEmulator(callback_url=server.callback_url)
    emulator.add_credentials(CREDS.secret_id, CREDS.secret_key)
    emulator.fail_delivery([NUMBERS[1]])
    await emulator.start()
    provider = TencentSmsProvider(endpoint=emulator.url)
    try:
        results = await provider.send(batch())
        for _ in range(200):
            if len(sink.receipts) == 2:
                break
            await asyncio.sleep(0.01)
        got = {r.serial_no: (r.phone_number, r.delivered) for r in sink.receipts}
        assert got == {results[0].serial_no: (NUMBERS[0], True), results[1].serial_no: (NUMBERS[1], False)}
        assert emulator.callbacks_posted == 2
    finally:
        await provider.close()
        await emulator.stop()


async def test_poller_pulls_each_source_periodically() -> None:
    emulator = SmsEmulator()
    emulator.add_credentials(CREDS.secret_id, CREDS.secret_key)
    await emulator.start()
    provider = TencentSmsProvider(endpoint=emulator.url)
    sink, clock = Sink(), FakeClock()
    bad = SmsCredentials("AKIDunknown", "k")  # one broken app must not stop the others

    async def sources() -> list[tuple[SmsCredentials, str]]:
        return [(bad, APP_ID), (CREDS, APP_ID)]

    poller = ReceiptPoller(clock, provider, sources, sink, interval=30.0, batch_limit=1)
    task = asyncio.create_task(poller.run())
    try:
        for _ in range(500):  # first round (bounded wait for its two loopback calls): nothing sent yet
            if poller.errors == 1:
                break
            await asyncio.sleep(0.01)
        assert poller.polls == 1 and sink.receipts == [] and poller.errors == 1
        results = await provider.send(batch())
        await clock.advance(29)
        await asyncio.sleep(0.2)
        assert poller.polls == 1  # not before the interval
        await clock.advance(1)
        for _ in range(100):
            if len(sink.receipts) == 2:
                break
            await asyncio.sleep(0.01)
        assert poller.polls == 2
        # batch_limit=1: the poller pages until a short page
        assert [r.serial_no for r in sink.receipts] == [r.serial_no for r in results]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await provider.close()
        await emulator.stop()

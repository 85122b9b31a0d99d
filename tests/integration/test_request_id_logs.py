"""Log lines caused by a call carry its request id, the caller's own when it sent one."""

from __future__ import annotations

import logging

import pytest
from pushreachd.logcontext import RequestIdFilter

from tests.harness import Running, sms_push


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(RequestIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collected():  # type: ignore[no-untyped-def]
    handler = Collect()
    logger = logging.getLogger("pushreachd")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old)


async def test_delivery_log_carries_the_push_request_id(server: Running, collected: Collect) -> None:
    app = await server.new_app()
    pushed = await app.push.Push(sms_push(["tok-1"], delay=60, request_id="order-7781-push"), metadata=app.metadata)
    await server.service.pushes.drain()
    delivery = [r for r in collected.records if pushed.push_id in r.getMessage() and "delivered" in r.getMessage()]
    assert delivery and all(r.request_id == "order-7781-push" for r in delivery)


async def test_calls_without_request_id_get_distinct_ids(server: Running, collected: Collect) -> None:
    app = await server.new_app()
    first = await app.push.Push(sms_push(["tok-1"], delay=60), metadata=app.metadata)
    second = await app.push.Push(sms_push(["tok-2"], delay=60), metadata=app.metadata)
    await server.service.pushes.drain()
    ids = {
        push_id: {r.request_id for r in collected.records if push_id in r.getMessage()}
        for push_id in (first.push_id, second.push_id)
    }
    assert all(len(v) == 1 and "-" not in v for v in ids.values())
    assert ids[first.push_id] != ids[second.push_id]

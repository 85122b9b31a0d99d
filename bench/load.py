"""The client harness: the same closed-loop driver for pushreach and for its baselines.

A fixed number of callers each await one call after another; the run ends when `count`
calls were made or `seconds` passed, whichever is first (every loop is bounded both ways).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from pushreach.v1 import push_pb2

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.max_send_message_length", 4 * 1024 * 1024),
]


@dataclass
class Run:
    calls: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.calls / self.elapsed if self.elapsed > 0 else 0.0

    def pct(self, q: float) -> float:
        return percentile(self.latencies, q)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


async def closed_loop(
    call: Callable[[int], Awaitable[object]], *, concurrency: int, count: int, seconds: float
) -> Run:
    run = Run()
    next_index = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal next_index
        while next_index < count and time.perf_counter() < deadline:
            i = next_index
            next_index += 1
            t0 = time.perf_counter()
            try:
                await call(i)
            except grpc.RpcError as exc:
                run.errors += 1
                run.first_error = run.first_error or f"{exc.code()}: {exc.details()}"  # type: ignore[attr-defined]
                continue
            run.latencies.append(time.perf_counter() - t0)
            run.calls += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    run.elapsed = time.perf_counter() - t0
    return run


def push_request(tokens: list[str], delay: int = 3600) -> push_pb2.PushRequest:
    """A token push with an SMS fallback due in `delay` seconds (the wheel holds it)."""
    return push_pb2.PushRequest(
        audience_type=push_pb2.AUDIENCE_TYPE_TOKEN_LIST,
        token_list=tokens,
        message=push_pb2.Message(title="Approval needed", content="Expense #42 waits for you"),
        message_type=push_pb2.MESSAGE_TYPE_NOTIFY,
        resend_by_sms=True,
        sms_info=push_pb2.SmsInfo(
            delay_trigger_time=delay,
            trigger_condition=push_pb2.TRIGGER_CONDITION_NOT_ARRIVED,
            sms_sign_name="Pushreach",
            sms_template_id="123456",
            sms_app_id="1400000001",
            sms_template_params=["42", "Alice"],
        ),
    )

"""An asyncio client for pushreach, over the generated `pushreach.v1` stubs.

Example::

    import asyncio
    from pushreach import Client
    from pushreach.v1 import event_pb2, push_pb2

    async def main() -> None:
        async with Client("127.0.0.1:50051", "ACCESS_ID", "SECRET_KEY") as client:
            await client.bind_phone("device-token-1", "+8613800138000")
            pushed = await client.push(
                push_pb2.PushRequest(
                    audience_type=push_pb2.AUDIENCE_TYPE_TOKEN,
                    token_list=["device-token-1"],
                    message=push_pb2.Message(title="Approval needed", content="Expense #42"),
                    resend_by_sms=True,
                    sms_info=push_pb2.SmsInfo(
                        delay_trigger_time=600,
                        trigger_condition=push_pb2.TRIGGER_CONDITION_NOT_ARRIVED,
                        sms_sign_name="MyCompany",
                        sms_template_id="123456",
                        sms_app_id="1400000001",
                        sms_template_params=["42"],
                    ),
                )
            )
            await client.report_event(pushed.push_id, "device-token-1", event_pb2.EVENT_TYPE_ARRIVED)
            status = await client.get_push(pushed.push_id)
            print(status.push.fallback_state, status.funnel.arrived_count)
            async for record in client.iter_sms_records(push_id=pushed.push_id):
                print(record.phone_number, record.status)

    asyncio.run(main())

Every call carries the app's credentials (`authorization: Basic base64(access_id:secret_key)`)
and a deadline (`timeout` seconds, per client or per call; retries share it). Calls that are
safe to repeat are retried on UNAVAILABLE, with exponential backoff, up to `retries` more
times: the reads (`get_push`, `get_device`, `list_sms_records`, `get_statistics`),
`cancel_fallback` (idempotent by contract) and `push`, which always carries a `request_id`
(a uuid4 is filled in when the request has none), so the server answers a repeated push with
the first push's response instead of pushing twice. Device bindings and events are never
retried. Failures raise `PushreachError` with the status code and the field violations.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from .v1 import (
    device_pb2,
    device_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    push_pb2,
    push_pb2_grpc,
    sms_pb2,
    sms_pb2_grpc,
)

__all__ = ["Client", "FieldViolation", "PushreachError", "TimeLike", "timestamp"]

R = TypeVar("R")
TimeLike = datetime | float | int  # a datetime (naive = UTC) or seconds since the epoch
MAX_EVENTS_PER_MESSAGE = 1000  # the server's limit per ReportEvents message


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One `google.rpc.BadRequest` field violation: the field path and what is wrong."""

    field: str
    description: str


class PushreachError(Exception):
    """A failed call: the gRPC status code, its message, and the server's error details."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        violations: Sequence[FieldViolation] = (),
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason  # google.rpc.ErrorInfo reason, when the server sent one
        self.violations = tuple(violations)

    @classmethod
    def from_rpc_error(cls, error: grpc.aio.AioRpcError) -> PushreachError:
        reason = ""
        violations: list[FieldViolation] = []
        try:
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
        except ValueError:  # details that do not match the code and message
            status = None
        if status is not None:
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
                elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason = info.reason
        return cls(error.code(), error.details() or "", reason=reason, violations=violations)


def timestamp(value: TimeLike) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp from a datetime (naive means UTC) or seconds since the epoch."""
    t = timestamp_pb2.Timestamp()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        t.FromDatetime(value)
    else:
        t.FromNanoseconds(int(round(float(value) * 1e9)))
    return t


PemSource = bytes | str | os.PathLike[str]  # PEM bytes, or the path of a PEM file


def _pem(source: PemSource | None) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    with open(source, "rb") as f:
        return f.read()


def basic_auth(access_id: str, secret_key: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that authenticates an app (TPNS's scheme):
    `authorization: Basic base64(access_id:secret_key)`."""
    token = base64.b64encode(f"{access_id}:{secret_key}".encode()).decode()
    return (("authorization", f"Basic {token}"),)


class Client:
    """A pushreach client for one app. Use it as `async with Client(...) as client:`.

    - `target`: the server, `host:port`.
    - `access_id`, `secret_key`: the app's credentials (`pushreach apps create`).
    - `tls`: use TLS with the system's root certificates.
    - `ca`: trust this CA instead (PEM bytes, or the path of a PEM file); implies TLS.
    - `cert`, `key`: the client certificate chain and its private key (PEM bytes or paths),
      for a server that requires client certificates (mutual TLS); implies TLS.
    - `server_name`: the name to check the server's certificate against, when it differs from
      the host in `target` (e.g. `target="10.0.0.5:50051", server_name="pushreach.internal"`).
    - `credentials`: any `grpc.ChannelCredentials` instead of `tls`, `ca`, `cert` and `key`.
    - `timeout`: deadline in seconds of each call, retries included (each method takes
      `timeout=` to override it).
    - `retries`: how many times a retryable call is repeated after UNAVAILABLE.
    - `options`, `interceptors`: passed to the `grpc.aio` channel.
    """

    def __init__(
        self,
        target: str,
        access_id: str,
        secret_key: str,
        *,
        tls: bool = False,
        ca: PemSource | None = None,
        cert: PemSource | None = None,
        key: PemSource | None = None,
        server_name: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
        options: Sequence[tuple[str, Any]] = (),
        interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        if (cert is None) != (key is None):
            raise ValueError("cert and key go together: give both (mutual TLS) or neither")
        if credentials is not None and (ca is not None or cert is not None):
            raise ValueError("give either credentials or ca/cert/key, not both")
        if credentials is None and (tls or ca is not None or cert is not None or server_name):
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_pem(ca), private_key=_pem(key), certificate_chain=_pem(cert)
            )
        if server_name:  # implies TLS (above): check the certificate against this name
            options = (*options, ("grpc.ssl_target_name_override", server_name))
        if credentials is not None:
            self._channel = grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
        self._metadata = basic_auth(access_id, secret_key)
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._push = push_pb2_grpc.PushServiceStub(self._channel)
        self._device = device_pb2_grpc.DeviceServiceStub(self._channel)
        self._event = event_pb2_grpc.EventServiceStub(self._channel)
        self._sms = sms_pb2_grpc.SmsServiceStub(self._channel)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    # -- the calling discipline ---------------------------------------------------------

    async def _call(
        self,
        rpc: Callable[..., Awaitable[R]],
        request: Any,
        *,
        timeout: float | None,
        retry: bool,
    ) -> R:
        budget = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PushreachError(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {budget:g}s")
            try:
                return await rpc(request, metadata=self._metadata, timeout=remaining)
            except grpc.aio.AioRpcError as exc:
                if not (retry and exc.code() is grpc.StatusCode.UNAVAILABLE and attempt < self.retries):
                    raise PushreachError.from_rpc_error(exc) from exc
            delay = min(self._max_backoff, self._backoff * (2**attempt))
            attempt += 1
            await asyncio.sleep(max(0.0, min(delay, deadline - time.monotonic())))

    # -- PushService --------------------------------------------------------------------

    async def push(self, request: push_pb2.PushRequest, *, timeout: float | None = None) -> push_pb2.PushResponse:
        """Send a push. A request without `request_id` gets a uuid4 one, so retries are safe."""
        if not request.request_id:
            filled = push_pb2.PushRequest()
            filled.CopyFrom(request)
            filled.request_id = str(uuid.uuid4())
            request = filled
        return await self._call(self._push.Push, request, timeout=timeout, retry=True)

    async def get_push(
        self, push_id: str, *, page_size: int = 0, page_token: str = "", timeout: float | None = None
    ) -> push_pb2.GetPushResponse:
        """A push's state, funnel counts and one page of its targets."""
        request = push_pb2.GetPushRequest(push_id=push_id, page_size=page_size, page_token=page_token)
        return await self._call(self._push.GetPush, request, timeout=timeout, retry=True)

    async def iter_push_targets(
        self, push_id: str, *, page_size: int = 0, timeout: float | None = None
    ) -> AsyncIterator[push_pb2.PushTarget]:
        """Every target of a push, page after page (each page its own call and deadline)."""
        token = ""
        while True:
            page = await self.get_push(push_id, page_size=page_size, page_token=token, timeout=timeout)
            for target in page.targets:
                yield target
            token = page.next_page_token
            if not token:
                return

    async def cancel_fallback(
        self, push_id: str, *, request_id: str = "", timeout: float | None = None
    ) -> push_pb2.CancelFallbackResponse:
        """Stop a pending SMS fallback (idempotent: cancelling again succeeds)."""
        request = push_pb2.CancelFallbackRequest(push_id=push_id, request_id=request_id or str(uuid.uuid4()))
        return await self._call(self._push.CancelFallback, request, timeout=timeout, retry=True)

    # -- DeviceService ------------------------------------------------------------------

    async def bind_phone(
        self, token: str, phone_number: str, *, request_id: str = "", timeout: float | None = None
    ) -> device_pb2.BindPhoneResponse:
        """Bind a phone number (E.164, or a bare mainland number) to a device token."""
        request = device_pb2.BindPhoneRequest(token=token, phone_number=phone_number, request_id=request_id)
        return await self._call(self._device.BindPhone, request, timeout=timeout, retry=False)

    async def unbind_phone(
        self, token: str, *, request_id: str = "", timeout: float | None = None
    ) -> device_pb2.UnbindPhoneResponse:
        request = device_pb2.UnbindPhoneRequest(token=token, request_id=request_id)
        return await self._call(self._device.UnbindPhone, request, timeout=timeout, retry=False)

    async def bind_account(
        self, token: str, account: str, *, request_id: str = "", timeout: float | None = None
    ) -> device_pb2.BindAccountResponse:
        request = device_pb2.BindAccountRequest(token=token, account=account, request_id=request_id)
        return await self._call(self._device.BindAccount, request, timeout=timeout, retry=False)

    async def unbind_account(
        self, token: str, account: str, *, request_id: str = "", timeout: float | None = None
    ) -> device_pb2.UnbindAccountResponse:
        request = device_pb2.UnbindAccountRequest(token=token, account=account, request_id=request_id)
        return await self._call(self._device.UnbindAccount, request, timeout=timeout, retry=False)

    async def get_device(self, token: str, *, timeout: float | None = None) -> device_pb2.GetDeviceResponse:
        request = device_pb2.GetDeviceRequest(token=token)
        return await self._call(self._device.GetDevice, request, timeout=timeout, retry=True)

    # -- EventService -------------------------------------------------------------------

    async def report_event(
        self,
        push_id: str,
        token: str,
        event_type: event_pb2.EventType.ValueType,
        *,
        event_time: TimeLike | None = None,
        timeout: float | None = None,
    ) -> event_pb2.ReportEventResponse:
        """Report one event; `event_time` unset means when the server receives it."""
        request = event_pb2.ReportEventRequest(
            push_id=push_id,
            token=token,
            event_type=event_type,
            event_time=None if event_time is None else timestamp(event_time),
        )
        return await self._call(self._event.ReportEvent, request, timeout=timeout, retry=False)

    async def report_events(
        self,
        events: Iterable[event_pb2.Event] | AsyncIterable[event_pb2.Event],
        *,
        batch_size: int = MAX_EVENTS_PER_MESSAGE,
        timeout: float | None = None,
    ) -> event_pb2.ReportEventsResponse:
        """Stream events, `batch_size` (at most 1,000) to a message; one answer for all.

        `RejectedEvent.index` numbers the events from 0 in the order given.
        """
        if not 1 <= batch_size <= MAX_EVENTS_PER_MESSAGE:
            raise ValueError(f"batch_size must be 1 to {MAX_EVENTS_PER_MESSAGE}")

        async def messages() -> AsyncIterator[event_pb2.ReportEventsRequest]:
            batch: list[event_pb2.Event] = []
            async for event in _aiter(events):
                batch.append(event)
                if len(batch) == batch_size:
                    yield event_pb2.ReportEventsRequest(events=batch)
                    batch = []
            if batch:
                yield event_pb2.ReportEventsRequest(events=batch)

        budget = self.timeout if timeout is None else timeout
        try:
            return await self._event.ReportEvents(messages(), metadata=self._metadata, timeout=budget)
        except grpc.aio.AioRpcError as exc:
            raise PushreachError.from_rpc_error(exc) from exc

    # -- SmsService ---------------------------------------------------------------------

    async def list_sms_records(
        self,
        *,
        push_id: str = "",
        phone_number: str = "",
        statuses: Sequence[sms_pb2.SmsStatus.ValueType] = (),
        start_time: TimeLike | None = None,
        end_time: TimeLike | None = None,
        show_full_phone_number: bool = False,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
    ) -> sms_pb2.ListSmsRecordsResponse:
        """One page of SMS records, newest first. Phone numbers are masked unless asked."""
        request = sms_pb2.ListSmsRecordsRequest(
            push_id=push_id,
            phone_number=phone_number,
            statuses=list(statuses),
            start_time=None if start_time is None else timestamp(start_time),
            end_time=None if end_time is None else timestamp(end_time),
            show_full_phone_number=show_full_phone_number,
            page_size=page_size,
            page_token=page_token,
        )
        return await self._call(self._sms.ListSmsRecords, request, timeout=timeout, retry=True)

    async def iter_sms_records(
        self,
        *,
        push_id: str = "",
        phone_number: str = "",
        statuses: Sequence[sms_pb2.SmsStatus.ValueType] = (),
        start_time: TimeLike | None = None,
        end_time: TimeLike | None = None,
        show_full_phone_number: bool = False,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> AsyncIterator[sms_pb2.SmsRecord]:
        """Every matching SMS record, page after page (each page its own call and deadline)."""
        token = ""
        while True:
            page = await self.list_sms_records(
                push_id=push_id,
                phone_number=phone_number,
                statuses=statuses,
                start_time=start_time,
                end_time=end_time,
                show_full_phone_number=show_full_phone_number,
                page_size=page_size,
                page_token=token,
                timeout=timeout,
            )
            for record in page.records:
                yield record
            token = page.next_page_token
            if not token:
                return

    async def get_statistics(
        self,
        *,
        start_time: TimeLike | None = None,
        end_time: TimeLike | None = None,
        timeout: float | None = None,
    ) -> sms_pb2.GetStatisticsResponse:
        """The app's figures for pushes accepted in [start_time, end_time) (default: 7 days)."""
        request = sms_pb2.GetStatisticsRequest(
            start_time=None if start_time is None else timestamp(start_time),
            end_time=None if end_time is None else timestamp(end_time),
        )
        return await self._call(self._sms.GetStatistics, request, timeout=timeout, retry=True)


async def _aiter(items: Iterable[R] | AsyncIterable[R]) -> AsyncIterator[R]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item

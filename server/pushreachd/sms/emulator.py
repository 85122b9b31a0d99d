"""A loopback Tencent Cloud SMS endpoint (API 2021-01-11) for tests and local runs.

It speaks the wire protocol the SDK speaks (POST / with a JSON body, X-TC-* headers and a
TC3-HMAC-SHA256 Authorization header), so the real TencentSmsProvider and the real SDK
are exercised end to end, signature included. What it does not know about Tencent it
does not pretend: templates and signs are not checked against a console, fees are 1.

Faults are programmable (from tests through methods, from the CLI through flags): fail
the next N calls with a code, delay every call (or one SecretId's calls), lose the answer
of the next N calls after sending (connection dropped, or a gateway's 502 page), answer
chosen numbers with LimitExceeded, report chosen numbers as undelivered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import random
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import phonenumbers
from aiohttp import web

from pushreachd.phone import (
    InvalidPhoneNumber,
    is_mainland,
    mask_phone,
    normalize_phone,
)

log = logging.getLogger(__name__)

API_VERSION = "2021-01-11"
SERVICE = "sms"
MAX_NUMBERS = 200
MAX_PULL = 100
SIGNATURE_TTL = 300.0  # Tencent rejects a request signed more than 5 minutes away
SHANGHAI = ZoneInfo("Asia/Shanghai")  # callback times are Beijing time
LOSE_MODES = ("drop", "gateway")


@dataclass(frozen=True, slots=True)
class SentSms:
    """One SMS the emulator accepted (what a handset would have received)."""

    phone_number: str  # E.164
    sms_app_id: str
    sign_name: str
    template_id: str
    template_params: tuple[str, ...]
    session_context: str
    serial_no: str
    secret_id: str
    sent_at: float


@dataclass(frozen=True, slots=True)
class _Report:
    sms: SentSms
    delivered: bool


class ApiError(Exception):
    """An error answer: {"Response": {"Error": {"Code", "Message"}, "RequestId"}}."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code)
        self.code = code
        self.message = message


def tc3_signature(
    secret_key: str, *, method: str, path: str, query: str, headers: dict[str, str],
    signed_headers: str, body: bytes, timestamp: str, date: str, service: str = SERVICE,
) -> str:
    """TC3-HMAC-SHA256 as Tencent documents it (header names and values lowercased)."""
    names = signed_headers.split(";")
    canonical_headers = "".join(f"{n}:{headers.get(n, '').strip().lower()}\n" for n in names)
    canonical_request = "\n".join(
        [method, path, query, canonical_headers, signed_headers, hashlib.sha256(body).hexdigest()]
    )
    scope = f"{date}/{service}/tc3_request"
    string_to_sign = "\n".join(
        ["TC3-HMAC-SHA256", timestamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )

    def _hmac(key: bytes, msg: str) -> bytes:
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    key = _hmac(_hmac(_hmac(("TC3" + secret_key).encode(), date), service), "tc3_request")
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def _parse_authorization(value: str) -> tuple[str, str, str, str, str]:
    """-> (secret_id, date, service, signed_headers, signature)."""
    algorithm, _, rest = value.partition(" ")
    if algorithm != "TC3-HMAC-SHA256":
        raise ApiError("AuthFailure.InvalidAuthorization", "Authorization is not TC3-HMAC-SHA256")
    fields = dict(part.strip().split("=", 1) for part in rest.split(",") if "=" in part)
    try:
        secret_id, date, service, terminator = fields["Credential"].split("/")
        signed, signature = fields["SignedHeaders"], fields["Signature"]
    except (KeyError, ValueError):
        raise ApiError("AuthFailure.InvalidAuthorization", "Authorization is malformed") from None
    if terminator != "tc3_request" or "host" not in signed.split(";"):
        raise ApiError("AuthFailure.InvalidAuthorization", "Authorization is malformed")
    return secret_id, date, service, signed, signature


def _tencent_phone(raw: str) -> str:
    """Tencent also takes 0086..., 86... and bare 11-digit mainland numbers."""
    text = raw.strip()
    if not text.startswith(("+", "00")) and text.startswith("86") and len(text) == 13:
        text = "+" + text
    return normalize_phone(text)


class SmsEmulator:
    def __init__(
        self,
        *,
        callback_url: str | None = None,
        daily_limit: int | None = None,
        report_delay: float = 0.0,
    ) -> None:
        self.url = ""
        self.callback_url = callback_url
        self.daily_limit = daily_limit  # per number per (Beijing) day; None: unlimited
        # Seconds between sending and the delivery report (callback or pull). Tencent's
        # reports come after the handset answered, well after SendSms returned.
        self.report_delay = report_delay
        self.sent: list[SentSms] = []
        self.send_calls: list[tuple[str, ...]] = []  # PhoneNumberSet of each signed SendSms call
        self.calls = 0  # every POST received, accepted or not
        self.callbacks_posted = 0  # reports delivered to callback_url
        self._keys: dict[str, str] = {}
        self._fail_next: list[tuple[str, str]] = []
        self._lose_next: list[str] = []
        self._delay = 0.0
        self._delay_of: dict[str, float] = {}
        self._stopping = asyncio.Event()  # cuts injected delays short on stop()
        self._limited: dict[str, str] = {}
        self._undelivered: set[str] = set()
        self._pull_queue: list[_Report] = []
        self._callback_queue: list[_Report] = []
        self._serials = itertools.count(random.randrange(10**20, 10**21))
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- configuration and faults ------------------------------------------------------

    def add_credentials(self, secret_id: str, secret_key: str) -> None:
        self._keys[secret_id] = secret_key

    def fail_next(self, count: int, code: str = "InternalError.OtherError", message: str = "") -> None:
        """The next `count` signed calls answer Error `code` (they send nothing)."""
        self._fail_next.extend([(code, message or f"injected fault {code}")] * count)

    def set_delay(self, seconds: float, *, secret_id: str | None = None) -> None:
        """Delay every call (after reading it, before anything is checked), e.g. to trigger
        client timeouts.

        With `secret_id`, only the calls signed with that SecretId (one app) are delayed.
        The call is answered (and its SMS sent) after the delay, even when the client has
        given up waiting, as a real server would.
        """
        if secret_id is None:
            self._delay = seconds
        else:
            self._delay_of[secret_id] = seconds

    def lose_next(self, count: int, how: str = "drop") -> None:
        """The next `count` SendSms calls are carried out (the SMS are sent) but the answer
        is lost: "drop" closes the connection without answering, "gateway" answers HTTP 502
        with an HTML page, as a proxy in between would."""
        if how not in LOSE_MODES:
            raise ValueError(f"how must be one of {LOSE_MODES}")
        self._lose_next.extend([how] * count)

    def limit_numbers(self, numbers: list[str], code: str = "LimitExceeded.PhoneNumberDailyLimit") -> None:
        """Answer these numbers with a per-number LimitExceeded code (the call succeeds)."""
        for n in numbers:
            self._limited[normalize_phone(n)] = code

    def fail_delivery(self, numbers: list[str]) -> None:
        """Report these numbers as FAIL (not received) in receipts."""
        self._undelivered.update(normalize_phone(n) for n in numbers)

    def reset_faults(self) -> None:
        self._fail_next.clear()
        self._lose_next.clear()
        self._delay = 0.0
        self._delay_of.clear()
        self._limited.clear()
        self._undelivered.clear()

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        if ":" in bound_host:  # IPv6 literal
            bound_host = f"[{bound_host}]"
        self.url = f"http://{bound_host}:{bound_port}"

    async def stop(self) -> None:
        self._stopping.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- the API -----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        request_id = str(uuid.uuid4())
        # Read the whole request first: a client that stops waiting does not take back a
        # request it has written, so a delayed call is still carried out.
        body = await request.read()
        delay = self._delay_of.get(_claimed_secret_id(request), self._delay)
        if delay > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        try:
            if self._stopping.is_set():
                raise ApiError("InternalError.OtherError", "the emulator is stopping")
            secret_id = self._authenticate(request, body)
            if self._fail_next:
                raise ApiError(*self._fail_next.pop(0))
            if request.headers.get("X-TC-Version") != API_VERSION:
                raise ApiError("NoSuchVersion", f"this emulator speaks {API_VERSION}")
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                raise ApiError("FailedOperation.JsonParseFail", "body is not JSON") from None
            if not isinstance(params, dict):
                raise ApiError("FailedOperation.JsonParseFail", "body is not a JSON object")
            action = request.headers.get("X-TC-Action", "")
            if action == "SendSms":
                result = self._send_sms(params, secret_id)
                if self._lose_next:
                    return self._lose_answer(request, self._lose_next.pop(0))
            elif action == "PullSmsSendStatus":
                result = self._pull_send_status(params)
            else:
                raise ApiError("InvalidAction", f"action {action!r} is not supported by the emulator")
        except ApiError as err:
            log.info("emulator: %s -> %s", request.headers.get("X-TC-Action"), err.code)
            result = {"Error": {"Code": err.code, "Message": err.message}}
        result["RequestId"] = request_id
        # Exactly "application/json": the SDK only looks for an Error in that content type.
        return web.Response(
            body=json.dumps({"Response": result}).encode(),
            headers={"Content-Type": "application/json"},
        )

    def _lose_answer(self, request: web.Request, how: str) -> web.Response:
        log.info("emulator: SendSms carried out, answer lost (%s)", how)
        if how == "gateway":
            return web.Response(
                status=502, text="<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html"
            )
        if request.transport is not None:
            request.transport.abort()  # no status line, no body: the client sees a dropped connection
        raise web.HTTPInternalServerError()  # never written: the connection is gone

    def _authenticate(self, request: web.Request, body: bytes) -> str:
        auth = request.headers.get("Authorization", "")
        if not auth:
            raise ApiError("AuthFailure.SignatureFailure", "the request is not signed")
        secret_id, date, service, signed, signature = _parse_authorization(auth)
        key = self._keys.get(secret_id)
        if key is None:
            raise ApiError("AuthFailure.SecretIdNotFound", "the SecretId does not exist")
        timestamp = request.headers.get("X-TC-Timestamp", "")
        try:
            ts = int(timestamp)
        except ValueError:
            raise ApiError("AuthFailure.SignatureFailure", "X-TC-Timestamp is invalid") from None
        if abs(time.time() - ts) > SIGNATURE_TTL:
            raise ApiError("AuthFailure.SignatureExpire", "the signature has expired")
        if date != datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d") or service != SERVICE:
            raise ApiError("AuthFailure.SignatureFailure", "credential scope does not match")
        headers = {k.lower(): v for k, v in request.headers.items()}
        expected = tc3_signature(
            key, method=request.method, path=request.path, query=request.query_string,
            headers=headers, signed_headers=signed, body=body, timestamp=timestamp, date=date,
        )
        if not hmac.compare_digest(expected, signature):
            raise ApiError("AuthFailure.SignatureFailure", "the signature does not match")
        return secret_id

    def _send_sms(self, params: dict[str, Any], secret_id: str) -> dict[str, Any]:
        raw_numbers = params.get("PhoneNumberSet") or []
        if not isinstance(raw_numbers, list) or not raw_numbers:
            raise ApiError("MissingParameter.EmptyPhoneNumberSet", "PhoneNumberSet is empty")
        self.send_calls.append(tuple(str(n) for n in raw_numbers))
        if len(raw_numbers) > MAX_NUMBERS:
            raise ApiError(
                "LimitExceeded.PhoneNumberCountLimit",
                f"a call takes at most {MAX_NUMBERS} numbers, got {len(raw_numbers)}",
            )
        for name in ("SmsSdkAppId", "TemplateId"):
            if not params.get(name):
                raise ApiError("MissingParameter", f"{name} is required")
        numbers: list[str | None] = []
        for raw in raw_numbers:
            try:
                numbers.append(_tencent_phone(str(raw)))
            except InvalidPhoneNumber:
                numbers.append(None)
        regions = {is_mainland(n) for n in numbers if n}
        if len(regions) > 1:
            raise ApiError(
                "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber",
                "a call must be all mainland or all international numbers",
            )
        if True in regions and not params.get("SignName"):
            raise ApiError("FailedOperation.SignatureIncorrectOrUnapproved", "SignName is required")
        statuses = [self._send_one(raw, n, params, secret_id) for raw, n in zip(raw_numbers, numbers)]
        return {"SendStatusSet": statuses}

    def _send_one(
        self, raw: Any, number: str | None, params: dict[str, Any], secret_id: str
    ) -> dict[str, Any]:
        context = str(params.get("SessionContext") or "")
        status = {"SerialNo": "", "PhoneNumber": str(raw), "Fee": 0, "SessionContext": context,
                  "Code": "Ok", "Message": "send success", "IsoCode": "DEF"}
        if number is None:
            status.update(Code="InvalidParameterValue.IncorrectPhoneNumber", Message="invalid number")
            return status
        status["PhoneNumber"] = number
        status["IsoCode"] = phonenumbers.region_code_for_number(phonenumbers.parse(number)) or "DEF"
        code = self._limited.get(number) or self._daily_limit_code(number)
        if code:
            status.update(Code=code, Message=f"{code} (emulated)")
            return status
        sms = SentSms(
            phone_number=number,
            sms_app_id=str(params["SmsSdkAppId"]),
            sign_name=str(params.get("SignName") or ""),
            template_id=str(params["TemplateId"]),
            template_params=tuple(str(p) for p in params.get("TemplateParamSet") or []),
            session_context=context,
            serial_no=f"2640:{next(self._serials)}",
            secret_id=secret_id,
            sent_at=time.time(),
        )
        self.sent.append(sms)
        report = _Report(sms, delivered=number not in self._undelivered)
        self._pull_queue.append(report)
        if self.callback_url:
            self._callback_queue.append(report)
            self._spawn(self._flush_after(self.report_delay))
        log.info("emulator: sent template %s to %s", sms.template_id, mask_phone(number))
        status.update(SerialNo=sms.serial_no, Fee=1)
        return status

    def _daily_limit_code(self, number: str) -> str:
        if self.daily_limit is None:
            return ""
        today = datetime.now(SHANGHAI).date()
        count = sum(
            1 for s in self.sent
            if s.phone_number == number and datetime.fromtimestamp(s.sent_at, SHANGHAI).date() == today
        )
        return "LimitExceeded.PhoneNumberDailyLimit" if count >= self.daily_limit else ""

    def _pull_send_status(self, params: dict[str, Any]) -> dict[str, Any]:
        app_id, limit = params.get("SmsSdkAppId"), params.get("Limit")
        if not app_id:
            raise ApiError("MissingParameter", "SmsSdkAppId is required")
        if not isinstance(limit, int) or not 0 < limit <= MAX_PULL:
            raise ApiError("InvalidParameterValue.LimitVerifyFail", f"Limit must be 1..{MAX_PULL}")
        ready = time.time() - self.report_delay
        mine = [r for r in self._pull_queue if r.sms.sms_app_id == app_id and r.sms.sent_at <= ready][:limit]
        taken = {id(r) for r in mine}  # each report is pulled once
        self._pull_queue = [r for r in self._pull_queue if id(r) not in taken]
        return {"PullSmsSendStatusSet": [_pull_item(r) for r in mine]}

    # -- delivery callbacks ------------------------------------------------------------

    async def flush_callbacks(self) -> int:
        """POST pending delivery reports to callback_url; returns how many were accepted.

        Reports the receiver does not accept (network error, non-200, result != 0) stay
        queued for the next flush, as Tencent retries its callbacks.
        """
        if not self.callback_url or not self._callback_queue:
            return 0
        batch, self._callback_queue = self._callback_queue, []
        try:
            if self._session is None:
                self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
            payload = [_callback_item(r) for r in batch]
            async with self._session.post(self.callback_url, json=payload) as resp:
                answer = await resp.json(content_type=None) if resp.status == 200 else None
            if not isinstance(answer, dict) or answer.get("result") != 0:
                raise ValueError(f"callback refused: HTTP {resp.status} {answer!r}")
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            log.warning("emulator: delivery callback failed: %s", exc)
            self._callback_queue[:0] = batch
            return 0
        self.callbacks_posted += len(batch)
        return len(batch)

    async def _flush_after(self, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        await self.flush_callbacks()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _claimed_secret_id(request: web.Request) -> str:
    """The SecretId a request says it is signed with (unverified; for per-app faults)."""
    credential = request.headers.get("Authorization", "").partition("Credential=")[2]
    return credential.split("/", 1)[0]


def _pull_item(report: _Report) -> dict[str, Any]:
    parsed = phonenumbers.parse(report.sms.phone_number)
    return {
        "UserReceiveTime": int(report.sms.sent_at),
        "CountryCode": str(parsed.country_code),
        "SubscriberNumber": str(parsed.national_number),
        "PhoneNumber": report.sms.phone_number,
        "SerialNo": report.sms.serial_no,
        "ReportStatus": "SUCCESS" if report.delivered else "FAIL",
        "Description": "用户短信送达成功" if report.delivered else "用户短信未送达",
        "SessionContext": report.sms.session_context,
    }


def _callback_item(report: _Report) -> dict[str, Any]:
    """Tencent's delivery status callback item (one element of the posted JSON array)."""
    parsed = phonenumbers.parse(report.sms.phone_number)
    return {
        "user_receive_time": f"{datetime.fromtimestamp(report.sms.sent_at, SHANGHAI):%Y-%m-%d %H:%M:%S}",
        "nationcode": str(parsed.country_code),
        "mobile": str(parsed.national_number),
        "report_status": "SUCCESS" if report.delivered else "FAIL",
        "errmsg": "DELIVRD" if report.delivered else "UNDELIV",
        "description": "用户短信送达成功" if report.delivered else "用户短信未送达",
        "sid": report.sms.serial_no,
    }


# -- command line (wired into `pushreach` by cli.py) -------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="127.0.0.1:8089", help="HOST:PORT to listen on (port 0: any)")
    parser.add_argument("--credentials", action="append", default=[], metavar="ID:KEY",
                        help="accept this SecretId:SecretKey pair (repeatable)")
    parser.add_argument("--fail-next", type=int, default=0, metavar="N", help="fail the next N calls")
    parser.add_argument("--fail-code", default="InternalError.OtherError", help="error code for --fail-next")
    parser.add_argument("--delay", type=float, default=0.0, metavar="SECONDS", help="delay every call")
    parser.add_argument("--lose-next", type=int, default=0, metavar="N",
                        help="send the next N SendSms calls but lose their answers (see --lose-how)")
    parser.add_argument("--lose-how", choices=LOSE_MODES, default="drop",
                        help="drop: close the connection unanswered; gateway: answer 502 with HTML")
    parser.add_argument("--limit-number", action="append", default=[], metavar="PHONE",
                        help="answer this number with LimitExceeded.PhoneNumberDailyLimit (repeatable)")
    parser.add_argument("--daily-limit", type=int, default=None, help="SMS per number per day")
    parser.add_argument("--callback-url", default=None, help="POST delivery reports here")
    parser.add_argument("--report-delay", type=float, default=1.0, metavar="SECONDS",
                        help="seconds from sending to its delivery report (callback or pull); default 1")


async def serve_from_args(args: argparse.Namespace) -> None:
    """Run an emulator configured by `args` until cancelled or sent SIGTERM/SIGINT."""
    host, _, port = args.listen.rpartition(":")
    emulator = SmsEmulator(
        callback_url=args.callback_url, daily_limit=args.daily_limit, report_delay=args.report_delay
    )
    for pair in args.credentials:
        secret_id, sep, secret_key = pair.partition(":")
        if not sep or not secret_id or not secret_key:
            raise SystemExit(f"--credentials expects ID:KEY, got {pair.split(':')[0]!r}:...")
        emulator.add_credentials(secret_id, secret_key)
    if not args.credentials:
        print("warning: no --credentials given, every call will be refused", file=sys.stderr)
    emulator.fail_next(args.fail_next, args.fail_code)
    emulator.set_delay(args.delay)
    emulator.lose_next(args.lose_next, args.lose_how)
    if args.limit_number:
        emulator.limit_numbers(args.limit_number)
    await emulator.start(host.strip("[]") or "127.0.0.1", int(port))
    print(f"tencent sms emulator listening on {emulator.url}", flush=True)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopped.set)
    try:
        await stopped.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await emulator.stop()

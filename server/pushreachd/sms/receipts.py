"""Delivery receipts from Tencent SMS, by push (callback) or by pull (PullSmsSendStatus).

Both produce DeliveryReceipt and hand them to one `on_receipts` callable, which matches
them to SMS records by serial number and returns how many it applied.
- ReceiptServer: the HTTP endpoint configured as "delivery status callback URL" in the
  Tencent console. Tencent posts a JSON array and expects {"result": 0, "errmsg": "OK"};
  anything else makes it retry, so an answer is only given after on_receipts returned.
- ReceiptPoller: for deployments that cannot expose an endpoint; pulls each app's
  reports every `interval` seconds on the injected clock.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

from pushreachd.clock import Clock
from pushreachd.phone import InvalidPhoneNumber, normalize_phone
from pushreachd.sms.provider import DeliveryReceipt, SmsCredentials, SmsProviderError
from pushreachd.sms.tencent import TencentSmsProvider

log = logging.getLogger(__name__)

OnReceipts = Callable[[list[DeliveryReceipt]], Awaitable[int]]
CALLBACK_PATH = "/tencent/sms/status"
SHANGHAI = ZoneInfo("Asia/Shanghai")  # Tencent writes callback times in Beijing time
_OK = {"result": 0, "errmsg": "OK"}
_MAX_PAGES = 10


class MalformedCallback(ValueError):
    pass


def parse_callback(payload: Any) -> list[DeliveryReceipt]:
    """Tencent's callback body (already JSON-decoded) -> receipts; MalformedCallback if not one.

    The whole body is refused when one item is malformed: such a body did not come from
    Tencent, and half-applying it would hide the problem.
    """
    if not isinstance(payload, list):
        raise MalformedCallback("body must be a JSON array")
    return [_parse_item(i, item) for i, item in enumerate(payload)]


def _parse_item(index: int, item: Any) -> DeliveryReceipt:
    if not isinstance(item, dict):
        raise MalformedCallback(f"item {index} is not an object")
    try:
        nationcode, mobile = str(item["nationcode"]), str(item["mobile"])
        status, sid = str(item["report_status"]), str(item["sid"])
        when = datetime.strptime(str(item["user_receive_time"]), "%Y-%m-%d %H:%M:%S")
    except KeyError as exc:
        raise MalformedCallback(f"item {index} lacks {exc.args[0]}") from None
    except ValueError:
        raise MalformedCallback(f"item {index} has a bad user_receive_time") from None
    if status not in ("SUCCESS", "FAIL") or not sid:
        raise MalformedCallback(f"item {index} has a bad report_status or sid")
    try:
        phone = normalize_phone(f"+{nationcode.lstrip('+')}{mobile}")
    except InvalidPhoneNumber:
        raise MalformedCallback(f"item {index} has a bad phone number") from None
    return DeliveryReceipt(
        phone_number=phone,
        serial_no=sid,
        delivered=status == "SUCCESS",
        receive_time=when.replace(tzinfo=SHANGHAI).timestamp(),
        code=str(item.get("errmsg") or status),
        description=str(item.get("description") or ""),
    )


class ReceiptServer:
    def __init__(
        self, on_receipts: OnReceipts, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        """`ssl_context`: serve HTTPS (config requires TLS or `insecure` off loopback)."""
        self._ssl = ssl_context
        self._on_receipts = on_receipts
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self.url = ""  # base URL, set by start()
        self.callback_url = ""  # what to configure in the Tencent console

    async def start(self) -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post(CALLBACK_PATH, self._handle)
        app.router.add_post("/", self._handle)  # for consoles configured with a bare URL
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port, ssl_context=self._ssl).start()
        host, port = self._runner.addresses[0][:2]
        scheme = "https" if self._ssl is not None else "http"
        self.url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
        self.callback_url = self.url + CALLBACK_PATH

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            receipts = parse_callback(json.loads(await request.read()))
        except (ValueError, UnicodeDecodeError) as exc:  # MalformedCallback is a ValueError
            log.warning("receipt callback refused: %s", exc)
            return web.json_response({"result": 1, "errmsg": str(exc)}, status=400)
        try:
            applied = await self._on_receipts(receipts)
        except Exception:
            # 500 makes Tencent retry later; the receipts are not lost.
            log.exception("receipt callback: applying %d receipts failed", len(receipts))
            return web.json_response({"result": 1, "errmsg": "internal error"}, status=500)
        log.info("receipt callback: %d receipts, %d applied", len(receipts), applied)
        return web.json_response(_OK)


class ReceiptPoller:
    def __init__(
        self,
        clock: Clock,
        provider: TencentSmsProvider,
        sources: Callable[[], Awaitable[list[tuple[SmsCredentials, str]]]],
        on_receipts: OnReceipts,
        interval: float = 30.0,
        batch_limit: int = 100,
    ) -> None:
        self._clock = clock
        self._provider = provider
        self._sources = sources  # (credentials, sms_app_id) of every app to poll
        self._on_receipts = on_receipts
        self._interval = interval
        self._limit = batch_limit
        self.polls = 0
        self.errors = 0

    async def run(self) -> None:
        """Poll forever (until cancelled), every `interval` seconds."""
        while True:
            await self.poll_once()
            await self._clock.sleep(self._interval)

    async def poll_once(self) -> int:
        """Drain every source once; returns the number of receipts handed on."""
        self.polls += 1
        try:
            sources = await self._sources()
        except Exception:
            self.errors += 1
            log.exception("receipt poller: listing sources failed")
            return 0
        total = 0
        for credentials, sms_app_id in sources:
            total += await self._drain(credentials, sms_app_id)
        return total

    async def _drain(self, credentials: SmsCredentials, sms_app_id: str) -> int:
        # A full page means more may be waiting, so pull again, but at most `_MAX_PAGES`
        # times: one busy app must not keep the others waiting until the next round.
        total = 0
        for _ in range(_MAX_PAGES):
            try:
                receipts = await self._provider.pull_send_status(credentials, sms_app_id, self._limit)
                if receipts:
                    await self._on_receipts(receipts)
            except SmsProviderError as exc:
                self.errors += 1
                log.warning("receipt poller: sms_app_id=%s %s", sms_app_id, exc.code)
                return total
            except Exception:
                # Pulled reports are gone from Tencent once returned; log loudly.
                self.errors += 1
                log.exception("receipt poller: applying receipts of sms_app_id=%s failed", sms_app_id)
                return total
            total += len(receipts)
            if len(receipts) < self._limit:
                break
        return total

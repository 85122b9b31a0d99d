"""vivo Push (vivo / iQOO), server API: /message/auth, /message/send, /message/pushToList.

- Auth: POST `<vivo_endpoint>/message/auth` JSON `appId`, `appKey`, `timestamp` (ms),
  `sign` = lower-case hex MD5 of appId + appKey + timestamp + appSecret -> `{"result": 0,
  "authToken"}`. The token lives a day; vivo asks servers to renew it every 1-2 hours, so
  it is kept 2 hours, and renewed at once when a send answers 10000 (auth token invalid).
  Every later call carries the `authToken` header.
- One token: POST /message/send JSON with `regId`. Several (2..1,000): POST
  /message/saveListPayload (the message, answers a `taskId`) then /message/pushToList
  `regIds` + `taskId`; its `invalidUsers` ([{"status", "userid"}]) are INVALID_TOKEN.
  `result` 10070 / 10252 (daily total exceeded) is FAILED with the code, as is any other
  non-zero result; HTTP 429/5xx retried.
- Classification: `classification` (the push's `vivo_ch_id`: 0 operational, 1 system;
  else the credentials file's `classification`) and `category` (`vivo_category`, else the
  file's `category`). The receipt rides in `clientCustomMap`.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ..clock import Clock
from ..model import Channel, PushOutcome
from . import vendor
from .base import Backoff, PushDelivery, TargetPayload, TokenOutcome
from .vendor import AuthExpired, Failed, Retry, TokenCache

DEFAULT_ENDPOINT = "https://api-push.vivo.com.cn"
channel = Channel.VIVO
MAX_TOKENS = 1000
MIN_TTL, MAX_TTL = 60, 7 * 86400
TOKEN_LIFETIME = 2 * 3600.0
AUTH_TOKEN_INVALID = "10000"
INVALID_REGID = "10302"  # a single send to an unknown regId

OPTIONAL = {"classification": vendor.one_of(0, 1), "category": vendor.upper_name}


def validate_credentials(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """`{"app_id", "app_key", "app_secret"}` as the vivo open platform shows them (push
    service > application information: APP ID, APP key, APP secret), plus optional
    app-level defaults `classification` (0 operational, 1 system) and `category`."""
    return vendor.check_credentials(data, ("app_id", "app_key", "app_secret"), OPTIONAL)


def sign(app_id: str, app_key: str, timestamp: str, app_secret: str) -> str:
    return hashlib.md5(f"{app_id}{app_key}{timestamp}{app_secret}".encode()).hexdigest()


class VivoChannel(vendor.VendorChannel):
    channel = Channel.VIVO
    max_batch = MAX_TOKENS

    def __init__(
        self,
        credentials: Mapping[str, Any],
        *,
        endpoint: str,
        clock: Clock,
        http: httpx.AsyncClient | None = None,
        own_http: bool | None = None,
        backoff: Backoff | None = None,
        verify: str | bool = True,
    ) -> None:
        super().__init__(credentials, clock=clock, http=http, own_http=own_http, backoff=backoff, verify=verify)
        self.base = endpoint.rstrip("/")
        self._tokens = TokenCache(self._fetch_token, clock)

    def tokens(self) -> TokenCache:
        return self._tokens

    async def _fetch_token(self) -> tuple[str, float]:
        timestamp = str(int(self.clock.time() * 1000))
        c = self.credentials
        try:
            response = await self.http.post(
                f"{self.base}/message/auth",
                json={
                    "appId": c["app_id"],
                    "appKey": c["app_key"],
                    "timestamp": int(timestamp),
                    "sign": sign(c["app_id"], c["app_key"], timestamp, c["app_secret"]),
                },
            )
        except httpx.TransportError as exc:
            raise Retry("auth_network", type(exc).__name__) from None
        body = vendor.json_body(response)
        if response.status_code == 429 or response.status_code >= 500:
            raise Retry(f"auth_http_{response.status_code}", "auth endpoint unavailable", vendor.retry_after(response))
        result = str(body.get("result", ""))
        token = body.get("authToken")
        if result != "0" or not isinstance(token, str) or not token:
            raise Failed(result or f"http_{response.status_code}", str(body.get("desc", "auth refused")))
        return token, TOKEN_LIFETIME

    async def _call(self, path: str, payload: dict[str, Any], token: str) -> dict[str, Any]:
        response = await self.http.post(f"{self.base}{path}", json=payload, headers={"authToken": token})
        body = vendor.json_body(response)
        result = str(body.get("result", ""))
        desc = str(body.get("desc", ""))
        if response.status_code == 429 or response.status_code >= 500:
            raise Retry(result or f"http_{response.status_code}", desc or "flow control", vendor.retry_after(response))
        if result == AUTH_TOKEN_INVALID:
            raise AuthExpired(result, token, desc)
        return body

    async def _send_batch(self, delivery: PushDelivery, batch: Sequence[TargetPayload]) -> list[TokenOutcome]:
        token = await self._tokens.get()
        message = self._message(delivery, batch[0].receipt)
        if len(batch) == 1:
            body = await self._call("/message/send", {**message, "regId": batch[0].token}, token)
            result = str(body.get("result", ""))
            if result == INVALID_REGID:
                return vendor.all_outcomes(batch, PushOutcome.INVALID_TOKEN, result, str(body.get("desc", "")))
            _raise_unless_ok(body)
            return vendor.all_outcomes(batch, PushOutcome.ACCEPTED, vendor_id=str(body.get("taskId", "")))
        saved = await self._call("/message/saveListPayload", message, token)
        _raise_unless_ok(saved)
        task_id = str(saved.get("taskId", ""))
        body = await self._call(
            "/message/pushToList",
            {"appId": self.credentials["app_id"], "regIds": [t.token for t in batch], "taskId": task_id, "requestId": uuid.uuid4().hex},
            token,
        )
        _raise_unless_ok(body)
        invalid = {
            str(u.get("userid")): str(u.get("status", ""))
            for u in body.get("invalidUsers") or []
            if isinstance(u, dict)
        }
        return [
            TokenOutcome(t.token, PushOutcome.INVALID_TOKEN, f"invalidUsers:{invalid[t.token]}", "", task_id)
            if t.token in invalid
            else TokenOutcome(t.token, PushOutcome.ACCEPTED, vendor_id=task_id)
            for t in batch
        ]

    def _message(self, delivery: PushDelivery, receipt: str) -> dict[str, Any]:
        opts = vendor.options(delivery)
        message: dict[str, Any] = {
            "appId": self.credentials["app_id"],
            "notifyType": 4,
            "title": delivery.spec.title,
            "content": delivery.spec.content,
            "timeToLive": max(MIN_TTL, vendor.ttl_seconds(delivery, self.clock.time(), MAX_TTL)),
            "skipType": 1,
            "networkType": -1,
            "requestId": uuid.uuid4().hex,
            "clientCustomMap": vendor.receipt_data(delivery.push_id, receipt),
        }
        classification = int(opts.vivo_ch_id) if opts.vivo_ch_id in ("0", "1") else self.credentials.get("classification")
        if classification is not None:
            message["classification"] = classification
        category = opts.vivo_category or self.credentials.get("category", "")
        if category:
            message["category"] = category
        return message


def _raise_unless_ok(body: dict[str, Any]) -> None:
    result = str(body.get("result", ""))
    if result != "0":
        raise Failed(result or "no_result", str(body.get("desc", "")))


def create(credentials: Mapping[str, Any], context: Any) -> VivoChannel:
    """The channel for one app (registry's ChannelKind): endpoints from the context's
    settings (vivo_endpoint), its CA file, timeout and clock."""
    return VivoChannel(
        credentials,
        endpoint=vendor.endpoint(context, "vivo_endpoint", DEFAULT_ENDPOINT),
        clock=context.clock,
        http=vendor.client_for(context),
        own_http=True,
    )

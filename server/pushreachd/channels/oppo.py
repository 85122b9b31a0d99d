"""OPPO Push (ColorOS / OnePlus / realme), server API v1.

- Auth: POST `<oppo_endpoint>/server/v1/auth` form `app_key`, `timestamp` (ms), `sign` =
  hex SHA-256 of app_key + timestamp + master_secret -> `{"code": 0, "data":
  {"auth_token", "create_time"}}`. The token lives 24 h; it is kept for 24 h (renewed
  before), and at once on code 11 (invalid auth token).
- Send: POST `/server/v1/message/notification/unicast_batch` form `auth_token`, `messages`
  (a JSON array of up to 1,000 messages, each its own target and notification, so every
  device gets its own receipt in one call). Answers `{"code": 0, "data": [{"messageId",
  "registrationId", "errorCode", "errorMessage"}]}`: errorCode 10000 (invalid
  registration_id) is INVALID_TOKEN, another errorCode FAILED with it. Codes -2 (flow
  control), -1 (unavailable), 13 and 55 (call limits) are retried; 33 (daily message limit)
  and the rest are FAILED with the code.
- Classification: `notification.channel_id` (the push's `oppo_ch_id`, else the credentials
  file's `channel_id`: the private channel registered for service messages) and
  `notification.category` (`oppo_category`, else the file's `category`). The receipt rides
  in `action_parameters`, a JSON string handed to the app on click and arrival.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ..clock import Clock
from ..model import Channel, PushOutcome
from . import vendor
from .base import Backoff, PushDelivery, TargetPayload, TokenOutcome
from .vendor import AuthExpired, Failed, Retry, TokenCache

DEFAULT_ENDPOINT = "https://api.push.oppomobile.com"
channel = Channel.OPPO
MAX_MESSAGES = 1000
MIN_TTL, MAX_TTL = 3600, 10 * 86400  # OPPO's off_line_ttl bounds
TOKEN_LIFETIME = 24 * 3600.0
INVALID_AUTH_TOKEN = "11"
RETRY_CODES = {"-2", "-1", "13", "55"}
INVALID_REGISTRATION_ID = "10000"

OPTIONAL = {"channel_id": vendor.channel_id, "category": vendor.upper_name}


def validate_credentials(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """`{"app_key", "master_secret"}` as the OPPO push platform shows them (Configuration
    management > Application configuration: AppKey, MasterSecret), plus optional app-level
    defaults `channel_id` and `category`."""
    return vendor.check_credentials(data, ("app_key", "master_secret"), OPTIONAL)


def sign(app_key: str, timestamp: str, master_secret: str) -> str:
    return hashlib.sha256(f"{app_key}{timestamp}{master_secret}".encode()).hexdigest()


class OppoChannel(vendor.VendorChannel):
    channel = Channel.OPPO
    max_batch = MAX_MESSAGES
    shared_payload = False

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
        base = endpoint.rstrip("/")
        self.auth_url = f"{base}/server/v1/auth"
        self.send_url = f"{base}/server/v1/message/notification/unicast_batch"
        self._tokens = TokenCache(self._fetch_token, clock)

    def tokens(self) -> TokenCache:
        return self._tokens

    async def _fetch_token(self) -> tuple[str, float]:
        timestamp = str(int(self.clock.time() * 1000))
        key = self.credentials["app_key"]
        try:
            response = await self.http.post(
                self.auth_url,
                data={"app_key": key, "timestamp": timestamp, "sign": sign(key, timestamp, self.credentials["master_secret"])},
            )
        except httpx.TransportError as exc:
            raise Retry("auth_network", type(exc).__name__) from None
        body = vendor.json_body(response)
        code = str(body.get("code", ""))
        if response.status_code >= 500 or code in RETRY_CODES:
            raise Retry(code or f"http_{response.status_code}", str(body.get("message", "")), vendor.retry_after(response))
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        token = data.get("auth_token")
        if code != "0" or not isinstance(token, str) or not token:
            raise Failed(code or f"http_{response.status_code}", str(body.get("message", "auth refused")))
        return token, TOKEN_LIFETIME

    async def _send_batch(self, delivery: PushDelivery, batch: Sequence[TargetPayload]) -> list[TokenOutcome]:
        token = await self._tokens.get()
        messages = [self._message(delivery, t) for t in batch]
        response = await self.http.post(
            self.send_url,
            data={"auth_token": token, "messages": json.dumps(messages, ensure_ascii=False, separators=(",", ":"))},
        )
        return self._outcomes(response, batch, token)

    def _message(self, delivery: PushDelivery, target: TargetPayload) -> dict[str, Any]:
        opts = vendor.options(delivery)
        ttl = max(MIN_TTL, vendor.ttl_seconds(delivery, self.clock.time(), MAX_TTL))
        notification: dict[str, Any] = {
            "title": delivery.spec.title,
            "content": delivery.spec.content,
            "click_action_type": 0,
            "action_parameters": json.dumps(vendor.receipt_data(delivery.push_id, target.receipt), separators=(",", ":")),
            "off_line": True,
            "off_line_ttl": ttl,
        }
        channel_id = opts.oppo_ch_id or self.credentials.get("channel_id", "")
        if channel_id:
            notification["channel_id"] = channel_id
        category = opts.oppo_category or self.credentials.get("category", "")
        if category:
            notification["category"] = category
        return {"target_type": 2, "target_value": target.token, "notification": notification}

    def _outcomes(self, response: httpx.Response, batch: Sequence[TargetPayload], token: str) -> list[TokenOutcome]:
        body = vendor.json_body(response)
        code = str(body.get("code", ""))
        message = str(body.get("message", ""))
        if response.status_code >= 500 or code in RETRY_CODES:
            raise Retry(code or f"http_{response.status_code}", message or "flow control", vendor.retry_after(response))
        if code == INVALID_AUTH_TOKEN:
            raise AuthExpired(code, token, message)
        if code != "0":
            raise Failed(code or f"http_{response.status_code}", message or response.reason_phrase)
        items = body.get("data") if isinstance(body.get("data"), list) else []
        outcomes = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("registrationId"), str):
                continue
            reg, error = item["registrationId"], str(item.get("errorCode", "") or "")
            message_id = str(item.get("messageId", ""))
            if not error or error == "0":
                outcomes.append(TokenOutcome(reg, PushOutcome.ACCEPTED, vendor_id=message_id))
            elif error == INVALID_REGISTRATION_ID:
                outcomes.append(TokenOutcome(reg, PushOutcome.INVALID_TOKEN, error, str(item.get("errorMessage", "")), message_id))
            else:
                outcomes.append(TokenOutcome(reg, PushOutcome.FAILED, error, str(item.get("errorMessage", "")), message_id))
        return outcomes


def create(credentials: Mapping[str, Any], context: Any) -> OppoChannel:
    """The channel for one app (registry's ChannelKind): endpoints from the context's
    settings (oppo_endpoint), its CA file, timeout and clock."""
    return OppoChannel(
        credentials,
        endpoint=vendor.endpoint(context, "oppo_endpoint", DEFAULT_ENDPOINT),
        clock=context.clock,
        http=vendor.client_for(context),
        own_http=True,
    )

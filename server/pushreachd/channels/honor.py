"""Honor Push: OAuth 2.0 client credentials + sendMessage.

- Token: POST `honor_token_endpoint` form `grant_type=client_credentials`, `client_id`,
  `client_secret` -> `{"access_token", "expires_in"}`; kept until it nears expiry, renewed at
  once when a send answers 80200003 or HTTP 401.
- Send: POST `<honor_endpoint>/api/v1/<app_id>/sendMessage`, `Authorization: Bearer
  <token>`, `timestamp` header (ms), one payload to up to 1,000 tokens (`token`).
  Answers `{"code": 200, "message", "data": {"sendResult", "requestId", "failTokens",
  "expireTokens"}}`: `expireTokens` are INVALID_TOKEN, `failTokens` FAILED, the rest
  ACCEPTED. HTTP 503/5xx retried; any other code FAILED with that code.
- Classification: Honor's `android.notification.importance` (`hw_importance` 1 -> LOW,
  "information and marketing"; 2 -> NORMAL, "service and communication"; else the
  credentials file's `importance`). The receipt rides in `data`, a JSON string.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ..clock import Clock
from ..model import Channel, PushOutcome
from . import vendor
from .base import Backoff, PushDelivery, TargetPayload, TokenOutcome
from .hms import oauth_token
from .vendor import AuthExpired, Failed, Retry, TokenCache

DEFAULT_ENDPOINT = "https://push-api.cloud.honor.com"
DEFAULT_TOKEN_ENDPOINT = "https://iam.developer.honor.com/auth/token"
channel = Channel.HONOR
MAX_TOKENS = 1000
MAX_TTL = 15 * 86400
TOKEN_EXPIRED = "80200003"
IMPORTANCE = {1: "LOW", 2: "NORMAL"}

OPTIONAL = {"importance": vendor.one_of("LOW", "NORMAL")}


def validate_credentials(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """`{"app_id", "client_id", "client_secret"}` as the Honor developer console shows them
    (App information), plus an optional app-level default `importance` (LOW or NORMAL)."""
    return vendor.check_credentials(data, ("app_id", "client_id", "client_secret"), OPTIONAL)


class HonorChannel(vendor.VendorChannel):
    channel = Channel.HONOR
    max_batch = MAX_TOKENS

    def __init__(
        self,
        credentials: Mapping[str, Any],
        *,
        endpoint: str,
        token_endpoint: str,
        clock: Clock,
        http: httpx.AsyncClient | None = None,
        own_http: bool | None = None,
        backoff: Backoff | None = None,
        verify: str | bool = True,
    ) -> None:
        super().__init__(credentials, clock=clock, http=http, own_http=own_http, backoff=backoff, verify=verify)
        self.send_url = f"{endpoint.rstrip('/')}/api/v1/{self.credentials['app_id']}/sendMessage"
        self.token_url = token_endpoint
        self._tokens = TokenCache(self._fetch_token, clock)

    def tokens(self) -> TokenCache:
        return self._tokens

    async def _fetch_token(self) -> tuple[str, float]:
        try:
            response = await self.http.post(
                self.token_url,
                data={
                    "grant_type": "client_credentials",
                    "client_id": self.credentials["client_id"],
                    "client_secret": self.credentials["client_secret"],
                },
            )
        except httpx.TransportError as exc:
            raise Retry("oauth_network", type(exc).__name__) from None
        return oauth_token(response)

    async def _send_batch(self, delivery: PushDelivery, batch: Sequence[TargetPayload]) -> list[TokenOutcome]:
        token = await self._tokens.get()
        response = await self.http.post(
            self.send_url,
            json=self._body(delivery, batch),
            headers={"Authorization": f"Bearer {token}", "timestamp": str(int(self.clock.time() * 1000))},
        )
        return self._outcomes(response, batch, token)

    def _body(self, delivery: PushDelivery, batch: Sequence[TargetPayload]) -> dict[str, Any]:
        opts = vendor.options(delivery)
        notification: dict[str, Any] = {
            "title": delivery.spec.title,
            "body": delivery.spec.content,
            "clickAction": {"type": 3},
        }
        importance = IMPORTANCE.get(opts.hw_importance) or self.credentials.get("importance", "")
        if importance:
            notification["importance"] = importance
        return {
            "data": json.dumps(vendor.receipt_data(delivery.push_id, batch[0].receipt), separators=(",", ":")),
            "android": {
                "ttl": f"{vendor.ttl_seconds(delivery, self.clock.time(), MAX_TTL)}s",
                "notification": notification,
            },
            "token": [t.token for t in batch],
        }

    def _outcomes(self, response: httpx.Response, batch: Sequence[TargetPayload], token: str) -> list[TokenOutcome]:
        body = vendor.json_body(response)
        code = str(body.get("code", ""))
        message = str(body.get("message", ""))
        if response.status_code >= 500:
            raise Retry(code or str(response.status_code), message or "flow control", vendor.retry_after(response))
        if code == TOKEN_EXPIRED or response.status_code == 401:
            raise AuthExpired(code or "401", token, message)
        if code != "200":
            raise Failed(code or f"http_{response.status_code}", message or response.reason_phrase)
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        request_id = str(data.get("requestId", ""))
        expired = set(_strings(data.get("expireTokens")))
        failed = set(_strings(data.get("failTokens")))
        outcomes = []
        for t in batch:
            if t.token in expired:
                outcomes.append(TokenOutcome(t.token, PushOutcome.INVALID_TOKEN, "expireTokens", "", request_id))
            elif t.token in failed:
                outcomes.append(TokenOutcome(t.token, PushOutcome.FAILED, "failTokens", "", request_id))
            else:
                outcomes.append(TokenOutcome(t.token, PushOutcome.ACCEPTED, vendor_id=request_id))
        return outcomes


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def create(credentials: Mapping[str, Any], context: Any) -> HonorChannel:
    """The channel for one app (registry's ChannelKind): endpoints from the context's
    settings (honor_endpoint, honor_token_endpoint), its CA file, timeout and clock."""
    return HonorChannel(
        credentials,
        endpoint=vendor.endpoint(context, "honor_endpoint", DEFAULT_ENDPOINT),
        token_endpoint=vendor.endpoint(context, "honor_token_endpoint", DEFAULT_TOKEN_ENDPOINT),
        clock=context.clock,
        http=vendor.client_for(context),
        own_http=True,
    )

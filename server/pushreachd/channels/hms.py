"""Huawei Push Kit (HMS), REST API v1: OAuth 2.0 client credentials + messages:send.

- Token: POST `hms_token_endpoint` form `grant_type=client_credentials`, `client_id` (the
  app id), `client_secret` -> `{"access_token", "expires_in"}` (about an hour); kept until
  it nears expiry and renewed at once on 80200003 (token expired).
- Send: POST `<hms_endpoint>/v1/<app_id>/messages:send`, `Authorization: Bearer <token>`,
  one payload to 1..1,000 tokens (`message.token`). Answers `{"code", "msg", "requestId"}`:
  80000000 success; 80100000 partial success, `msg` a JSON string whose `illegal_tokens`
  failed (INVALID_TOKEN, the rest ACCEPTED); 80300007 all tokens invalid; 80200001 OAuth
  failure (FAILED); HTTP 503 flow control, 5xx and 81000001 (internal error) retried; any
  other code FAILED with that code.
- Classification: `android.category` (the push's `hw_category`, else the credentials
  file's `category`), `android.notification.importance` (hw_importance 1 LOW, 2 NORMAL) and
  `android.notification.channel_id` (hw_ch_id). The receipt rides in `message.data`, a JSON
  string `{"pushreach_push_id", "pushreach_receipt"}`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ..clock import Clock
from ..errors import InvalidArgument
from ..model import Channel, PushOutcome
from . import vendor
from .base import Backoff, PushDelivery, TargetPayload, TokenOutcome
from .vendor import AuthExpired, Failed, Retry, TokenCache

DEFAULT_ENDPOINT = "https://push-api.cloud.huawei.com"
DEFAULT_TOKEN_ENDPOINT = "https://oauth-login.cloud.huawei.com/oauth2/v3/token"
channel = Channel.HMS
MAX_TOKENS = 1000
MAX_TTL = 15 * 86400  # Huawei keeps offline messages at most 15 days

SUCCESS = "80000000"
PARTIAL = "80100000"
OAUTH_FAILED = "80200001"
TOKEN_EXPIRED = "80200003"
ALL_INVALID = "80300007"
INTERNAL = "81000001"
IMPORTANCE = {1: "LOW", 2: "NORMAL"}

OPTIONAL = {"category": vendor.upper_name, "channel_id": vendor.channel_id}


def validate_credentials(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """`{"app_id", "client_secret"}` as AppGallery Connect shows them (Project settings >
    App information: App ID, and the OAuth 2.0 client secret), plus optional app-level
    defaults `category` and `channel_id`."""
    kept = vendor.check_credentials(data, ("app_id", "client_secret"), OPTIONAL)
    if not kept["app_id"].isdigit():
        raise InvalidArgument.one("credentials.app_id", "must be the numeric App ID")
    return kept


class HmsChannel(vendor.VendorChannel):
    channel = Channel.HMS
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
        self.app_id = self.credentials["app_id"]
        self.send_url = f"{endpoint.rstrip('/')}/v1/{self.app_id}/messages:send"
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
                    "client_id": self.app_id,
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
            headers={"Authorization": f"Bearer {token}"},
        )
        return self._outcomes(response, batch, token)

    def _body(self, delivery: PushDelivery, batch: Sequence[TargetPayload]) -> dict[str, Any]:
        opts = vendor.options(delivery)
        spec = delivery.spec
        notification: dict[str, Any] = {"title": spec.title, "body": spec.content, "click_action": {"type": 3}}
        channel_id = opts.hw_ch_id or self.credentials.get("channel_id", "")
        if channel_id:
            notification["channel_id"] = channel_id
        if opts.hw_importance in IMPORTANCE:
            notification["importance"] = IMPORTANCE[opts.hw_importance]
        android: dict[str, Any] = {
            "ttl": f"{vendor.ttl_seconds(delivery, self.clock.time(), MAX_TTL)}s",
            "notification": notification,
        }
        category = opts.hw_category or self.credentials.get("category", "")
        if category:
            android["category"] = category
        data = json.dumps(vendor.receipt_data(delivery.push_id, batch[0].receipt), separators=(",", ":"))
        return {
            "validate_only": False,
            "message": {"data": data, "android": android, "token": [t.token for t in batch]},
        }

    def _outcomes(self, response: httpx.Response, batch: Sequence[TargetPayload], token: str) -> list[TokenOutcome]:
        body = vendor.json_body(response)
        code = str(body.get("code", ""))
        msg = str(body.get("msg", ""))
        request_id = str(body.get("requestId", ""))
        if response.status_code == 503 or response.status_code >= 500 or code == INTERNAL:
            raise Retry(code or str(response.status_code), msg or "flow control", vendor.retry_after(response))
        if code == TOKEN_EXPIRED or (response.status_code == 401 and code != OAUTH_FAILED):
            raise AuthExpired(code or "401", token, msg)
        if code == SUCCESS:
            return vendor.all_outcomes(batch, PushOutcome.ACCEPTED, vendor_id=request_id)
        if code == ALL_INVALID:
            return vendor.all_outcomes(batch, PushOutcome.INVALID_TOKEN, code, msg, request_id)
        if code == PARTIAL:
            illegal = set(_illegal_tokens(msg))
            return [
                TokenOutcome(t.token, PushOutcome.INVALID_TOKEN, code, "illegal token", request_id)
                if t.token in illegal
                else TokenOutcome(t.token, PushOutcome.ACCEPTED, vendor_id=request_id)
                for t in batch
            ]
        raise Failed(code or f"http_{response.status_code}", msg or response.reason_phrase)


def _illegal_tokens(msg: str) -> list[str]:
    """80100000's `msg` is a JSON string: {"success": n, "failure": m, "illegal_tokens": [...]}."""
    try:
        detail = json.loads(msg)
    except ValueError:
        return []
    tokens = detail.get("illegal_tokens") if isinstance(detail, dict) else None
    return [t for t in tokens if isinstance(t, str)] if isinstance(tokens, list) else []


def oauth_token(response: httpx.Response) -> tuple[str, float]:
    """Read an OAuth 2.0 token answer (Huawei's and Honor's have the same shape)."""
    body = vendor.json_body(response)
    if response.status_code >= 500 or response.status_code == 429:
        raise Retry(f"oauth_http_{response.status_code}", "token endpoint unavailable", vendor.retry_after(response))
    token = body.get("access_token")
    if response.status_code != 200 or not isinstance(token, str) or not token:
        # Huawei answers e.g. {"error": 1101, "sub_error": 20601, "error_description": "..."}.
        code = body.get("sub_error") or body.get("error") or f"http_{response.status_code}"
        raise Failed(f"oauth:{code}", str(body.get("error_description", "token request refused")))
    expires_in = body.get("expires_in", 3600)
    lifetime = float(expires_in) if isinstance(expires_in, (int, float)) and expires_in > 0 else 3600.0
    return token, lifetime


def create(credentials: Mapping[str, Any], context: Any) -> HmsChannel:
    """The channel for one app (registry's ChannelKind): endpoints from the context's
    settings (hms_endpoint, hms_token_endpoint), its CA file, timeout and clock."""
    return HmsChannel(
        credentials,
        endpoint=vendor.endpoint(context, "hms_endpoint", DEFAULT_ENDPOINT),
        token_endpoint=vendor.endpoint(context, "hms_token_endpoint", DEFAULT_TOKEN_ENDPOINT),
        clock=context.clock,
        http=vendor.client_for(context),
        own_http=True,
    )

"""Xiaomi Push (MiPush), server API v3: POST /v3/message/regid with `Authorization: key=`.

- No auth token: every call carries `Authorization: key=<app_secret>`.
- Send: form `registration_id` (up to 1,000 regids joined by commas),
  `restricted_package_name`, `title`, `description`, `pass_through=0`, `notify_type=-1`,
  `time_to_live` (ms), `payload`, `extra.notify_effect=1` and `extra.*` custom keys.
  Answers `{"result": "ok", "code": 0, "data": {"id", "bad_regids"}}`: `bad_regids`
  (comma-separated) are INVALID_TOKEN, the rest ACCEPTED; `{"result": "error", "code",
  "reason"}` is FAILED with that code (21301: authentication failed, a wrong app secret);
  HTTP 429/5xx retried.
- Classification: `extra.channel_id` (the push's `xm_ch_id`, else the credentials file's
  `channel_id`), the channel registered in Xiaomi's console for service messages. The
  receipt rides in `extra.pushreach_push_id` / `extra.pushreach_receipt` (and `payload`).
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
from .vendor import Failed, Retry, TokenCache

DEFAULT_ENDPOINT = "https://api.xmpush.xiaomi.com"
channel = Channel.XIAOMI
MAX_TOKENS = 1000
MAX_TTL = 14 * 86400  # Xiaomi keeps offline messages at most two weeks

OPTIONAL = {"channel_id": vendor.channel_id}


def validate_credentials(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """`{"app_secret", "package_name"}` as the Xiaomi open platform shows them (the app's
    AppSecret and package name), plus an optional app-level default `channel_id`."""
    return vendor.check_credentials(data, ("app_secret", "package_name"), OPTIONAL)


class XiaomiChannel(vendor.VendorChannel):
    channel = Channel.XIAOMI
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
        self.send_url = f"{endpoint.rstrip('/')}/v3/message/regid"

    def tokens(self) -> TokenCache:
        raise AssertionError("Xiaomi has no auth token")  # never reached: no AuthExpired here

    async def _send_batch(self, delivery: PushDelivery, batch: Sequence[TargetPayload]) -> list[TokenOutcome]:
        response = await self.http.post(
            self.send_url,
            data=self._form(delivery, batch),
            headers={"Authorization": f"key={self.credentials['app_secret']}"},
        )
        return self._outcomes(response, batch)

    def _form(self, delivery: PushDelivery, batch: Sequence[TargetPayload]) -> dict[str, str]:
        opts = vendor.options(delivery)
        custom = vendor.receipt_data(delivery.push_id, batch[0].receipt)
        form = {
            "registration_id": ",".join(t.token for t in batch),
            "restricted_package_name": self.credentials["package_name"],
            "title": delivery.spec.title,
            "description": delivery.spec.content,
            "pass_through": "0",
            "notify_type": "-1",
            "time_to_live": str(vendor.ttl_seconds(delivery, self.clock.time(), MAX_TTL) * 1000),
            "payload": json.dumps(custom, separators=(",", ":")),
            "extra.notify_effect": "1",
        }
        channel_id = opts.xm_ch_id or self.credentials.get("channel_id", "")
        if channel_id:
            form["extra.channel_id"] = channel_id
        for key, value in custom.items():
            form[f"extra.{key}"] = value
        return form

    def _outcomes(self, response: httpx.Response, batch: Sequence[TargetPayload]) -> list[TokenOutcome]:
        body = vendor.json_body(response)
        code = str(body.get("code", ""))
        reason = str(body.get("reason") or body.get("description") or "")
        if response.status_code == 429 or response.status_code >= 500:
            raise Retry(code or str(response.status_code), reason or "flow control", vendor.retry_after(response))
        if body.get("result") != "ok" or code != "0":
            raise Failed(code or f"http_{response.status_code}", reason or response.reason_phrase)
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        message_id = str(data.get("id", ""))
        bad = {r for r in str(data.get("bad_regids", "")).split(",") if r}
        return [
            TokenOutcome(t.token, PushOutcome.INVALID_TOKEN, "bad_regids", "", message_id)
            if t.token in bad
            else TokenOutcome(t.token, PushOutcome.ACCEPTED, vendor_id=message_id)
            for t in batch
        ]


def create(credentials: Mapping[str, Any], context: Any) -> XiaomiChannel:
    """The channel for one app (registry's ChannelKind): endpoints from the context's
    settings (xiaomi_endpoint), its CA file, timeout and clock."""
    return XiaomiChannel(
        credentials,
        endpoint=vendor.endpoint(context, "xiaomi_endpoint", DEFAULT_ENDPOINT),
        clock=context.clock,
        http=vendor.client_for(context),
        own_http=True,
    )

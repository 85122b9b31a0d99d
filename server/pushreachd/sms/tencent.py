"""The Tencent Cloud SMS adapter (API 2021-01-11) on the SDK's async client.

It only translates: SmsBatch -> SendSmsRequest, SendStatusSet -> SmsResult, SDK and
network errors -> SmsProviderError with a kind. Retrying belongs to SmsSender, so the
SDK's own retryer and region breaker are switched off here.

The kind of a failure says whether the request can have taken effect, because a retry of
a request Tencent did receive sends the SMS twice:
- TRANSIENT (retry): no connection was made (refused, DNS, connect or pool timeout,
  proxy), or Tencent answered InternalError* / RequestLimitExceeded*, which it documents
  as not sent;
- UNKNOWN (never retry): the request was or may have been written and no readable answer
  came back (read or write timeout, connection dropped, non-200 HTTP status, a body that
  is not Tencent's JSON).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
from tencentcloud.common.credential import Credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
    TencentCloudSDKException,
)
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.sms.v20210111 import models
from tencentcloud.sms.v20210111.sms_client_async import SmsClient

from pushreachd.phone import InvalidPhoneNumber, mask_phone, normalize_phone
from pushreachd.sms.provider import (
    DeliveryReceipt,
    SendOutcome,
    SmsBatch,
    SmsCredentials,
    SmsErrorKind,
    SmsProviderError,
    SmsResult,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# The SDK logs whole requests and responses (phone numbers, SecretId) at DEBUG. A
# process-wide DEBUG level must not leak them, so its logger stays at INFO or above.
logging.getLogger("tencentcloud_sdk_common").setLevel(logging.INFO)

MISSING_CREDENTIALS = "MissingCredentials"
# Tencent answers a call with more than 200 numbers with a LimitExceeded code, but it is a
# caller bug, not a rate limit: it must be recorded FAILED, not RATE_LIMITED.
_NOT_A_RATE_LIMIT = frozenset({"LimitExceeded.PhoneNumberCountLimit"})
# Whole-call codes Tencent documents as "not sent": a retry can succeed and cannot double.
_TRANSIENT_PREFIXES = ("InternalError", "RequestLimitExceeded")
# The SDK's names for answers that are not Tencent's: ServerNetworkError is a non-200 HTTP
# status (a gateway in between, which may have passed the request on before failing),
# ClientNetworkError a network failure wrapped by the SDK. Either may follow a sent SMS.
_AMBIGUOUS_CODES = frozenset({"ServerNetworkError", "ClientNetworkError"})
# httpx failures raised before a byte of the request left: nothing reached Tencent.
_NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)
# httpx failures of a request that never became valid HTTP: not sent, and a retry will not help.
_NEVER_SENDABLE_ERRORS = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


def parse_endpoint(endpoint: str | None) -> tuple[str, str | None]:
    """Split "--tencent-sms-endpoint" into (scheme, host[:port]) for HttpProfile.

    A bare host keeps https; a URL brings its scheme and port. The SDK builds the request
    URL as f"{scheme}://{endpoint}/" and signs the Host header, which it sets to the same
    `endpoint` string, so "127.0.0.1:8089" yields Host "127.0.0.1:8089" and the emulator
    verifies the signature against exactly what was sent.
    """
    if not endpoint:
        return "https", None
    if "://" not in endpoint:
        return "https", endpoint.rstrip("/")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"unsupported Tencent SMS endpoint: {endpoint!r}")
    if parts.path not in ("", "/"):
        raise ValueError("Tencent SMS endpoint must not have a path (the API lives at '/')")
    return parts.scheme, parts.netloc


def classify(code: str) -> SmsErrorKind:
    """The kind of a whole-call error code (see provider.SmsErrorKind)."""
    if code in _AMBIGUOUS_CODES:
        return SmsErrorKind.UNKNOWN
    if code.startswith(_TRANSIENT_PREFIXES):
        return SmsErrorKind.TRANSIENT
    if code.startswith("LimitExceeded") and code not in _NOT_A_RATE_LIMIT:
        return SmsErrorKind.RATE_LIMITED
    return SmsErrorKind.PERMANENT


def _outcome(code: str) -> SendOutcome:
    if code == "Ok":
        return SendOutcome.SENT
    if code.startswith("LimitExceeded."):
        return SendOutcome.RATE_LIMITED
    return SendOutcome.FAILED


def _e164(raw: str) -> str:
    try:
        return normalize_phone(raw)
    except InvalidPhoneNumber:
        return raw  # the sender will report the batch's own number as MissingResult


class TencentSmsProvider:
    name = "tencent"
    max_batch_size = 200  # SendSms limit

    def __init__(
        self, region: str = "ap-guangzhou", endpoint: str | None = None, timeout: float = 10.0
    ) -> None:
        self._region = region
        self._scheme, self._endpoint = parse_endpoint(endpoint)
        self._timeout = timeout
        # One client (one httpx connection pool) per app credentials; region and endpoint
        # are fixed per provider, so the credentials alone are the key.
        self._clients: dict[SmsCredentials, SmsClient] = {}

    def _client(self, credentials: SmsCredentials | None) -> SmsClient:
        if credentials is None or not credentials.secret_id or not credentials.secret_key:
            raise SmsProviderError(
                SmsErrorKind.PERMANENT, MISSING_CREDENTIALS, "the app has no Tencent SMS credentials"
            )
        client = self._clients.get(credentials)
        if client is None:
            http = HttpProfile(
                protocol=self._scheme,
                endpoint=self._endpoint,
                reqTimeout=self._timeout,
                keepAlive=True,
            )
            # retryer=None is the SDK's NoopRetryer; the breaker would silently switch
            # regions (to a backup endpoint) behind our endpoint override.
            profile = ClientProfile(httpProfile=http, disable_region_breaker=True, retryer=None)
            cred = Credential(credentials.secret_id, credentials.secret_key)
            client = SmsClient(cred, self._region, profile)
            self._clients[credentials] = client
        return client

    async def send(self, batch: SmsBatch) -> list[SmsResult]:
        client = self._client(batch.credentials)
        req = models.SendSmsRequest()
        req.PhoneNumberSet = list(batch.phone_numbers)
        req.SmsSdkAppId = batch.sms_app_id
        req.TemplateId = batch.template_id
        req.SignName = batch.sign_name
        req.TemplateParamSet = list(batch.template_params)
        if batch.session_context:
            req.SessionContext = batch.session_context
        resp = await self._call(
            client.SendSms(req), f"send app={batch.app_access_id} sms_app_id={batch.sms_app_id}"
        )
        # Tencent echoes each number as it was sent (our E.164): match it as is, and parse only
        # a number that differs (phonenumbers costs ~30 us a number, a fifth of a burst's CPU).
        sent = set(batch.phone_numbers)
        results = [
            SmsResult(
                phone_number=status.PhoneNumber if status.PhoneNumber in sent else _e164(status.PhoneNumber or ""),
                outcome=_outcome(status.Code or ""),
                code=status.Code or "",
                message=status.Message or "",
                serial_no=status.SerialNo or "",
                fee=int(status.Fee or 0),
            )
            for status in resp.SendStatusSet or []
        ]
        log.info(
            "tencent sms: app=%s sms_app_id=%s template=%s sent=%d/%d request_id=%s",
            batch.app_access_id,
            batch.sms_app_id,
            batch.template_id,
            sum(r.outcome is SendOutcome.SENT for r in results),
            len(batch.phone_numbers),
            resp.RequestId,
        )
        for r in results:
            if r.outcome is not SendOutcome.SENT:
                log.info("tencent sms: %s -> %s %s", mask_phone(r.phone_number), r.code, r.message)
        return results

    async def pull_send_status(
        self, credentials: SmsCredentials, sms_app_id: str, limit: int = 100
    ) -> list[DeliveryReceipt]:
        """Fetch up to `limit` (Tencent allows 100) delivery reports not pulled before."""
        client = self._client(credentials)
        req = models.PullSmsSendStatusRequest()
        req.SmsSdkAppId = sms_app_id
        req.Limit = min(limit, 100)
        resp = await self._call(client.PullSmsSendStatus(req), f"pull sms_app_id={sms_app_id}")
        return [
            DeliveryReceipt(
                phone_number=_e164(item.PhoneNumber or ""),
                serial_no=item.SerialNo or "",
                delivered=item.ReportStatus == "SUCCESS",
                receive_time=float(item.UserReceiveTime or 0),
                code=item.ReportStatus or "",
                description=item.Description or "",
            )
            for item in resp.PullSmsSendStatusSet or []
        ]

    async def _call(self, call: Awaitable[T], where: str) -> T:
        """Await an SDK call, turning every failure of the whole call into SmsProviderError."""
        try:
            return await call
        except TencentCloudSDKException as exc:
            code = str(exc.code or "UnknownError")
            message = exc.message if isinstance(exc.message, str) else repr(exc.message)
            kind = classify(code)
            log.warning("tencent sms failed: %s %s %s (%s)", where, code, message, kind.value)
            raise SmsProviderError(kind, code, message) from None
        except _NOT_SENT_ERRORS as exc:
            code = "ConnectTimeout" if isinstance(exc, httpx.TimeoutException) else "NetworkError"
            log.warning("tencent sms not sent: %s %s", where, type(exc).__name__)
            raise SmsProviderError(SmsErrorKind.TRANSIENT, code, _describe(exc)) from None
        except _NEVER_SENDABLE_ERRORS as exc:
            log.warning("tencent sms request invalid: %s %s", where, type(exc).__name__)
            raise SmsProviderError(SmsErrorKind.PERMANENT, "InvalidRequest", _describe(exc)) from None
        except (httpx.TimeoutException, asyncio.TimeoutError) as exc:
            # A read (or write) timeout: Tencent may have the request and be sending.
            log.warning("tencent sms timed out, outcome unknown: %s %s", where, type(exc).__name__)
            raise SmsProviderError(SmsErrorKind.UNKNOWN, "Timeout", _describe(exc)) from None
        except httpx.HTTPError as exc:
            # The connection broke after the request was (at least partly) written.
            log.warning("tencent sms connection lost, outcome unknown: %s %s", where, type(exc).__name__)
            raise SmsProviderError(SmsErrorKind.UNKNOWN, "NetworkError", _describe(exc)) from None
        except (ValueError, KeyError, TypeError) as exc:
            # The answer was not Tencent's JSON (a proxy's HTML page, a truncated body).
            log.warning("tencent sms malformed answer, outcome unknown: %s %s", where, type(exc).__name__)
            raise SmsProviderError(SmsErrorKind.UNKNOWN, "MalformedResponse", _describe(exc)) from None

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__

"""The SMS seam: the engine talks to an SmsProvider and nothing else.

A provider sends one batch (one template and parameter set, at most `max_batch_size`
numbers, all mainland or all international) and answers one SmsResult per number. A
failure of the whole call is an SmsProviderError whose `kind` tells the caller whether a
retry can help, and whether the SMS may have left anyway (UNKNOWN: never retried, so an
SMS is sent at most once).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from ..model import DeliveryReceipt  # noqa: F401  (re-exported: providers build them)


@dataclass(frozen=True, slots=True)
class SmsCredentials:
    """An app's Tencent Cloud SecretId / SecretKey. Never logged: repr hides both."""

    secret_id: str = field(repr=False)
    secret_key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class SmsBatch:
    app_access_id: str
    credentials: SmsCredentials | None
    sms_app_id: str
    sign_name: str
    template_id: str
    template_params: tuple[str, ...]
    phone_numbers: tuple[str, ...]  # E.164
    session_context: str = ""  # echoed back by Tencent in receipts; we put the push id here


class SendOutcome(enum.Enum):
    SENT = "SENT"
    FAILED = "FAILED"
    RATE_LIMITED = "RATE_LIMITED"
    UNKNOWN = "UNKNOWN"  # the provider may have sent it: no answer, or an unreadable one


@dataclass(frozen=True, slots=True)
class SmsResult:
    phone_number: str  # E.164, as in the batch
    outcome: SendOutcome
    code: str = ""  # provider's code, e.g. "Ok", "LimitExceeded.PhoneNumberDailyLimit"
    message: str = ""
    serial_no: str = ""  # provider's id of this SMS, matched by delivery receipts
    fee: int = 0  # billed SMS count


class SmsErrorKind(enum.Enum):
    # The request provably did not take effect (no connection was made; InternalError*,
    # RequestLimitExceeded*, which Tencent documents as not sent): retry.
    TRANSIENT = "TRANSIENT"
    RATE_LIMITED = "RATE_LIMITED"  # LimitExceeded.*: record, do not retry
    PERMANENT = "PERMANENT"  # bad key, unapproved template or sign: record FAILED
    # The request may have taken effect (read timeout, connection lost after the request
    # was written, an answer that is not the provider's): record UNKNOWN, never retry.
    UNKNOWN = "UNKNOWN"


class SmsProviderError(Exception):
    def __init__(self, kind: SmsErrorKind, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.kind = kind
        self.code = code
        self.message = message


class SmsProvider(Protocol):
    name: str
    max_batch_size: int

    async def send(self, batch: SmsBatch) -> list[SmsResult]:
        """Send one batch; raise SmsProviderError when the whole call fails."""

    async def close(self) -> None: ...

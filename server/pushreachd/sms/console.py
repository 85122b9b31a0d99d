"""A provider that sends nothing: it logs the SMS it would send and reports them SENT.

The default for development and for operators trying pushreach without a Tencent
account; the rest of the pipeline (records, statistics) behaves as with a real provider.
"""

from __future__ import annotations

import logging
import uuid

from pushreachd.phone import mask_phone
from pushreachd.sms.provider import SendOutcome, SmsBatch, SmsResult


class ConsoleSmsProvider:
    name = "console"
    max_batch_size = 200  # same as Tencent, so batching behaves identically

    def __init__(self, log: logging.Logger = logging.getLogger(__name__)) -> None:
        self._log = log

    async def send(self, batch: SmsBatch) -> list[SmsResult]:
        # One line per batch; numbers masked like every other log line.
        self._log.info(
            "console sms: app=%s sms_app_id=%s sign=%r template=%s params=%r to=%s",
            batch.app_access_id,
            batch.sms_app_id,
            batch.sign_name,
            batch.template_id,
            list(batch.template_params),
            ",".join(mask_phone(n) for n in batch.phone_numbers),
        )
        return [
            SmsResult(
                phone_number=number,
                outcome=SendOutcome.SENT,
                code="Ok",
                message="send success",
                serial_no=f"console-{uuid.uuid4().hex}",
                fee=1,
            )
            for number in batch.phone_numbers
        ]

    async def close(self) -> None:
        return None

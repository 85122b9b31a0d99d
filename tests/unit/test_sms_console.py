import logging

import pytest
from pushreachd.sms.console import ConsoleSmsProvider
from pushreachd.sms.provider import SendOutcome, SmsBatch


async def test_console_reports_sent_and_masks_numbers(caplog: pytest.LogCaptureFixture) -> None:
    provider = ConsoleSmsProvider()
    batch = SmsBatch(
        app_access_id="app-1", credentials=None, sms_app_id="1400000001", sign_name="Sign",
        template_id="T1", template_params=("42",), phone_numbers=("+8613812345678", "+12025550101"),
    )
    with caplog.at_level(logging.INFO, logger="pushreachd.sms.console"):
        results = await provider.send(batch)
    assert [r.phone_number for r in results] == list(batch.phone_numbers)
    assert all(r.outcome is SendOutcome.SENT and r.code == "Ok" and r.fee == 1 for r in results)
    assert all(r.serial_no.startswith("console-") for r in results)
    assert len({r.serial_no for r in results}) == 2
    assert len(caplog.records) == 1
    text = caplog.text
    assert "+86138****5678" in text and "13812345678" not in text
    assert "1400000001" in text and "T1" in text

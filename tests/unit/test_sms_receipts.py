from datetime import datetime, timezone
from typing import Any

import pytest
from pushreachd.sms.receipts import MalformedCallback, parse_callback


def item(**overrides: Any) -> dict[str, Any]:
    base = {
        "user_receive_time": "2025-06-15 08:03:04",
        "nationcode": "86",
        "mobile": "13800000001",
        "report_status": "SUCCESS",
        "errmsg": "DELIVRD",
        "description": "用户短信送达成功",
        "sid": "2640:1",
    }
    base.update(overrides)
    return base


def test_parse_callback() -> None:
    receipts = parse_callback([item(), item(report_status="FAIL", errmsg="UNDELIV", nationcode="1",
                                            mobile="2025550101", sid="2640:2")])
    ok, failed = receipts
    assert (ok.phone_number, ok.serial_no, ok.delivered, ok.code) == ("+8613800000001", "2640:1", True, "DELIVRD")
    # 08:03:04 in Beijing is 00:03:04 UTC
    assert ok.receive_time == datetime(2025, 6, 15, 0, 3, 4, tzinfo=timezone.utc).timestamp()
    assert (failed.phone_number, failed.delivered, failed.code) == ("+12025550101", False, "UNDELIV")


@pytest.mark.parametrize(
    "payload",
    [
        {"not": "a list"},
        ["not an object"],
        [item(mobile="12")],
        [{k: v for k, v in item().items() if k != "sid"}],
        [item(user_receive_time="yesterday")],
        [item(report_status="MAYBE")],
        [item(), item(nationcode="86", mobile="abc")],
    ],
)
def test_parse_callback_refuses_malformed(payload: Any) -> None:
    with pytest.raises(MalformedCallback):
        parse_callback(payload)


def test_parse_callback_empty() -> None:
    assert parse_callback([]) == []

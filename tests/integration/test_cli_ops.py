"""The operator CLI (push, status, sms list, stats) against a real server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from pushreach.v1 import event_pb2
from pushreachd.cli import build_parser, main, parse_time

from tests.harness import Caller, Running, basic
from tests.integration.test_fallback_e2e import report, wait_done
from tests.unit.test_tpns import TPNS_SAMPLE


async def credentials(server: Running) -> tuple[Caller, list[str]]:
    app, secret = await server.service.apps.create_app("ops")
    caller = Caller(server.channel, basic(app.access_id, secret), app.access_id)
    return caller, ["--server", server.target, "--access-id", app.access_id, "--secret-key", secret]


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))  # the CLI runs its own event loop
    out, err = capsys.readouterr()
    return code, out, err


async def test_push_tpns_sample_then_status(server: Running, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app, conn = await credentials(server)
    for i, token in enumerate(TPNS_SAMPLE["token_list"]):
        await app.bind(token, f"+861380000000{i}")
    body = tmp_path / "tpns.json"
    body.write_text(json.dumps(TPNS_SAMPLE))

    code, out, err = await cli(capsys, "push", "--tpns", str(body), "--json", *conn)
    assert code == 0, err
    pushed = json.loads(out)
    assert pushed["target_count"] == 2 and pushed["fallback_due_time"]

    code, out, err = await cli(capsys, "status", pushed["push_id"], "--json", *conn)
    assert code == 0, err
    status = json.loads(out)
    request = status["push"]["request"]
    assert status["push"]["fallback_state"] == "FALLBACK_STATE_PENDING"
    assert request["sms_info"]["trigger_condition"] == "TRIGGER_CONDITION_NOT_ARRIVED"
    assert request["sms_info"]["delay_trigger_time"] == 3600
    assert request["audience_type"] == "AUDIENCE_TYPE_TOKEN_LIST" and request["multi_pkg"] is True
    assert request["message"]["title"] == " test loop"
    assert request["request_id"]  # filled by the client
    assert status["funnel"]["target_count"] == 2 and status["funnel"]["sms_sent_count"] == 0
    assert [t["phone_number"] for t in status["targets"]] == ["+86138****0000", "+86138****0001"]

    code, out, err = await cli(capsys, "status", pushed["push_id"], *conn)
    assert code == 0, err
    assert "SMS fallback: pending" in out and "target  " in out


async def test_status_stats_and_sms_list_show_what_happened(server: Running, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app, conn = await credentials(server)
    for i in range(3):
        await app.bind(f"tok{i}", f"+861380000000{i}")
    body = tmp_path / "push.json"
    # Our own field names; enums by name. tok3 has no phone.
    ours = {
        "audience_type": "AUDIENCE_TYPE_TOKEN_LIST",
        "token_list": ["tok0", "tok1", "tok2", "tok3"],
        "message": {"title": "Approval", "content": "Expense #42"},
        "resend_by_sms": True,
        "sms_info": {
            "delay_trigger_time": 1,
            "trigger_condition": "TRIGGER_CONDITION_NOT_CLICKED",
            "sms_sign_name": "Pushreach",
            "sms_template_id": "123456",
            "sms_app_id": "1400000001",
            "sms_template_params": ["42"],
        },
    }
    body.write_text(json.dumps(ours))
    code, out, err = await cli(capsys, "push", str(body), "--json", *conn)
    assert code == 0, err
    push_id = json.loads(out)["push_id"]
    await report(app, push_id, "tok0", event_pb2.EVENT_TYPE_CLICKED)
    await report(app, push_id, "tok1", event_pb2.EVENT_TYPE_ARRIVED)
    await wait_done(app, push_id)
    await report(app, push_id, "tok2", event_pb2.EVENT_TYPE_ARRIVED)  # after its SMS

    code, out, err = await cli(capsys, "status", push_id, "--json", *conn)
    assert code == 0, err
    status = json.loads(out)
    assert status["push"]["fallback_state"] == "FALLBACK_STATE_DONE"
    assert status["funnel"] == {
        "target_count": 4,
        "arrived_count": 3,
        "clicked_count": 1,
        "sms_sent_count": 2,  # tok1 arrived but did not click; tok2
        "sms_delivered_count": 0,
        "sms_failed_count": 0,
        "sms_rate_limited_count": 0,
        "no_phone_count": 1,
        "arrived_after_sms_count": 1,
        "sms_unknown_count": 0,
        "sms_undelivered_count": 0,
        "sms_pending_count": 0,
        "push_accepted_count": 4,  # the log channel takes every target
        "push_invalid_token_count": 0,
        "push_failed_count": 0,
        "push_expired_count": 0,
        "push_no_channel_count": 0,
        "push_pending_count": 0,
    }
    assert [t["sms_status"] for t in status["targets"]] == [
        "SMS_STATUS_UNSPECIFIED", "SMS_STATUS_SENT", "SMS_STATUS_SENT", "SMS_STATUS_UNSPECIFIED",
    ]

    code, out, err = await cli(capsys, "stats", "--since", "1h", "--json", *conn)
    assert code == 0, err
    stats = json.loads(out)
    assert (stats["push_count"], stats["target_count"], stats["arrived_count"], stats["clicked_count"]) == (1, 4, 3, 1)
    assert stats["arrival_rate"] == 0.75 and stats["click_rate"] == 0.25
    assert stats["sms"] == {
        "sent": 2, "delivered": 0, "undelivered": 0, "failed": 0, "rate_limited": 0, "unknown": 0, "pending": 0
    }
    assert stats["sms_fee"] == 2 and stats["pending_fallback_count"] == 0
    code, out, err = await cli(capsys, "stats", "--until", "2000-01-01", "--json", *conn)
    assert code == 0, err
    assert json.loads(out)["push_count"] == 0

    code, out, err = await cli(capsys, "stats", *conn)
    assert code == 0, err
    assert "arrived" in out and "3 (75.0%)" in out

    code, out, err = await cli(capsys, "sms", "list", "--push-id", push_id, "--full-numbers", "--json", *conn)
    assert code == 0, err
    records = json.loads(out)
    assert sorted(r["phone_number"] for r in records) == ["+8613800000001", "+8613800000002"]
    assert {r["status"] for r in records} == {"SMS_STATUS_SENT"}
    code, out, err = await cli(capsys, "sms", "list", "--limit", "1", "--json", *conn)
    assert len(json.loads(out)) == 1 and "****" in json.loads(out)[0]["phone_number"]
    code, out, err = await cli(capsys, "sms", "list", "--status", "failed", "--json", *conn)
    assert json.loads(out) == []
    code, out, err = await cli(capsys, "sms", "list", "--phone", "13800000001", *conn)
    assert code == 0, err
    assert out.splitlines()[0].split()[:4] == ["created", "push_id", "phone", "status"]
    assert len(out.splitlines()) == 2 and "+86138****0001" in out and "sent" in out


async def test_errors_print_code_and_field_violations(server: Running, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, conn = await credentials(server)
    body = tmp_path / "bad.json"
    body.write_text(json.dumps({"audience_type": "AUDIENCE_TYPE_TOKEN_LIST", "token_list": ["t"]}))
    code, out, err = await cli(capsys, "push", str(body), *conn)
    assert code == 1
    assert "INVALID_ARGUMENT" in err and "  message: " in err

    code, out, err = await cli(capsys, "status", "nope", *conn)
    assert code == 1 and "NOT_FOUND" in err

    wrong = ["--server", server.target, "--access-id", "x", "--secret-key", "y"]
    code, out, err = await cli(capsys, "stats", *wrong)
    assert code == 1 and "UNAUTHENTICATED" in err

    code, out, err = await cli(capsys, "stats", "--server", server.target)
    assert code == 2 and "PUSHREACH_ACCESS_ID" in err

    tpns = tmp_path / "tag.json"
    tpns.write_text(json.dumps({**TPNS_SAMPLE, "audience_type": "package_account_push"}))
    code, out, err = await cli(capsys, "push", "--tpns", str(tpns), *conn)
    assert code == 2 and "audience_type" in err  # refused before any call

    tpns.write_text(json.dumps({**TPNS_SAMPLE, "audience_type": "tag"}))  # tokens, no tag_rules
    code, out, err = await cli(capsys, "push", "--tpns", str(tpns), *conn)
    assert code == 1 and "INVALID_ARGUMENT" in err and "tag_rules" in err and "token_list" in err


async def test_credentials_from_the_environment(server: Running, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _, conn = await credentials(server)
    monkeypatch.setenv("PUSHREACH_ACCESS_ID", conn[3])
    monkeypatch.setenv("PUSHREACH_SECRET_KEY", conn[5])
    code, out, err = await cli(capsys, "stats", "--json", "--server", server.target)
    assert code == 0, err
    assert json.loads(out)["push_count"] == 0


@pytest.mark.parametrize("argv", [["push"], ["status"], ["sms", "list"], ["stats"]])
def test_each_command_explains_itself(argv: list[str], capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([*argv, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--server" in out and "--json" in out and "--access-id" in out


def test_times_are_iso_or_ages() -> None:
    assert parse_time("2025-06-01T00:00:00Z") == 1748736000
    assert parse_time("2025-06-01") == 1748736000  # no zone: UTC
    assert parse_time("2025-06-01T08:00:00+08:00") == 1748736000
    assert parse_time("90m", now=10_000.0) == 10_000.0 - 5400
    assert parse_time("2d", now=200_000.0) == 200_000.0 - 172_800

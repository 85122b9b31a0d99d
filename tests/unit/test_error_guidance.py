"""Errors that say what to do: each names the setting, option or form that fixes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pushreachd import cli
from pushreachd.api.auth import parse_basic
from pushreachd.errors import InvalidArgument, Unauthenticated
from pushreachd.phone import InvalidPhoneNumber, normalize_phone
from pushreachd.services.validation import validate_push

from tests.builders import sms_push_draft

# -- the service's answers ----------------------------------------------------------------


@pytest.mark.parametrize("header", ["Basic !!!not-base64!!!", "Basic " + "YWJj"])  # "abc": no ':'
def test_malformed_basic_credentials_give_the_expected_form(header: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        parse_basic(header)
    assert "malformed Basic credentials" in caught.value.message
    assert "authorization: Basic base64(access_id:secret_key)" in caught.value.message


def test_a_delay_below_the_minimum_names_min_delay_seconds() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_push(sms_push_draft(["tok0"], 300, delay_trigger_time=10), 300)
    (violation,) = caught.value.violations
    assert violation.field == "sms_info.delay_trigger_time"
    assert "between 300 and 259200 seconds" in violation.description
    assert "min_delay_seconds" in violation.description


@pytest.mark.parametrize("raw", ["13800138001x", "abc", "1380013", "+86 138 0013 800a", "1-800-FLOWERS", "+", "138001380015555555"])
def test_bind_phone_refuses_what_is_not_a_number_and_says_the_accepted_forms(raw: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as caught:
        normalize_phone(raw)
    message = str(caught.value)
    assert "E.164" in message and "+8613800138000" in message
    assert "bare mainland number" in message and "13800138000" in message


@pytest.mark.parametrize(
    ("raw", "e164"),
    [("13800138000", "+8613800138000"), ("+86 138 0013 8000", "+8613800138000"),
     ("138-0013-8000", "+8613800138000"), ("008613800138000", "+8613800138000"),
     ("+1 (650) 253-0000", "+16502530000")],
)
def test_numbers_with_separators_are_still_accepted(raw: str, e164: str) -> None:
    assert normalize_phone(raw) == e164


@given(st.text(min_size=1, max_size=20).filter(lambda t: any(c.isalpha() or c in "#*,;/x" for c in t)))
def test_text_with_letters_or_symbols_is_never_a_number(text: str) -> None:
    with pytest.raises(InvalidPhoneNumber):
        normalize_phone(text)


# -- serve --------------------------------------------------------------------------------


def test_app_rate_limit_help_says_requests_per_second(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--app-rate-limit PER_SECOND" in help_text and "--app-rate-limit SECONDS" not in help_text
    assert "requests per second each app may make" in help_text
    assert "--shutdown-grace-seconds SECONDS" in help_text


def test_serve_with_db_in_a_missing_directory_names_the_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "no-such-dir" / "p.db"
    assert cli.main(["serve", "--db", str(db), "--listen", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert f"db={str(db)!r} (from --db)" in err and f"directory {db.parent} does not exist" in err
    assert "master key" not in err and not db.parent.exists()

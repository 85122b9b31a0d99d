"""Phone numbers: E.164 normalisation (through phonenumbers) and masking for logs."""

from __future__ import annotations

import logging
import re

import phonenumbers

MAINLAND_PREFIX = "+86"


class InvalidPhoneNumber(ValueError):
    pass


ACCEPTED_FORMS = "E.164 such as +8613800138000, or a bare mainland number such as 13800138000"

# Digits with an optional leading + and the usual separators, nothing else: phonenumbers alone
# would read "13800138001x" as 13800138001 (trailing text dropped) and letters as a vanity
# number ("1-800-FLOWERS").
_NUMBER_SHAPE = re.compile(r"\+?[0-9][0-9 ().-]*")


def normalize_phone(raw: str) -> str:
    """Return the E.164 form of `raw`; a bare number without '+' is read as mainland China.

    TPNS does the same: "13800138000" means "+8613800138000". Raises InvalidPhoneNumber
    (saying which forms are accepted, never echoing the number) for anything else: text that is
    not digits and separators, or a number phonenumbers does not consider valid.
    """
    text = raw.strip()
    if not text:
        raise InvalidPhoneNumber("phone number is empty")
    if not _NUMBER_SHAPE.fullmatch(text):
        raise InvalidPhoneNumber(f"not a phone number (only digits, an optional leading +, spaces and -); give {ACCEPTED_FORMS}")
    if text.startswith("00"):
        text = "+" + text[2:]
    region = None if text.startswith("+") else "CN"
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise InvalidPhoneNumber(f"not a phone number; give {ACCEPTED_FORMS}") from None
    if not phonenumbers.is_valid_number(parsed):
        where = "a valid mainland number (11 digits)" if region else "a valid number for its country code"
        raise InvalidPhoneNumber(f"not {where}; give {ACCEPTED_FORMS}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def is_mainland(e164: str) -> bool:
    return e164.startswith(MAINLAND_PREFIX)


def mask_phone(e164: str) -> str:
    """Mask the middle of a number for logs: +8613812345678 -> +86138****5678."""
    if not e164:
        return e164
    try:
        parsed = phonenumbers.parse(e164, None)
        prefix = f"+{parsed.country_code}"
        national = str(parsed.national_number)
    except phonenumbers.NumberParseException:
        prefix, national = "", e164.lstrip("+")
    if len(national) <= 4:
        return prefix + "*" * len(national)
    keep_head = min(3, max(0, len(national) - 8))
    return prefix + national[:keep_head] + "****" + national[-4:]


# What may be a phone number inside free text: E.164 (+ and 7..15 digits) or a bare mainland
# mobile number (11 digits starting 1[3-9]). 10-digit access ids and hex push ids do not match.
_NUMBER_IN_TEXT = re.compile(r"(?<![\w+])(?:\+\d{7,15}|1[3-9]\d{9})(?!\w)")


def redact_phone_numbers(text: str) -> str:
    """Mask every phone number found in `text`."""
    return _NUMBER_IN_TEXT.sub(lambda m: mask_phone(m.group(0) if m.group(0).startswith("+") else "+86" + m.group(0)), text)


class PhoneMaskingFilter(logging.Filter):
    """A handler filter that masks phone numbers in every record, whatever logged it (our code
    masks on its own; this also covers provider error texts, exceptions and libraries)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact_phone_numbers(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_phone_numbers(record.exc_text)
        if masked != message:
            record.msg, record.args = masked, None
        return True

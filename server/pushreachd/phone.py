"""Phone numbers: E.164 normalisation (through phonenumbers) and masking for logs."""

from __future__ import annotations

import phonenumbers

MAINLAND_PREFIX = "+86"


class InvalidPhoneNumber(ValueError):
    pass


def normalize_phone(raw: str) -> str:
    """Return the E.164 form of `raw`; a bare number without '+' is read as mainland China.

    TPNS does the same: "13800138000" means "+8613800138000". Raises InvalidPhoneNumber
    for anything phonenumbers does not consider a valid number.
    """
    text = raw.strip()
    if not text:
        raise InvalidPhoneNumber("phone number is empty")
    if text.startswith("00"):
        text = "+" + text[2:]
    region = None if text.startswith("+") else "CN"
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber("not a valid phone number")
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

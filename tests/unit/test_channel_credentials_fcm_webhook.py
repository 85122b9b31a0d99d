"""Credentials files of the FCM and webhook channels: what is kept, and violations naming the
field (never quoting the private key)."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pushreachd.channels import fcm, registry, webhook
from pushreachd.channels.emulator.fcm import new_service_account
from pushreachd.errors import InvalidArgument
from pushreachd.model import Channel


@pytest.fixture(scope="module")
def account() -> dict[str, str]:
    return new_service_account("my-app-1a2b3", "https://oauth2.googleapis.com/token")


def violations(data: Any, module: Any = fcm) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        module.validate_credentials(data)
    return {v.field: v.description for v in info.value.violations}


# -- FCM -----------------------------------------------------------------------------------------


def test_firebase_file_is_kept_whole(account) -> None:  # type: ignore[no-untyped-def]
    assert dict(fcm.validate_credentials(account)) == account
    assert dict(registry.validate_credentials(Channel.FCM, account)) == account


def test_unknown_fields_are_dropped_not_refused(account) -> None:  # type: ignore[no-untyped-def]
    kept = fcm.validate_credentials({**account, "some_future_field": "x"})
    assert "some_future_field" not in kept


def test_every_missing_field_is_named() -> None:
    assert violations({}) == {f"credentials.{name}": "required" for name in
                              ("type", "project_id", "client_email", "private_key", "token_uri")}


def test_service_account_without_private_key(account) -> None:  # type: ignore[no-untyped-def]
    info = {k: v for k, v in account.items() if k != "private_key"}
    assert violations(info) == {"credentials.private_key": "required"}
    assert violations({**account, "private_key": ""}) == {"credentials.private_key": "required"}


def test_type_must_be_service_account(account) -> None:  # type: ignore[no-untyped-def]
    assert list(violations({**account, "type": "authorized_user"})) == ["credentials.type"]


@pytest.mark.parametrize(
    "key",
    [
        "not a key",
        "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n",
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),  # a valid PEM, but not RSA: Google signs RS256
        12345,
    ],
)
def test_private_key_must_load_as_rsa_pem(account, key) -> None:  # type: ignore[no-untyped-def]
    found = violations({**account, "private_key": key})
    assert list(found) == ["credentials.private_key"]
    assert "BEGIN PRIVATE KEY-----..." in found["credentials.private_key"]


def test_messages_never_quote_the_key(account) -> None:  # type: ignore[no-untyped-def]
    lines = account["private_key"].splitlines()
    broken = "\n".join([lines[0], "!" + lines[1][1:], *lines[2:]])  # one bad character: no longer base64
    found = violations({**account, "private_key": broken})
    assert list(found) == ["credentials.private_key"]
    assert not any(line[5:30] in found["credentials.private_key"] for line in lines[1:-1])


@pytest.mark.parametrize(
    ("token_uri", "ok"),
    [
        ("https://oauth2.googleapis.com/token", True),
        ("http://127.0.0.1:8088/fcm/token", True),
        ("http://localhost:8088/fcm/token", True),
        ("http://[::1]:8088/fcm/token", True),
        ("http://oauth2.googleapis.com/token", False),
        ("http://10.0.0.5/token", False),
        ("ftp://example.com/token", False),
        ("oauth2.googleapis.com/token", False),
    ],
)
def test_token_uri_https_or_loopback_http(account, token_uri, ok) -> None:  # type: ignore[no-untyped-def]
    data = {**account, "token_uri": token_uri}
    if ok:
        assert fcm.validate_credentials(data)["token_uri"] == token_uri
    else:
        assert list(violations(data)) == ["credentials.token_uri"]


def test_plain_http_token_uri_message(account) -> None:  # type: ignore[no-untyped-def]
    assert violations({**account, "token_uri": "http://example.com/token"}) == {
        "credentials.token_uri": "must be https (http only to a loopback address)"
    }


@pytest.mark.parametrize(("name", "value"), [("project_id", "My Project/1"), ("client_email", "nobody"),
                                             ("universe_domain", "example.net"), ("client_id", 42)])
def test_bad_field_is_named(account, name, value) -> None:  # type: ignore[no-untyped-def]
    assert list(violations({**account, name: value})) == [f"credentials.{name}"]


def test_not_an_object() -> None:
    assert violations(["a list"]) == {"credentials": "must be a JSON object"}


# -- webhook -------------------------------------------------------------------------------------

GOOD = {"url": "https://app.example.com/pushreach/hook", "secret": "0123456789abcdef"}


def test_webhook_file_is_kept() -> None:
    assert dict(webhook.validate_credentials(GOOD)) == GOOD
    assert dict(registry.validate_credentials(Channel.WEBHOOK, GOOD)) == GOOD


def test_webhook_missing_fields_are_named() -> None:
    assert violations({}, webhook) == {"credentials.url": "required", "credentials.secret": "required"}


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://app.example.com/hook?key=1", True),
        ("http://127.0.0.1:9000/webhook/app", True),
        ("http://localhost/hook", True),
        ("http://app.example.com/hook", False),
        ("http://0.0.0.0/hook", False),
        ("https://user:pw@app.example.com/hook", False),
        ("app.example.com/hook", False),
        ("https://app.example.com:99999/hook", False),
    ],
)
def test_webhook_url(url, ok) -> None:  # type: ignore[no-untyped-def]
    data = {**GOOD, "url": url}
    if ok:
        assert webhook.validate_credentials(data)["url"] == url
    else:
        assert list(violations(data, webhook)) == ["credentials.url"]


def test_webhook_plain_http_message() -> None:
    assert violations({**GOOD, "url": "http://app.example.com/hook"}, webhook) == {
        "credentials.url": "must be https (http only to a loopback address)"
    }


def test_webhook_short_secret() -> None:
    assert violations({**GOOD, "secret": "short"}, webhook) == {"credentials.secret": "at least 16 characters"}


def test_webhook_unknown_field_refused() -> None:
    assert list(violations({**GOOD, "sekret": "x"}, webhook)) == ["credentials.sekret"]

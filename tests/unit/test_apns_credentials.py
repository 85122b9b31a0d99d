"""APNs credentials file, payload and provider token: what is kept, violations naming the
field, and a key message that never echoes key material."""

from __future__ import annotations

import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pushreachd.channels import apns
from pushreachd.errors import InvalidArgument
from pushreachd.model import AudienceType, MessageType, PushSpec

from tests.fakes import FakeClock


def pem(key) -> str:  # type: ignore[no-untyped-def]
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


P256 = ec.generate_private_key(ec.SECP256R1())
KEY = pem(P256)
GOOD = {"key_id": "ABC123DEFG", "team_id": "TEAM123456", "topic": "com.example.app", "private_key": KEY}


def violations(data: dict) -> dict[str, str]:  # type: ignore[type-arg]
    with pytest.raises(InvalidArgument) as info:
        apns.validate_credentials(data)
    return {v.field: v.description for v in info.value.violations}


def test_good_file_is_kept() -> None:
    assert dict(apns.validate_credentials(GOOD)) == GOOD


def test_topic_with_a_push_type_suffix_is_kept() -> None:
    topic = "com.example-corp.app.voip"
    assert apns.validate_credentials({**GOOD, "topic": topic})["topic"] == topic


def test_every_missing_field_is_named() -> None:
    assert set(violations({})) == {f"credentials.{name}" for name in GOOD}
    assert violations({**GOOD, "private_key": ""}) == {"credentials.private_key": "required"}


@pytest.mark.parametrize("field", ["key_id", "team_id"])
@pytest.mark.parametrize("bad", ["abc123defg", "ABC123DEF", "ABC123DEFGH", "ABC-23DEFG"])
def test_ids_are_ten_upper_case_alphanumerics(field: str, bad: str) -> None:
    assert violations({**GOOD, field: bad}) == {f"credentials.{field}": "must be 10 upper-case letters and digits"}


@pytest.mark.parametrize(
    "bad", ["com example.app", "com..app", ".com.app", "com.app.", "-com.app", "com.app/x", "x" * 256]
)
def test_topic_must_be_a_bundle_id(bad: str) -> None:
    assert violations({**GOOD, "topic": bad}) == {
        "credentials.topic": "must be the app's bundle id, such as com.example.app"
    }


@pytest.mark.parametrize(
    "bad",
    [
        pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        pem(ec.generate_private_key(ec.SECP384R1())),
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
        P256.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
        P256.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.BestAvailableEncryption(b"secret")).decode(),
        12345,
    ],
    ids=["rsa", "p384", "garbage", "public-key", "encrypted", "number"],
)
def test_private_key_must_be_a_p256_key(bad) -> None:  # type: ignore[no-untyped-def]
    found = violations({**GOOD, "private_key": bad})
    assert found == {"credentials.private_key": apns.PRIVATE_KEY_PROBLEM}
    assert apns.PRIVATE_KEY_PROBLEM == "must be the .p8 key (PEM) of an APNs auth key: a P-256 EC private key"


def test_key_material_never_in_the_message() -> None:
    rsa_pem = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(InvalidArgument) as info:
        apns.validate_credentials({**GOOD, "private_key": rsa_pem, "key_id": "bad"})
    body = rsa_pem.splitlines()[1]
    assert body not in str(info.value) and "PRIVATE KEY" not in str(info.value)


def test_unknown_fields_are_refused() -> None:
    found = violations({**GOOD, "bundle_id": "com.example.app"})
    assert list(found) == ["credentials.bundle_id"]
    assert "unknown field" in found["credentials.bundle_id"]


def spec(**kw) -> PushSpec:  # type: ignore[no-untyped-def]
    return PushSpec(AudienceType.TOKEN_LIST, (), (), kw.pop("title", "Hi"), kw.pop("content", "There"), **kw)


def test_payload_of_a_notification_and_of_a_message() -> None:
    assert json.loads(apns.payload(spec(), "p-1", "r-1")) == {
        "aps": {"alert": {"title": "Hi", "body": "There"}, "sound": "default"},
        "pushreach": {"push_id": "p-1", "receipt": "r-1"},
    }
    assert json.loads(apns.payload(spec(message_type=MessageType.MESSAGE), "p-1", "r-1")) == {
        "aps": {"content-available": 1},
        "pushreach": {"push_id": "p-1", "receipt": "r-1"},
    }


def test_payload_counts_utf8_bytes_not_escapes() -> None:
    body = apns.payload(spec(title="审批", content="报销单 #42 等你审批"), "p", "r")
    assert "审批".encode() in body
    assert len(body) < apns.MAX_PAYLOAD_BYTES


def test_provider_token_is_reused_then_refreshed_on_the_clock() -> None:
    clock = FakeClock()
    token = apns.ProviderToken("TEAM123456", "ABC123DEFG", KEY, clock)
    first = token.get()
    assert jwt.get_unverified_header(first) == {"alg": "ES256", "kid": "ABC123DEFG", "typ": "JWT"}
    claims = jwt.decode(first, P256.public_key(), algorithms=["ES256"])
    assert claims == {"iss": "TEAM123456", "iat": int(clock.time())}
    clock._now += apns.TOKEN_REFRESH_AFTER - 1
    assert token.get() == first
    clock._now += 1
    second = token.get()
    assert second != first and token.minted == 2
    clock._now += 1
    assert token.renew(first) == second  # already replaced: no new token
    third = token.renew(second)
    assert third != second and token.minted == 3

from __future__ import annotations

import base64
import os
import stat
import sys

import pytest
from pushreachd import secrets as s
from pushreachd.secrets import (
    SecretBox,
    SecretError,
    VerifierCache,
    check_verifier,
    decode_master_key,
    load_master_key,
    make_verifier,
    new_access_id,
    new_secret_key,
)

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


# --- identifiers ----------------------------------------------------------------------------


def test_access_id_is_ten_digits_starting_with_one() -> None:
    ids = {new_access_id() for _ in range(200)}
    assert all(len(i) == 10 and i.isdigit() and i[0] == "1" for i in ids)
    assert len(ids) > 190  # random, not a counter


def test_secret_key_is_32_lowercase_hex() -> None:
    key = new_secret_key()
    assert len(key) == 32 and all(c in "0123456789abcdef" for c in key)
    assert new_secret_key() != key


# --- verifiers ------------------------------------------------------------------------------


def test_verifier_round_trip_and_format() -> None:
    v = make_verifier("correct horse")
    scheme, n, r, p, salt, digest = v.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
    assert len(base64.b64decode(salt)) == 16
    assert "correct horse" not in v
    assert check_verifier("correct horse", v)


def test_wrong_secret_is_rejected() -> None:
    v = make_verifier("correct horse")
    assert not check_verifier("correct horsE", v)
    assert not check_verifier("", v)


def test_salts_differ() -> None:
    a, b = make_verifier("same"), make_verifier("same")
    assert a != b
    assert a.split("$")[4] != b.split("$")[4]


@pytest.mark.parametrize(
    "verifier",
    [
        "",
        "garbage",
        "bcrypt$16384$8$1$AAAA$AAAA",
        "scrypt$16384$8$1$AAAA",  # too few parts
        "scrypt$abc$8$1$AAAA$AAAA",
        "scrypt$1000$8$1$AAAA$AAAA",  # n not a power of two
        "scrypt$1073741824$8$1$AAAA$AAAA",  # n absurdly large: must not try to allocate
        "scrypt$16384$8$1$!!!!$AAAA",  # bad base64
        "scrypt$16384$8$1$$",  # empty salt and hash
    ],
)
def test_malformed_verifier_is_false_never_raises(verifier: str) -> None:
    assert check_verifier("secret", verifier) is False


def test_tampered_verifier_hash_is_rejected() -> None:
    v = make_verifier("secret")
    parts = v.split("$")
    digest = bytearray(base64.b64decode(parts[5]))
    digest[0] ^= 1
    parts[5] = base64.b64encode(bytes(digest)).decode()
    assert not check_verifier("secret", "$".join(parts))


class CountingCheck:
    """Wraps check_verifier to count the slow path."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, secret: str, verifier: str) -> bool:
        self.calls += 1
        return REAL_CHECK(secret, verifier)


REAL_CHECK = check_verifier


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> CountingCheck:
    counter = CountingCheck()
    monkeypatch.setattr(s, "check_verifier", counter)
    return counter


def test_cache_hit_skips_scrypt(counting: CountingCheck) -> None:
    cache = VerifierCache()
    v = make_verifier("k1")
    assert cache.check("1000000001", "k1", v)
    assert cache.check("1000000001", "k1", v)
    assert cache.check("1000000001", "k1", v)
    assert counting.calls == 1
    assert len(cache) == 1


def test_cache_never_accepts_wrong_secret_or_other_app(counting: CountingCheck) -> None:
    cache = VerifierCache()
    v = make_verifier("k1")
    assert cache.check("1000000001", "k1", v)
    assert not cache.check("1000000001", "k2", v)
    # Same secret under another access id is a different cache key: it goes through scrypt.
    assert cache.check("1000000002", "k1", v)
    assert counting.calls == 3
    assert not cache.check("1000000001", "k2", v)
    assert counting.calls == 4  # failures are not cached


def test_cache_invalidated_when_verifier_changes(counting: CountingCheck) -> None:
    cache = VerifierCache()
    old = make_verifier("k1")
    assert cache.check("1000000001", "k1", old)
    rotated = make_verifier("k2")  # the app's key was rotated
    assert not cache.check("1000000001", "k1", rotated)
    assert counting.calls == 2
    assert cache.check("1000000001", "k2", rotated)
    # The old secret's entry is gone: even against the old verifier it pays scrypt again.
    assert cache.check("1000000001", "k1", old)
    assert counting.calls == 4


def test_cache_is_bounded_lru(counting: CountingCheck) -> None:
    cache = VerifierCache(max_entries=2)
    v = {k: make_verifier(k) for k in ("a", "b", "c")}
    cache.check("1", "a", v["a"])
    cache.check("1", "b", v["b"])
    cache.check("1", "a", v["a"])  # hit; "a" is now most recently used
    cache.check("1", "c", v["c"])  # evicts "b"
    assert len(cache) == 2
    calls = counting.calls
    cache.check("1", "a", v["a"])
    assert counting.calls == calls
    cache.check("1", "b", v["b"])
    assert counting.calls == calls + 1


# --- SecretBox ------------------------------------------------------------------------------

KEY = bytes(range(32))
AD = b"sms_credentials:1000000001"


def test_box_round_trip_and_layout() -> None:
    box = SecretBox(KEY)
    blob = box.seal(b"AKIDsecret", AD)
    assert blob[0] == 1
    assert len(blob) == 1 + 12 + len(b"AKIDsecret") + 16
    assert b"AKIDsecret" not in blob
    assert box.open(blob, AD) == b"AKIDsecret"
    assert box.seal(b"AKIDsecret", AD) != blob  # fresh nonce each time


def test_box_detects_tampering() -> None:
    box = SecretBox(KEY)
    blob = bytearray(box.seal(b"payload", AD))
    for i in (1, 13, len(blob) - 1):  # nonce, ciphertext, tag
        bad = bytearray(blob)
        bad[i] ^= 0x80
        with pytest.raises(SecretError):
            box.open(bytes(bad), AD)
    with pytest.raises(SecretError):
        box.open(bytes(blob[:20]), AD)
    with pytest.raises(SecretError, match="version"):
        box.open(b"\x02" + bytes(blob[1:]), AD)


def test_box_rejects_wrong_associated_data() -> None:
    box = SecretBox(KEY)
    blob = box.seal(b"payload", AD)
    with pytest.raises(SecretError):
        box.open(blob, b"sms_credentials:1000000002")


def test_box_rejects_wrong_key_and_names_key_id() -> None:
    blob = SecretBox(KEY).seal(b"payload", AD)
    other = SecretBox(bytes(32))
    with pytest.raises(SecretError, match=other.key_id):
        other.open(blob, AD)


def test_box_key_id_and_key_length() -> None:
    import hashlib

    assert SecretBox(KEY).key_id == hashlib.sha256(KEY).hexdigest()[:8]
    assert SecretBox(KEY).key_id != SecretBox(bytes(32)).key_id
    with pytest.raises(SecretError):
        SecretBox(b"short")


# --- master key -----------------------------------------------------------------------------


def test_master_key_from_setting_standard_and_urlsafe() -> None:
    key = bytes([0xFB, 0xFF] * 16)  # encodes with + and / (or - and _)
    std = base64.b64encode(key).decode()
    url = base64.urlsafe_b64encode(key).decode().rstrip("=")
    assert "+" in std or "/" in std
    assert load_master_key(std, "/nonexistent/never-used.key") == key
    assert load_master_key(url, "/nonexistent/never-used.key") == key


def test_master_key_setting_bad_length_or_base64() -> None:
    with pytest.raises(SecretError, match="32 bytes, got 16"):
        load_master_key(base64.b64encode(bytes(16)).decode(), "unused")
    with pytest.raises(SecretError, match="base64"):
        load_master_key("not base64 at all!", "unused")


def test_decode_master_key_does_not_echo_value() -> None:
    value = base64.b64encode(b"x" * 31).decode()
    with pytest.raises(SecretError) as info:
        decode_master_key(value)
    assert value not in str(info.value)


@posix_only
def test_key_file_created_0600_and_reused(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "pushreach.db.key")
    key = load_master_key("", path)
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_master_key("", path) == key
    assert os.listdir(tmp_path) == ["pushreach.db.key"]  # no temp file left behind


@posix_only
def test_key_file_created_0600_even_with_permissive_umask(tmp_path: os.PathLike[str]) -> None:
    old = os.umask(0)
    try:
        path = os.path.join(tmp_path, "k")
        load_master_key("", path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@posix_only
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_key_file_readable_by_others_is_refused(tmp_path: os.PathLike[str], mode: int) -> None:
    path = os.path.join(tmp_path, "k")
    load_master_key("", path)
    os.chmod(path, mode)
    with pytest.raises(SecretError, match="chmod 600"):
        load_master_key("", path)


def test_key_file_with_bad_content(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "k")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, base64.b64encode(bytes(8)))
    os.close(fd)
    with pytest.raises(SecretError, match=f"{path}.*32 bytes"):
        load_master_key("", path)


def test_key_file_in_missing_directory(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(SecretError, match="cannot create"):
        load_master_key("", os.path.join(tmp_path, "no", "such", "dir", "k"))


def test_setting_wins_over_key_file(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "k")
    explicit = base64.b64encode(bytes(32)).decode()
    assert load_master_key(explicit, path) == bytes(32)
    assert not os.path.exists(path)  # no key file is created when the setting is given

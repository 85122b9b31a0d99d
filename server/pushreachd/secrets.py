"""Secrets at rest: app secret-key verifiers, the AES-GCM box and the master key file.

- App secret keys are never stored, only salted scrypt verifiers; VerifierCache makes the
  per-RPC check cheap for apps that authenticate again and again.
- Third-party credentials (Tencent SecretId/SecretKey) are sealed with SecretBox under the
  master key, with associated data binding each blob to its row so blobs cannot be swapped.
- The master key comes from the setting `master_key` or from a 0600 key file created on first start.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import stat
import threading
from collections import OrderedDict

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "SecretBox",
    "SecretError",
    "VerifierCache",
    "check_verifier",
    "decode_master_key",
    "load_master_key",
    "make_verifier",
    "new_access_id",
    "new_secret_key",
]

MASTER_KEY_BYTES = 32

# scrypt cost: ~50 ms and 16 MiB per check, so a leaked database does not give away keys cheaply.
_SCRYPT_N = 2**14
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_DKLEN = 32
_SALT_BYTES = 16
# Upper bounds for parameters read back from a verifier: a corrupt or hostile row must not
# make check_verifier burn gigabytes of memory.
_MAX_N = 2**20
_MAX_R = 32
_MAX_P = 16

_BOX_VERSION = 1
_NONCE_BYTES = 12
_TAG_BYTES = 16


class SecretError(Exception):
    """A secret could not be opened, decoded or loaded. Messages never contain secret values."""


# --- app secret keys --------------------------------------------------------------------------


def new_access_id() -> str:
    """A TPNS-style AccessID: 10 digits, the first one 1."""
    return f"1{secrets.randbelow(10**9):09d}"


def new_secret_key() -> str:
    """A 128-bit random secret key as 32 lowercase hex characters."""
    return secrets.token_hex(16)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def make_verifier(secret: str) -> str:
    """Return "scrypt$n$r$p$salt_b64$hash_b64" for `secret` with a fresh random salt."""
    salt = os.urandom(_SALT_BYTES)
    digest = hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=_SCRYPT_DKLEN
    )
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def check_verifier(secret: str, verifier: str) -> bool:
    """True if `secret` matches `verifier`; False for a wrong secret or a malformed verifier."""
    try:
        scheme, n_text, r_text, p_text, salt_text, hash_text = verifier.split("$")
        if scheme != "scrypt":
            return False
        n, r, p = int(n_text), int(r_text), int(p_text)
        if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P):
            return False
        salt = base64.b64decode(salt_text, validate=True)
        expected = base64.b64decode(hash_text, validate=True)
        if not salt or not expected:
            return False
        actual = hashlib.scrypt(
            secret.encode("utf-8"),
            salt=salt,
            n=n,
            r=r,
            p=p,
            dklen=len(expected),
            maxmem=256 * r * n + 1024 * 1024,  # headroom over 128*r*n, the actual need
        )
    except (ValueError, TypeError, AttributeError, MemoryError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


class VerifierCache:
    """Remembers (access_id, secret) pairs that already passed scrypt, as a bounded LRU.

    scrypt costs ~50 ms and every RPC authenticates, so a hot app would otherwise spend most
    of its time hashing. An entry maps sha256(access_id ":" secret) to the verifier string it
    was checked against: if the app's verifier changes (key rotated), the stored verifier no
    longer equals the cached one and the pair goes through scrypt again. Only successes are
    cached, so a wrong secret always pays full price. Thread-safe, because callers are expected
    to run scrypt in a worker thread to keep the event loop free.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._entries: OrderedDict[bytes, str] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(access_id: str, secret: str) -> bytes:
        return hashlib.sha256(f"{access_id}:{secret}".encode("utf-8")).digest()

    def check(self, access_id: str, secret: str, verifier: str) -> bool:
        """check_verifier(secret, verifier), answered from the cache when it already passed."""
        key = self._key(access_id, secret)
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None and cached == verifier:
                self._entries.move_to_end(key)
                return True
        # scrypt outside the lock: other apps must not wait behind this one.
        if not check_verifier(secret, verifier):
            with self._lock:
                self._entries.pop(key, None)
            return False
        with self._lock:
            self._entries[key] = verifier
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


# --- sealed blobs ---------------------------------------------------------------------------


class SecretBox:
    """AES-256-GCM with a random nonce. Blob layout: version (1 byte) | nonce (12) | ciphertext+tag.

    `associated_data` is authenticated but not stored: pass something that names the owner
    (e.g. b"sms_credentials:" + access_id) so a blob copied to another row fails to open.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != MASTER_KEY_BYTES:
            raise SecretError(f"SecretBox key must be {MASTER_KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self._key = key
        self._key_id = hashlib.sha256(key).hexdigest()[:8]

    def derive_key(self, purpose: bytes) -> bytes:
        """A 32-byte key for one purpose (e.g. signing console sessions), derived from the master
        key with HKDF: another purpose, or another master key, gives an unrelated key."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"pushreach:" + purpose).derive(self._key)

    @property
    def key_id(self) -> str:
        """First 8 hex characters of sha256(key): tells keys apart in logs without revealing them."""
        return self._key_id

    def seal(self, plaintext: bytes, associated_data: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return bytes([_BOX_VERSION]) + nonce + self._aead.encrypt(nonce, plaintext, associated_data)

    def open(self, blob: bytes, associated_data: bytes) -> bytes:
        if len(blob) < 1 + _NONCE_BYTES + _TAG_BYTES:
            raise SecretError("sealed secret is truncated")
        if blob[0] != _BOX_VERSION:
            raise SecretError(f"sealed secret has unknown version {blob[0]}")
        nonce = blob[1 : 1 + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, blob[1 + _NONCE_BYTES :], associated_data)
        except InvalidTag:
            raise SecretError(
                f"sealed secret does not open with master key {self._key_id} "
                "(wrong key, or the data was altered)"
            ) from None


# --- master key -----------------------------------------------------------------------------


def decode_master_key(text: str) -> bytes:
    """Decode base64 (standard or urlsafe, padding optional) of exactly 32 bytes."""
    compact = "".join(text.split())
    compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        key = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise SecretError("master key is not valid base64") from None
    if len(key) != MASTER_KEY_BYTES:
        raise SecretError(
            f"master key must be base64 of {MASTER_KEY_BYTES} bytes, got {len(key)} bytes "
            "(generate one with: openssl rand -base64 32)"
        )
    return key


def _create_key_file(key_file: str) -> None:
    """Create `key_file` holding a new random key, atomically and with mode 0600.

    The key is written to a private temporary file first and then hard-linked into place, so
    another process never sees a half-written key file, and if two processes race on first
    start exactly one key wins (link fails with FileExistsError for the other).
    """
    directory = os.path.dirname(os.path.abspath(key_file))
    tmp = f"{key_file}.tmp-{secrets.token_hex(4)}"
    data = base64.b64encode(os.urandom(MASTER_KEY_BYTES)) + b"\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, key_file)
        except FileExistsError:
            return  # another process created it first: use theirs
    finally:
        os.unlink(tmp)
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # e.g. platforms without directory fds; the file itself is already synced
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def load_master_key(settings_master_key: str, key_file: str) -> bytes:
    """Return the 32-byte master key.

    If `settings_master_key` is given it is used (base64). Otherwise `key_file` is read, and
    created with a fresh random key on first start. A key file that group or others can read
    is refused: that key protects every stored third-party credential.
    """
    if settings_master_key:
        try:
            return decode_master_key(settings_master_key)
        except SecretError as exc:
            raise SecretError(f"setting master_key: {exc}") from None

    if not os.path.exists(key_file):
        try:
            _create_key_file(key_file)
        except OSError as exc:
            reason = exc.strerror or exc
            raise SecretError(f"cannot create master key file {key_file}: {reason}") from None

    try:
        st = os.stat(key_file)
    except OSError as exc:
        raise SecretError(f"cannot read master key file {key_file}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise SecretError(f"master key file {key_file} is not a regular file")
    if os.name == "posix" and st.st_mode & 0o077:
        raise SecretError(
            f"master key file {key_file} is accessible by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {key_file}"
        )
    try:
        with open(key_file, "rb") as f:
            text = f.read().decode("ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"cannot read master key file {key_file}: {exc}") from None
    try:
        return decode_master_key(text)
    except SecretError as exc:
        raise SecretError(f"master key file {key_file}: {exc}") from None

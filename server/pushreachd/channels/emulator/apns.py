"""Loopback emulator of APNs: HTTP/2 over TLS on the `h2` library, provider-token auth included.

It makes its own CA and a server certificate for 127.0.0.1 / localhost / ::1 and writes the
CA's PEM to a file, which pushreach trusts through `channel_ca_file`. Production and sandbox
share one listener: production is the base URL, the sandbox the same URL with the path
prefix `/sandbox` (`apns_sandbox_endpoint = <url>/sandbox`), so one port tells them apart and
each delivery records which one it came through.

Per request, in Apple's order: the bearer JWT (ES256, `kid` a registered key, `iss` its
team; unknown key or bad signature 403 InvalidProviderToken, `iat` older than an hour 403
ExpiredProviderToken), `apns-topic` registered for the team (400 TopicDisallowed, or
DeviceTokenNotForTopic for a token bound to another topic), the token's shape (64+ hex
characters, else 400 BadDeviceToken), the payload (at most 4096 bytes, else 413
PayloadTooLarge), unregistered tokens (410 Unregistered with `timestamp`); then it records a
`Delivered` and answers 200 with an `apns-id`. Provider tokens are counted per key, so a
test can tell one token reused from one minted per request.

Faults (ApnsEmulatorState methods, some also flags): tokens answered 410; the next N
requests answered 429 / 500 / 503; the next N answers delayed; GOAWAY after the next N
requests (then the connection closes); a connection dropped without GOAWAY; every provider
token seen so far called expired. What Apple does that the emulator does not pretend to:
device delivery, and Apple's rate limits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import ipaddress
import json
import logging
import os
import re
import signal
import ssl
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger(__name__)

SANDBOX_PREFIX = "/sandbox"
MAX_PAYLOAD_BYTES = 4096
PROVIDER_TOKEN_LIFETIME = 3600.0
MAX_CONCURRENT_STREAMS = 1000  # what Apple announces on a new connection
GOAWAY_GRACE = 1.0  # seconds a connection stays open after GOAWAY, unless the client closes it
PUSH_TYPES = frozenset({"alert", "background", "location", "voip", "complication", "fileprovider", "mdm",
                        "liveactivity", "pushtotalk"})
_DEVICE_TOKEN = re.compile(r"[0-9a-fA-F]{64,200}")
_DEVICE_PATH = "/3/device/"


@dataclass(frozen=True, slots=True)
class Delivered:
    """One notification APNs accepted for a device."""

    token: str
    topic: str
    sandbox: bool
    team_id: str
    key_id: str
    headers: dict[str, str]  # the apns-* request headers (push type, priority, expiration, collapse id)
    payload: dict[str, Any]
    apns_id: str


@dataclass(slots=True)
class _Key:
    team_id: str
    key_id: str
    public_key: ec.EllipticCurvePublicKey


@dataclass(slots=True)
class _Fault:
    status: int = 0  # answer with this status and reason...
    reason: str = ""
    delay: float = 0.0  # ...or answer normally after this many (real) seconds


class ApnsEmulatorState:
    """Everything the emulator knows; tests read and program it directly.

    `clock` is what `iat` is checked against (a FakeClock in tests, so a client on the
    same fake clock sees its tokens age); wall time by default."""

    def __init__(self, clock: Any = None) -> None:
        self.clock = clock
        self.keys: dict[str, _Key] = {}  # key id -> key
        self.topics: dict[str, set[str]] = {}  # team id -> topics (bundle ids) its keys may send to
        self.bound: dict[str, str] = {}  # device token -> the only topic it belongs to
        self.unregistered: dict[str, int] = {}  # device token -> since when (ms), answered 410
        self.delivered: list[Delivered] = []
        self.requests = 0  # streams answered or dropped
        self.connections = 0  # TLS connections accepted
        self.provider_tokens: Counter[tuple[str, str]] = Counter()  # (team, key id) -> distinct tokens seen
        self.refused: Counter[str] = Counter()  # reason -> requests refused with it
        self._faults: deque[_Fault] = deque()
        self._goaway_after: int | None = None
        self._drop_after: int | None = None
        self._verified: dict[str, tuple[str, str, int] | None] = {}  # jwt -> (team, key id, iat) / None bad
        self._expired: set[str] = set()

    # -- programming -----------------------------------------------------------------------

    def add_key(self, team_id: str, key_id: str, key_pem: str, topics: tuple[str, ...] | list[str] = ()) -> None:
        """Register an auth key (its public key, or the .p8 private key's PEM) and the topics
        its team may send to. A key id registered again is replaced."""
        data = key_pem.strip().encode()
        if b"PRIVATE KEY" in data:
            private = serialization.load_pem_private_key(data, password=None)
            public: Any = private.public_key()
        else:
            public = serialization.load_pem_public_key(data)
        if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(public.curve, ec.SECP256R1):
            raise ValueError(f"key {key_id}: APNs keys are P-256 EC keys")
        self.keys[key_id] = _Key(team_id, key_id, public)
        self.topics.setdefault(team_id, set()).update(topics)
        self._verified.clear()  # tokens verified with the old key must be checked again

    def add_topic(self, team_id: str, *topics: str) -> None:
        self.topics.setdefault(team_id, set()).update(topics)

    def bind(self, token: str, topic: str) -> None:
        """The device token belongs to `topic` only: another topic gets DeviceTokenNotForTopic."""
        self.bound[token] = topic

    def unregister(self, *tokens: str, since_ms: int | None = None) -> None:
        """These tokens are answered 410 Unregistered from now on."""
        stamp = since_ms if since_ms is not None else int(self.now() * 1000)
        for token in tokens:
            self.unregistered[token] = stamp

    def fail_next(self, status: int, times: int = 1, reason: str = "") -> None:
        """Answer the next `times` requests with `status` (429, 500, 503...) before any check."""
        default = {429: "TooManyRequests", 500: "InternalServerError", 503: "ServiceUnavailable"}
        self._faults.extend(_Fault(status, reason or default.get(status, "InternalServerError")) for _ in range(times))

    def delay_next(self, seconds: float, times: int = 1) -> None:
        """Answer the next `times` requests after `seconds` of real time."""
        self._faults.extend(_Fault(delay=seconds) for _ in range(times))

    def goaway_after(self, requests: int) -> None:
        """After the next `requests` requests, send GOAWAY on that connection and close it."""
        self._goaway_after = requests

    def drop_after(self, requests: int) -> None:
        """When the `requests`-th next request arrives, cut its connection without a word."""
        self._drop_after = requests

    def expire_provider_tokens(self) -> None:
        """Every provider token seen so far is answered 403 ExpiredProviderToken from now on."""
        self._expired.update(t for t, v in self._verified.items() if v is not None)

    def delivered_to(self, token: str) -> list[Delivered]:
        return [d for d in self.delivered if d.token == token]

    def token_changes(self, key_id: str) -> int:
        """How many distinct provider tokens of this key were seen (1 = one token reused)."""
        return sum(n for (_, kid), n in self.provider_tokens.items() if kid == key_id)

    def now(self) -> float:
        return self.clock.time() if self.clock is not None else time.time()

    # -- used by the connection -------------------------------------------------------------

    def next_fault(self) -> _Fault | None:
        return self._faults.popleft() if self._faults else None

    def take_goaway(self) -> bool:
        self._goaway_after, due = _count_down(self._goaway_after)
        return due

    def take_drop(self) -> bool:
        self._drop_after, due = _count_down(self._drop_after)
        return due

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any] | None, str]:
        """Apple's checks on one request, and the delivery: (status, error body or None, apns-id)."""
        apns_id = headers.get("apns-id") or str(uuid.uuid4()).upper()
        try:
            team_id, key_id, document = self._check(method, path, headers, body)
        except _Refused as refused:
            self.refused[refused.reason] += 1
            error: dict[str, Any] = {"reason": refused.reason}
            if refused.status == 410:
                error["timestamp"] = self.unregistered[_device_token(path)]
            return refused.status, error, apns_id
        kept = {k: v for k, v in headers.items() if k.startswith("apns-")}
        sandbox = path.startswith(SANDBOX_PREFIX + "/")
        self.delivered.append(
            Delivered(_device_token(path), headers["apns-topic"], sandbox, team_id, key_id, kept, document, apns_id)
        )
        return 200, None, apns_id

    def _check(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[str, str, dict[str, Any]]:
        """(team id, key id, payload) of an acceptable request; raises _Refused in Apple's order."""
        if method != "POST":
            raise _Refused(405, "MethodNotAllowed")
        bare = path[len(SANDBOX_PREFIX):] if path.startswith(SANDBOX_PREFIX + "/") else path
        if not bare.startswith(_DEVICE_PATH):
            raise _Refused(404, "BadPath")
        team_id, key_id = self._auth(headers.get("authorization", ""))
        token = bare[len(_DEVICE_PATH):]
        topic = headers.get("apns-topic", "")
        if not topic:
            raise _Refused(400, "MissingTopic")
        if topic not in self.topics.get(team_id, ()):
            raise _Refused(400, "TopicDisallowed")
        if _DEVICE_TOKEN.fullmatch(token) is None:
            raise _Refused(400, "BadDeviceToken")
        if self.bound.get(token, topic) != topic:
            raise _Refused(400, "DeviceTokenNotForTopic")
        push_type = headers.get("apns-push-type", "alert")
        priority = headers.get("apns-priority", "10")
        if push_type not in PUSH_TYPES:
            raise _Refused(400, "InvalidPushType")
        if priority not in ("1", "5", "10") or (push_type == "background" and priority == "10"):
            raise _Refused(400, "BadPriority")  # Apple: background pushes must use priority 5
        if not headers.get("apns-expiration", "0").isdigit():
            raise _Refused(400, "BadExpirationDate")
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            raise _Refused(400, "BadCollapseId")
        if not body:
            raise _Refused(400, "PayloadEmpty")
        if len(body) > MAX_PAYLOAD_BYTES:
            raise _Refused(413, "PayloadTooLarge")
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise _Refused(400, "BadPayload")  # the emulator's own name: Apple's answer is not documented
        if token in self.unregistered:
            raise _Refused(410, "Unregistered")
        return team_id, key_id, document

    def _auth(self, authorization: str) -> tuple[str, str]:
        """(team id, key id) of a good provider token; tokens are verified once, aged every time."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _Refused(403, "MissingProviderToken")
        if token not in self._verified:
            self._verified[token] = self._verify(token)
        verified = self._verified[token]
        if verified is None:
            raise _Refused(403, "InvalidProviderToken")
        team_id, key_id, iat = verified
        if token in self._expired or self.now() - iat > PROVIDER_TOKEN_LIFETIME:
            raise _Refused(403, "ExpiredProviderToken")
        return team_id, key_id

    def _verify(self, token: str) -> tuple[str, str, int] | None:
        try:
            header = jwt.get_unverified_header(token)
            key = self.keys.get(str(header.get("kid", "")))
            if key is None or header.get("alg") != "ES256":
                return None
            claims = jwt.decode(token, key.public_key, algorithms=["ES256"], options={"verify_iat": False})
        except jwt.PyJWTError:
            return None
        iat = claims.get("iat")
        if claims.get("iss") != key.team_id or not isinstance(iat, int):
            return None
        self.provider_tokens[(key.team_id, key.key_id)] += 1
        return key.team_id, key.key_id, iat


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _count_down(left: int | None) -> tuple[int | None, bool]:
    """One request more toward a fault armed `left` requests ahead: (what is left, due now)."""
    if left is None:
        return None, False
    return (None, True) if left <= 1 else (left - 1, False)


def _device_token(path: str) -> str:
    return path.rpartition("/")[2]


# -- the HTTP/2 server ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Stream:
    headers: dict[str, str]
    body: bytearray = field(default_factory=bytearray)


class _Connection(asyncio.Protocol):
    """One client connection: h2's state machine fed by asyncio, answers written at once."""

    def __init__(self, state: ApnsEmulatorState, connections: set[_Connection]) -> None:
        self.state = state
        self.connections = connections
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams: dict[int, _Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.add(self)
        self.state.connections += 1
        self.h2.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS}
        )
        self.h2.initiate_connection()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            self._close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.streams[event.stream_id] = _Stream({str(k): str(v) for k, v in event.headers or ()})
            elif isinstance(event, h2.events.DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.body += event.data or b""
                self.h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                stream = self.streams.pop(event.stream_id, None)
                if stream is not None:
                    self._request(event.stream_id, stream)
                    if self.closing:
                        return
            elif isinstance(event, h2.events.StreamReset):
                self.streams.pop(event.stream_id, None)
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._flush()
                self._close()
                return
        self._flush()

    def _request(self, stream_id: int, stream: _Stream) -> None:
        state = self.state
        state.requests += 1
        if state.take_drop():
            self.closing = True
            if self.transport is not None:
                self.transport.abort()  # no GOAWAY, no answer: a connection lost mid-flight
            return
        fault = state.next_fault()
        if fault is not None and fault.status:
            self._answer(stream_id, fault.status, {"reason": fault.reason}, str(uuid.uuid4()).upper())
        else:
            h = stream.headers
            status, error, apns_id = state.handle(h.get(":method", ""), h.get(":path", ""), h, bytes(stream.body))
            if fault is not None and fault.delay > 0:
                asyncio.get_running_loop().call_later(fault.delay, self._answer_late, stream_id, status, error, apns_id)
            else:
                self._answer(stream_id, status, error, apns_id)
        if state.take_goaway():
            # Apple's GOAWAY names the last stream it handled; the client resends later ones
            # elsewhere. Like a real server, leave the client time to read the answers and
            # hang up itself: cutting at once would lose answers already sent.
            self.h2.close_connection(last_stream_id=stream_id, additional_data=b'{"reason":"Shutdown"}')
            self._flush()
            self.closing = True  # nothing more is read or answered on this connection
            asyncio.get_running_loop().call_later(GOAWAY_GRACE, self._close)

    def _answer(self, stream_id: int, status: int, error: dict[str, Any] | None, apns_id: str) -> None:
        try:
            if error is None:
                self.h2.send_headers(stream_id, [(":status", str(status)), ("apns-id", apns_id)], end_stream=True)
            else:
                body = json.dumps(error).encode()
                self.h2.send_headers(
                    stream_id,
                    [(":status", str(status)), ("apns-id", apns_id), ("content-type", "application/json"),
                     ("content-length", str(len(body)))],
                )
                self.h2.send_data(stream_id, body, end_stream=True)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass  # the client reset the stream or the connection is going away

    def _answer_late(self, stream_id: int, status: int, error: dict[str, Any] | None, apns_id: str) -> None:
        if self.transport is None or self.closing:
            return
        self._answer(stream_id, status, error, apns_id)
        self._flush()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()  # writes what is buffered (the GOAWAY) first


# -- certificates --------------------------------------------------------------------------------


def write_certificates(directory: str, ca_file: str = "") -> tuple[str, str, str]:
    """A throwaway CA and a server certificate it signs for 127.0.0.1, ::1 and localhost.
    Returns (ca PEM path, server certificate path, server key path)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pushreach APNs emulator CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        # KeyUsage: digital_signature, key_cert_sign and crl_sign only.
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = ca_file or os.path.join(directory, "apns-emulator-ca.pem")
    cert_path = os.path.join(directory, "server.pem")
    key_path = os.path.join(directory, "server.key")
    with open(ca_path, "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return ca_path, cert_path, key_path


@contextlib.asynccontextmanager
async def running(
    state: ApnsEmulatorState, host: str = "127.0.0.1", port: int = 0, ca_file: str = ""
) -> AsyncIterator[tuple[str, str]]:
    """Serve the emulator for the duration of the block; yields (base URL, CA PEM path).
    The sandbox is `base URL + SANDBOX_PREFIX`. `ca_file`: where to write the CA (default a
    temporary file, removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="apns-emulator-") as directory:
        ca_path, cert_path, key_path = write_certificates(directory, ca_file)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_path, key_path)
        context.set_alpn_protocols(["h2"])
        connections: set[_Connection] = set()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(state, connections), host, port, ssl=context)
        try:
            bound = server.sockets[0].getsockname()[1]
            shown = f"[{host}]" if ":" in host else host
            yield f"https://{shown}:{bound}", ca_path
        finally:
            server.close()
            for conn in list(connections):
                if conn.transport is not None:
                    conn.transport.abort()
            await server.wait_closed()


def sandbox_url(url: str) -> str:
    return url.rstrip("/") + SANDBOX_PREFIX


# -- command line -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="127.0.0.1:8443", metavar="HOST:PORT", help="address to serve on")
    parser.add_argument(
        "--keys",
        metavar="PATH",
        required=True,
        help='JSON file: [{"team_id", "key_id", "public_key" or "private_key" (PEM), "topics": [bundle ids]}]',
    )
    parser.add_argument("--unregistered", nargs="*", default=[], metavar="TOKEN", help="device tokens answered 410")
    parser.add_argument("--ca-file", default="", metavar="PATH",
                        help="where to write the emulator's CA certificate (PEM) for channel_ca_file")
    parser.add_argument(
        "--seconds", type=float, default=0, metavar="SECONDS", help="stop after this long (0 = until SIGTERM)"
    )


def load_keys(state: ApnsEmulatorState, doc: Any) -> None:
    if not isinstance(doc, list):
        raise ValueError("--keys: a JSON list of {team_id, key_id, public_key or private_key, topics}")
    for entry in doc:
        pem = entry.get("public_key") or entry.get("private_key")
        if not pem:
            raise ValueError(f"--keys: key {entry.get('key_id')!r} has neither public_key nor private_key")
        state.add_key(str(entry["team_id"]), str(entry["key_id"]), str(pem), [str(t) for t in entry.get("topics", [])])


async def serve_from_args(args: argparse.Namespace, ready: Callable[[str, str], None] | None = None) -> None:
    """Run until SIGINT/SIGTERM or `--seconds`; `ready(url, ca_file)` is called once serving
    (the default prints both on stderr)."""
    from ...config import parse_host_port

    host, port = parse_host_port(args.listen)
    state = ApnsEmulatorState()
    with open(args.keys, encoding="utf-8") as f:
        load_keys(state, json.load(f))
    state.unregister(*args.unregistered)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with running(state, host, port, os.path.abspath(args.ca_file) if args.ca_file else "") as (url, ca_file):
        if ready is not None:
            ready(url, ca_file)
        else:
            sandbox = sandbox_url(url)
            print(f"apns push emulator on {url} (sandbox {sandbox}), CA {ca_file}", file=sys.stderr, flush=True)
        if args.seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.seconds)
        else:
            await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """`python -m pushreachd.channels.emulator.apns --keys FILE [--listen HOST:PORT]`."""
    parser = argparse.ArgumentParser(
        prog="python -m pushreachd.channels.emulator.apns", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    try:
        asyncio.run(serve_from_args(args))
    except (OSError, ValueError, KeyError) as exc:
        print(f"apns push emulator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

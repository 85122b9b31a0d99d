"""Settings: parsed once, from flags > PUSHREACH_* environment > TOML file > defaults.

`load_settings` returns a frozen `Settings` or raises `ConfigError` naming the setting and
where its value came from, e.g.
"min_delay_seconds=0 (from PUSHREACH_MIN_DELAY_SECONDS): must be between 1 and 259200".
Secret values (admin_token, master_key) never appear in repr() or in error messages.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import math
import os
import tomllib
import urllib.parse
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pushreachd.secrets import SecretError, decode_master_key
from pushreachd.store import is_postgres_url

__all__ = [
    "ConfigError",
    "ENV_PREFIX",
    "Settings",
    "add_serve_arguments",
    "is_loopback",
    "load_settings",
    "parse_host_port",
]

ENV_PREFIX = "PUSHREACH_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
TOML_TABLE = "pushreach"

SMS_PROVIDERS = ("console", "tencent")
PUSH_CHANNELS = ("log",)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
MAX_DELAY_SECONDS = 259200  # 3 days, TPNS's upper bound for delay_trigger_time


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message says which and from where."""


def _help(text: str, *, secret: bool = False, choices: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"help": text, "secret": secret, "choices": choices}


@dataclass(frozen=True)
class Settings:
    listen: str = field(
        default="127.0.0.1:50051",
        metadata=_help("gRPC listen address host:port (IPv6 as [::1]:50051)"),
    )
    db: str = field(
        default="./pushreach.db",
        metadata=_help("SQLite database path, or postgresql://user@host:port/db to share one "
                       "PostgreSQL database between instances (docs/DEPLOYMENT.md)"),
    )
    metrics_listen: str = field(
        default="", metadata=_help("Prometheus metrics address host:port; empty = off")
    )
    sms_provider: str = field(
        default="console", metadata=_help("SMS provider", choices=SMS_PROVIDERS)
    )
    tencent_sms_region: str = field(
        default="ap-guangzhou", metadata=_help("Tencent Cloud SMS region")
    )
    tencent_sms_endpoint: str = field(
        default="",
        metadata=_help("Tencent SMS endpoint, host or http(s)://host:port; empty = Tencent's default"),
    )
    sms_receipt_listen: str = field(
        default="",
        metadata=_help(
            "delivery-receipt HTTP callback address host:port; empty = off; a non-loopback address "
            "needs TLS (tls_cert, tls_key) or insecure"
        ),
    )
    http_listen: str = field(
        default="",
        metadata=_help(
            "HTTP API address host:port (device receipts /v1/receipts, /v1/devices/state); "
            "empty = off; a non-loopback address needs TLS (tls_cert, tls_key) or insecure"
        ),
    )
    http_max_body_bytes: int = field(
        default=1024 * 1024,
        metadata=_help("largest HTTP request body accepted, in bytes, 1024..67108864 (routes may set less)"),
    )
    http_address_rate_limit: float = field(
        default=200.0,
        metadata=_help(
            "unauthenticated HTTP requests per second from one client address (token bucket, "
            "burst of one second's worth); 0 = unlimited"
        ),
    )
    http_token_rate_limit: float = field(
        default=5.0,
        metadata=_help(
            "device HTTP requests per second for one device token (burst of 10 s worth); "
            "0 = unlimited"
        ),
    )
    sms_receipt_poll_seconds: float = field(
        default=0.0, metadata=_help("PullSmsSendStatus poll interval in seconds; 0 = off")
    )
    push_channel: str = field(
        default="log", metadata=_help("push channel", choices=PUSH_CHANNELS)
    )
    min_delay_seconds: int = field(
        default=300,
        metadata=_help(f"smallest allowed delay_trigger_time in seconds, 1..{MAX_DELAY_SECONDS}"),
    )
    rate_limit_time_zone: str = field(
        default="Asia/Shanghai",
        metadata=_help("IANA time zone that defines the calendar day for SMS daily limits"),
    )
    admin_token: str = field(
        default="",
        repr=False,
        metadata=_help(
            "AdminService token, at least 16 characters; empty = AdminService disabled",
            secret=True,
        ),
    )
    master_key: str = field(
        default="",
        repr=False,
        metadata=_help(
            "base64 of the 32-byte key that encrypts stored credentials; "
            "empty = use master_key_file",
            secret=True,
        ),
    )
    master_key_file: str = field(
        default="",
        metadata=_help("master key file, created with mode 0600 on first start; empty = <db>.key "
                       "(SQLite only: on PostgreSQL every instance must be given the same key)"),
    )
    tick_ms: int = field(
        default=100, metadata=_help("timer wheel tick in milliseconds, 10..1000")
    )
    shutdown_grace_seconds: float = field(
        default=10.0, metadata=_help("seconds in-flight RPCs get to finish on shutdown, 0..300")
    )
    fire_workers: int = field(
        default=4, metadata=_help("tasks that claim due fallbacks, each a group at a time, 1..256")
    )
    fire_group_size: int = field(
        default=256,
        metadata=_help("due fallbacks claimed, judged and reserved in one transaction, 1..5000"),
    )
    sms_per_app_concurrency: int = field(
        default=16,
        metadata=_help("SMS provider calls (and fire groups) in flight per app at once, 1..256"),
    )
    log_level: str = field(default="INFO", metadata=_help("log level", choices=LOG_LEVELS))
    tls_cert: str = field(
        default="", metadata=_help("TLS certificate chain file (PEM); needs tls_key")
    )
    tls_key: str = field(default="", metadata=_help("TLS private key file (PEM); needs tls_cert"))
    tls_client_ca: str = field(
        default="",
        metadata=_help("CA file (PEM) to require and verify client certificates (mutual TLS); "
                       "needs tls_cert and tls_key"),
    )
    insecure: bool = field(
        default=False,
        metadata=_help(
            "allow plaintext gRPC (listen) and HTTP (http_listen, sms_receipt_listen) on a non-loopback address"
        ),
    )
    app_rate_limit: float = field(
        default=2000.0,
        metadata=_help("requests per second each app may make (token bucket); 0 = unlimited"),
    )
    app_rate_burst: int = field(
        default=0, metadata=_help("requests an app may make at once; 0 = one second's worth")
    )
    auth_failure_limit: int = field(
        default=10,
        metadata=_help("failed authentications from one address before its attempts slow down; 0 = off"),
    )
    fire_lease_seconds: int = field(
        default=30,
        metadata=_help("PostgreSQL: seconds an instance holds the fallbacks it is firing; another "
                       "instance finishes them this long after it dies, 5..3600"),
    )
    db_pool_size: int = field(
        default=8,
        metadata=_help("PostgreSQL: connections for reads and fires, besides the four group-commit writers, 1..100"),
    )
    db_prepare_threshold: int = field(
        default=5,
        metadata=_help("PostgreSQL: runs of a statement before it is prepared on the server; 0 = never "
                       "(PgBouncer older than 1.21 in transaction mode)"),
    )
    instance_id: str = field(
        default="",
        metadata=_help("name of this instance in fire leases (PostgreSQL); empty = host:pid:random"),
    )
    retention_days: int = field(
        default=90,
        metadata=_help("days SMS records and finished pushes are kept; 0 = keep forever"),
    )
    # Android vendor channels: where each sends (the emulator, a regional host).
    hms_endpoint: str = field(
        default="https://push-api.cloud.huawei.com",
        metadata=_help("Huawei Push Kit base URL (POST <url>/v1/<app_id>/messages:send)"),
    )
    hms_token_endpoint: str = field(
        default="https://oauth-login.cloud.huawei.com/oauth2/v3/token",
        metadata=_help("Huawei OAuth 2.0 token URL (client credentials)"),
    )
    honor_endpoint: str = field(
        default="https://push-api.cloud.honor.com",
        metadata=_help("Honor Push base URL (POST <url>/api/v1/<app_id>/sendMessage)"),
    )
    honor_token_endpoint: str = field(
        default="https://iam.developer.honor.com/auth/token",
        metadata=_help("Honor OAuth 2.0 token URL (client credentials)"),
    )
    xiaomi_endpoint: str = field(
        default="https://api.xmpush.xiaomi.com",
        metadata=_help("Xiaomi Push base URL (POST <url>/v3/message/regid); global: api.xmpush.global.xiaomi.com"),
    )
    oppo_endpoint: str = field(
        default="https://api.push.oppomobile.com",
        metadata=_help("OPPO Push base URL (/server/v1/auth, /server/v1/message/notification/unicast_batch)"),
    )
    vivo_endpoint: str = field(
        default="https://api-push.vivo.com.cn",
        metadata=_help("vivo Push base URL (/message/auth, /message/send, /message/pushToList)"),
    )
    # APNs, FCM: where they send (the push emulator in tests), and a CA bundle to trust.
    apns_endpoint: str = field(
        default="https://api.push.apple.com",
        metadata=_help("APNs production base URL (HTTP/2, POST <url>/3/device/<token>)"),
    )
    apns_sandbox_endpoint: str = field(
        default="https://api.sandbox.push.apple.com",
        metadata=_help("APNs sandbox base URL, for pushes with environment DEV"),
    )
    fcm_endpoint: str = field(
        default="https://fcm.googleapis.com",
        metadata=_help("FCM HTTP v1 base URL (POST <url>/v1/projects/<id>/messages:send); the OAuth2 "
                       "token URL is the service account's token_uri"),
    )
    channel_ca_file: str = field(
        default="",
        metadata=_help("extra CA bundle (PEM) trusted for every push-channel request, OAuth2 token "
                       "requests included, beside the public CAs; empty = public CAs only"),
    )
    tpns_signature_window_seconds: int = field(
        default=300,
        metadata=_help("TPNS REST API: how far a signed request's TimeStamp may be from now, 1..3600 s"),
    )

    @property
    def resolved_master_key_file(self) -> str:
        """The master key file actually used: master_key_file, or "<db>.key" beside the database."""
        return self.master_key_file or f"{self.db}.key"

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(Settings)}
_DEFAULTS = Settings()


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


# --- address helpers --------------------------------------------------------------------------


def parse_host_port(text: str) -> tuple[str, int]:
    """Split "host:port" or "[v6]:port" into (host, port); host without brackets. Port 0..65535."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{text!r} is not [host]:port")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {text!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r} is not host:port")
        if ":" in host:
            raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:50051")
    if not host:
        raise ValueError(f"{text!r} has no host")
    if not port_text.isascii() or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r} has no valid port (0..65535)")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback IP addresses. Wildcards (0.0.0.0, ::) are not loopback."""
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other host name may resolve anywhere


# --- argparse ---------------------------------------------------------------------------------


def _python_type(f: dataclasses.Field[Any]) -> type:
    return type(getattr(_DEFAULTS, f.name))


def _describe_default(name: str) -> str:
    value = getattr(_DEFAULTS, name)
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return _num(value)
    return str(value) if value != "" else "empty"


def _metavar(name: str) -> str | None:
    if name == "listen" or name.endswith("_listen"):
        return "HOST:PORT"
    if name == "db" or name.endswith("_file") or name.startswith("tls_"):
        return "PATH"
    if name.endswith("_endpoint"):
        return "URL"
    if name.endswith("_time_zone"):
        return "ZONE"
    if name.endswith("_seconds"):
        return "SECONDS"
    if name.endswith("_rate_limit"):
        return "PER_SECOND"
    return None


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --config and one flag per Settings field; every default is None (= not given)."""
    parser.add_argument(
        "--config",
        default=None,
        metavar="PATH",
        help=(
            f"TOML settings file; keys are setting names, optionally under [{TOML_TABLE}] "
            f"(env {CONFIG_ENV})"
        ),
    )
    for name, f in _FIELDS.items():
        meta = f.metadata
        help_text = f"{meta['help']} (default: {_describe_default(name)}; env {env_name(name)})"
        kind = _python_type(f)
        if kind is bool:
            parser.add_argument(flag_name(name), action="store_true", default=None, help=help_text)
            continue
        kwargs: dict[str, Any] = {"default": None, "dest": name, "help": help_text}
        if meta["choices"]:
            kwargs["choices"] = meta["choices"]
            if name == "log_level":
                kwargs["type"] = str.upper  # accept --log-level debug
        elif kind is int:
            kwargs["type"] = int
            kwargs["metavar"] = "N"
        elif kind is float:
            kwargs["type"] = float
            kwargs["metavar"] = _metavar(name) or "N"
        elif meta["secret"]:
            kwargs["metavar"] = "SECRET"
            # Command lines are visible to every local user (ps, /proc).
            kwargs["help"] = help_text + "; prefer the env variable, flags show up in ps"
        elif _metavar(name):
            kwargs["metavar"] = _metavar(name)
        parser.add_argument(flag_name(name), **kwargs)


# --- loading --------------------------------------------------------------------------------


def _shown(name: str, value: Any) -> str:
    if _FIELDS[name].metadata["secret"]:
        return "<redacted>"
    return repr(value) if isinstance(value, str) else str(value)


def _fail(name: str, value: Any, source: str, problem: str) -> ConfigError:
    return ConfigError(f"{name}={_shown(name, value)} (from {source}): {problem}")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(name: str, raw: Any, source: str) -> Any:
    """Turn a raw value (a string from env, or a typed value from TOML/flags) into the field's type."""
    kind = _python_type(_FIELDS[name])
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            return raw.strip().lower() in _TRUE
        raise _fail(name, raw, source, "must be a boolean (1/0, true/false, yes/no)")
    if kind is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str):
            try:
                return int(raw.strip())
            except ValueError:
                pass
        raise _fail(name, raw, source, "must be an integer")
    if kind is float:
        value: float | None = None
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            value = float(raw)
        elif isinstance(raw, str):
            try:
                value = float(raw.strip())
            except ValueError:
                pass
        if value is None or not math.isfinite(value):
            raise _fail(name, raw, source, "must be a number")
        return value
    if not isinstance(raw, str):
        raise _fail(name, raw, source, "must be a string")
    return raw


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    # Both layouts are accepted, flat keys or keys under [pushreach]; a key given in both
    # places is ambiguous, so it is an error rather than a silent pick.
    values = {k: v for k, v in doc.items() if k != TOML_TABLE}
    table = doc.get(TOML_TABLE, {})
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: {TOML_TABLE!r} must be a table")
    for key, value in table.items():
        if key in values:
            raise ConfigError(
                f"config file {path}: {key!r} is set both at top level and in [{TOML_TABLE}]"
            )
        values[key] = value
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(_FIELDS)}"
        )
    return values


def load_settings(
    args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Merge flags > environment > TOML file > defaults, convert and validate."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    config_path = getattr(args, "config", None) if args is not None else None
    if config_path is None:
        config_path = env.get(CONFIG_ENV) or None
    if config_path:
        label = f"config file {config_path}"
        for name, raw in _read_toml(config_path).items():
            values[name], sources[name] = _convert(name, raw, label), label

    for name in _FIELDS:
        if env_name(name) in env:
            raw = env[env_name(name)]
            values[name], sources[name] = _convert(name, raw, env_name(name)), env_name(name)

    if args is not None:
        for name in _FIELDS:
            raw = getattr(args, name, None)
            if raw is not None:
                values[name], sources[name] = _convert(name, raw, flag_name(name)), flag_name(name)

    for name in _FIELDS:
        sources.setdefault(name, "default")
    # Case-insensitive names for the enumerations, so "Tencent" or "debug" work from env/TOML.
    if "log_level" in values:
        values["log_level"] = values["log_level"].upper()
    for name in ("sms_provider", "push_channel"):
        if name in values:
            values[name] = values[name].lower()

    settings = Settings(**values)
    _validate(settings, sources)
    return settings


# --- validation -----------------------------------------------------------------------------


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _check_range(lo: float, hi: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if lo <= value <= hi else f"must be between {_num(lo)} and {_num(hi)}"

    return check


def _check_choice(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


def _check_address(optional: bool) -> Callable[[Any], str | None]:
    def check(value: str) -> str | None:
        if optional and value == "":
            return None
        try:
            parse_host_port(value)
        except ValueError as exc:
            return f"must be host:port: {exc}"
        return None

    return check


def _check_endpoint(value: str) -> str | None:
    if value == "":
        return None
    text = value if "://" in value else f"https://{value}"
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        return f"must be a host or http(s)://host:port: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return "must be a host or http(s)://host:port"
    if parts.query or parts.fragment or parts.username:
        return "must be a host or http(s)://host:port"
    return None


def _check_base_url(value: str) -> str | None:
    """An http(s) URL with a host, optionally a path (a token endpoint, a proxy prefix)."""
    try:
        parts = urllib.parse.urlsplit(value)
        parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        return f"must be an http(s) URL: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL such as https://host or http://127.0.0.1:8080"
    if parts.query or parts.fragment or parts.username:
        return "must be an http(s) URL without query, fragment or user"
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return "plain http only to a loopback address (an emulator); use https"
    return None


def _check_time_zone(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return "must be an IANA time zone name such as Asia/Shanghai or UTC"
    return None


def _check_admin_token(value: str) -> str | None:
    if value and len(value) < 16:
        return "must be empty (AdminService disabled) or at least 16 characters"
    return None


def _check_master_key(value: str) -> str | None:
    if not value:
        return None
    try:
        decode_master_key(value)
    except SecretError as exc:
        return str(exc)
    return None


def _check_nonempty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _check_db(value: str) -> str | None:
    if not value.strip():
        return "must not be empty"
    if "://" in value:
        return None  # a database URL, not a file
    directory = os.path.dirname(os.path.abspath(value))
    if not os.path.isdir(directory):
        return f"directory {directory} does not exist: create it, or give another path"
    return None


def _check_readable_file(value: str) -> str | None:
    if value and not os.path.isfile(value):
        return "file does not exist"
    if value and not os.access(value, os.R_OK):
        return "file is not readable"
    return None


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "listen": _check_address(optional=False),
    "db": _check_db,
    "metrics_listen": _check_address(optional=True),
    "sms_provider": _check_choice(SMS_PROVIDERS),
    "tencent_sms_region": _check_nonempty,
    "tencent_sms_endpoint": _check_endpoint,
    "sms_receipt_listen": _check_address(optional=True),
    "http_listen": _check_address(optional=True),
    "http_max_body_bytes": _check_range(1024, 64 * 1024 * 1024),
    "http_address_rate_limit": _check_range(0, 1_000_000),
    "http_token_rate_limit": _check_range(0, 1_000_000),
    "sms_receipt_poll_seconds": _check_range(0, 86400),
    "push_channel": _check_choice(PUSH_CHANNELS),
    "min_delay_seconds": _check_range(1, MAX_DELAY_SECONDS),
    "rate_limit_time_zone": _check_time_zone,
    "admin_token": _check_admin_token,
    "master_key": _check_master_key,
    "tick_ms": _check_range(10, 1000),
    "shutdown_grace_seconds": _check_range(0, 300),
    "fire_workers": _check_range(1, 256),
    "fire_group_size": _check_range(1, 5000),
    "sms_per_app_concurrency": _check_range(1, 256),
    "log_level": _check_choice(LOG_LEVELS),
    "tls_cert": _check_readable_file,
    "tls_key": _check_readable_file,
    "tls_client_ca": _check_readable_file,
    "app_rate_limit": _check_range(0, 1_000_000),
    "app_rate_burst": _check_range(0, 1_000_000),
    "auth_failure_limit": _check_range(0, 1000),
    "retention_days": _check_range(0, 36500),
    "hms_endpoint": _check_base_url,
    "hms_token_endpoint": _check_base_url,
    "honor_endpoint": _check_base_url,
    "honor_token_endpoint": _check_base_url,
    "xiaomi_endpoint": _check_base_url,
    "oppo_endpoint": _check_base_url,
    "vivo_endpoint": _check_base_url,
    "apns_endpoint": _check_base_url,
    "apns_sandbox_endpoint": _check_base_url,
    "fcm_endpoint": _check_base_url,
    "channel_ca_file": _check_readable_file,
    "fire_lease_seconds": _check_range(5, 3600),
    "db_pool_size": _check_range(1, 100),
    "db_prepare_threshold": _check_range(0, 1000),
    "tpns_signature_window_seconds": _check_range(1, 3600),
}


def _validate(s: Settings, sources: Mapping[str, str]) -> None:
    for name, check in _CHECKS.items():
        value = getattr(s, name)
        problem = check(value)
        if problem:
            raise _fail(name, value, sources[name], problem)

    # Rules that involve several settings.
    if bool(s.tls_cert) != bool(s.tls_key):
        given = "tls_cert" if s.tls_cert else "tls_key"
        missing = "tls_key" if s.tls_cert else "tls_cert"
        problem = f"needs {missing} too (give both or neither)"
        raise _fail(given, getattr(s, given), sources[given], problem)
    if s.tls_client_ca and not s.tls_enabled:
        problem = "needs tls_cert and tls_key (mutual TLS)"
        raise _fail("tls_client_ca", s.tls_client_ca, sources["tls_client_ca"], problem)
    if is_postgres_url(s.db) and not s.master_key:
        if not s.master_key_file:
            raise _fail(
                "master_key_file",
                s.master_key_file,
                sources["master_key_file"],
                "is required with a PostgreSQL db: every instance must use the same master key "
                "(give a key file, e.g. a mounted Kubernetes Secret, or master_key)",
            )
        if not os.path.isfile(s.master_key_file):
            raise _fail(
                "master_key_file",
                s.master_key_file,
                sources["master_key_file"],
                "does not exist; with a PostgreSQL db it is not created (every instance needs the same "
                "key): create it once with `pushreach apps create ... --master-key-file FILE` and share it",
            )
    host, _ = parse_host_port(s.listen)
    if not s.tls_enabled and not s.insecure and not is_loopback(host):
        raise _fail(
            "listen",
            s.listen,
            sources["listen"],
            "is not a loopback address and TLS is off: give tls_cert and tls_key, "
            "or set insecure=true (--insecure) to serve plaintext gRPC on the network",
        )
    if s.sms_receipt_listen:
        host, _ = parse_host_port(s.sms_receipt_listen)
        if not s.tls_enabled and not s.insecure and not is_loopback(host):
            raise _fail(
                "sms_receipt_listen",
                s.sms_receipt_listen,
                sources["sms_receipt_listen"],
                "is not a loopback address and TLS is off: give tls_cert and tls_key, "
                "or set insecure=true (--insecure) to take plaintext receipt callbacks on the network",
            )
    if s.http_listen:
        host, _ = parse_host_port(s.http_listen)
        if not s.tls_enabled and not s.insecure and not is_loopback(host):
            raise _fail(
                "http_listen",
                s.http_listen,
                sources["http_listen"],
                "is not a loopback address and TLS is off: give tls_cert and tls_key, "
                "or set insecure=true (--insecure) to serve plaintext HTTP on the network",
            )

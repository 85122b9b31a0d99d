from __future__ import annotations

import argparse
import base64
import dataclasses
from pathlib import Path

import pytest
from pushreachd.config import (
    ConfigError,
    Settings,
    add_serve_arguments,
    is_loopback,
    load_settings,
    parse_host_port,
)

MASTER_KEY = base64.b64encode(bytes(range(32))).decode()
TOKEN = "t" * 20


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(list(argv))


def load(*argv: str, env: dict[str, str] | None = None) -> Settings:
    return load_settings(parse(*argv), env or {})


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pushreach.toml"
    path.write_text(text)
    return str(path)


# --- defaults and parsing -------------------------------------------------------------------


def test_defaults() -> None:
    s = load()
    assert s == Settings()
    assert s.listen == "127.0.0.1:50051"
    assert s.min_delay_seconds == 300
    assert s.sms_provider == "console"
    assert s.insecure is False
    assert s.resolved_master_key_file == "./pushreach.db.key"


def test_load_without_args_uses_environ_only() -> None:
    s = load_settings(None, {"PUSHREACH_TICK_MS": "50"})
    assert s.tick_ms == 50


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        load().listen = "x"  # type: ignore[misc]


def test_every_field_has_a_flag_with_env_in_help() -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    actions = {a.dest: a for a in parser._actions}
    assert "config" in actions
    for f in dataclasses.fields(Settings):
        action = actions[f.name]
        assert action.default is None
        assert f"PUSHREACH_{f.name.upper()}" in (action.help or "")
        assert "default" in (action.help or "")
    assert actions["sms_provider"].choices == ("console", "tencent")
    assert parse("--insecure").insecure is True
    assert parse().insecure is None


def test_unknown_sms_provider_flag_rejected_by_argparse() -> None:
    with pytest.raises(SystemExit):
        parse("--sms-provider", "twilio")


def test_resolved_master_key_file() -> None:
    assert load("--db", "/var/lib/p.db").resolved_master_key_file == "/var/lib/p.db.key"
    s = load("--db", "/var/lib/p.db", "--master-key-file", "/etc/p.key")
    assert s.resolved_master_key_file == "/etc/p.key"


# --- precedence -----------------------------------------------------------------------------


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        min_delay_seconds = 60
        tick_ms = 20
        shutdown_grace_seconds = 5
        log_level = "WARNING"
        db = "/tmp/from-file.db"
        """,
    )
    env = {
        "PUSHREACH_MIN_DELAY_SECONDS": "30",
        "PUSHREACH_TICK_MS": "40",
        "PUSHREACH_SMS_RECEIPT_POLL_SECONDS": "2.5",
        "PUSHREACH_INSECURE": "yes",
    }
    s = load("--config", path, "--min-delay-seconds", "1", "--shutdown-grace-seconds", "0.5", env=env)
    assert s.min_delay_seconds == 1  # flag > env > file
    assert s.tick_ms == 40  # env > file
    assert s.shutdown_grace_seconds == 0.5  # flag > file
    assert s.sms_receipt_poll_seconds == 2.5  # env > default
    assert s.log_level == "WARNING"  # file > default
    assert s.db == "/tmp/from-file.db"
    assert s.insecure is True  # env bool
    assert s.listen == "127.0.0.1:50051"  # default


def test_bool_flag_beats_env_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'insecure = false\nlisten = "0.0.0.0:1"\n')
    assert load("--config", path, "--insecure", env={"PUSHREACH_INSECURE": "0"}).insecure is True
    with pytest.raises(ConfigError):
        load("--config", path, env={"PUSHREACH_INSECURE": "0"})


def test_string_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, 'sms_provider = "tencent"\ntencent_sms_region = "ap-beijing"\n')
    env = {"PUSHREACH_SMS_PROVIDER": "console", "PUSHREACH_TENCENT_SMS_REGION": "ap-shanghai"}
    s = load("--config", path, "--sms-provider", "tencent", env=env)
    assert s.sms_provider == "tencent"
    assert s.tencent_sms_region == "ap-shanghai"


def test_config_path_from_env_and_flag_wins(tmp_path: Path) -> None:
    a = tmp_path / "a.toml"
    a.write_text("tick_ms = 11\n")
    b = tmp_path / "b.toml"
    b.write_text("tick_ms = 22\n")
    assert load(env={"PUSHREACH_CONFIG": str(a)}).tick_ms == 11
    assert load("--config", str(b), env={"PUSHREACH_CONFIG": str(a)}).tick_ms == 22


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("true", True), ("YES", True), ("0", False), ("False", False), ("no", False)],
)
def test_bool_env_values(text: str, expected: bool) -> None:
    assert load(env={"PUSHREACH_INSECURE": text}).insecure is expected


def test_bad_bool_env_value() -> None:
    with pytest.raises(ConfigError, match=r"insecure='maybe' \(from PUSHREACH_INSECURE\)"):
        load(env={"PUSHREACH_INSECURE": "maybe"})


def test_bad_int_env_value() -> None:
    with pytest.raises(ConfigError, match="tick_ms='fast' .*PUSHREACH_TICK_MS.*integer"):
        load(env={"PUSHREACH_TICK_MS": "fast"})


def test_case_insensitive_enums() -> None:
    s = load(env={"PUSHREACH_LOG_LEVEL": "debug", "PUSHREACH_SMS_PROVIDER": "Tencent"})
    assert (s.log_level, s.sms_provider) == ("DEBUG", "tencent")
    assert load("--log-level", "warning").log_level == "WARNING"


# --- TOML -----------------------------------------------------------------------------------


def test_toml_with_table(tmp_path: Path) -> None:
    path = write(tmp_path, '[pushreach]\nmin_delay_seconds = 10\nsms_provider = "tencent"\n')
    s = load("--config", path)
    assert (s.min_delay_seconds, s.sms_provider) == (10, "tencent")


def test_toml_without_table(tmp_path: Path) -> None:
    path = write(tmp_path, 'min_delay_seconds = 10\nrate_limit_time_zone = "UTC"\n')
    s = load("--config", path)
    assert (s.min_delay_seconds, s.rate_limit_time_zone) == (10, "UTC")


def test_toml_int_accepted_for_float(tmp_path: Path) -> None:
    path = write(tmp_path, "shutdown_grace_seconds = 3\n")
    assert load("--config", path).shutdown_grace_seconds == 3.0


def test_toml_same_key_in_table_and_top_level(tmp_path: Path) -> None:
    path = write(tmp_path, "tick_ms = 20\n[pushreach]\ntick_ms = 30\n")
    with pytest.raises(ConfigError, match="tick_ms.*both"):
        load("--config", path)


def test_toml_unknown_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[pushreach]\nmin_delay = 10\n")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) min_delay"):
        load("--config", path)


def test_toml_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, 'min_delay_seconds = "ten"\n')
    with pytest.raises(ConfigError, match=r"min_delay_seconds='ten' \(from config file .*\): must be an integer"):
        load("--config", path)
    path = write(tmp_path, "listen = 50051\n")
    with pytest.raises(ConfigError, match="listen=50051.*must be a string"):
        load("--config", path)
    path = write(tmp_path, "tick_ms = true\n")
    with pytest.raises(ConfigError, match="tick_ms=True.*integer"):
        load("--config", path)


def test_bad_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "min_delay_seconds = = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load("--config", path)


def test_missing_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load("--config", str(tmp_path / "nope.toml"))


# --- validation -----------------------------------------------------------------------------


def test_error_message_names_setting_value_and_source() -> None:
    with pytest.raises(ConfigError) as info:
        load(env={"PUSHREACH_MIN_DELAY_SECONDS": "0"})
    assert str(info.value) == (
        "min_delay_seconds=0 (from PUSHREACH_MIN_DELAY_SECONDS): must be between 1 and 259200"
    )
    assert isinstance(info.value, ValueError)


def test_error_names_flag_as_source() -> None:
    with pytest.raises(ConfigError, match=r"\(from --tick-ms\)"):
        load("--tick-ms", "5")


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--min-delay-seconds", "0"),
        ("--min-delay-seconds", "259201"),
        ("--tick-ms", "9"),
        ("--tick-ms", "1001"),
        ("--shutdown-grace-seconds", "-1"),
        ("--shutdown-grace-seconds", "301"),
        ("--shutdown-grace-seconds", "nan"),
        ("--sms-receipt-poll-seconds", "-1"),
        ("--listen", "127.0.0.1"),
        ("--listen", "127.0.0.1:70000"),
        ("--listen", "::1:50051"),
        ("--listen", ":50051"),
        ("--metrics-listen", "localhost"),
        ("--sms-receipt-listen", "x:y"),
        ("--db", ""),
        ("--rate-limit-time-zone", "Mars/Olympus"),
        ("--rate-limit-time-zone", "../etc/passwd"),
        ("--tencent-sms-endpoint", "ftp://sms.example.com"),
        ("--tencent-sms-endpoint", "https://sms.example.com/path"),
        ("--tencent-sms-endpoint", "https://sms.example.com:99999"),
        ("--tls-cert", "/no/such/cert.pem"),
        ("--hms-endpoint", "push-api.cloud.huawei.com"),
        ("--hms-token-endpoint", "ftp://oauth.example.com/token"),
        ("--xiaomi-endpoint", "https://api.example.com:99999"),
        ("--oppo-endpoint", "https://api.example.com/?q=1"),
        ("--vivo-endpoint", ""),
        ("--honor-endpoint", "http://push.example.com"),
    ],
)
def test_invalid_values_rejected(flag: str, value: str) -> None:
    setting = flag[2:].replace("-", "_")
    with pytest.raises(ConfigError, match=rf"^{setting}=.*\(from {flag}\)"):
        load(flag, value)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--min-delay-seconds", "1"),
        ("--min-delay-seconds", "259200"),
        ("--tick-ms", "10"),
        ("--tick-ms", "1000"),
        ("--shutdown-grace-seconds", "0"),
        ("--shutdown-grace-seconds", "300"),
        ("--listen", "[::1]:0"),
        ("--listen", "localhost:50051"),
        ("--metrics-listen", "0.0.0.0:9090"),
        ("--sms-receipt-listen", "[::1]:8080"),
        ("--rate-limit-time-zone", "UTC"),
        ("--tencent-sms-endpoint", "sms.tencentcloudapi.com"),
        ("--tencent-sms-endpoint", "http://127.0.0.1:8080"),
        ("--tencent-sms-endpoint", "https://sms.example.com:8443/"),
        ("--hms-endpoint", "http://127.0.0.1:8088"),
        ("--hms-token-endpoint", "http://127.0.0.1:8088/oauth2/v3/token"),
        ("--honor-token-endpoint", "https://iam.developer.honor.com/auth/token"),
        ("--xiaomi-endpoint", "https://api.xmpush.global.xiaomi.com"),
        ("--oppo-endpoint", "https://api-intl.push.oppomobile.com/"),
    ],
)
def test_valid_boundaries_accepted(flag: str, value: str) -> None:
    load(flag, value)


def test_admin_token_length_and_redaction() -> None:
    assert load(env={"PUSHREACH_ADMIN_TOKEN": TOKEN}).admin_token == TOKEN
    with pytest.raises(ConfigError) as info:
        load("--admin-token", "short-secret")
    assert "admin_token=<redacted> (from --admin-token)" in str(info.value)
    assert "short-secret" not in str(info.value)


def test_master_key_validation_and_redaction() -> None:
    assert load(env={"PUSHREACH_MASTER_KEY": MASTER_KEY}).master_key == MASTER_KEY
    bad = base64.b64encode(b"k" * 16).decode()
    with pytest.raises(ConfigError) as info:
        load(env={"PUSHREACH_MASTER_KEY": bad})
    message = str(info.value)
    assert "master_key=<redacted> (from PUSHREACH_MASTER_KEY)" in message and "32 bytes" in message
    assert bad not in message


def test_repr_hides_secrets() -> None:
    s = load(env={"PUSHREACH_ADMIN_TOKEN": TOKEN, "PUSHREACH_MASTER_KEY": MASTER_KEY})
    text = repr(s)
    assert TOKEN not in text and MASTER_KEY not in text
    assert "admin_token" not in text and "master_key=" not in text
    assert "min_delay_seconds=300" in text  # ordinary fields still shown


def test_tls_needs_cert_and_key_together(tmp_path: Path) -> None:
    cert, key, ca = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    for p in (cert, key, ca):
        p.write_text("pem")
    with pytest.raises(ConfigError, match="tls_cert=.*needs tls_key"):
        load("--tls-cert", str(cert))
    with pytest.raises(ConfigError, match="tls_key=.*needs tls_cert"):
        load("--tls-key", str(key))
    with pytest.raises(ConfigError, match="tls_client_ca=.*needs tls_cert and tls_key"):
        load("--tls-client-ca", str(ca))
    s = load("--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(ca))
    assert s.tls_enabled


def test_non_loopback_without_tls_refused() -> None:
    with pytest.raises(ConfigError, match=r"listen='0.0.0.0:50051' \(from --listen\).*insecure"):
        load("--listen", "0.0.0.0:50051")
    with pytest.raises(ConfigError, match="PUSHREACH_LISTEN"):
        load(env={"PUSHREACH_LISTEN": "[::]:50051"})


def test_non_loopback_allowed_with_insecure_or_tls(tmp_path: Path) -> None:
    assert load("--listen", "0.0.0.0:50051", "--insecure").insecure
    assert load("--listen", "10.0.0.5:1", env={"PUSHREACH_INSECURE": "true"}).listen == "10.0.0.5:1"
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("pem")
    key.write_text("pem")
    assert load("--listen", "0.0.0.0:443", "--tls-cert", str(cert), "--tls-key", str(key)).tls_enabled


def test_http_listen_follows_the_same_rule(tmp_path: Path) -> None:
    assert load().http_listen == ""  # off by default
    assert load("--http-listen", "127.0.0.1:8080").http_listen == "127.0.0.1:8080"
    with pytest.raises(ConfigError, match=r"http_listen='0.0.0.0:8080' \(from --http-listen\).*plaintext HTTP"):
        load("--http-listen", "0.0.0.0:8080")
    with pytest.raises(ConfigError, match="http_listen=.*PUSHREACH_HTTP_LISTEN.*host:port"):
        load(env={"PUSHREACH_HTTP_LISTEN": "8080"})
    assert load("--http-listen", "0.0.0.0:8080", "--insecure").insecure
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("pem")
    key.write_text("pem")
    assert load("--http-listen", "[::]:8443", "--tls-cert", str(cert), "--tls-key", str(key)).tls_enabled
    with pytest.raises(ConfigError, match="http_max_body_bytes=10 .*between 1024"):
        load("--http-max-body-bytes", "10")
    with pytest.raises(ConfigError, match="http_token_rate_limit=-1"):
        load(env={"PUSHREACH_HTTP_TOKEN_RATE_LIMIT": "-1"})


# --- helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("[::1]:50051", ("::1", 50051)),
        ("example.com:0", ("example.com", 0)),
        ("[::]:443", ("::", 443)),
    ],
)
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["", "host", "host:", ":1", "::1:50051", "[::1]", "[x]:1", "h:-1", "h:١"])
def test_parse_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_host_port(text)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_hostile_input_and_retention_settings() -> None:
    s = load()
    assert (s.app_rate_limit, s.app_rate_burst, s.auth_failure_limit, s.retention_days) == (2000.0, 0, 10, 90)
    s = load(
        "--app-rate-limit", "0", "--app-rate-burst", "50", "--auth-failure-limit", "0",
        env={"PUSHREACH_RETENTION_DAYS": "0"},
    )
    assert (s.app_rate_limit, s.app_rate_burst, s.auth_failure_limit, s.retention_days) == (0.0, 50, 0, 0)
    for flag, value in [
        ("--app-rate-limit", "-1"),
        ("--app-rate-burst", "-5"),
        ("--auth-failure-limit", "1001"),
        ("--retention-days", "-1"),
    ]:
        setting = flag[2:].replace("-", "_")
        with pytest.raises(ConfigError, match=rf"^{setting}=.*\(from {flag}\)"):
            load(flag, value)


def test_a_time_zone_name_too_long_for_a_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="rate_limit_time_zone=.*IANA"):
        load("--rate-limit-time-zone", "0" * 300)


def test_the_receipt_listener_follows_the_same_rule_as_listen() -> None:
    assert load("--sms-receipt-listen", "127.0.0.1:8090").sms_receipt_listen == "127.0.0.1:8090"
    with pytest.raises(
        ConfigError, match=r"sms_receipt_listen='0.0.0.0:8090' \(from --sms-receipt-listen\).*loopback.*TLS"
    ):
        load("--sms-receipt-listen", "0.0.0.0:8090")
    assert load("--sms-receipt-listen", "0.0.0.0:8090", "--insecure").sms_receipt_listen == "0.0.0.0:8090"

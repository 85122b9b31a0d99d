import socket

import pytest
from pushreachd.sms.provider import (
    SmsBatch,
    SmsCredentials,
    SmsErrorKind,
    SmsProviderError,
)
from pushreachd.sms.tencent import TencentSmsProvider, classify, parse_endpoint


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (None, ("https", None)),
        ("sms.tencentcloudapi.com", ("https", "sms.tencentcloudapi.com")),
        ("http://127.0.0.1:8089", ("http", "127.0.0.1:8089")),
        ("https://sms.ap-guangzhou.tencentcloudapi.com/", ("https", "sms.ap-guangzhou.tencentcloudapi.com")),
    ],
)
def test_parse_endpoint(endpoint: str | None, expected: tuple[str, str | None]) -> None:
    assert parse_endpoint(endpoint) == expected


@pytest.mark.parametrize("endpoint", ["ftp://host", "http://host:1/some/path"])
def test_parse_endpoint_refuses(endpoint: str) -> None:
    with pytest.raises(ValueError):
        parse_endpoint(endpoint)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("InternalError", SmsErrorKind.TRANSIENT),
        ("InternalError.Timeout", SmsErrorKind.TRANSIENT),
        ("RequestLimitExceeded", SmsErrorKind.TRANSIENT),
        ("RequestLimitExceeded.UinLimitExceeded", SmsErrorKind.TRANSIENT),
        ("ServerNetworkError", SmsErrorKind.UNKNOWN),  # non-200 from a gateway: may have passed it on
        ("ClientNetworkError", SmsErrorKind.UNKNOWN),
        ("LimitExceeded.AppDailyLimit", SmsErrorKind.RATE_LIMITED),
        ("LimitExceeded.PhoneNumberCountLimit", SmsErrorKind.PERMANENT),
        ("AuthFailure.SignatureFailure", SmsErrorKind.PERMANENT),
        ("FailedOperation.TemplateIncorrectOrUnapproved", SmsErrorKind.PERMANENT),
        ("InvalidParameterValue.IncorrectPhoneNumber", SmsErrorKind.PERMANENT),
        ("UnauthorizedOperation.SmsSdkAppIdVerifyFail", SmsErrorKind.PERMANENT),
    ],
)
def test_classify(code: str, kind: SmsErrorKind) -> None:
    assert classify(code) is kind


@pytest.mark.parametrize("credentials", [None, SmsCredentials("", ""), SmsCredentials("id", "")])
async def test_missing_credentials_is_permanent(credentials: SmsCredentials | None) -> None:
    provider = TencentSmsProvider(endpoint="http://127.0.0.1:9")
    batch = SmsBatch("app", credentials, "1400000001", "Sign", "T1", (), ("+8613800000001",))
    with pytest.raises(SmsProviderError) as info:
        await provider.send(batch)
    assert info.value.kind is SmsErrorKind.PERMANENT
    assert info.value.code == "MissingCredentials"
    await provider.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connection_refused_is_transient() -> None:
    provider = TencentSmsProvider(endpoint=f"http://127.0.0.1:{_closed_port()}", timeout=2.0)
    batch = SmsBatch("app", SmsCredentials("id", "key"), "1400000001", "Sign", "T1", (), ("+8613800000001",))
    with pytest.raises(SmsProviderError) as info:
        await provider.send(batch)
    assert (info.value.kind, info.value.code) == (SmsErrorKind.TRANSIENT, "NetworkError")
    await provider.close()


async def test_unresolvable_host_is_transient() -> None:
    provider = TencentSmsProvider(endpoint="http://no-such-host.invalid:8089", timeout=2.0)
    batch = SmsBatch("app", SmsCredentials("id", "key"), "1400000001", "Sign", "T1", (), ("+8613800000001",))
    with pytest.raises(SmsProviderError) as info:
        await provider.send(batch)
    assert (info.value.kind, info.value.code) == (SmsErrorKind.TRANSIENT, "NetworkError")
    await provider.close()

"""The emulator's command-line hook: flags become faults, the URL is printed."""

import argparse
import asyncio

import pytest
from pushreachd.sms import emulator as emulator_mod
from pushreachd.sms.provider import (
    SmsBatch,
    SmsCredentials,
    SmsErrorKind,
    SmsProviderError,
)
from pushreachd.sms.tencent import TencentSmsProvider


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    emulator_mod.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults() -> None:
    args = parse()
    assert args.listen == "127.0.0.1:8089" and args.credentials == [] and args.fail_next == 0


async def test_serve_from_args(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("--listen", "127.0.0.1:0", "--credentials", "AKID1:key1", "--credentials", "AKID2:key2",
                 "--fail-next", "1", "--fail-code", "InternalError.Timeout")
    task = asyncio.create_task(emulator_mod.serve_from_args(args))
    try:
        url = ""
        for _ in range(200):
            out = capsys.readouterr().out
            if "listening on" in out:
                url = out.split("listening on ", 1)[1].split()[0]
                break
            await asyncio.sleep(0.01)
        assert url.startswith("http://127.0.0.1:")
        provider = TencentSmsProvider(endpoint=url)
        batch = SmsBatch("a", SmsCredentials("AKID2", "key2"), "1400000001", "S", "T", (), ("+8613800000001",))
        with pytest.raises(SmsProviderError) as info:
            await provider.send(batch)
        assert (info.value.kind, info.value.code) == (SmsErrorKind.TRANSIENT, "InternalError.Timeout")
        assert (await provider.send(batch))[0].code == "Ok"
        await provider.close()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

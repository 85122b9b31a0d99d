"""`pushreach serve` as an operator runs it: a real process, signals, bad settings."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

PUSHREACH = [sys.executable, "-m", "pushreachd"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_serving(target: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "server did not become SERVING"
            time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_gracefully(tmp_path: Path, sig: signal.Signals) -> None:
    target = f"127.0.0.1:{_free_port()}"
    proc = subprocess.Popen(
        [*PUSHREACH, "serve", "--listen", target, "--db", str(tmp_path / "p.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_serving(target)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "shutting down" in out


def test_apps_create_prints_credentials_as_json(tmp_path: Path) -> None:
    out = subprocess.run(
        [*PUSHREACH, "apps", "create", "demo", "--db", str(tmp_path / "p.db"), "--json"],
        capture_output=True, text=True, check=True,
    ).stdout
    creds = json.loads(out)
    assert set(creds) == {"access_id", "secret_key"}
    assert len(creds["access_id"]) == 10 and len(creds["secret_key"]) == 32
    assert (tmp_path / "p.db.key").stat().st_mode & 0o077 == 0  # master key created private


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--min-delay-seconds", "0"], {}, "min_delay_seconds"),
        ([], {"PUSHREACH_TICK_MS": "5"}, "PUSHREACH_TICK_MS"),
        (["--listen", "0.0.0.0:50051"], {}, "TLS"),
    ],
)
def test_bad_settings_stop_the_start_with_a_clear_message(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    import os

    result = subprocess.run(
        [*PUSHREACH, "serve", "--db", str(tmp_path / "p.db"), *args],
        capture_output=True, text=True, timeout=30, env={**os.environ, **env},
    )
    assert result.returncode == 2
    assert message in result.stderr

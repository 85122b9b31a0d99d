"""Processes a benchmark needs: the pushreach server, the no-op server, the SMS emulator.

Every process is started by its id and stopped by its id (terminate, then kill after a grace).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent
# The per-app request budget (2,000 req/s by default) is switched off: the benchmarks measure
# what the service can take, not the budget an operator chose.
# This checkout's server and client come first on the path, so that a worktree benchmarks its
# own code, not the editable install's.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("", "server", "clients/python")),
       "PUSHREACH_LOG_LEVEL": "WARNING", "PUSHREACH_APP_RATE_LIMIT": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_serving(target: str, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> float:
    """Poll grpc.health.v1 until SERVING; returns the monotonic time it answered.

    A fresh channel per attempt: one channel kept across refused connects would back off
    (1 s, 1.6 s, 2.6 s, ...) and report the server ready seconds late.
    """
    host, _, port = target.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before serving")
        try:
            socket.create_connection((host, int(port)), timeout=0.5).close()
        except OSError:
            time.sleep(0.01)
            continue
        with grpc.insecure_channel(target) as channel:
            try:
                r = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic()
            except grpc.RpcError:
                pass
        time.sleep(0.01)
    raise TimeoutError(f"{target} not serving after {timeout}s")


def stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def create_app(db: Path, name: str = "bench") -> tuple[str, str]:
    out = subprocess.run(
        [PY, "-m", "pushreachd", "apps", "create", name, "--db", str(db), "--json"],
        env=ENV, check=True, capture_output=True, text=True, timeout=60,
    ).stdout
    d = json.loads(out)
    return d["access_id"], d["secret_key"]


def set_sms_credentials(db: Path, access_id: str, secret_id: str, secret_key: str) -> None:
    subprocess.run(
        [PY, "-m", "pushreachd", "apps", "set-sms-credentials", access_id,
         "--secret-id", secret_id, "--secret-key", secret_key, "--db", str(db)],
        env=ENV, check=True, capture_output=True, text=True, timeout=60,
    )


def spawn_pushreach(db: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PY, "-m", "pushreachd", "serve", "--db", str(db), "--listen", f"127.0.0.1:{port}",
         "--min-delay-seconds", "1", "--log-level", "WARNING", *extra],
        env=ENV, stdout=subprocess.DEVNULL, stderr=open(db.with_suffix(".log"), "ab"),
    )


@contextmanager
def pushreach(db: Path, *extra: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = spawn_pushreach(db, port, *extra)
    try:
        target = f"127.0.0.1:{port}"
        wait_serving(target, proc)
        yield target, proc
    finally:
        stop(proc)


@contextmanager
def noop_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen([PY, "-m", "bench.noop", f"127.0.0.1:{port}"], env=ENV)
    try:
        target = f"127.0.0.1:{port}"
        wait_serving(target, proc)
        yield target, proc
    finally:
        stop(proc)


@contextmanager
def sms_emulator(secret_id: str, secret_key: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [PY, "-m", "pushreachd", "sms-emulator", "--listen", f"127.0.0.1:{port}",
         "--credentials", f"{secret_id}:{secret_key}", "--report-delay", "3600"],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)

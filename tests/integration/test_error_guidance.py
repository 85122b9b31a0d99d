"""Errors that say what to do, on real processes and real servers: a port in use, a second
instance on one SQLite file, a CLI with no server, and TLS servers the CLI must be told about."""

from __future__ import annotations

import datetime
import ipaddress
import re
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pushreach import Client

from tests.harness import Running, start_service, test_settings
from tests.integration.test_cli_ops import cli, credentials
from tests.integration.test_serve_process import _free_port, _wait_serving
from tests.integration.test_tls import Issued, _issue

PUSHREACH = [sys.executable, "-m", "pushreachd"]


def _serve(tmp_path: Path, *argv: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PUSHREACH, "serve", "--master-key-file", str(tmp_path / "k"), *argv],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs,  # type: ignore[call-overload]
    )


@pytest.mark.timeout(300)
def test_a_port_in_use_is_one_line_naming_the_address_and_listen(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        proc = _serve(tmp_path, "--listen", address, "--db", str(tmp_path / "p.db"))
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"listen={address}" in lines[0] and "address already in use" in lines[0]
    assert "--listen" in lines[0] and "PUSHREACH_LISTEN" in lines[0]
    assert out == ""  # nothing started, nothing served
    assert not (tmp_path / "p.db").exists()


@pytest.mark.timeout(300)
def test_a_metrics_port_in_use_names_metrics_listen(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        proc = _serve(tmp_path, "--listen", "127.0.0.1:0", "--metrics-listen", address, "--db", str(tmp_path / "p.db"))
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert f"metrics_listen={address}" in err and "--metrics-listen" in err and "Traceback" not in err


@pytest.mark.timeout(600)
def test_a_second_serve_on_one_sqlite_file_refuses_naming_the_first(tmp_path: Path) -> None:
    db = str(tmp_path / "p.db")
    first_address = f"127.0.0.1:{_free_port()}"
    first = _serve(tmp_path, "--listen", first_address, "--db", db)
    try:
        _wait_serving(first_address, timeout=120)
        second = _serve(tmp_path, "--listen", "127.0.0.1:0", "--db", db)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert len(err.strip().splitlines()) == 1, err
        assert f"database {db} is in use by pushreach serve on {first_address} (pid {first.pid}," in err
        assert "--db" in err and out == ""
        assert first.poll() is None  # the first one is untouched
    finally:
        first.terminate()
        first.communicate(timeout=120)
    assert first.returncode == 0
    # Once the first has stopped, the database is free again.
    again = f"127.0.0.1:{_free_port()}"
    third = _serve(tmp_path, "--listen", again, "--db", db)
    try:
        _wait_serving(again, timeout=120)
    finally:
        third.terminate()
        third.communicate(timeout=120)


async def test_the_cli_with_no_server_names_the_address_and_server(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{closed.getsockname()[1]}"
        code, _, err = await cli(capsys, "stats", "--server", address, "--access-id", "1", "--secret-key", "s",
                                 "--timeout", "3")
    assert code == 1
    assert "UNAVAILABLE" in err and f"could not reach the service at {address}" in err
    assert "--server" in err and "PUSHREACH_SERVER" in err and "--tls" in err


# -- TLS servers whose certificate names another host, or that want client certificates ------


def _server_cert_for(name: str, ca: Issued) -> Issued:
    """A server certificate whose only name is `name` (not 127.0.0.1)."""
    issued = _issue("pushreach server", ca)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(issued.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(issued.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("10.0.0.5"))]),
                       critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(issued.key_pem, cert.public_bytes(serialization.Encoding.PEM), issued.key, cert)


@pytest.mark.timeout(300)
async def test_cli_and_client_reach_a_mutual_tls_server_named_otherwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = _issue("pushreach test CA", ca=True)
    server = _server_cert_for("pushreach.internal", ca)
    client = _issue("caller service", ca)
    files = {"ca.pem": ca.cert_pem, "server.pem": server.cert_pem, "server.key": server.key_pem,
             "client.pem": client.cert_pem, "client.key": client.key_pem}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    p = {name: str(tmp_path / name) for name in files}
    settings = test_settings(tmp_path, tls_cert=p["server.pem"], tls_key=p["server.key"], tls_client_ca=p["ca.pem"])
    running = await start_service(settings)
    try:
        _, conn = await credentials(running)
        conn += ["--timeout", "30"]
        common = ["stats", *conn, "--ca-file", p["ca.pem"]]

        # The certificate does not name 127.0.0.1: the hint says which options to check.
        code, _, err = await cli(capsys, *common, "--cert-file", p["client.pem"], "--key-file", p["client.key"])
        assert code == 1 and "UNAVAILABLE" in err and "--server-name" in err and "--cert-file" in err

        # The right name but no client certificate: refused by the server.
        code, _, err = await cli(capsys, *common, "--server-name", "pushreach.internal")
        assert code == 1 and "--cert-file" in err

        code, out, err = await cli(capsys, *common, "--server-name", "pushreach.internal",
                                   "--cert-file", p["client.pem"], "--key-file", p["client.key"])
        assert code == 0, err
        assert re.search(r"^pushes\s+0$", out, re.M), out

        code, _, err = await cli(capsys, *common, "--cert-file", p["client.pem"])
        assert code == 2 and "--key-file" in err

        # The same through pushreach.Client, from files and from PEM bytes.
        access_id, secret = conn[conn.index("--access-id") + 1], conn[conn.index("--secret-key") + 1]
        for ca_src, cert_src, key_src in ((p["ca.pem"], p["client.pem"], p["client.key"]),
                                          (ca.cert_pem, client.cert_pem, client.key_pem)):
            async with Client(running.target, access_id, secret, ca=ca_src, cert=cert_src, key=key_src,
                              server_name="pushreach.internal", timeout=30) as c:
                assert (await c.get_statistics()).push_count == 0
    finally:
        await running.close()
        await running.service.stop()


def test_client_refuses_half_a_client_certificate() -> None:
    with pytest.raises(ValueError, match="cert and key"):
        Client("127.0.0.1:1", "a", "s", cert=b"x")
    with pytest.raises(ValueError, match="either credentials or ca/cert/key"):
        Client("127.0.0.1:1", "a", "s", ca=b"x", credentials=object())  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", ["13800138001x", "abc", "1380013"])
async def test_bind_phone_answers_the_accepted_forms(server: Running, raw: str) -> None:
    caller = await server.new_app()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await caller.bind("tok", raw)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    bad = error_details_pb2.BadRequest()
    assert any(d.Unpack(bad) for d in status.details if d.Is(error_details_pb2.BadRequest.DESCRIPTOR))
    (violation,) = bad.field_violations
    assert violation.field == "phone_number"
    assert "E.164" in violation.description and "bare mainland number" in violation.description

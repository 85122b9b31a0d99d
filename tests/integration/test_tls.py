"""Transport security on a real server: TLS, mutual TLS, and refusing plaintext on the network.

Certificates are made here with `cryptography`: a CA, a server certificate for 127.0.0.1 and
localhost, and client certificates from that CA and from a stranger CA. (Settings-level checks,
e.g. non-loopback listen without TLS, are in tests/unit/test_config.py.)
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pushreach.v1 import device_pb2, device_pb2_grpc
from pushreachd import cli

from tests.harness import basic, start_service, test_settings


@dataclass
class Issued:
    key_pem: bytes
    cert_pem: bytes
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _issue(
    name: str, issuer: Issued | None = None, *, ca: bool = False, server: bool = False
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Issued(key_pem, cert.public_bytes(serialization.Encoding.PEM), key, cert)


@dataclass
class Pki:
    ca: Issued
    server: Issued
    client: Issued
    stranger_client: Issued
    cert_file: str
    key_file: str
    ca_file: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d: Path = tmp_path_factory.mktemp("pki")
    ca = _issue("pushreach test CA", ca=True)
    server = _issue("pushreach server", ca, server=True)
    client = _issue("caller service", ca)
    stranger_ca = _issue("some other CA", ca=True)
    stranger = _issue("caller service", stranger_ca)
    (d / "server.pem").write_bytes(server.cert_pem)
    (d / "server.key").write_bytes(server.key_pem)
    (d / "ca.pem").write_bytes(ca.cert_pem)
    return Pki(ca, server, client, stranger, str(d / "server.pem"), str(d / "server.key"), str(d / "ca.pem"))


async def _healthy(channel: grpc.aio.Channel) -> bool:
    try:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), exc
        return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_tls_server_talks_to_clients_that_trust_its_ca_only(tmp_path: Path, pki: Pki) -> None:
    running = await start_service(test_settings(tmp_path, tls_cert=pki.cert_file, tls_key=pki.key_file))
    port = running.service.port
    try:
        for host in ("127.0.0.1", "localhost"):  # both names are in the certificate
            creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem)
            async with grpc.aio.secure_channel(f"{host}:{port}", creds) as channel:
                assert await _healthy(channel)
                # App RPCs work over it too, with Basic credentials inside the encrypted stream.
                app, secret = await running.service.apps.create_app("tls")
                got = await device_pb2_grpc.DeviceServiceStub(channel).BindPhone(
                    device_pb2.BindPhoneRequest(token="t", phone_number="13800138000"),
                    metadata=basic(app.access_id, secret),
                )
                assert got.device.phone_number == "+8613800138000"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
            assert not await _healthy(plain)
        stranger = grpc.ssl_channel_credentials(root_certificates=pki.stranger_client.cert_pem)
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", stranger) as untrusting:
            assert not await _healthy(untrusting)  # the client does not trust this server
    finally:
        await running.close()
        await running.service.stop()


async def test_mutual_tls_needs_a_client_certificate_from_the_ca(tmp_path: Path, pki: Pki) -> None:
    settings = test_settings(tmp_path, tls_cert=pki.cert_file, tls_key=pki.key_file, tls_client_ca=pki.ca_file)
    running = await start_service(settings)
    target = f"localhost:{running.service.port}"
    try:
        no_cert = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem)
        async with grpc.aio.secure_channel(target, no_cert) as channel:
            assert not await _healthy(channel)
        wrong_ca = grpc.ssl_channel_credentials(
            pki.ca.cert_pem, pki.stranger_client.key_pem, pki.stranger_client.cert_pem
        )
        async with grpc.aio.secure_channel(target, wrong_ca) as channel:
            assert not await _healthy(channel)
        good = grpc.ssl_channel_credentials(pki.ca.cert_pem, pki.client.key_pem, pki.client.cert_pem)
        async with grpc.aio.secure_channel(target, good) as channel:
            assert await _healthy(channel)
        async with grpc.aio.insecure_channel(target) as plain:
            assert not await _healthy(plain)
    finally:
        await running.close()
        await running.service.stop()


def test_serve_refuses_a_network_address_without_tls(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = cli.main(["serve", "--listen", "0.0.0.0:50051", "--db", str(tmp_path / "x.db")])
    assert code == 2
    assert "listen='0.0.0.0:50051'" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()  # refused before touching anything


async def test_http_surface_serves_tls_with_the_same_certificate(tmp_path: Path, pki: Pki) -> None:
    import ssl

    import httpx

    settings = test_settings(tmp_path, tls_cert=pki.cert_file, tls_key=pki.key_file, http_listen="127.0.0.1:0")
    running = await start_service(settings)
    port = running.service.http_port
    try:
        trusting = ssl.create_default_context(cadata=pki.ca.cert_pem.decode())
        async with httpx.AsyncClient(verify=trusting) as client:
            health = await client.get(f"https://localhost:{port}/healthz")
            assert health.status_code == 200 and health.json() == {"status": "SERVING"}
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.TransportError):
                await plain.get(f"http://127.0.0.1:{port}/healthz")
    finally:
        await running.close()
        await running.service.stop()

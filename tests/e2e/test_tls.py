"""TLS and mTLS on a real server process: the Python client and the CLI connect with a CA and client certificate.

A throw-away CA signs the server's certificate (for 127.0.0.1) and a client
certificate; a second CA signs an impostor's client certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import Client
from client.cli import cli
from tests.e2e.conftest import Stack

SCHEMA = {"fields": [{"name": "n", "type": "integer"}], "rows": 10, "seed": 3}


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _key_pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _issue(directory: Path, name: str, *, ca: tuple[Any, x509.Certificate] | None, server: bool = False) -> Pair:
    """A key and certificate: a self-signed CA when `ca` is None, else a leaf signed by it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca[1].subject if ca else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif ca is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = builder.sign(ca[0] if ca else key, hashes.SHA256())
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(_key_pem(key))
    pair.key.chmod(0o600)
    return pair


def _load(pair: Pair) -> tuple[Any, x509.Certificate]:
    key = serialization.load_pem_private_key(pair.key.read_bytes(), None)
    return key, x509.load_pem_x509_certificate(pair.cert.read_bytes())


@dataclass(frozen=True)
class Pki:
    ca: Pair
    server: Pair
    client: Pair
    impostor: Pair


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = _issue(directory, "ca", ca=None)
    other_ca = _issue(directory, "other-ca", ca=None)
    return Pki(
        ca=ca,
        server=_issue(directory, "server", ca=_load(ca), server=True),
        client=_issue(directory, "client", ca=_load(ca)),
        impostor=_issue(directory, "impostor", ca=_load(other_ca)),
    )


def _health(target: str, credentials: grpc.ChannelCredentials | None, timeout: float = 5) -> int:
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
    return int(reply.status)


def _start(stack_factory: Any, pki: Pki, *, mtls: bool) -> Stack:
    settings = {"DATAMILL_TLS_CERT_FILE": str(pki.server.cert), "DATAMILL_TLS_KEY_FILE": str(pki.server.key)}
    if mtls:
        settings["DATAMILL_TLS_CLIENT_CA_FILE"] = str(pki.ca.cert)
    stack: Stack = stack_factory(settings=settings, wait=False)
    ca = pki.ca.cert.read_bytes()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=pki.client.key.read_bytes() if mtls else None,
        certificate_chain=pki.client.cert.read_bytes() if mtls else None,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if _health(stack.target, credentials, timeout=2) == health_pb2.HealthCheckResponse.SERVING:
                return stack
        except grpc.RpcError:
            pass
        assert stack.server.alive(), stack.dump_logs()
        assert time.monotonic() < deadline, stack.dump_logs()
        time.sleep(0.2)


def _refused(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as exc:
        _health(target, credentials, timeout=3)
    return exc.value.code()


@pytest.fixture
def tls_stack(stack_factory: Any, pki: Pki) -> Stack:
    return _start(stack_factory, pki, mtls=False)


@pytest.fixture
def mtls_stack(stack_factory: Any, pki: Pki) -> Stack:
    return _start(stack_factory, pki, mtls=True)


def test_tls_serves_clients_that_trust_its_ca_and_only_over_tls(tls_stack: Stack, pki: Pki) -> None:
    with Client.connect(tls_stack.target, root_certificates=pki.ca.cert.read_bytes()) as client:
        job = client.generate("over_tls", schema=SCHEMA)
        assert client.wait(job.id).state == 3  # SUCCEEDED, watched over TLS
    assert _refused(tls_stack.target, None) is grpc.StatusCode.UNAVAILABLE  # plaintext
    # TLS, but trusting only the system's CAs: the throw-away CA is not among them.
    assert _refused(tls_stack.target, grpc.ssl_channel_credentials()) is grpc.StatusCode.UNAVAILABLE


def test_mtls_needs_a_client_certificate_from_its_ca(mtls_stack: Stack, pki: Pki) -> None:
    ca = pki.ca.cert.read_bytes()
    with Client.connect(
        mtls_stack.target,
        root_certificates=ca,
        certificate_chain=pki.client.cert.read_bytes(),
        private_key=pki.client.key.read_bytes(),
    ) as client:
        assert client.get_job(client.generate("over_mtls", schema=SCHEMA).id).id
    no_certificate = grpc.ssl_channel_credentials(root_certificates=ca)
    assert _refused(mtls_stack.target, no_certificate) is grpc.StatusCode.UNAVAILABLE
    impostor = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=pki.impostor.key.read_bytes(),
        certificate_chain=pki.impostor.cert.read_bytes(),
    )
    assert _refused(mtls_stack.target, impostor) is grpc.StatusCode.UNAVAILABLE


def test_the_cli_connects_with_a_ca_and_a_client_certificate(mtls_stack: Stack, pki: Pki) -> None:
    base = ["--target", mtls_stack.target, "--ca-cert", str(pki.ca.cert), "--json"]
    client_cert = ["--client-cert", str(pki.client.cert), "--client-key", str(pki.client.key)]
    result = CliRunner().invoke(cli, [*base, *client_cert, "datasets", "list"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert all(json.loads(line) is not None for line in result.output.splitlines() if line.strip())
    refused = CliRunner().invoke(cli, [*base, "--timeout", "3", "datasets", "list"])
    assert refused.exit_code != 0
    half = CliRunner().invoke(cli, [*base, "--client-cert", str(pki.client.cert), "datasets", "list"])
    assert half.exit_code == 2 and "go together" in half.output


def test_a_server_with_unreadable_tls_files_stops_at_once_naming_them(stack_factory: Any, tmp_path: Path) -> None:
    stack: Stack = stack_factory(
        settings={"DATAMILL_TLS_CERT_FILE": str(tmp_path / "nope.crt"), "DATAMILL_TLS_KEY_FILE": str(tmp_path / "k")},
        wait=False,
    )
    deadline = time.monotonic() + 30
    while stack.server.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not stack.server.alive()
    assert "DATAMILL_TLS_CERT_FILE cannot be read" in stack.server.log_tail()

"""The cluster CA, host certificates (checked by a real mutual-TLS gRPC handshake), CSRs, join
and client certificates, what a certificate says its holder is, and join tokens."""

from __future__ import annotations

import datetime
import socket
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.pki import make_pki
from zsd.cluster import pki
from zsd.errors import InvalidArgument, Unavailable


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.create_ca("prod", "uid-1")


def test_host_cert_verifies_and_names_the_host(ca: pki.KeyPair) -> None:
    host = pki.issue_host_cert(ca, host_name="node1", host_id=7, addresses=["127.0.0.1", "::1"])
    assert pki.verify_host_cert(ca.cert_pem, host.cert_pem) == ("node1", 7)


def test_cert_of_another_ca_is_rejected(ca: pki.KeyPair) -> None:
    other = pki.create_ca("prod", "uid-2")
    stranger = pki.issue_host_cert(other, host_name="node1", host_id=1, addresses=[])
    with pytest.raises(InvalidArgument) as info:
        pki.verify_host_cert(ca.cert_pem, stranger.cert_pem)
    assert info.value.field == "certificate"


def test_bad_address_is_named(ca: pki.KeyPair) -> None:
    with pytest.raises(InvalidArgument, match="'node-x' is not an IP address"):
        pki.issue_host_cert(ca, host_name="n", host_id=1, addresses=["node-x"])


def test_join_token_round_trip_and_checks(ca: pki.KeyPair) -> None:
    token = pki.new_join_token(cluster_uid="uid-1", ca=ca)
    parsed = pki.parse_join_token(token.encode())
    assert parsed == token
    pki.check_join_token(
        parsed, cluster_uid="uid-1", ca_cert_pem=ca.cert_pem, secret_hashes=[token.secret_hash]
    )
    with pytest.raises(InvalidArgument, match="another cluster"):
        pki.check_join_token(
            parsed, cluster_uid="uid-9", ca_cert_pem=ca.cert_pem, secret_hashes=[token.secret_hash]
        )
    with pytest.raises(InvalidArgument, match="no longer"):
        pki.check_join_token(parsed, cluster_uid="uid-1", ca_cert_pem=ca.cert_pem, secret_hashes=["0" * 64])
    with pytest.raises(Unavailable, match="does not match"):
        pki.check_join_token(
            parsed,
            cluster_uid="uid-1",
            ca_cert_pem=pki.create_ca("x", "uid-1").cert_pem,
            secret_hashes=[token.secret_hash],
        )


@pytest.mark.parametrize("text", ["hello", "zsdjoin1.!!!", "zsdjoin1.e30"])
def test_damaged_tokens(text: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        pki.parse_join_token(text)
    assert info.value.field == "token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_mutual_tls_between_hosts(ca: pki.KeyPair) -> None:
    server_pair = pki.issue_host_cert(ca, host_name="node1", host_id=1, addresses=["127.0.0.1"])
    client_pair = pki.issue_host_cert(ca, host_name="node2", host_id=2, addresses=["127.0.0.1"])
    outsider = pki.issue_host_cert(pki.create_ca("evil", "uid-x"), host_name="node3", host_id=3, addresses=[])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = _free_port()
    creds = grpc.ssl_server_credentials(
        [(server_pair.key_pem, server_pair.cert_pem)], root_certificates=ca.cert_pem, require_client_auth=True
    )
    server.add_secure_port(f"127.0.0.1:{port}", creds)
    server.start()
    try:

        def check(pair: pki.KeyPair) -> grpc.StatusCode | None:
            creds = grpc.ssl_channel_credentials(
                root_certificates=ca.cert_pem, private_key=pair.key_pem, certificate_chain=pair.cert_pem
            )
            with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
                try:
                    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                except grpc.RpcError as e:
                    return e.code()  # type: ignore[attr-defined,no-any-return]
                return None

        assert check(client_pair) is None
        assert check(outsider) == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)


def _public_der(key: object) -> bytes:
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_signed_csr_keeps_the_joiners_key_and_takes_the_clusters_names(ca: pki.KeyPair) -> None:
    key_pem, csr_pem = pki.make_key_and_csr("evil", ["10.0.0.9"])
    cert_pem = pki.sign_host_csr(ca, csr_pem, host_name="node2", host_id=2, addresses=["192.0.2.2"])
    assert pki.verify_host_cert(ca.cert_pem, cert_pem) == ("node2", 2)
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert _public_der(cert.public_key()) == _public_der(key.public_key())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["node2"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["192.0.2.2"]
    assert pki.cert_identity(cert_pem) == pki.CertIdentity(kind=pki.CertKind.HOST, name="node2", host_id=2)


def test_a_csr_must_be_signed_by_its_key_and_be_p256(ca: pki.KeyPair) -> None:
    _, csr_pem = pki.make_key_and_csr("node2", [])
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    tampered = x509.load_der_x509_csr(der.replace(b"node2", b"node3")).public_bytes(
        serialization.Encoding.PEM
    )
    p384 = ec.generate_private_key(ec.SECP384R1())
    other_curve = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node2")]))
        .sign(p384, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    for bad, message in [
        (b"garbage", "not a PEM certificate signing request"),
        (tampered, "signature is not valid"),
        (other_curve, "EC P-256"),
    ]:
        with pytest.raises(InvalidArgument, match=message) as info:
            pki.sign_host_csr(ca, bad, host_name="node2", host_id=2, addresses=[])
        assert info.value.field == "csr_pem"


def test_join_cert_lives_ten_minutes_is_client_only_and_names_no_host(ca: pki.KeyPair) -> None:
    pair = pki.issue_join_cert(ca, "node2")
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_pem))
    now = datetime.datetime.now(datetime.UTC)
    assert (
        now + datetime.timedelta(minutes=9) < cert.not_valid_after_utc <= now + datetime.timedelta(minutes=10)
    )
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert pki.cert_identity(pair.cert_pem) == pki.CertIdentity(kind=pki.CertKind.JOIN, name="node2")


def test_client_cert_is_client_only_and_its_name_is_checked(ca: pki.KeyPair) -> None:
    pair = pki.issue_client_cert(ca, "alice@ops")
    assert pki.cert_identity(pair.cert_pem) == pki.CertIdentity(kind=pki.CertKind.CLIENT, name="alice@ops")
    cert = x509.load_pem_x509_certificate(pair.cert_pem)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    for bad in ["", "-x", "a b", "x" * 65]:
        with pytest.raises(InvalidArgument) as info:
            pki.issue_client_cert(ca, bad)
        assert info.value.field == "name"


def test_cert_identity_refuses_certificates_zsd_did_not_issue(tmp_path: Path) -> None:
    foreign = make_pki(tmp_path)  # CN only: no OU says what it is
    for pem, message in [
        (foreign.client_cert.read_bytes(), "not a zsd host, join or client certificate"),
        (b"garbage", "not a PEM certificate"),
    ]:
        with pytest.raises(InvalidArgument, match=message) as info:
            pki.cert_identity(pem)
        assert info.value.field == "certificate"

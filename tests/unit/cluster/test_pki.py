"""The cluster CA, host certificates (checked by a real mutual-TLS gRPC handshake) and join tokens."""

from __future__ import annotations

import socket
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

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

"""Who is calling: the kind and name in the caller's certificate, and refusals that
say what was needed; against a fake context and a real mutual-TLS grpc.aio server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.pki import make_pki
from tests.unit.api.fake_context import FakeServicerContext
from zsd.api import peerauth
from zsd.cluster import pki
from zsd.cluster.pki import CertIdentity, CertKind
from zsd.errors import PermissionDenied

HOST, JOIN, CLIENT = CertKind.HOST, CertKind.JOIN, CertKind.CLIENT


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.create_ca("prod", "uid-1")


@pytest.fixture(scope="module")
def certs(ca: pki.KeyPair) -> dict[CertKind, pki.KeyPair]:
    return {
        HOST: pki.issue_host_cert(ca, host_name="node2", host_id=2, addresses=["127.0.0.1"]),
        JOIN: pki.issue_join_cert(ca, "node3"),
        CLIENT: pki.issue_client_cert(ca, "alice"),
    }


def _refusal(context: peerauth.AuthContextSource, *kinds: CertKind) -> PermissionDenied:
    with pytest.raises(PermissionDenied) as info:
        peerauth.require(context, *kinds)
    assert (info.value.reason, info.value.field) == ("PEER_NOT_ALLOWED", "certificate")
    return info.value


def test_caller_names_each_kind(certs: dict[CertKind, pki.KeyPair]) -> None:
    assert peerauth.caller(FakeServicerContext.tls(certs[HOST].cert_pem)) == CertIdentity(
        kind=HOST, name="node2", host_id=2
    )
    assert peerauth.caller(FakeServicerContext.tls(certs[JOIN].cert_pem)) == CertIdentity(
        kind=JOIN, name="node3"
    )
    assert peerauth.caller(FakeServicerContext.tls(certs[CLIENT].cert_pem)) == CertIdentity(
        kind=CLIENT, name="alice"
    )


def test_require_admits_the_listed_kinds_only(certs: dict[CertKind, pki.KeyPair]) -> None:
    join = FakeServicerContext.tls(certs[JOIN].cert_pem)
    assert peerauth.require(join, HOST, JOIN).name == "node3"
    error = _refusal(join, HOST)
    assert "needs a host certificate" in error.message and "join certificate for 'node3'" in error.message
    assert "host or join" in _refusal(FakeServicerContext.tls(certs[CLIENT].cert_pem), HOST, JOIN).message


def test_no_certificate_or_a_foreign_one_is_refused(tmp_path: Path) -> None:
    assert "presented none" in _refusal(FakeServicerContext.unix(), HOST).message
    foreign = FakeServicerContext.tls(make_pki(tmp_path).client_cert.read_bytes())
    assert "not a zsd host, join or client certificate" in _refusal(foreign, HOST, CLIENT).message


def test_the_fake_hands_out_copies() -> None:
    fake = FakeServicerContext.tls(b"pem")
    fake.auth_context()["x509_pem_cert"].clear()
    assert fake.auth_context()["x509_pem_cert"] == [b"pem"]


class _Recorder(health_pb2_grpc.HealthServicer):
    """Keeps each call's auth context and who peerauth says the caller is (or its
    refusal); answers SERVING."""

    def __init__(self) -> None:
        self.contexts: list[dict[str, list[bytes]]] = []
        self.callers: list[CertIdentity | PermissionDenied] = []

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> health_pb2.HealthCheckResponse:
        self.contexts.append({k: list(v) for k, v in context.auth_context().items()})
        try:
            self.callers.append(peerauth.caller(context))
        except PermissionDenied as e:
            self.callers.append(e)
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def _serve_and_call(
    ca: pki.KeyPair, server_cert: pki.KeyPair, clients: list[pki.KeyPair | None], socket: Path
) -> _Recorder:
    recorder = _Recorder()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(recorder, server)
    credentials = grpc.ssl_server_credentials(
        [(server_cert.key_pem, server_cert.cert_pem)], root_certificates=ca.cert_pem, require_client_auth=True
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.add_insecure_port(f"unix:{socket}")
    await server.start()
    try:
        for client in clients:
            if client is None:
                channel = grpc.aio.insecure_channel(f"unix:{socket}")
            else:
                channel = grpc.aio.secure_channel(
                    f"127.0.0.1:{port}",
                    grpc.ssl_channel_credentials(ca.cert_pem, client.key_pem, client.cert_pem),
                    options=[("grpc.ssl_target_name_override", "node1")],
                )
            async with channel:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    finally:
        await server.stop(0)
    return recorder


def test_real_mutual_tls_calls_and_the_fake_agree(
    ca: pki.KeyPair, certs: dict[CertKind, pki.KeyPair], tmp_path: Path
) -> None:
    server_cert = pki.issue_host_cert(ca, host_name="node1", host_id=1, addresses=["127.0.0.1"])
    order = [HOST, JOIN, CLIENT]
    recorded = asyncio.run(
        _serve_and_call(ca, server_cert, [*(certs[k] for k in order), None], tmp_path / "api.sock")
    )
    fakes = [*(FakeServicerContext.tls(certs[k].cert_pem) for k in order), FakeServicerContext.unix()]
    for auth, fake in zip(recorded.contexts, fakes, strict=True):
        # The fake holds what grpc fills in and zsd reads, with grpc's values.
        assert {k: auth[k] for k in fake.auth_context()} == fake.auth_context()
    *identities, unix = recorded.callers
    assert identities == [peerauth.caller(fake) for fake in fakes[:3]]
    assert [i.kind for i in identities if isinstance(i, CertIdentity)] == order
    assert isinstance(unix, PermissionDenied) and unix.reason == "PEER_NOT_ALLOWED"

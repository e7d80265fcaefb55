"""`zsd cluster join` against a leader played by a fake PeerService on a real
mutual-TLS grpc.aio server (127.0.0.1, real certificates): what it sends and with
which certificate, retries through missing and stale hints, refusals before any
call, and that nothing is written unless the leader admitted the host."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import pytest
import trio

from zsd.api import peerauth
from zsd.api.gateway import abort
from zsd.cluster import bootstrap, pki
from zsd.cluster.join import JoinResult, JoinSpec, join_cluster
from zsd.cluster.leaderhint import HINT_FILE, LeaderHint, write_hint
from zsd.cluster.pki import CertIdentity, CertKind
from zsd.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
    ZsdError,
)
from zsd.paths import Paths
from zsd.peer.v1 import peer_pb2, peer_pb2_grpc
from zsd.util.apithread import Bridge, open_api_thread

CLUSTER = "cluster-uid-1"
ADDRESS = "192.0.2.2"


@dataclass
class FakePeerService(peer_pb2_grpc.PeerServiceServicer):
    """The leader's Join, played: checks the caller holds a join certificate, records
    what it got, fails with the queued errors first, then admits as ``host_id``."""

    ca: pki.KeyPair
    host_id: int = 5
    errors: list[ZsdError] = field(default_factory=list)
    mangle: Callable[[peer_pb2.JoinResponse], peer_pb2.JoinResponse] = lambda r: r
    received: list[tuple[peer_pb2.JoinRequest, CertIdentity]] = field(default_factory=list)

    async def Join(
        self, request: peer_pb2.JoinRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> peer_pb2.JoinResponse:
        try:
            caller = peerauth.require(context, CertKind.JOIN)
        except ZsdError as e:
            await abort(context, e)
        self.received.append((request, caller))
        if self.errors:
            await abort(context, self.errors.pop(0))
        cert = pki.sign_host_csr(
            self.ca,
            request.csr_pem,
            host_name=request.host_name,
            host_id=self.host_id,
            addresses=[request.address],
        )
        return self.mangle(
            peer_pb2.JoinResponse(
                host_id=self.host_id, cert_pem=cert, ca_pem=self.ca.cert_pem, cluster_uid=CLUSTER
            )
        )


@dataclass
class Leader:
    hint: LeaderHint
    peer: FakePeerService


@dataclass
class World:
    shared: Path
    paths: Paths
    ca: pki.KeyPair
    token: str
    leader: Leader

    def spec(self, **changes: object) -> JoinSpec:
        doc: dict[str, object] = {
            "shared_dir": self.shared,
            "token": self.token,
            "host_name": "h2",
            "address": ADDRESS,
            "timeout": 20.0,
        }
        return JoinSpec(**{**doc, **changes})  # type: ignore[arg-type]

    async def join(self, spec: JoinSpec | None = None, **kwargs: object) -> JoinResult:
        return await trio.to_thread.run_sync(
            lambda: join_cluster(spec or self.spec(), paths=self.paths, **kwargs)  # type: ignore[arg-type]
        )

    def written(self) -> list[str]:
        state = self.paths.state_dir
        return sorted(str(p.relative_to(state)) for p in state.rglob("*")) if state.exists() else []


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.create_ca("prod", CLUSTER)


async def _serve(bridge: Bridge, ca: pki.KeyPair, peer: FakePeerService) -> tuple[grpc.aio.Server, int]:
    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        peer_pb2_grpc.add_PeerServiceServicer_to_server(peer, server)
        own = pki.issue_host_cert(ca, host_name="h1", host_id=1, addresses=["127.0.0.1"])
        credentials = grpc.ssl_server_credentials(
            [(own.key_pem, own.cert_pem)], root_certificates=ca.cert_pem, require_client_auth=True
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        return server, port

    return await bridge.to_asyncio.run(start())


@pytest.fixture
async def world(tmp_path: Path, ca: pki.KeyPair) -> AsyncIterator[World]:
    shared = tmp_path / "shared"
    layout = bootstrap.SharedLayout(root=shared)
    shared.mkdir()
    info = bootstrap.ClusterInfo(uid=CLUSTER, name="prod", created=0.0, lockspace="zsd", io_timeout=10)
    layout.marker.write_text(json.dumps(asdict(info)))
    layout.ca_cert.write_bytes(ca.cert_pem)
    layout.ca_key.write_bytes(ca.key_pem)
    token = pki.new_join_token(cluster_uid=CLUSTER, ca=ca).encode()
    async with open_api_thread("test-leader") as bridge:
        peer = FakePeerService(ca=ca)
        server, port = await _serve(bridge, ca, peer)
        hint = LeaderHint(host_id=1, host_name="h1", endpoint=f"127.0.0.1:{port}", epoch=3)
        write_hint(shared, hint)
        try:
            yield World(
                shared=shared,
                paths=Paths(root=tmp_path / "h2"),
                ca=ca,
                token=token,
                leader=Leader(hint=hint, peer=peer),
            )
        finally:
            await bridge.to_asyncio.run(server.stop(0))


async def test_join_asks_the_leader_with_a_join_cert_then_writes_membership(world: World) -> None:
    result = await world.join()
    assert result == JoinResult(host_id=5, cluster_uid=CLUSTER, cluster_name="prod", leader="h1")
    [(request, caller)] = world.leader.peer.received
    host_uid = json.loads(world.paths.identity_file.read_text())["uid"]
    assert (request.token, request.host_name, request.address, request.host_uid) == (
        world.token,
        "h2",
        ADDRESS,
        host_uid,
    )
    assert caller == CertIdentity(kind=CertKind.JOIN, name="h2")
    assert bootstrap.load_membership(world.paths) == bootstrap.Membership(
        cluster_uid=CLUSTER, host_id=5, shared_dir=str(world.shared)
    )
    cert, key, ca_copy = bootstrap.tls_paths(world.paths)
    assert pki.verify_host_cert(world.ca.cert_pem, cert.read_bytes()) == ("h2", 5)
    assert ca_copy.read_bytes() == world.ca.cert_pem and key.stat().st_mode & 0o777 == 0o600
    # The written pair works: the new member reaches the leader as a host.
    assert pki.cert_identity(cert.read_bytes()) == CertIdentity(kind=CertKind.HOST, name="h2", host_id=5)


async def test_no_hint_then_a_stale_one_then_the_leader(world: World) -> None:
    (world.shared / HINT_FILE).unlink()
    with socket.socket() as closed:  # a port nobody listens on: a leader that is gone
        closed.bind(("127.0.0.1", 0))
        stale = LeaderHint(
            host_id=3, host_name="h3", endpoint=f"127.0.0.1:{closed.getsockname()[1]}", epoch=2
        )
    world.leader.peer.errors.append(Unavailable("this host is not the leader", reason="NOT_LEADER"))
    hints = [stale, world.leader.hint]
    lines: list[str] = []

    def sleep(_seconds: float) -> None:
        if hints:
            write_hint(world.shared, hints.pop(0))

    result = await world.join(sleep=sleep, progress=lines.append)
    assert result.host_id == 5 and not hints
    assert any("no leader has announced itself" in line for line in lines)
    assert any("asking the leader h3" in line for line in lines)
    # The NOT_LEADER answer was retried with the same request (same key, same id).
    first, second = world.leader.peer.received
    assert first[0] == second[0]


async def test_a_refusal_by_the_leader_ends_the_join_and_writes_nothing(world: World) -> None:
    world.leader.peer.errors.append(InvalidArgument("the join token is not valid", field="token"))
    with pytest.raises(InvalidArgument) as info:
        await world.join()
    assert info.value.field == "token"
    assert world.written() == ["host.json"]  # only the identity, kept for the next try


async def test_giving_up_after_the_timeout(world: World) -> None:
    (world.shared / HINT_FILE).unlink()
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with pytest.raises(Unavailable) as info:
        await world.join(world.spec(timeout=5), clock=lambda: now[0], sleep=sleep)
    assert info.value.reason == "JOIN_TIMEOUT" and "no leader has announced itself" in info.value.message
    assert 5.0 <= now[0] <= 6.0 and world.leader.peer.received == []
    assert world.written() == ["host.json"]


async def test_refusals_before_any_call(world: World, ca: pki.KeyPair) -> None:
    other = pki.new_join_token(cluster_uid="cluster-uid-2", ca=ca).encode()
    cases: list[tuple[JoinSpec, type[ZsdError], str]] = [
        (world.spec(token=other), InvalidArgument, "token"),
        (world.spec(token="hello"), InvalidArgument, "token"),
        (world.spec(address=""), InvalidArgument, "host.address"),
        (world.spec(shared_dir=world.shared.parent), FailedPrecondition, "shared_dir"),
    ]
    for spec, error, where in cases:
        with pytest.raises(error) as info:
            await world.join(spec)
        assert info.value.field == where, spec
    # ca.pem replaced (same cluster uid, another CA): the token's pin catches it.
    bootstrap.SharedLayout(root=world.shared).ca_cert.write_bytes(pki.create_ca("prod", CLUSTER).cert_pem)
    with pytest.raises(FailedPrecondition) as info:
        await world.join()
    assert info.value.reason == "CA_MISMATCH"
    assert world.leader.peer.received == []


async def test_a_member_does_not_join_again(world: World) -> None:
    await world.join()
    with pytest.raises(AlreadyExists, match="already a cluster member"):
        await world.join()
    assert len(world.leader.peer.received) == 1


def _mangled(how: str, r: peer_pb2.JoinResponse) -> peer_pb2.JoinResponse:
    if how == "other-cluster":
        return peer_pb2.JoinResponse(
            host_id=r.host_id, cert_pem=r.cert_pem, ca_pem=r.ca_pem, cluster_uid="cluster-uid-2"
        )
    if how == "other-id":
        return peer_pb2.JoinResponse(
            host_id=r.host_id + 1, cert_pem=r.cert_pem, ca_pem=r.ca_pem, cluster_uid=r.cluster_uid
        )
    if how == "other-ca":
        stranger = pki.create_ca("prod", CLUSTER)
        cert = pki.issue_host_cert(stranger, host_name="h2", host_id=r.host_id, addresses=[]).cert_pem
        return peer_pb2.JoinResponse(host_id=r.host_id, cert_pem=cert, ca_pem=r.ca_pem, cluster_uid=CLUSTER)
    return peer_pb2.JoinResponse(host_id=r.host_id, cert_pem=b"junk", ca_pem=r.ca_pem, cluster_uid=CLUSTER)


@pytest.mark.parametrize("how", ["other-cluster", "other-id", "other-key", "other-ca", "junk-cert"])
async def test_an_answer_that_is_not_for_this_host_writes_nothing(world: World, how: str) -> None:
    if how == "other-key":
        # Signed by the right CA for the right name and id, but not for this host's key.
        def other_key(r: peer_pb2.JoinResponse) -> peer_pb2.JoinResponse:
            cert = pki.issue_host_cert(world.ca, host_name="h2", host_id=r.host_id, addresses=[]).cert_pem
            return peer_pb2.JoinResponse(
                host_id=r.host_id, cert_pem=cert, ca_pem=r.ca_pem, cluster_uid=CLUSTER
            )

        world.leader.peer.mangle = other_key
    else:
        world.leader.peer.mangle = lambda r: _mangled(how, r)
    with pytest.raises(FailedPrecondition) as info:
        await world.join()
    assert info.value.reason == "JOIN_MISMATCH"
    assert world.written() == ["host.json"]

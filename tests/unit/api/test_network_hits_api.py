"""NetworkService.ListSecurityGroupHits over real gRPC (a Unix socket, the API thread
bridged to trio) on a leader with a real cluster.db, the other hosts faked behind
the peer calls: the sum over the hosts running the group's NICs, each missing host
with why (slow, failing, gone by gossip), one host's counters, the per-host
breakdown, a call another host forwarded, and refusals naming the field."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
import trio
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.unit.api.served import api_server
from tests.unit.compute.test_leader_placement import Cluster
from zsd.api.gateway import Gateway
from zsd.api.grouphits import member_states
from zsd.api.router import FORWARDED, LeaderView, Router
from zsd.api.services.network import NetworkService
from zsd.cluster.store import Create
from zsd.compute.records import KIND_VM, VmRecord
from zsd.errors import Unavailable, ZsdError
from zsd.network.catalog import NetworkCatalog
from zsd.network.nics import KIND_NIC, NicRecord
from zsd.network.secgroups.hostmodel import DefaultRef, HitCount, MembersRuleRef, RuleRef
from zsd.network.secgroups.rules import Direction
from zsd.util.apithread import open_api_thread
from zsd.v1 import network_pb2, network_pb2_grpc

R = TypeVar("R", bound=Message)
IN, OUT = Direction.INGRESS, Direction.EGRESS
Hit = network_pb2.SecurityGroupHit
METHOD = "/zsd.v1.NetworkService/ListSecurityGroupHits"


@dataclass
class FakePeers:
    """The other members behind ``Peers.call``: each answers with its canned
    response, never (``slow``) or with an error (``failing``); calls are recorded."""

    answers: dict[str, network_pb2.ListSecurityGroupHitsResponse] = field(default_factory=dict)
    slow: set[str] = field(default_factory=set)
    failing: dict[str, ZsdError] = field(default_factory=dict)
    calls: list[tuple[str, str, Message, float | None]] = field(default_factory=list)

    async def call(
        self,
        host: str,
        method: str,
        request: Message,
        response_type: Callable[[bytes], R],
        *,
        timeout: float | None,
    ) -> R:
        self.calls.append((host, method, request, timeout))
        if host in self.slow:
            await asyncio.sleep(3600)
        if host in self.failing:
            raise self.failing[host]
        # Through bytes, as the channel would: the caller's type is what it gets.
        return response_type(self.answers[host].SerializeToString())

    def asked(self) -> list[str]:
        return sorted(host for host, *_ in self.calls)


def test_the_fake_peers_answer_hang_fail_and_record() -> None:
    answer = network_pb2.ListSecurityGroupHitsResponse(hits=[Hit(priority=0, direction="ingress", packets=1)])
    peers = FakePeers(answers={"a": answer}, slow={"b"}, failing={"c": Unavailable("down")})
    request = network_pb2.ListSecurityGroupHitsRequest(name="securityGroups/web")

    async def main() -> None:
        got = await peers.call(
            "a", METHOD, request, network_pb2.ListSecurityGroupHitsResponse.FromString, timeout=1
        )
        assert got == answer and got is not answer
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                peers.call(
                    "b", METHOD, request, network_pb2.ListSecurityGroupHitsResponse.FromString, timeout=1
                ),
                0.01,
            )
        with pytest.raises(Unavailable):
            await peers.call(
                "c", METHOD, request, network_pb2.ListSecurityGroupHitsResponse.FromString, timeout=1
            )

    asyncio.run(main())
    assert peers.calls == [("a", METHOD, request, 1), ("b", METHOD, request, 1), ("c", METHOD, request, 1)]


# h0 serves the calls and counts web itself; h1 answers; h2 is stuck; h3 refuses the
# connection; h4 is dead by gossip; h5 runs no NIC of web.
H0_COUNTS = (
    HitCount(ref=RuleRef(group="web", priority=0, direction=IN), packets=5, bytes=500),
    HitCount(ref=MembersRuleRef(group="web", direction=OUT), packets=1, bytes=100),
    HitCount(ref=RuleRef(group="db", priority=0, direction=IN), packets=9, bytes=900),
    HitCount(ref=DefaultRef(port="zt0000000001", direction=IN), packets=7, bytes=700),
)
H1_HITS = [
    Hit(priority=0, direction="ingress", packets=7, bytes=700),
    Hit(priority=1, direction="egress", packets=2),
]


@dataclass
class Served:
    peers: FakePeers
    stub: network_pb2_grpc.NetworkServiceStub

    async def hits(
        self,
        *,
        host: str = "",
        by_host: bool = False,
        timeout: float = 10,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> network_pb2.ListSecurityGroupHitsResponse:
        request = network_pb2.ListSecurityGroupHitsRequest(
            name="securityGroups/web", host=host, by_host=by_host
        )
        return await trio.to_thread.run_sync(
            lambda: self.stub.ListSecurityGroupHits(request, timeout=timeout, metadata=metadata)
        )


async def setup_cluster(cluster: Cluster) -> NetworkCatalog:
    catalog = NetworkCatalog(cluster.control)
    for host in ("h0", "h1", "h2", "h3", "h5"):
        await cluster.host(host)
    await cluster.host("h4", dead=True)
    await catalog.create_security_group("web", [], allow_members=True, description="", request_id="g1")
    await catalog.create_security_group("db", [], allow_members=True, description="", request_id="g2")
    nics = [("n0", "h0", ("web", "db")), ("n1", "h1", ("web",)), ("n2", "h2", ("web",))]
    nics += [("n3", "h3", ("web",)), ("n4", "h4", ("web",)), ("n5", "h5", ("db",))]
    for name, host, groups in nics:
        record = NicRecord(name=name, port_group="lab/web", mac="", security_groups=groups)
        vm = VmRecord(name=f"v-{name}", uid=name, host=host, vcpus=1, memory_mib=64, nics=(name,))
        await cluster.commit(
            [
                Create(kind=KIND_NIC, name=name, data=record.encode()),
                Create(kind=KIND_VM, name=vm.name, data=vm.encode()),
            ]
        )
    return catalog


@asynccontextmanager
async def serve(tmp_path: Path, cluster: Cluster, *, host_deadline: float = 0.3) -> AsyncIterator[Served]:
    catalog = await setup_cluster(cluster)
    peers = FakePeers(
        answers={"h1": network_pb2.ListSecurityGroupHitsResponse(hits=H1_HITS, hosts=["hosts/h1"])},
        slow={"h2"},
        failing={"h3": Unavailable("host h3 is unreachable: connection refused", reason="HOST_UNREACHABLE")},
    )

    async def hits() -> tuple[HitCount, ...]:
        return H0_COUNTS

    def members() -> Mapping[str, str]:
        return member_states(cluster.control.host_views())

    socket = tmp_path / "zsd.sock"
    async with open_api_thread("test-api") as bridge:
        router = Router(
            leader=lambda: LeaderView(leading=True, target=None, epoch=1),
            channel=lambda _target: grpc.aio.insecure_channel("unused"),
            wait_revision=lambda _rev, _timeout: asyncio.sleep(0),
        )
        service = NetworkService(
            gateway=Gateway(bridge.to_trio),
            catalog=catalog,
            router=router,
            host="h0",
            hits=hits,
            peers=peers,
            members=members,
            host_deadline=host_deadline,
        )

        register = partial(network_pb2_grpc.add_NetworkServiceServicer_to_server, service)
        async with api_server(bridge, socket, register) as channel:
            yield Served(peers=peers, stub=network_pb2_grpc.NetworkServiceStub(channel))


@pytest.fixture
async def served(tmp_path: Path, cluster: Cluster) -> AsyncIterator[Served]:
    async with serve(tmp_path, cluster) as s:
        yield s


def missing(response: network_pb2.ListSecurityGroupHitsResponse) -> list[tuple[str, str]]:
    return [(m.host, m.reason) for m in response.missing_hosts]


async def test_the_sum_is_over_every_host_running_the_groups_nics_and_says_who_is_missing(
    served: Served,
) -> None:
    start = time.monotonic()
    response = await served.hits()
    assert time.monotonic() - start < 3  # the stuck host cost its deadline, once
    assert list(response.hits) == [
        Hit(priority=-1, direction="egress", packets=1, bytes=100),
        Hit(priority=0, direction="ingress", packets=12, bytes=1200),
        Hit(priority=1, direction="egress", packets=2),
    ]
    assert list(response.hosts) == ["hosts/h0", "hosts/h1"]
    assert missing(response) == [
        ("hosts/h2", "DEADLINE_EXCEEDED"),
        ("hosts/h3", "HOST_UNREACHABLE"),
        ("hosts/h4", "HOST_DOWN"),
    ]
    assert [m.message for m in response.missing_hosts] == [
        "no answer within 0.3 s",
        "host h3 is unreachable: connection refused",
        "gossip says host h4 is dead",
    ]
    assert list(response.host_hits) == []  # only when asked for
    # h0 counted itself; h4 (dead) and h5 (no NIC of web) were not asked; each host
    # asked was asked for its own counters, within the per-host deadline.
    assert served.peers.asked() == ["h1", "h2", "h3"]
    for host, method, request, timeout in served.peers.calls:
        assert method == METHOD
        assert request == network_pb2.ListSecurityGroupHitsRequest(
            name="securityGroups/web", host=f"hosts/{host}"
        )
        assert timeout is not None and 0 < timeout <= 0.3


async def test_by_host_lists_each_counted_hosts_own_counters(served: Served) -> None:
    response = await served.hits(by_host=True)
    assert [(h.host, list(h.hits)) for h in response.host_hits] == [
        (
            "hosts/h0",
            [
                Hit(priority=-1, direction="egress", packets=1, bytes=100),
                Hit(priority=0, direction="ingress", packets=5, bytes=500),
            ],
        ),
        ("hosts/h1", H1_HITS),
    ]


async def test_one_hosts_counters_whether_or_not_it_runs_the_groups_nics(served: Served) -> None:
    one = await served.hits(host="hosts/h1")
    assert (list(one.hits), list(one.hosts), missing(one)) == (H1_HITS, ["hosts/h1"], [])
    assert served.peers.asked() == ["h1"]
    mine = await served.hits(host="hosts/-")
    assert list(mine.hosts) == ["hosts/h0"] and [h.packets for h in mine.hits] == [1, 5]
    assert (await served.hits(host="hosts/h0")).hits == mine.hits
    served.peers.answers["h5"] = network_pb2.ListSecurityGroupHitsResponse(hosts=["hosts/h5"])
    assert list((await served.hits(host="hosts/h5")).hosts) == ["hosts/h5"]
    # A host that cannot answer is missing, the call answered.
    stuck = await served.hits(host="hosts/h2")
    assert (list(stuck.hits), list(stuck.hosts), missing(stuck)) == (
        [],
        [],
        [("hosts/h2", "DEADLINE_EXCEEDED")],
    )
    assert missing(await served.hits(host="hosts/h4")) == [("hosts/h4", "HOST_DOWN")]
    assert served.peers.asked() == ["h1", "h2", "h5"]


async def test_a_host_that_could_not_read_its_own_counters_is_missing_with_its_reason(served: Served) -> None:
    busy = network_pb2.UncountedHost(
        host="hosts/h1", reason="DEADLINE_EXCEEDED", message="no answer within 0.1 s"
    )
    served.peers.answers["h1"] = network_pb2.ListSecurityGroupHitsResponse(missing_hosts=[busy])
    served.peers.answers["h5"] = network_pb2.ListSecurityGroupHitsResponse(hosts=["hosts/h0"])
    response = await served.hits()
    assert list(response.hosts) == ["hosts/h0"]  # not h1's zeros
    assert response.missing_hosts[0] == busy
    assert missing(await served.hits(host="hosts/h5")) == [("hosts/h5", "WRONG_HOST")]


async def test_a_forwarded_call_answers_with_this_hosts_counters_only(served: Served) -> None:
    response = await served.hits(metadata=((FORWARDED, "1"),))
    assert list(response.hosts) == ["hosts/h0"] and missing(response) == []
    assert [h.packets for h in response.hits] == [1, 5]
    assert served.peers.calls == []  # never asked further


async def test_a_call_with_less_time_than_the_per_host_deadline_still_answers(
    tmp_path: Path, cluster: Cluster
) -> None:
    async with serve(tmp_path, cluster, host_deadline=30) as s:
        response = await s.hits(timeout=1.5)
    assert list(response.hosts) == ["hosts/h0", "hosts/h1"]
    assert missing(response)[0] == ("hosts/h2", "DEADLINE_EXCEEDED")
    assert all(timeout is not None and timeout <= 1.5 for *_, timeout in s.peers.calls)


def details(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return error.code(), info.reason, info.metadata.get("field", "")


@pytest.mark.parametrize(
    ("name", "host", "expected"),
    [
        ("securityGroups/web", "h1", (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NAME", "host")),
        ("securityGroups/web", "hosts/Bad_Name", (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NAME", "host")),
        ("securityGroups/web", "hosts/nope", (grpc.StatusCode.NOT_FOUND, "HOST_NOT_FOUND", "host")),
        ("securityGroups/nope", "", (grpc.StatusCode.NOT_FOUND, "SECURITY_GROUP_NOT_FOUND", "name")),
        ("web", "", (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_NAME", "name")),
    ],
)
async def test_refusals_name_the_field(
    served: Served, name: str, host: str, expected: tuple[grpc.StatusCode, str, str]
) -> None:
    request = network_pb2.ListSecurityGroupHitsRequest(name=name, host=host)
    with pytest.raises(grpc.RpcError) as refused:
        await trio.to_thread.run_sync(lambda: served.stub.ListSecurityGroupHits(request, timeout=10))
    assert details(refused.value) == expected
    assert served.peers.calls == []

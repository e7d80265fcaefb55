"""``zsctl secgroup hits`` against a fake NetworkService on a Unix socket: the
cluster sum with the hosts counted and missing, ``--by-host``, ``--host``, JSON
output, and the exit status when no host answered."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from zsd.v1 import network_pb2

from .zsctl_runner import Result, zsctl

Hit = network_pb2.SecurityGroupHit
H0 = [
    Hit(priority=-1, direction="egress", packets=1, bytes=100),
    Hit(priority=0, direction="ingress", packets=5),
]
H1 = [Hit(priority=0, direction="ingress", packets=7, bytes=700)]
SUM = network_pb2.ListSecurityGroupHitsResponse(
    hits=[
        Hit(priority=-1, direction="egress", packets=1, bytes=100),
        Hit(priority=0, direction="ingress", packets=12),
    ],
    hosts=["hosts/h0", "hosts/h1"],
    missing_hosts=[
        network_pb2.UncountedHost(host="hosts/h2", reason="DEADLINE_EXCEEDED", message="no answer within 2 s")
    ],
)


class FakeNetwork:
    """Answers ListSecurityGroupHits (the only NetworkService method it serves) as
    zsd would for a cluster where h0 and h1 count the group and h2 is stuck;
    records the requests."""

    def __init__(self) -> None:
        self.requests: list[network_pb2.ListSecurityGroupHitsRequest] = []

    def ListSecurityGroupHits(
        self, request: network_pb2.ListSecurityGroupHitsRequest, context: Any
    ) -> network_pb2.ListSecurityGroupHitsResponse:
        self.requests.append(request)
        if request.host == "hosts/h1":
            return network_pb2.ListSecurityGroupHitsResponse(hits=H1, hosts=["hosts/h1"])
        if request.host == "hosts/h2":
            return network_pb2.ListSecurityGroupHitsResponse(missing_hosts=SUM.missing_hosts)
        response = network_pb2.ListSecurityGroupHitsResponse()
        response.CopyFrom(SUM)
        if request.by_host:
            response.host_hits.add(host="hosts/h0", hits=H0)
            response.host_hits.add(host="hosts/h1", hits=H1)
        return response


class Server:
    def __init__(self, address: str) -> None:
        self.address = address


@pytest.fixture
def network(tmp_path: Path) -> Iterator[tuple[Server, FakeNetwork]]:
    fake = FakeNetwork()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    method = grpc.unary_unary_rpc_method_handler(
        fake.ListSecurityGroupHits,
        request_deserializer=network_pb2.ListSecurityGroupHitsRequest.FromString,
        response_serializer=network_pb2.ListSecurityGroupHitsResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("zsd.v1.NetworkService", {"ListSecurityGroupHits": method}),)
    )
    address = f"unix:{tmp_path}/zsd.sock"
    server.add_insecure_port(address)
    server.start()
    yield Server(address), fake
    server.stop(None)


def hits(server: Server, *argv: str, output: str = "table") -> Result:
    return zsctl(None, "--endpoint", server.address, "-o", output, "secgroup", "hits", *argv)


def test_the_fake_answers_by_host() -> None:
    fake = FakeNetwork()
    request = network_pb2.ListSecurityGroupHitsRequest
    assert fake.ListSecurityGroupHits(request(name="securityGroups/web"), None) == SUM
    assert list(fake.ListSecurityGroupHits(request(host="hosts/h1"), None).hosts) == ["hosts/h1"]
    assert len(fake.ListSecurityGroupHits(request(by_host=True), None).host_hits) == 2
    assert len(fake.requests) == 3


def test_the_sum_with_the_hosts_counted_and_missing(network: tuple[Server, FakeNetwork]) -> None:
    server, fake = network
    result = hits(server, "web")
    assert result.code == 0, result.err
    assert fake.requests == [network_pb2.ListSecurityGroupHitsRequest(name="securityGroups/web")]
    assert [line.split() for line in result.out.splitlines()] == [
        ["PRIORITY", "DIRECTION", "PACKETS", "BYTES"],
        ["members", "egress", "1", "100"],
        ["0", "ingress", "12", "0"],
        ["counted", "on", "2", "hosts:", "h0,", "h1"],
        ["missing", "h2:", "DEADLINE_EXCEEDED:", "no", "answer", "within", "2", "s"],
    ]


def test_by_host_shows_each_hosts_rows(network: tuple[Server, FakeNetwork]) -> None:
    server, fake = network
    result = hits(server, "securityGroups/web", "--by-host")
    assert result.code == 0, result.err
    assert fake.requests[0].by_host
    assert [line.split() for line in result.out.splitlines()][:4] == [
        ["HOST", "PRIORITY", "DIRECTION", "PACKETS", "BYTES"],
        ["h0", "members", "egress", "1", "100"],
        ["h0", "0", "ingress", "5", "0"],
        ["h1", "0", "ingress", "7", "700"],
    ]
    assert "missing h2" in result.out


def test_one_hosts_counters(network: tuple[Server, FakeNetwork]) -> None:
    server, fake = network
    result = hits(server, "web", "--host", "h1")
    assert result.code == 0, result.err
    assert fake.requests[0].host == "hosts/h1"
    assert result.out.splitlines()[-1] == "counted on 1 host: h1"
    assert hits(server, "web", "--host", "hosts/h1").code == 0
    assert fake.requests[1].host == "hosts/h1"


def test_no_host_answering_fails(network: tuple[Server, FakeNetwork]) -> None:
    server, _ = network
    result = hits(server, "web", "--host", "h2")
    assert result.code == 1
    assert result.out.splitlines()[-2:] == [
        "counted on 0 hosts: -",
        "missing h2: DEADLINE_EXCEEDED: no answer within 2 s",
    ]


def test_json_is_the_whole_answer(network: tuple[Server, FakeNetwork]) -> None:
    server, _ = network
    result = hits(server, "web", output="json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["hosts"] == ["hosts/h0", "hosts/h1"]
    assert data["missing_hosts"] == [
        {"host": "hosts/h2", "reason": "DEADLINE_EXCEEDED", "message": "no answer within 2 s"}
    ]
    assert [(h["priority"], h["direction"], h["packets"]) for h in data["hits"]] == [
        (-1, "egress", "1"),
        (0, "ingress", "12"),
    ]
    assert data["host_hits"] == []


def test_host_and_by_host_do_not_go_together(network: tuple[Server, FakeNetwork]) -> None:
    server, fake = network
    result = hits(server, "web", "--host", "h1", "--by-host")
    assert result.code == 2 and "not allowed with argument --host" in result.err
    assert fake.requests == []

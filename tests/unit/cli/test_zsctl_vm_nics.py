"""``zsctl vm attach-nic`` / ``detach-nic`` against fake VmService and NetworkService
methods on a Unix socket: a network NIC by ``--nic nic=NAME`` (or the positional
form), a bridge NIC as before, detach by MAC or by ``--nic NAME`` (its MAC looked up),
and exactly one spelling of each asked for."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from zsd.v1 import compute_pb2, network_pb2

from .zsctl_runner import Result, zsctl

MAC = "02:00:00:00:00:0a"


class FakeApi:
    """AttachNic/DetachNic answer the VM with the NIC added/removed; GetNic knows web-0."""

    def __init__(self) -> None:
        self.requests: list[Message] = []

    def AttachNic(self, request: compute_pb2.AttachNicRequest, context: Any) -> compute_pb2.Vm:
        self.requests.append(request)
        return compute_pb2.Vm(name=request.name, nics=[request.nic])

    def DetachNic(self, request: compute_pb2.DetachNicRequest, context: Any) -> compute_pb2.Vm:
        self.requests.append(request)
        return compute_pb2.Vm(name=request.name)

    def GetNic(self, request: network_pb2.GetNicRequest, context: Any) -> network_pb2.VirtualNic:
        self.requests.append(request)
        if request.name != "nics/web-0":
            context.abort(grpc.StatusCode.NOT_FOUND, f"NIC '{request.name}' does not exist")
        return network_pb2.VirtualNic(name=request.name, mac=MAC)


def test_the_fake_answers() -> None:
    fake = FakeApi()
    nic = compute_pb2.VmNic(nic="nics/web-0")
    assert list(fake.AttachNic(compute_pb2.AttachNicRequest(name="vms/v", nic=nic), None).nics) == [nic]
    assert fake.DetachNic(compute_pb2.DetachNicRequest(name="vms/v", mac=MAC), None).name == "vms/v"
    assert fake.GetNic(network_pb2.GetNicRequest(name="nics/web-0"), None).mac == MAC
    assert len(fake.requests) == 3


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, FakeApi]]:
    fake = FakeApi()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))

    def handler(
        method: Any, request: type[Message], response: type[Message]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            method, request_deserializer=request.FromString, response_serializer=response.SerializeToString
        )

    vms = {
        "AttachNic": handler(fake.AttachNic, compute_pb2.AttachNicRequest, compute_pb2.Vm),
        "DetachNic": handler(fake.DetachNic, compute_pb2.DetachNicRequest, compute_pb2.Vm),
    }
    network = {"GetNic": handler(fake.GetNic, network_pb2.GetNicRequest, network_pb2.VirtualNic)}
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler("zsd.v1.VmService", vms),
            grpc.method_handlers_generic_handler("zsd.v1.NetworkService", network),
        )
    )
    address = f"unix:{tmp_path}/zsd.sock"
    server.add_insecure_port(address)
    server.start()
    yield address, fake
    server.stop(None)


def run(address: str, *argv: str) -> Result:
    return zsctl(None, "--endpoint", address, "-o", "json", "vm", *argv)


def test_attach_a_network_nic_by_name(served: tuple[str, FakeApi]) -> None:
    address, fake = served
    for spelling in (["--nic", "nic=web-0"], ["nic=nics/web-0"]):
        result = run(address, "attach-nic", "v1", *spelling)
        assert result.code == 0, result.err
        assert fake.requests[-1] == compute_pb2.AttachNicRequest(
            name="vms/v1", nic=compute_pb2.VmNic(nic="nics/web-0")
        )
    assert [n["nic"] for n in result.json()["nics"]] == ["nics/web-0"]


def test_attach_a_bridge_nic_as_before(served: tuple[str, FakeApi]) -> None:
    address, fake = served
    assert run(address, "attach-nic", "vms/v1", "bridge=br0,model=e1000").code == 0
    assert fake.requests[-1] == compute_pb2.AttachNicRequest(
        name="vms/v1", nic=compute_pb2.VmNic(bridge="br0", model="e1000")
    )


def test_detach_by_mac_or_by_network_nic(served: tuple[str, FakeApi]) -> None:
    address, fake = served
    assert run(address, "detach-nic", "v1", MAC).code == 0
    assert fake.requests[-1] == compute_pb2.DetachNicRequest(name="vms/v1", mac=MAC)
    result = run(address, "detach-nic", "v1", "--nic", "web-0")
    assert result.code == 0, result.err
    assert fake.requests[-2:] == [
        network_pb2.GetNicRequest(name="nics/web-0"),
        compute_pb2.DetachNicRequest(name="vms/v1", mac=MAC),
    ]
    missing = run(address, "detach-nic", "v1", "--nic", "nics/zz")
    assert missing.code != 0 and "nics/zz" in missing.err
    assert fake.requests[-1] == network_pb2.GetNicRequest(name="nics/zz")  # no DetachNic sent


@pytest.mark.parametrize(
    "argv",
    [
        ["attach-nic", "v1"],
        ["attach-nic", "v1", "bridge=br0", "--nic", "nic=web-0"],
        ["detach-nic", "v1"],
        ["detach-nic", "v1", MAC, "--nic", "web-0"],
    ],
)
def test_exactly_one_spelling(served: tuple[str, FakeApi], argv: list[str]) -> None:
    address, fake = served
    result = run(address, *argv)
    assert result.code == 1 and "one of the two spellings" in result.err
    assert fake.requests == []


def test_a_bad_nic_option_says_what_is_allowed(served: tuple[str, FakeApi]) -> None:
    address, _ = served
    result = run(address, "attach-nic", "v1", "--nic", "net=web-0")
    assert result.code != 0 and "nic=, bridge=" in result.err

"""AttachNic/DetachNic of a network NIC on the leader, through the real API thread,
Router and ClusterVms over a real cluster.db: the VM's host is this one (h1, its
libvirt a FakeVmNics) or another (h3, reached through a fake peer call that must
carry NIC_CLAIMED); a refusal from the VM's host puts the claim back, and an
Unavailable from it is not taken for a leader change (retried until the deadline)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

import pytest
import trio
from google.protobuf.message import Message

from tests.unit.compute.fakevmnics import FakeVmNics
from tests.unit.compute.test_leader_placement import Cluster
from tests.unit.compute.test_nic_hotplug import WEB, Lab, lab
from zsd.api import computeconv
from zsd.api.gateway import Gateway
from zsd.api.nichotplug import NIC_CLAIMED, NetworkNics
from zsd.api.router import LeaderView, Router
from zsd.api.services.compute import plug_nic
from zsd.api.vmcluster import METHOD, ClusterVms
from zsd.compute.records import VmRecord
from zsd.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable, ZsdError
from zsd.util.apithread import Bridge, open_api_thread
from zsd.v1 import compute_pb2

R = TypeVar("R")


class Context:
    """What the Router and the Gateway read of a servicer context: no metadata (a
    client's call), a deadline, and the trailing metadata set."""

    def __init__(self, deadline: float = 5.0) -> None:
        self.deadline = deadline
        self.trailing: Sequence[tuple[str, str]] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    def time_remaining(self) -> float:
        return self.deadline

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        self.trailing = metadata


def test_the_context_stand_in() -> None:
    context = Context(deadline=2.0)
    context.set_trailing_metadata((("zsd-revision", "7"),))
    assert (context.invocation_metadata(), context.time_remaining(), context.trailing) == (
        (),
        2.0,
        (("zsd-revision", "7"),),
    )


def vm_message(name: str, macs: tuple[str, ...]) -> compute_pb2.Vm:
    return compute_pb2.Vm(name=f"vms/{name}", nics=[compute_pb2.VmNic(mac=m) for m in macs])


@dataclass
class Peers:
    """Peer calls to h3, whose libvirt is ``libvirt``; each call's method and metadata kept."""

    libvirt: FakeVmNics
    mac_of: Callable[[str], str]
    """A NIC's MAC, as h3 reads it from its copy of the records."""
    host: str = "h1"
    calls: list[tuple[str, str, tuple[tuple[str, str], ...]]] = field(default_factory=list)

    async def call(
        self,
        host: str,
        method: str,
        request: Message,
        response_type: Callable[[bytes], R],
        *,
        timeout: float | None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> compute_pb2.Vm:
        self.calls.append((host, method, extra))
        verb = method.removeprefix(METHOD)
        if verb == "AttachNic":
            attach = cast(compute_pb2.AttachNicRequest, request)
            vm = attach.name.removeprefix("vms/")
            return vm_message(vm, await self.libvirt.plug(vm, self.mac_of(attach.nic.nic)))
        if verb == "DetachNic":
            detach = cast(compute_pb2.DetachNicRequest, request)
            vm = detach.name.removeprefix("vms/")
            return vm_message(vm, await self.libvirt.unplug(vm, detach.mac))
        vm = cast(compute_pb2.GetVmRequest, request).name.removeprefix("vms/")
        return vm_message(vm, await self.libvirt.current(vm))


@dataclass
class Api:
    bridge: Bridge
    nics: NetworkNics
    here: FakeVmNics
    peers: Peers
    net: Lab

    def run(self, call: Callable[[], Awaitable[R]]) -> Awaitable[R]:
        """``call`` on the API thread, as the servicer would make it."""

        async def on_asyncio() -> R:
            return await call()

        return self.bridge.to_asyncio.run(on_asyncio())

    async def attach(self, vm: str, nic: str, *, deadline: float = 5.0) -> compute_pb2.Vm:
        req = compute_pb2.AttachNicRequest(name=f"vms/{vm}", nic=compute_pb2.VmNic(nic=nic))
        context = cast(Any, Context(deadline))
        return await self.run(lambda: self.nics.attach(context, req, vm, nic.removeprefix("nics/")))

    async def detach(self, vm: str, mac: str) -> compute_pb2.Vm:
        req = compute_pb2.DetachNicRequest(name=f"vms/{vm}", mac=mac)
        return await self.run(lambda: self.nics.detach(cast(Any, Context()), req, vm))


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[Api]:
    net = await lab(cluster)
    await cluster.vm(VmRecord(name="v3", uid="uid-v3", host="h3", vcpus=1, memory_mib=512))
    here, there = FakeVmNics(), FakeVmNics()
    peers = Peers(libvirt=there, mac_of=lambda nic: net.catalog.nic(nic.removeprefix("nics/")).mac)
    async with open_api_thread("test-api") as bridge:
        gateway = Gateway(bridge.to_trio)
        router = Router(
            leader=lambda: LeaderView(leading=True, target=None, epoch=1),
            channel=lambda _t: cast(Any, None),
            wait_revision=lambda _r, _t: _never(),
            retry_interval=0.05,
        )
        vms = ClusterVms(gateway=gateway, control=cluster.control, router=router, peers=cast(Any, peers))

        async def attach_here(_ctx: Any, req: compute_pb2.AttachNicRequest) -> compute_pb2.Vm:
            vm = req.name.removeprefix("vms/")
            mac = net.catalog.nic(req.nic.nic.removeprefix("nics/")).mac
            return vm_message(vm, await gateway.trio(_ctx, lambda: here.plug(vm, mac)))

        async def detach_here(_ctx: Any, req: compute_pb2.DetachNicRequest) -> compute_pb2.Vm:
            vm = req.name.removeprefix("vms/")
            return vm_message(vm, await gateway.trio(_ctx, lambda: here.unplug(vm, req.mac)))

        async def vm_here(_ctx: Any, vm: str) -> compute_pb2.Vm:
            return vm_message(vm, await gateway.trio(_ctx, lambda: here.current(vm)))

        nics = NetworkNics(
            gateway=gateway,
            cluster=vms,
            claims=net.claims,
            attach_here=attach_here,
            detach_here=detach_here,
            vm_here=vm_here,
        )
        yield Api(bridge=bridge, nics=nics, here=here, peers=peers, net=net)


async def _never() -> None:
    raise AssertionError("the leader does not wait for its own revision here")


def listed(cluster: Cluster, vm: str) -> tuple[str, ...]:
    return cluster.records()[vm].nics


async def test_on_the_leaders_own_vm(cluster: Cluster, api: Api) -> None:
    mac = api.net.a.mac
    vm = await api.attach("v1", "nics/a")
    assert [n.mac for n in vm.nics] == [mac] and listed(cluster, "v1") == ("a",)
    assert api.peers.calls == []
    vm = await api.detach("v1", mac)
    assert list(vm.nics) == [] and listed(cluster, "v1") == () and api.here.macs["v1"] == ()


async def test_on_another_hosts_vm_the_call_is_marked_claimed(cluster: Cluster, api: Api) -> None:
    mac = api.net.b.mac
    vm = await api.attach("v3", "b")
    assert [n.mac for n in vm.nics] == [mac] and listed(cluster, "v3") == ("b",)
    assert api.peers.calls == [("h3", METHOD + "AttachNic", ((NIC_CLAIMED, "1"),))]
    await api.detach("v3", mac)
    assert api.peers.calls[-1] == ("h3", METHOD + "DetachNic", ((NIC_CLAIMED, "1"),))
    assert listed(cluster, "v3") == () and api.net.catalog.nic_users() == {}


async def test_refusals_name_the_field(cluster: Cluster, api: Api) -> None:
    await api.attach("v1", "a")
    for vm, nic, reason in (
        ("v2", "a", "NIC_IN_USE"),
        ("v2", "zz", "NIC_NOT_FOUND"),
        ("far", "b", "PORT_GROUP_NOT_ON_HOST"),
    ):
        with pytest.raises(ZsdError) as refused:
            await api.attach(vm, nic)
        assert (refused.value.reason, refused.value.field) == (reason, "nic.nic")
    assert api.here.calls == [("plug", "v1", api.net.a.mac)] and api.peers.calls == []


async def test_a_plug_refused_on_the_vms_host_puts_the_claim_back(cluster: Cluster, api: Api) -> None:
    api.peers.libvirt.refuse = InvalidArgument("attaching to VM v3: no such bridge", reason="DOMAIN_CONFIG")
    with pytest.raises(InvalidArgument):
        await api.attach("v3", "b")
    assert listed(cluster, "v3") == () and api.net.catalog.nic_users() == {}


async def test_an_unreachable_vms_host_is_an_answer_not_a_leader_change(cluster: Cluster, api: Api) -> None:
    api.peers.libvirt.refuse = Unavailable("host h3 is unreachable", reason="HOST_UNREACHABLE")
    with trio.fail_after(2):  # the Router would retry an Unavailable until the 5 s deadline
        with pytest.raises(FailedPrecondition) as refused:
            await api.attach("v3", "b")
    assert refused.value.reason == "HOST_UNREACHABLE" and "h3" in refused.value.message
    assert len(api.peers.calls) == 1 and listed(cluster, "v3") == ()


async def test_a_claim_the_vm_never_got_is_freed_by_detach(cluster: Cluster, api: Api) -> None:
    # A leader that died between claim and plug left the record listing the NIC.
    await api.net.claims.claim("v1", "a")
    vm = await api.detach("v1", api.net.a.mac)
    assert list(vm.nics) == [] and listed(cluster, "v1") == ()
    assert api.here.calls == [("unplug", "v1", api.net.a.mac)]


async def test_a_detach_of_a_nic_released_meanwhile_only_unplugs(cluster: Cluster, api: Api) -> None:
    await api.attach("v1", "a")
    await api.net.claims.release("v1", "a")
    vm = await api.detach("v1", api.net.a.mac)
    assert list(vm.nics) == [] and api.here.macs["v1"] == ()
    with pytest.raises(NotFound) as gone:
        await api.detach("v1", api.net.a.mac)
    assert gone.value.reason == "NIC_NOT_FOUND"


def test_a_network_nic_is_named_with_or_without_its_prefix() -> None:
    for name in ("nics/web-0", "web-0"):
        assert computeconv.nic(compute_pb2.VmNic(nic=name)).nic == "web-0"
    with pytest.raises(InvalidArgument) as bad:
        computeconv.nic(compute_pb2.VmNic(nic="switches/web-0"))
    assert bad.value.field == "nic.nic"
    with pytest.raises(InvalidArgument) as both:
        computeconv.nic(compute_pb2.VmNic(nic="web-0", mac="02:00:00:00:00:01"))
    assert both.value.field == "nic.mac"


async def test_the_vms_host_plugs_the_nic_its_record_describes(cluster: Cluster, api: Api) -> None:
    spec = computeconv.nic(compute_pb2.VmNic(nic="a"))
    plugged = plug_nic(api.net.catalog, spec, field="nic.nic")
    assert (plugged.mac, plugged.bridge, plugged.network) == (api.net.a.mac, WEB.bridge, WEB.key)
    with pytest.raises(NotFound) as missing:
        plug_nic(api.net.catalog, replace(spec, nic="zz"), field="nic.nic")
    assert (missing.value.reason, missing.value.field) == ("NIC_NOT_FOUND", "nic.nic")

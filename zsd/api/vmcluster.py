"""VM calls on a cluster member: each VM belongs to one host (its ``vm`` record in
cluster.db says which), and calls about it run there.

- CreateVm goes to the leader (the Router), which places the VM, commits its
  record and hands the create to the chosen host (marked PLACED, so that host runs
  it rather than placing again); the answer is that host's operation.
- Every other call about a VM is forwarded, as the same gRPC method with the same
  request, to the VM's host (marked FORWARDED, so it is never forwarded again).
- ListVms asks every member for its VMs and adds what no host answered for from
  the records (state unknown), so a VM is never missing from the list.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import trio
from google.protobuf.message import Message

from zsd.api.gateway import Gateway
from zsd.api.peers import Peers
from zsd.api.router import Router
from zsd.cluster.control import ClusterControl
from zsd.compute import policyrecords
from zsd.compute.policyrecords import KIND_POLICY
from zsd.compute.records import KIND_VM, VmRecord
from zsd.compute.scheduler import DEFAULT_PLACEMENT, Demand, choose, hosts, nic_networks
from zsd.compute.settings import PlacementSettings
from zsd.errors import FailedPrecondition, InvalidArgument, NotFound, ZsdError
from zsd.v1 import compute_pb2, host_pb2

log = logging.getLogger(__name__)

Ctx = grpc.aio.ServicerContext[object, object]
Resp = TypeVar("Resp", bound=Message)

PLACED = "zsd-vm-placed"
"""Metadata on a CreateVm the leader hands to the host it chose."""
METHOD = "/zsd.v1.VmService/"
_LIST_TIMEOUT = 5.0


@dataclass(frozen=True, kw_only=True)
class Destination:
    host: str
    uri: str
    address: str
    console_dir: Path


class ClusterVms:
    def __init__(
        self,
        *,
        gateway: Gateway,
        control: ClusterControl,
        router: Router,
        peers: Peers,
        placement: PlacementSettings = DEFAULT_PLACEMENT,
    ) -> None:
        self._gw = gateway
        self._placement = placement
        self._control = control
        self.router = router
        self.peers = peers
        self.host = peers.host

    # -- reads of this host's state copy (trio side) --------------------------------

    def _record(self, name: str) -> VmRecord | None:
        record = self._control.replica.cache.get(KIND_VM, name)
        return VmRecord.decode(record.data) if record is not None else None

    def _records(self) -> list[VmRecord]:
        return [VmRecord.decode(r.data) for r in self._control.replica.cache.list(KIND_VM)]

    async def owner(self, name: str) -> str:
        """The host that owns VM ``name``."""
        record = await self._gw.trio_sync(lambda: self._record(name))
        if record is None:
            raise NotFound(f"VM 'vms/{name}' does not exist", field="name", reason="VM_NOT_FOUND")
        return record.host

    async def wait_gone(self, name: str, *, timeout: float) -> bool:
        """(trio side) Waits until VM ``name`` has no record in this host's copy."""
        with trio.move_on_after(timeout):
            while self._record(name) is not None:
                with trio.move_on_after(1.0):
                    await self._control.replica.wait_changed()
            return True
        return False

    def destination(self, vm: str, host: str) -> Destination:
        """(trio side) Where and how to send VM ``vm`` to ``host`` (empty: the best
        other host, chosen as placement would from this host's copy), after checking
        the host can take it (alive, reachable, pools, capacity, the scheduling
        policies; reasons as placement's)."""
        record = self._record(vm)
        if record is None:
            raise NotFound(f"VM 'vms/{vm}' does not exist", field="name", reason="VM_NOT_FOUND")
        if host == record.host:
            raise InvalidArgument(f"VM {vm} already runs on {host}", field="host", reason="SAME_HOST")
        if record.hostdevs:
            # A passed-through device is this host's hardware: QEMU cannot carry its
            # state, and libvirt refuses to migrate a domain with one.
            raise FailedPrecondition(
                f"VM {vm} has host PCI devices ({', '.join(record.hostdevs)}): it stays on {record.host}",
                field="name",
                reason="VM_HAS_HOST_DEVICES",
            )
        others = [r for r in self._records() if r.name != vm]
        demand = Demand(
            name=vm,
            uid=record.uid,
            vcpus=record.vcpus,
            memory_mib=record.memory_mib,
            group=record.group,
            pools=frozenset(record.pools),
            pinned=host,
            nics=record.nics,
        )
        elsewhere = [h for h in hosts(self._control, others) if h.name != record.host]
        policies = policyrecords.policies(self._control.replica.cache.list(KIND_POLICY))
        networks = nic_networks(self._control, record.nics)
        host = choose(demand, elsewhere, others, self._placement, policies, networks=networks)
        view = self._control.host_view(host)
        assert view.status is not None  # choose refused a host without a report
        compute = host_pb2.Host.FromString(view.status).compute
        if not compute.migration_uri:
            raise FailedPrecondition(
                f"host {host} has not said where it takes VMs", reason="NO_MIGRATION_URI"
            )
        return Destination(
            host=host,
            uri=compute.migration_uri,
            address=view.entry.address,
            console_dir=Path(compute.console_dir),
        )

    def evacuation_order(self) -> list[str]:
        """(trio side) This host's VMs, smallest first (they move fastest)."""
        mine = [r for r in self._records() if r.host == self.host]
        return [r.name for r in sorted(mine, key=lambda r: (r.memory_mib, r.name))]

    async def wait_owner(self, name: str, host: str, *, timeout: float) -> bool:
        """(trio side) Waits until VM ``name``'s record names ``host``."""
        with trio.move_on_after(timeout):
            while (record := self._record(name)) is not None and record.host != host:
                with trio.move_on_after(1.0):
                    await self._control.replica.wait_changed()
            return record is not None
        return False

    # -- forwarding (API thread) --------------------------------------------------

    async def forward(
        self,
        context: Ctx,
        host: str,
        method: str,
        request: Message,
        response_type: Callable[[bytes], Resp],
        *,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Resp:
        return await self.peers.call(
            host, METHOD + method, request, response_type, timeout=context.time_remaining(), extra=extra
        )

    async def forward_stream(
        self, host: str, method: str, request: Message, response_type: Callable[[bytes], Resp]
    ) -> AsyncIterator[Resp]:
        async for item in self.peers.stream(host, METHOD + method, request, response_type):
            yield item

    async def list_all(self, local: Callable[[], Awaitable[list[compute_pb2.Vm]]]) -> list[compute_pb2.Vm]:
        """Every VM of the cluster: each host's own list, plus records for hosts that
        did not answer (host set, state unknown)."""
        records = await self._gw.trio_sync(self._records)
        owners = sorted({r.host for r in records} | {self.host})
        answers: dict[str, list[compute_pb2.Vm]] = {}

        async def ask(host: str) -> None:
            if host == self.host:
                answers[host] = await local()
                return
            vms: list[compute_pb2.Vm] = []
            token = ""
            try:
                while True:
                    response = await self.peers.call(
                        host,
                        METHOD + "ListVms",
                        compute_pb2.ListVmsRequest(page_token=token, page_size=1000),
                        compute_pb2.ListVmsResponse.FromString,
                        timeout=_LIST_TIMEOUT,
                    )
                    vms.extend(response.vms)
                    token = response.next_page_token
                    if not token:
                        break
            except ZsdError as e:
                log.info("VM list: host %s did not answer (%s)", host, e)
                return
            answers[host] = vms

        await asyncio.gather(*(ask(h) for h in owners))
        out: dict[str, compute_pb2.Vm] = {}
        for record in records:
            listed = [v for v in answers.get(record.host, []) if v.uid == record.uid]
            out[record.name] = (
                listed[0]
                if listed
                else compute_pb2.Vm(
                    name=f"vms/{record.name}",
                    uid=record.uid,
                    host=f"hosts/{record.host}",
                    vcpus=record.vcpus,
                    memory_mib=record.memory_mib,
                    group=record.group,
                    ha=record.ha,
                )
            )
        # VMs a host has without a record (defined before it joined): shown, not hidden.
        for vms in answers.values():
            for vm in vms:
                out.setdefault(vm.name.removeprefix("vms/"), vm)
        return list(out.values())

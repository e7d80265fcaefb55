"""HostService."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import grpc
import trio

from zsd.api import convert, hostviews, masks, names, paging
from zsd.api.gateway import Gateway
from zsd.api.router import Message, Router
from zsd.cluster.control import ClusterControl
from zsd.cluster.local import HostRecord, LocalCluster
from zsd.cluster.operations import OperationRegistry, OperationView, Progress
from zsd.errors import FailedPrecondition, Internal, InvalidArgument, Unsupported
from zsd.host import pci
from zsd.host.inventory import Inventory
from zsd.v1 import host_pb2, host_pb2_grpc, operation_pb2

Ctx = grpc.aio.ServicerContext[object, object]
Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


class HostMessageCache:
    """Encoded Host messages, rebuilt only when a host's record changes.

    Encoding a Host (CPU flags, NICs, disks...) costs ~10x more than copying one,
    and the record only changes when the inventory is refreshed; uptime, the one
    field that moves, is set on the copy. Used only on the API thread."""

    def __init__(
        self,
        pools: Callable[[], Sequence[host_pb2.HostPool]] = tuple,
        vms: Callable[[], Sequence[host_pb2.HostVm]] = tuple,
        compute: host_pb2.HostCompute | None = None,
    ) -> None:
        self._by_name: dict[str, tuple[HostRecord, host_pb2.Host]] = {}
        # This host's pool states: cheap, and they change apart from the record.
        self._pools = pools
        self._vms = vms
        self._compute = compute

    def encode(self, rec: HostRecord, *, now: float) -> host_pb2.Host:
        cached = self._by_name.get(rec.name)
        if cached is None or cached[0] != rec:  # cheap: unchanged records share their facts object
            cached = (rec, convert.host_without_uptime(rec))
            self._by_name[rec.name] = cached
        msg = host_pb2.Host()
        msg.CopyFrom(cached[1])
        msg.uptime.CopyFrom(convert.duration(max(now - rec.started_at, 0.0)))
        msg.pools.extend(self._pools())
        msg.vms.extend(self._vms())
        if self._compute is not None:
            msg.compute.CopyFrom(self._compute)
        return msg


class HostService(host_pb2_grpc.HostServiceServicer):
    """Without ``control`` (the embedded cluster of one) the host list is this host.
    With it, hosts come from this host's copy of the cluster state; consistent reads
    and mutations go through ``router`` to the leader. ``sysfs`` is where this host's
    PCI devices are changed (SetPciVfs)."""

    def __init__(
        self,
        *,
        gateway: Gateway,
        cluster: LocalCluster,
        inventory: Inventory,
        operations: OperationRegistry,
        control: ClusterControl | None = None,
        router: Router | None = None,
        pools: Callable[[], Sequence[host_pb2.HostPool]] = tuple,
        vms: Callable[[], Sequence[host_pb2.HostVm]] = tuple,
        compute: host_pb2.HostCompute | None = None,
        clock: Callable[[], float] = time.time,
        sysfs: Path = pci.SYS,
        devices_in_use: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        """``devices_in_use``: PCI address -> the VM here that has it (compute)."""
        self._gw = gateway
        self._devices_in_use = devices_in_use
        self._cluster = cluster
        self._inventory = inventory
        self._ops = operations
        self._control = control
        self._router = router
        self._clock = clock
        self._cache = HostMessageCache(pools, vms, compute)
        self._sysfs = sysfs
        # One VF change at a time: the kernel's remove-then-create of two changes to
        # one PF must not interleave, and each is followed by its own inventory.
        self._pci_lock = trio.Lock()

    def _own(self) -> host_pb2.Host:
        return self._cache.encode(self._cluster.host("-"), now=self._clock())

    async def _member_hosts(self) -> tuple[list[host_pb2.Host], int]:
        control = self._control
        assert control is not None
        views, revision = await self._gw.trio_sync(lambda: (control.host_views(), control.revision))
        me = self._cluster.host_name
        hosts = [
            hostviews.member_host(v, own=self._own if v.entry.name == me else None)
            for v in sorted(views, key=lambda v: v.entry.name)
        ]
        return hosts, revision

    async def _read(
        self,
        context: Ctx,
        method: str,
        request: Req,
        build: Callable[[], Awaitable[Resp]],
        response_type: Callable[[bytes], Resp],
    ) -> Resp:
        """A consistent read runs on the leader at its newest revision; others run here."""
        if self._router is None or self._control is None or not getattr(request, "consistent", False):
            return await build()
        control = self._control

        async def on_leader() -> tuple[Resp, int]:
            await self._gw.trio(context, control.at_leader_revision)
            return await build(), 0

        return await self._router.call(
            context, method=method, request=request, response_type=response_type, local=on_leader
        )

    async def ListHosts(self, request: host_pb2.ListHostsRequest, context: Ctx) -> host_pb2.ListHostsResponse:
        async def list_hosts(req: host_pb2.ListHostsRequest) -> host_pb2.ListHostsResponse:
            masks.validate(req.read_mask, host_pb2.Host, field="read_mask")
            if self._control is None:
                now = self._clock()
                records = sorted(self._cluster.hosts(), key=lambda h: h.name)  # thread-safe read, no hop
                hosts = [self._cache.encode(h, now=now) for h in records]
                revision = 0
            else:
                hosts, revision = await self._member_hosts()
            page = paging.paginate(
                hosts, key=lambda h: h.name, page_size=req.page_size, page_token=req.page_token
            )
            return host_pb2.ListHostsResponse(
                hosts=[masks.apply(req.read_mask, h) for h in page.items],
                next_page_token=page.next_page_token,
                revision=revision,
            )

        async def run(req: host_pb2.ListHostsRequest) -> host_pb2.ListHostsResponse:
            return await self._read(
                context,
                _METHOD + "ListHosts",
                req,
                lambda: list_hosts(req),
                host_pb2.ListHostsResponse.FromString,
            )

        return await self._gw.handle(context, run, request)

    async def GetHost(self, request: host_pb2.GetHostRequest, context: Ctx) -> host_pb2.Host:
        async def get_host(req: host_pb2.GetHostRequest) -> host_pb2.Host:
            host = names.host_id(req.name)
            masks.validate(req.read_mask, host_pb2.Host, field="read_mask")
            if self._control is None:
                # LocalCluster reads are thread-safe (see its docstring): no hop into trio,
                # which measured 25-120 us per call, a fifth of GetHost's cost.
                record = self._cluster.host(host)
                return masks.apply(req.read_mask, self._cache.encode(record, now=self._clock()))
            control = self._control
            name = self._cluster.host_name if host == "-" else host
            view = await self._gw.trio_sync(lambda: control.host_view(name))
            own = self._own if name == self._cluster.host_name else None
            return masks.apply(req.read_mask, hostviews.member_host(view, own=own))

        async def run(req: host_pb2.GetHostRequest) -> host_pb2.Host:
            return await self._read(
                context, _METHOD + "GetHost", req, lambda: get_host(req), host_pb2.Host.FromString
            )

        return await self._gw.handle(context, run, request)

    async def RefreshHost(
        self, request: host_pb2.RefreshHostRequest, context: Ctx
    ) -> operation_pb2.Operation:
        async def refresh_host(req: host_pb2.RefreshHostRequest) -> operation_pb2.Operation:
            host = names.host_id(req.name)
            request_id = names.request_id(req.request_id)

            def start() -> OperationView:
                target = f"hosts/{self._cluster.host(host).name}"  # NotFound before anything starts

                async def job(progress: Progress) -> HostRecord:
                    progress(10, "collecting inventory and probing KVM")
                    await self._inventory.refresh()
                    progress(90, "inventory collected")
                    return self._cluster.host(host)

                return self._ops.start(verb="RefreshHost", target=target, request_id=request_id, job=job)

            view = await self._gw.trio_sync(start)
            return convert.operation(view, now=self._clock())

        return await self._gw.handle(context, refresh_host, request)

    async def SetPciVfs(self, request: host_pb2.SetPciVfsRequest, context: Ctx) -> host_pb2.PciDevice:
        async def set_pci_vfs(req: host_pb2.SetPciVfsRequest) -> host_pb2.PciDevice:
            await self._serving_host_only(names.host_id(req.name), "SetPciVfs")
            address, count = req.address, req.count

            async def change() -> None:
                async with self._pci_lock:
                    self._check_vfs_free(address)
                    pf = await trio.to_thread.run_sync(lambda: pci.set_vfs(address, count, sysfs=self._sysfs))
                    # Collected again only when the inventory shows the PF otherwise
                    # (a retry of a done change costs no collection, KVM probe included).
                    if pf not in self._inventory.facts.pci_devices:
                        await self._inventory.refresh()

            await self._gw.trio(context, change)
            return self._own_pci_device(address)

        return await self._gw.handle(context, set_pci_vfs, request)

    def _check_vfs_free(self, address: str) -> None:
        """Changing a PF's VF count removes every VF it has: refused while a VM here
        has one of them (or the PF itself)."""
        in_use = self._devices_in_use()
        affected = [address] + [d.address for d in self._inventory.facts.pci_devices if d.physfn == address]
        users = sorted({f"{a} (VM {in_use[a]})" for a in affected if a in in_use})
        if users:
            raise FailedPrecondition(
                f"PCI device {address}: {', '.join(users)} must be given up first "
                "(changing the VF count removes every VF of the device)",
                field="address",
                reason="PCI_DEVICE_IN_USE",
            )

    async def _serving_host_only(self, host: str, method: str) -> None:
        """For calls that change this machine itself: ``host`` must be the serving host
        (a stranger is NotFound, as for any other call)."""
        me = self._cluster.host_name
        if host in ("-", me):
            return
        control = self._control
        if control is None:
            address = self._cluster.host(host).address  # the cluster of one has no other: NotFound
        else:
            address = (await self._gw.trio_sync(lambda: control.host_view(host))).entry.address
        where = f" at {address}" if address else ""
        raise FailedPrecondition(
            f"{method} acts on the host serving the call ({me}), not hosts/{host}: "
            f"send it to {host}'s own zsd{where} (zsctl --endpoint)",
            field="name",
            reason="NOT_SERVING_HOST",
        )

    def _own_pci_device(self, address: str) -> host_pb2.PciDevice:
        own = self._own()
        for dev in own.pci_devices:
            if dev.address == address:
                return dev
        problems = "; ".join(own.state_reasons) or "no reason given"
        raise Internal(
            f"the VFs of {address} were set, but the host's inventory does not list it: {problems}"
        )

    def _mutation_parts(self) -> tuple[ClusterControl, Router]:
        if self._control is None or self._router is None:
            raise Unsupported(
                "this host runs the embedded cluster of one, which has no cluster state to change; "
                "make it a member with `zsd cluster init` or `zsd cluster join`",
                reason="NOT_A_MEMBER",
            )
        return self._control, self._router

    async def UpdateHost(self, request: host_pb2.UpdateHostRequest, context: Ctx) -> host_pb2.Host:
        async def update_host(req: host_pb2.UpdateHostRequest) -> host_pb2.Host:
            control, router = self._mutation_parts()
            host = names.host_id(req.host.name, field="host.name")
            if host == "-":
                host = self._cluster.host_name
            etag = _etag(req.host.etag)
            paths = list(req.update_mask.paths)
            labels = dict(req.host.labels)
            names.request_id(req.request_id)
            if not req.request_id:
                req.request_id = str(uuid.uuid4())  # so that forwarding retries stay exactly-once

            async def on_leader() -> tuple[host_pb2.Host, int]:
                revision = await self._gw.trio(
                    context,
                    lambda: control.update_labels(
                        host=host, labels=labels, paths=paths, etag=etag, request_id=req.request_id
                    ),
                )
                return await self._after_write(context, control, host, revision), revision

            return await router.call(
                context,
                method=_METHOD + "UpdateHost",
                request=req,
                response_type=host_pb2.Host.FromString,
                local=on_leader,
            )

        return await self._gw.handle(context, update_host, request)

    async def _after_write(
        self, context: Ctx, control: ClusterControl, host: str, revision: int
    ) -> host_pb2.Host:
        await self._gw.trio(context, lambda: control.wait_revision(revision, 2.0))
        view = await self._gw.trio_sync(lambda: control.host_view(host))
        own = self._own if host == self._cluster.host_name else None
        return hostviews.member_host(view, own=own)

    async def DeleteHost(self, request: host_pb2.DeleteHostRequest, context: Ctx) -> operation_pb2.Operation:
        async def delete_host(req: host_pb2.DeleteHostRequest) -> operation_pb2.Operation:
            control, router = self._mutation_parts()
            host = names.host_id(req.name)
            if host == "-":
                host = self._cluster.host_name
            names.request_id(req.request_id)
            if not req.request_id:
                req.request_id = str(uuid.uuid4())

            async def on_leader() -> tuple[operation_pb2.Operation, int]:
                op, revision = await self._gw.trio(
                    context,
                    lambda: control.delete_host(host=host, force=req.force, request_id=req.request_id),
                )
                return convert.operation(op.view(seq=0), now=self._clock()), revision

            return await router.call(
                context,
                method=_METHOD + "DeleteHost",
                request=req,
                response_type=operation_pb2.Operation.FromString,
                local=on_leader,
            )

        return await self._gw.handle(context, delete_host, request)


_METHOD = "/zsd.v1.HostService/"


def _etag(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise InvalidArgument(
            f"etag {text!r} is not one this API returned (a revision number)", field="host.etag"
        )
    return int(text)

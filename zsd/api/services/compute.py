"""VmService: VMs (create, power, devices, console, migration, evacuation).

Thin: decode → ``HostVms``/``LocalVms`` on the trio side → encode. Create, stop,
delete, migrate and evacuate run as Operations (they take seconds: a clone, a
guest's ACPI shutdown, a memory copy); a repeated request_id returns the operation
it started. On a cluster member CreateVm is placed by the leader and every other
call about a VM runs on the VM's host (``ClusterVms``); in the embedded cluster of
one everything runs here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from zsd.api import computeconv, paging, storageconv, storagenames
from zsd.api.gateway import Gateway, abort
from zsd.api.names import host_id
from zsd.api.names import request_id as check_request_id
from zsd.api.nichotplug import NIC_CLAIMED, NetworkNics
from zsd.api.opstart import start_operation
from zsd.api.router import forwarded, has_metadata
from zsd.api.vmcluster import METHOD, PLACED, ClusterVms, Destination
from zsd.cluster.operations import OperationRegistry, Progress
from zsd.compute.hostvms import CreateRequest, HostVms
from zsd.compute.nicclaims import NicClaims
from zsd.compute.scheduler import Demand, Scheduler
from zsd.compute.spec import NicSpec, validate
from zsd.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound, ZsdError
from zsd.network.catalog import NetworkCatalog
from zsd.network.model import link_name
from zsd.storage.host import DEFAULT_POOL
from zsd.v1 import compute_pb2, compute_pb2_grpc, operation_pb2, storage_pb2

Ctx = grpc.aio.ServicerContext[object, object]
R = TypeVar("R", bound=Message)

DEFAULT_STOP_TIMEOUT = 60
MAX_STOP_TIMEOUT = 3600
RELEASE_TIMEOUT = 60.0
_UPDATABLE = {"vcpus", "memory_mib"}


class VmService(compute_pb2_grpc.VmServiceServicer):
    def __init__(
        self,
        *,
        gateway: Gateway,
        vms: HostVms,
        operations: OperationRegistry,
        host: str,
        cluster: ClusterVms | None = None,
        scheduler: Scheduler | None = None,
        network: NetworkCatalog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``cluster`` and ``scheduler``: on a cluster member, where VMs are placed by
        the leader and calls about a VM run on its host. ``network``: the member's
        switches and NICs (a VM's network NICs get their MAC and bridge from it)."""
        self._network = network
        self._gw = gateway
        self._vms = vms
        self._ops = operations
        self._host = host
        self._cluster = cluster
        self._scheduler = scheduler
        self._clock = clock
        self._nics = (
            NetworkNics(
                gateway=gateway,
                cluster=cluster,
                claims=NicClaims(scheduler, network),
                attach_here=self._attach_here,
                detach_here=self._detach_here,
                vm_here=self._vm_here,
            )
            if cluster is not None and scheduler is not None and network is not None
            else None
        )
        """Network NICs on a cluster member: claimed by the leader around the hot-plug."""

    async def _route(
        self, context: Ctx, name: str, method: str, request: Message, response_type: Callable[[bytes], R]
    ) -> R | None:
        """The answer of the VM's host when that is another host; None: run it here."""
        cluster = self._cluster
        if cluster is None or forwarded(context):
            return None
        host = await cluster.owner(name)
        if host == self._host:
            return None
        return await cluster.forward(context, host, method, request, response_type)

    async def _message(self, name: str) -> compute_pb2.Vm:
        """On the trio side."""
        return computeconv.vm(await self._vms.vms.status(name), host=self._host)

    async def _operation(
        self,
        *,
        verb: str,
        target: str,
        request_id: str,
        job: Callable[[Progress], Awaitable[object]],
    ) -> operation_pb2.Operation:
        return await start_operation(
            self._gw, self._ops, verb=verb, target=target, request_id=request_id, job=job, now=self._clock()
        )

    # -- reads -------------------------------------------------------------------

    async def ListVms(self, request: compute_pb2.ListVmsRequest, context: Ctx) -> compute_pb2.ListVmsResponse:
        async def run(req: compute_pb2.ListVmsRequest) -> compute_pb2.ListVmsResponse:
            async def read() -> list[compute_pb2.Vm]:
                return [computeconv.vm(s, host=self._host) for s in await self._vms.vms.adopt()]

            if self._cluster is not None and not forwarded(context):
                cluster = self._cluster
                vms = await cluster.list_all(lambda: self._gw.trio(context, read))
            else:
                vms = await self._gw.trio(context, read)
            page = paging.paginate(
                vms, key=lambda v: v.name, page_size=req.page_size, page_token=req.page_token
            )
            return compute_pb2.ListVmsResponse(vms=page.items, next_page_token=page.next_page_token)

        return await self._gw.handle(context, run, request)

    async def GetVm(self, request: compute_pb2.GetVmRequest, context: Ctx) -> compute_pb2.Vm:
        async def run(req: compute_pb2.GetVmRequest) -> compute_pb2.Vm:
            name = computeconv.vm_id(req.name)
            routed = await self._route(context, name, "GetVm", req, compute_pb2.Vm.FromString)
            if routed is not None:
                return routed
            return await self._gw.trio(context, lambda: self._message(name))

        return await self._gw.handle(context, run, request)

    # -- create, update, delete --------------------------------------------------

    async def CreateVm(self, request: compute_pb2.CreateVmRequest, context: Ctx) -> operation_pb2.Operation:
        async def run(req: compute_pb2.CreateVmRequest) -> operation_pb2.Operation:
            if self._cluster is None or self._scheduler is None or has_metadata(context, PLACED):
                if req.host and host_id(req.host, field="host") not in ("-", self._host):
                    raise FailedPrecondition(
                        f"this is a cluster of one: VMs run on {self._host}",
                        field="host",
                        reason="NOT_A_MEMBER",
                    )
                return await self._create_here(req)
            return await self._place(context, req, self._cluster, self._scheduler)

        return await self._gw.handle(context, run, request)

    async def _place(
        self, context: Ctx, req: compute_pb2.CreateVmRequest, cluster: ClusterVms, scheduler: Scheduler
    ) -> operation_pb2.Operation:
        req.request_id = check_request_id(req.request_id) or str(uuid.uuid4())
        if req.host:
            host_id(req.host, field="host")
        elif not forwarded(context) and _on_own_storage(req):
            req.host = f"hosts/{self._host}"
        create = computeconv.create_request(req)
        validate(replace(create.spec, disks=()))  # refused here, before the leader is asked
        demand = Demand(
            name=create.spec.name,
            uid=create.spec.uid,
            vcpus=create.spec.vcpus,
            memory_mib=create.spec.memory_mib,
            group=create.spec.group,
            pools=frozenset(p for p in _pools(create) if p != DEFAULT_POOL),
            pinned=req.host.removeprefix("hosts/"),
            ha=create.spec.ha,
            hostdevs=create.spec.hostdevs,
            nics=tuple(n.nic for n in create.spec.nics if n.nic),
        )

        async def on_leader() -> tuple[operation_pb2.Operation, int]:
            record, revision = await self._gw.trio(
                context, lambda: scheduler.place(demand, request_id=req.request_id)
            )
            if record.host == self._host:
                return await self._create_here(req), revision
            op = await cluster.forward(
                context,
                record.host,
                "CreateVm",
                req,
                operation_pb2.Operation.FromString,
                extra=((PLACED, "1"),),
            )
            return op, revision

        return await cluster.router.call(
            context,
            method=METHOD + "CreateVm",
            request=req,
            response_type=operation_pb2.Operation.FromString,
            local=on_leader,
        )

    async def _create_here(self, req: compute_pb2.CreateVmRequest) -> operation_pb2.Operation:
        create = computeconv.create_request(req)
        if any(n.nic for n in create.spec.nics):
            network = self._network
            if network is None:
                raise FailedPrecondition(
                    "network NICs live in the cluster state; this zsd runs without a cluster",
                    field="vm.nics",
                    reason="NOT_A_MEMBER",
                )
            nics = await self._gw.trio_sync(lambda: plug_nics(network, create.spec.nics))
            create = replace(create, spec=create.spec.with_nics(nics))

        async def job(progress: Progress) -> compute_pb2.Vm:
            status = await self._vms.create(create, progress=progress)
            progress(100, status.state)
            return computeconv.vm(status, host=self._host)

        return await self._operation(
            verb="CreateVm", target=f"vms/{create.spec.name}", request_id=req.request_id, job=job
        )

    async def UpdateVm(self, request: compute_pb2.UpdateVmRequest, context: Ctx) -> compute_pb2.Vm:
        async def run(req: compute_pb2.UpdateVmRequest) -> compute_pb2.Vm:
            name = computeconv.vm_id(req.vm.name, field="vm.name")
            routed = await self._route(context, name, "UpdateVm", req, compute_pb2.Vm.FromString)
            if routed is not None:
                return routed
            paths = set(req.update_mask.paths)
            if not paths:
                raise InvalidArgument(
                    f"name the fields to change; updatable: {', '.join(sorted(_UPDATABLE))}",
                    field="update_mask",
                )
            unknown = paths - _UPDATABLE
            if unknown:
                raise InvalidArgument(
                    f"{', '.join(sorted(unknown))} cannot be updated; updatable: "
                    f"{', '.join(sorted(_UPDATABLE))} (devices through AttachDisk/AttachNic)",
                    field="update_mask.paths",
                )
            vcpus = req.vm.vcpus if "vcpus" in paths else None
            memory = req.vm.memory_mib if "memory_mib" in paths else None
            if vcpus is not None and vcpus <= 0:
                raise InvalidArgument("must be at least 1", field="vm.vcpus")
            if memory is not None and memory <= 0:
                raise InvalidArgument("must be positive", field="vm.memory_mib")

            async def update() -> compute_pb2.Vm:
                if req.vm.etag:
                    current = await self._message(name)
                    if current.etag != req.vm.etag:
                        raise Conflict(
                            f"VM {name} changed (etag {current.etag}, request has {req.vm.etag}); re-read it",
                            field="vm.etag",
                            reason="ETAG_MISMATCH",
                        )
                status = await self._vms.vms.update_offline(name, vcpus=vcpus, memory_mib=memory)
                return computeconv.vm(status, host=self._host)

            return await self._gw.trio(context, update)

        return await self._gw.handle(context, run, request)

    async def DeleteVm(self, request: compute_pb2.DeleteVmRequest, context: Ctx) -> operation_pb2.Operation:
        async def run(req: compute_pb2.DeleteVmRequest) -> operation_pb2.Operation:
            name = computeconv.vm_id(req.name)
            routed = await self._route(context, name, "DeleteVm", req, operation_pb2.Operation.FromString)
            if routed is not None:
                return routed
            # Refuse a running VM on the call, not in the operation.
            await self._gw.trio(context, lambda: self._check_stopped(name))

            async def job(progress: Progress) -> compute_pb2.Vm:
                progress(0, "deleting" + (" with its volumes" if req.delete_volumes else ""))
                status = await self._vms.delete(name, delete_volumes=req.delete_volumes)
                if self._cluster is not None:
                    # Done when the cluster agrees: the leader drops the record once
                    # this host's report no longer has the VM.
                    progress(90, "waiting for the cluster to release the VM's name")
                    await self._cluster.wait_gone(name, timeout=RELEASE_TIMEOUT)
                return computeconv.vm(status, host=self._host)

            return await self._operation(
                verb="DeleteVm", target=f"vms/{name}", request_id=req.request_id, job=job
            )

        return await self._gw.handle(context, run, request)

    async def _check_stopped(self, name: str) -> None:
        state = (await self._vms.vms.status(name)).state
        if state not in ("stopped", "crashed"):
            raise FailedPrecondition(f"VM {name} is {state}: stop it first", reason=f"VM_{state.upper()}")

    # -- power -------------------------------------------------------------------

    async def _power(
        self, context: Ctx, req: _PowerRequest, method: str, action: Callable[[str], Awaitable[object]]
    ) -> compute_pb2.Vm:
        name = computeconv.vm_id(req.name)
        routed = await self._route(context, name, method, req, compute_pb2.Vm.FromString)
        if routed is not None:
            return routed

        async def act() -> compute_pb2.Vm:
            await action(name)
            return await self._message(name)

        return await self._gw.trio(context, act)

    async def StartVm(self, request: compute_pb2.StartVmRequest, context: Ctx) -> compute_pb2.Vm:
        async def run(req: compute_pb2.StartVmRequest) -> compute_pb2.Vm:
            return await self._power(context, req, "StartVm", self._vms.vms.start)

        return await self._gw.handle(context, run, request)

    async def RebootVm(self, request: compute_pb2.RebootVmRequest, context: Ctx) -> compute_pb2.Vm:
        async def run(req: compute_pb2.RebootVmRequest) -> compute_pb2.Vm:
            return await self._power(context, req, "RebootVm", self._vms.vms.reboot)

        return await self._gw.handle(context, run, request)

    async def PauseVm(self, request: compute_pb2.PauseVmRequest, context: Ctx) -> compute_pb2.Vm:
        async def run(req: compute_pb2.PauseVmRequest) -> compute_pb2.Vm:
            return await self._power(context, req, "PauseVm", self._vms.vms.pause)

        return await self._gw.handle(context, run, request)

    async def ResumeVm(self, request: compute_pb2.ResumeVmRequest, context: Ctx) -> compute_pb2.Vm:
        async def run(req: compute_pb2.ResumeVmRequest) -> compute_pb2.Vm:
            return await self._power(context, req, "ResumeVm", self._vms.vms.resume)

        return await self._gw.handle(context, run, request)

    async def StopVm(self, request: compute_pb2.StopVmRequest, context: Ctx) -> operation_pb2.Operation:
        async def run(req: compute_pb2.StopVmRequest) -> operation_pb2.Operation:
            name = computeconv.vm_id(req.name)
            routed = await self._route(context, name, "StopVm", req, operation_pb2.Operation.FromString)
            if routed is not None:
                return routed
            timeout = req.timeout_seconds or DEFAULT_STOP_TIMEOUT
            if not 0 < timeout <= MAX_STOP_TIMEOUT:
                raise InvalidArgument(
                    f"must be between 1 and {MAX_STOP_TIMEOUT} seconds", field="timeout_seconds"
                )
            state = (await self._gw.trio(context, lambda: self._vms.vms.status(name))).state
            if state == "stopped":
                raise FailedPrecondition(f"VM {name} is already stopped", reason="VM_STOPPED")

            async def job(progress: Progress) -> compute_pb2.Vm:
                if req.force:
                    progress(0, "forcing off")
                    await self._vms.vms.force_off(name)
                    await self._vms.vms.wait_state(name, ("stopped",), timeout=10)
                else:
                    progress(0, f"ACPI shutdown (forced off after {timeout} s)")
                    forced = await self._vms.vms.stop(name, timeout=timeout)
                    progress(100, "forced off: the guest did not stop in time" if forced else "shut down")
                return await self._message(name)

            return await self._operation(
                verb="StopVm", target=f"vms/{name}", request_id=req.request_id, job=job
            )

        return await self._gw.handle(context, run, request)

    async def MigrateVm(self, request: compute_pb2.MigrateVmRequest, context: Ctx) -> operation_pb2.Operation:
        async def run(req: compute_pb2.MigrateVmRequest) -> operation_pb2.Operation:
            name = computeconv.vm_id(req.name)
            dest = host_id(req.host, field="host") if req.host else ""
            routed = await self._route(context, name, "MigrateVm", req, operation_pb2.Operation.FromString)
            if routed is not None:
                return routed
            cluster = self._cluster
            if cluster is None:
                raise FailedPrecondition(
                    "a cluster of one has no other host to move VMs to", field="host", reason="NOT_A_MEMBER"
                )
            target = await self._gw.trio(context, lambda: self._movable(cluster, name, dest))

            dest = target.host

            async def job(progress: Progress) -> compute_pb2.Vm:
                progress(0, f"moving to {dest}")
                live = await self._vms.vms.migrate(
                    name,
                    dest_uri=target.uri,
                    dest_address=target.address,
                    dest_console_dir=target.console_dir,
                    # destination() checked every pool is active (marker seen) there.
                    shared_storage=True,
                    progress=lambda p: progress(p, None),
                )
                progress(99, f"{'live' if live else 'offline'} move done; waiting for the cluster to agree")
                await cluster.wait_owner(name, dest, timeout=RELEASE_TIMEOUT)
                return compute_pb2.Vm(name=f"vms/{name}", host=f"hosts/{dest}")

            return await self._operation(
                verb="MigrateVm", target=f"vms/{name}", request_id=req.request_id, job=job
            )

        return await self._gw.handle(context, run, request)

    async def CaptureVm(self, request: compute_pb2.CaptureVmRequest, context: Ctx) -> operation_pb2.Operation:
        async def run(req: compute_pb2.CaptureVmRequest) -> operation_pb2.Operation:
            name = computeconv.vm_id(req.name)
            image = storagenames.parse(req.image, "image", field="image")
            check_request_id(req.request_id)
            routed = await self._route(context, name, "CaptureVm", req, operation_pb2.Operation.FromString)
            if routed is not None:
                return routed
            # Refused on the call, not in the operation: a running VM, a taken name.
            status = await self._gw.trio(context, lambda: self._vms.vms.status(name))
            if status.state not in ("stopped", "crashed"):
                raise FailedPrecondition(
                    f"VM {name} is {status.state}: stop it first (its disk must not change during the copy)",
                    field="name",
                    reason=f"VM_{status.state.upper()}",
                )

            async def job(progress: Progress) -> storage_pb2.Image:
                progress(0, f"copying the boot disk of {name}")
                record = await self._vms.capture(
                    name,
                    pool=image.pool,
                    image=image.image,
                    description=req.description,
                    progress=lambda pct: progress(min(99, int(pct)), None),
                )
                return storageconv.image(image.pool, record)

            return await self._operation(
                verb="CaptureVm", target=f"vms/{name}", request_id=req.request_id, job=job
            )

        return await self._gw.handle(context, run, request)

    async def EvacuateHost(
        self, request: compute_pb2.EvacuateHostRequest, context: Ctx
    ) -> operation_pb2.Operation:
        async def run(req: compute_pb2.EvacuateHostRequest) -> operation_pb2.Operation:
            host = host_id(req.host, field="host")
            cluster = self._cluster
            if cluster is None:
                raise FailedPrecondition(
                    "a cluster of one has no other host to move VMs to", field="host", reason="NOT_A_MEMBER"
                )
            if host not in ("-", self._host) and not forwarded(context):
                return await cluster.forward(
                    context, host, "EvacuateHost", req, operation_pb2.Operation.FromString
                )

            async def job(progress: Progress) -> compute_pb2.EvacuateHostResult:
                names = cluster.evacuation_order()
                moved: dict[str, str] = {}
                left: dict[str, str] = {}
                for i, name in enumerate(names):
                    progress(int(100 * i / max(len(names), 1)), f"moving {name}")
                    try:
                        target = await self._movable(cluster, name)
                        await self._vms.vms.migrate(
                            name,
                            dest_uri=target.uri,
                            dest_address=target.address,
                            dest_console_dir=target.console_dir,
                            shared_storage=True,
                        )
                    except ZsdError as e:
                        # One VM that cannot move does not keep the others here.
                        left[f"vms/{name}"] = str(e)
                        continue
                    await cluster.wait_owner(name, target.host, timeout=RELEASE_TIMEOUT)
                    moved[f"vms/{name}"] = f"hosts/{target.host}"
                return compute_pb2.EvacuateHostResult(moved=moved, left=left)

            return await self._operation(
                verb="EvacuateHost", target=f"hosts/{self._host}", request_id=req.request_id, job=job
            )

        return await self._gw.handle(context, run, request)

    async def _movable(self, cluster: ClusterVms, name: str, host: str = "") -> Destination:
        """(trio side) Where VM ``name`` can go, or why it cannot move at all."""
        status = await self._vms.vms.status(name)
        local = [d.volume for d in status.spec.disks if d.volume.split("/", 1)[0] == DEFAULT_POOL]
        if local:
            raise FailedPrecondition(
                f"VM {name} has disks on this host's own pool ({', '.join(local)}); "
                "only VMs on shared pools can move",
                field="name",
                reason="LOCAL_STORAGE",
            )
        return cluster.destination(name, host)

    # -- devices -----------------------------------------------------------------

    async def AttachDisk(self, request: compute_pb2.AttachDiskRequest, context: Ctx) -> compute_pb2.Vm:
        async def run(req: compute_pb2.AttachDiskRequest) -> compute_pb2.Vm:
            name = computeconv.vm_id(req.name)
            routed = await self._route(context, name, "AttachDisk", req, compute_pb2.Vm.FromString)
            if routed is not None:
                return routed
            disk = computeconv.disk_request(req.disk, field="disk")

            async def attach() -> compute_pb2.Vm:
                return computeconv.vm(await self._vms.attach_disk(name, disk), host=self._host)

            return await self._gw.trio(context, attach)

        return await self._gw.handle(context, run, request)

    async def DetachDisk(self, request: compute_pb2.DetachDiskRequest, context: Ctx) -> compute_pb2.Vm:
        async def run(req: compute_pb2.DetachDiskRequest) -> compute_pb2.Vm:
            name = computeconv.vm_id(req.name)
            routed = await self._route(context, name, "DetachDisk", req, compute_pb2.Vm.FromString)
            if routed is not None:
                return routed
            pool, volume = computeconv.volume_ref(req.volume, field="volume")

            async def detach() -> compute_pb2.Vm:
                return computeconv.vm(await self._vms.detach_disk(name, f"{pool}/{volume}"), host=self._host)

            return await self._gw.trio(context, detach)

        return await self._gw.handle(context, run, request)

    async def AttachNic(self, request: compute_pb2.AttachNicRequest, context: Ctx) -> compute_pb2.Vm:
        async def run(req: compute_pb2.AttachNicRequest) -> compute_pb2.Vm:
            name = computeconv.vm_id(req.name)
            nic = computeconv.nic(req.nic)
            if nic.nic and self._nics is not None and not has_metadata(context, NIC_CLAIMED):
                return await self._nics.attach(context, req, name, nic.nic)
            routed = await self._route(context, name, "AttachNic", req, compute_pb2.Vm.FromString)
            if routed is not None:
                return routed
            return await self._attach_here(context, req)

        return await self._gw.handle(context, run, request)

    async def _attach_here(self, context: Ctx, req: compute_pb2.AttachNicRequest) -> compute_pb2.Vm:
        name = computeconv.vm_id(req.name)
        nic = computeconv.nic(req.nic)
        if nic.nic:
            network = self._network
            if network is None:
                raise FailedPrecondition(
                    "network NICs live in the cluster state; this zsd runs without a cluster: "
                    "hot-plug on a bridge (nic.bridge)",
                    field="nic.nic",
                    reason="NOT_A_MEMBER",
                )
            nic = await self._gw.trio_sync(lambda: plug_nic(network, nic, field="nic.nic"))

        async def attach() -> compute_pb2.Vm:
            return computeconv.vm(await self._vms.attach_nic(name, nic), host=self._host)

        return await self._gw.trio(context, attach)

    async def DetachNic(self, request: compute_pb2.DetachNicRequest, context: Ctx) -> compute_pb2.Vm:
        async def run(req: compute_pb2.DetachNicRequest) -> compute_pb2.Vm:
            name = computeconv.vm_id(req.name)
            # MACs are lowercase in specs and NIC records: one typed in capitals is the same NIC.
            req.mac = req.mac.lower()
            nics = self._nics
            if nics is not None and not has_metadata(context, NIC_CLAIMED):
                # Through the leader whatever this host's state copy says: a copy behind a
                # just-made attach would take a network NIC for a bridge one, unplug it and
                # leave it claimed. The leader knows; for a bridge NIC it only unplugs.
                return await nics.detach(context, req, name)
            routed = await self._route(context, name, "DetachNic", req, compute_pb2.Vm.FromString)
            if routed is not None:
                return routed
            return await self._detach_here(context, req)

        return await self._gw.handle(context, run, request)

    async def _detach_here(self, context: Ctx, req: compute_pb2.DetachNicRequest) -> compute_pb2.Vm:
        name = computeconv.vm_id(req.name)

        async def detach() -> compute_pb2.Vm:
            return computeconv.vm(await self._vms.vms.detach_nic(name, req.mac), host=self._host)

        return await self._gw.trio(context, detach)

    async def _vm_here(self, context: Ctx, name: str) -> compute_pb2.Vm:
        return await self._gw.trio(context, lambda: self._message(name))

    # -- console and display -----------------------------------------------------

    async def StreamConsole(
        self, request: compute_pb2.StreamConsoleRequest, context: Ctx
    ) -> AsyncIterator[compute_pb2.ConsoleChunk]:
        try:
            name = computeconv.vm_id(request.name)
            cluster = self._cluster
            if cluster is not None and not forwarded(context):
                host = await cluster.owner(name)
                if host != self._host:
                    async for item in cluster.forward_stream(
                        host, "StreamConsole", request, compute_pb2.ConsoleChunk.FromString
                    ):
                        yield item
                    return
            await self._gw.trio(context, lambda: self._vms.vms.status(name))

            async def chunks() -> AsyncGenerator[bytes, None]:
                async for chunk in self._vms.vms.console(name, follow=request.follow):
                    yield chunk

            async for data in self._gw.stream(chunks):
                yield compute_pb2.ConsoleChunk(data=data)
        except ZsdError as e:
            await abort(context, e)

    async def GetDisplay(self, request: compute_pb2.GetDisplayRequest, context: Ctx) -> compute_pb2.Display:
        async def run(req: compute_pb2.GetDisplayRequest) -> compute_pb2.Display:
            name = computeconv.vm_id(req.name)
            routed = await self._route(context, name, "GetDisplay", req, compute_pb2.Display.FromString)
            if routed is not None:
                return routed
            display = await self._gw.trio(context, lambda: self._vms.vms.display(name))
            return compute_pb2.Display(protocol=display.kind, address=display.address, port=display.port)

        return await self._gw.handle(context, run, request)


_PowerRequest = (
    compute_pb2.StartVmRequest
    | compute_pb2.RebootVmRequest
    | compute_pb2.PauseVmRequest
    | compute_pb2.ResumeVmRequest
)


def _pools(create: CreateRequest) -> set[str]:
    pools = {d.pool for d in create.disks}
    if create.root is not None:
        pools |= {create.root.pool, create.root.image_pool}
    return pools


def _on_own_storage(req: compute_pb2.CreateVmRequest) -> bool:
    """Whether the VM's disks or image are on the serving host's own default pool."""
    refs = [d.volume for d in req.vm.disks] + ([req.image] if req.image else [])
    own = f"pools/{DEFAULT_POOL}/"
    return any(r.startswith(own) for r in refs) or (bool(req.image) and req.root_pool == DEFAULT_POOL)


def plug_nics(network: NetworkCatalog, specs: tuple[NicSpec, ...]) -> tuple[NicSpec, ...]:
    """(trio side) Network NICs with their MAC, port group and its bridge on this host."""
    return tuple(plug_nic(network, s, field=f"vm.nics[{i}].nic") if s.nic else s for i, s in enumerate(specs))


def plug_nic(network: NetworkCatalog, spec: NicSpec, *, field: str) -> NicSpec:
    """(trio side) A network NIC with its MAC, port group and its bridge on this host."""
    try:
        record = network.nic(spec.nic)
    except NotFound as e:
        raise NotFound(e.message, field=field, reason="NIC_NOT_FOUND") from None
    return replace(spec, mac=record.mac, bridge=link_name("zb", record.port_group), network=record.port_group)

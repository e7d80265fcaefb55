"""zsd.v1 VM messages <-> the compute layer's specs and statuses. Names are parsed
here, with errors that name the request field."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from zsd.api import networkconv, storagenames
from zsd.api.storageconv import qos_message
from zsd.compute.hostvms import CreateRequest, DiskRequest, RootDisk, random_mac
from zsd.compute.runtime import VmStatus
from zsd.compute.spec import DiskSpec, NicSpec, VmSpec
from zsd.errors import InvalidArgument
from zsd.storage import validate
from zsd.v1 import compute_pb2, host_pb2

_UID_NAMESPACE = uuid.UUID("3c5d0a43-6a0e-4d6e-9f43-5b0f1d7f2c11")
_STATES = {
    "stopped": compute_pb2.Vm.STOPPED,
    "running": compute_pb2.Vm.RUNNING,
    "paused": compute_pb2.Vm.PAUSED,
    "stopping": compute_pb2.Vm.STOPPING,
    "crashed": compute_pb2.Vm.CRASHED,
    "suspended": compute_pb2.Vm.SUSPENDED,
}


def vm_id(name: str, *, field: str = "name") -> str:
    """The {vm} of "vms/{vm}"."""
    prefix, _, rest = name.partition("/")
    if prefix != "vms" or not rest or "/" in rest:
        raise InvalidArgument(
            f"{name!r} is not a VM name; expected 'vms/{{vm}}'", field=field, reason="INVALID_NAME"
        )
    validate.name(rest, field=field)
    return rest


def volume_ref(name: str, *, field: str) -> tuple[str, str]:
    parsed = storagenames.parse(name, "volume", field=field)
    return parsed.pool, parsed.volume


def _volume_name(ref: str) -> str:
    pool, volume = ref.split("/", 1)
    return f"pools/{pool}/volumes/{volume}"


def disk_request(message: compute_pb2.VmDisk, *, field: str) -> DiskRequest:
    pool, volume = volume_ref(message.volume, field=f"{field}.volume")
    return DiskRequest(
        pool=pool,
        volume=volume,
        bus=message.bus or "virtio",
        readonly=message.readonly,
        boot_order=message.boot_order,
        serial=message.serial,
    )


def nic(message: compute_pb2.VmNic, *, field: str = "nic") -> NicSpec:
    model = message.model or "virtio"
    network_nic = ""
    if message.nic:
        # "nics/web-0", or just "web-0": a slash-free name can only be a NIC's id.
        named = message.nic if "/" in message.nic else f"nics/{message.nic}"
        network_nic = networkconv.nic_id(named, field=f"{field}.nic")
        if message.mac or message.bridge:
            raise InvalidArgument(
                "leave mac and bridge empty: they come from the NIC",
                field=f"{field}.mac" if message.mac else f"{field}.bridge",
            )
    return NicSpec(
        nic=network_nic,
        # A NIC of the network gets its MAC on the VM's host (``HostVms`` resolves it).
        mac=message.mac or random_mac(),
        model=model,
        # Emulated models have only QEMU's own backend.
        backend=message.backend or ("vhost" if model == "virtio" else "qemu"),
        bridge=message.bridge,
        socket_path=message.socket_path,
        boot_order=message.boot_order,
        mtu=message.mtu,
    )


def create_request(req: compute_pb2.CreateVmRequest) -> CreateRequest:
    name = req.vm_id
    validate.name(name, field="vm_id")
    vm = req.vm
    spec = VmSpec(
        name=name,
        # From the request id: every host that handles this request (serving host,
        # leader, chosen host) and every retry names the same VM.
        uid=str(uuid.uuid5(_UID_NAMESPACE, f"{name}/{req.request_id}"))
        if req.request_id
        else str(uuid.uuid4()),
        vcpus=vm.vcpus or 1,
        sockets=vm.sockets,
        cores=vm.cores,
        threads=vm.threads,
        memory_mib=vm.memory_mib or 512,
        machine=vm.machine or "pc",
        firmware=vm.firmware or "bios",
        nics=tuple(nic(n, field=f"vm.nics[{i}]") for i, n in enumerate(vm.nics)),
        hostdevs=tuple(vm.hostdevs),
        graphics=vm.graphics or "vnc",
        ha=vm.ha,
        group=vm.group,
        description=vm.description,
    )
    disks = tuple(disk_request(d, field=f"vm.disks[{i}]") for i, d in enumerate(vm.disks))
    root = None
    if req.image:
        image = storagenames.parse(req.image, "image", field="image")
        pool = storagenames.pool(f"pools/{req.root_pool}", field="root_pool") if req.root_pool else image.pool
        if req.root_size_bytes < 0:
            raise InvalidArgument("must not be negative", field="root_size_bytes")
        root = RootDisk(image_pool=image.pool, image=image.image, pool=pool, size=req.root_size_bytes)
    elif req.root_pool or req.root_size_bytes or req.flatten_root:
        raise InvalidArgument("root_pool, root_size_bytes and flatten_root need an image", field="image")
    return CreateRequest(
        spec=spec, disks=disks, root=root, start=not req.no_start, flatten_root=req.flatten_root
    )


def _disk_message(disk: DiskSpec) -> compute_pb2.VmDisk:
    return compute_pb2.VmDisk(
        volume=_volume_name(disk.volume) if disk.volume else "",
        bus=disk.bus,
        readonly=disk.readonly,
        boot_order=disk.boot_order,
        target=disk.target,
        serial=disk.serial,
        qos=qos_message(disk.qos),
    )


def vm(status: VmStatus, *, host: str) -> compute_pb2.Vm:
    spec = status.spec
    return compute_pb2.Vm(
        name=f"vms/{spec.name}",
        uid=spec.uid,
        host=f"hosts/{host}",
        state=_STATES.get(status.state, compute_pb2.Vm.STATE_UNSPECIFIED),
        vcpus=spec.vcpus,
        sockets=spec.sockets,
        cores=spec.cores,
        threads=spec.threads,
        memory_mib=spec.memory_mib,
        machine=spec.machine,
        firmware=spec.firmware,
        disks=[_disk_message(d) for d in spec.disks],
        nics=[
            compute_pb2.VmNic(
                mac=n.mac,
                model=n.model,
                backend=n.backend,
                bridge=n.bridge,
                socket_path=n.socket_path,
                boot_order=n.boot_order,
                mtu=n.mtu,
                nic=f"nics/{n.nic}" if n.nic else "",
            )
            for n in spec.nics
        ],
        hostdevs=list(spec.hostdevs),
        graphics=spec.graphics,
        ha=spec.ha,
        group=spec.group,
        description=spec.description,
        etag=f'"{status.generation}"',
    )


def host_vms(summary: Sequence[VmStatus], creating: Iterable[str] = ()) -> list[host_pb2.HostVm]:
    """This host's VMs, for its Host message (and so for the cluster's view)."""
    known = {s.spec.name for s in summary}
    out = [host_pb2.HostVm(vm=f"vms/{name}", creating=True) for name in sorted(creating) if name not in known]
    out.extend(
        host_pb2.HostVm(
            vm=f"vms/{s.spec.name}",
            uid=s.spec.uid,
            state=_STATES.get(s.state, compute_pb2.Vm.STATE_UNSPECIFIED),
            vcpus=s.spec.vcpus,
            memory_mib=s.spec.memory_mib,
            ha_spec=s.spec.to_json() if s.spec.ha else "",
        )
        for s in summary
    )
    return out

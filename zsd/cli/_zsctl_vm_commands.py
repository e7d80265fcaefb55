"""zsctl's ``vm`` noun: create, power, update, devices, console and display.

VMs are named by their id (``web-1``) or full name (``vms/web-1``); disks are
``POOL/VOLUME``. Memory takes binary units (``2G``). Create, stop and delete are
operations, waited for with progress unless --no-wait.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import TypeVar

from google.protobuf import field_mask_pb2

from zsd.v1 import compute_pb2, network_pb2, storage_pb2

from ._zsctl_commands import Api, CommandError, Console, collect_pages
from ._zsctl_output import EMPTY, enum_label
from ._zsctl_storage_commands import NounFactory, VerbAdder, _finish, child_name, size

T = TypeVar("T")
VM_COLUMNS = ("NAME", "STATE", "HOST", "VCPUS", "MEMORY", "DISKS", "NICS")
MiB = 1 << 20


def vm_name(text: str) -> str:
    return text if text.startswith("vms/") else f"vms/{text}"


def memory_mib(text: str) -> int:
    """``512M``, ``2G``; a bare number is MiB (what people mean for memory)."""
    value = int(text) * MiB if text.isdigit() else size(text)
    if value % MiB:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of MiB")
    return value // MiB


def disk_argument(text: str) -> compute_pb2.VmDisk:
    """``POOL/VOLUME[,bus=sata][,readonly][,boot=N][,serial=S]``."""
    volume, *options = text.split(",")
    disk = compute_pb2.VmDisk(volume=child_name(volume, "volumes"))
    for option in options:
        key, _, value = option.partition("=")
        if key == "bus":
            disk.bus = value
        elif key == "readonly" and not value:
            disk.readonly = True
        elif key == "boot" and value.isdigit():
            disk.boot_order = int(value)
        elif key == "serial":
            disk.serial = value
        else:
            raise argparse.ArgumentTypeError(
                f"{option!r}: disk options are bus=BUS, readonly, boot=N, serial=TEXT"
            )
    return disk


def nic_argument(text: str) -> compute_pb2.VmNic:
    """``nic=NIC`` (a network NIC) or ``bridge=BR``, ``[,model=M][,backend=B][,mac=MAC][,mtu=N][,boot=N]
    [,socket=PATH]``; ``-`` = defaults."""
    nic = compute_pb2.VmNic()
    if text == "-":
        return nic
    for option in text.split(","):
        key, _, value = option.partition("=")
        if key in ("bridge", "model", "backend", "mac") and value:
            setattr(nic, key, value)
        elif key == "nic" and value:
            nic.nic = value if value.startswith("nics/") else f"nics/{value}"
        elif key == "socket" and value:
            nic.socket_path = value
        elif key in ("mtu", "boot") and value.isdigit():
            setattr(nic, "mtu" if key == "mtu" else "boot_order", int(value))
        else:
            raise argparse.ArgumentTypeError(
                f"{option!r}: NIC options are nic=, bridge=, model=, backend=, mac=, mtu=, boot=, socket="
            )
    return nic


def vm_rows(vms: Sequence[compute_pb2.Vm]) -> list[list[str]]:
    return [
        [
            v.name.removeprefix("vms/"),
            enum_label(compute_pb2.Vm.State.DESCRIPTOR, v.state),
            v.host.removeprefix("hosts/") or EMPTY,
            str(v.vcpus),
            f"{v.memory_mib} MiB",
            ",".join(d.volume.removeprefix("pools/").replace("/volumes/", "/") for d in v.disks) or EMPTY,
            str(len(v.nics)),
        ]
        for v in vms
    ]


# -- handlers -----------------------------------------------------------------------------------


def cmd_vm_list(args: argparse.Namespace, api: Api, console: Console) -> int:
    def fetch(token: str) -> tuple[Sequence[compute_pb2.Vm], str]:
        r = api.vms.ListVms(compute_pb2.ListVmsRequest(page_token=token), timeout=api.timeout)
        return r.vms, r.next_page_token

    vms = collect_pages(fetch)
    console.many(vms, VM_COLUMNS, vm_rows(vms))
    return 0


def cmd_vm_show(args: argparse.Namespace, api: Api, console: Console) -> int:
    console.one(api.vms.GetVm(compute_pb2.GetVmRequest(name=vm_name(args.name)), timeout=api.timeout))
    return 0


def cmd_vm_create(args: argparse.Namespace, api: Api, console: Console) -> int:
    vm = compute_pb2.Vm(
        vcpus=args.vcpus,
        memory_mib=args.memory,
        machine=args.machine or "",
        firmware=args.firmware or "",
        graphics=args.graphics or "",
        disks=args.disk or [],
        nics=args.nic or [],
        ha=args.ha,
        hostdevs=args.hostdev or [],
        group=args.group or "",
        description=args.description or "",
    )
    if args.topology:
        try:
            vm.sockets, vm.cores, vm.threads = (int(x) for x in args.topology.split("x"))
        except ValueError:
            raise CommandError(f"--topology {args.topology!r} is not SOCKETSxCORESxTHREADS") from None
    request = compute_pb2.CreateVmRequest(
        vm_id=args.name.removeprefix("vms/"),
        vm=vm,
        image=child_name(args.image, "images") if args.image else "",
        root_pool=args.root_pool or "",
        root_size_bytes=args.root_size or 0,
        no_start=args.no_start,
        flatten_root=args.flatten,
        host="" if not args.host else args.host if args.host.startswith("hosts/") else f"hosts/{args.host}",
        request_id=args.request_id or str(uuid.uuid4()),
    )
    return _finish(args, api, console, api.vms.CreateVm(request, timeout=api.timeout), compute_pb2.Vm)


def cmd_vm_update(args: argparse.Namespace, api: Api, console: Console) -> int:
    paths = [p for p, v in (("vcpus", args.vcpus), ("memory_mib", args.memory)) if v is not None]
    if not paths:
        raise CommandError("nothing to change: give --vcpus and/or --memory")
    vm = compute_pb2.Vm(name=vm_name(args.name), vcpus=args.vcpus or 0, memory_mib=args.memory or 0)
    request = compute_pb2.UpdateVmRequest(vm=vm, update_mask=field_mask_pb2.FieldMask(paths=paths))
    console.one(api.vms.UpdateVm(request, timeout=api.timeout))
    return 0


def cmd_vm_delete(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = compute_pb2.DeleteVmRequest(
        name=vm_name(args.name), delete_volumes=args.volumes, request_id=args.request_id or str(uuid.uuid4())
    )
    return _finish(args, api, console, api.vms.DeleteVm(request, timeout=api.timeout), compute_pb2.Vm)


def cmd_vm_stop(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = compute_pb2.StopVmRequest(
        name=vm_name(args.name),
        timeout_seconds=args.timeout_guest or 0,
        force=args.force,
        request_id=args.request_id or str(uuid.uuid4()),
    )
    return _finish(args, api, console, api.vms.StopVm(request, timeout=api.timeout), compute_pb2.Vm)


def cmd_vm_migrate(args: argparse.Namespace, api: Api, console: Console) -> int:
    host = "" if not args.to else args.to if args.to.startswith("hosts/") else f"hosts/{args.to}"
    request = compute_pb2.MigrateVmRequest(
        name=vm_name(args.name), host=host, request_id=args.request_id or str(uuid.uuid4())
    )
    return _finish(args, api, console, api.vms.MigrateVm(request, timeout=api.timeout), compute_pb2.Vm)


def cmd_vm_capture(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = compute_pb2.CaptureVmRequest(
        name=vm_name(args.name),
        image=child_name(args.image, "images"),
        description=args.description or "",
        request_id=args.request_id or str(uuid.uuid4()),
    )
    return _finish(args, api, console, api.vms.CaptureVm(request, timeout=api.timeout), storage_pb2.Image)


def cmd_vm_evacuate(args: argparse.Namespace, api: Api, console: Console) -> int:
    host = args.host if args.host.startswith("hosts/") else f"hosts/{args.host}"
    request = compute_pb2.EvacuateHostRequest(host=host, request_id=args.request_id or str(uuid.uuid4()))
    return _finish(
        args, api, console, api.vms.EvacuateHost(request, timeout=api.timeout), compute_pb2.EvacuateHostResult
    )


def _power(call: str) -> Callable[[argparse.Namespace, Api, Console], int]:
    requests = {
        "StartVm": compute_pb2.StartVmRequest,
        "RebootVm": compute_pb2.RebootVmRequest,
        "PauseVm": compute_pb2.PauseVmRequest,
        "ResumeVm": compute_pb2.ResumeVmRequest,
    }

    def handler(args: argparse.Namespace, api: Api, console: Console) -> int:
        method = getattr(api.vms, call)
        console.one(method(requests[call](name=vm_name(args.name)), timeout=api.timeout))
        return 0

    return handler


def cmd_vm_attach_disk(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = compute_pb2.AttachDiskRequest(name=vm_name(args.name), disk=args.disk)
    console.one(api.vms.AttachDisk(request, timeout=api.timeout))
    return 0


def cmd_vm_detach_disk(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = compute_pb2.DetachDiskRequest(
        name=vm_name(args.name), volume=child_name(args.volume, "volumes")
    )
    console.one(api.vms.DetachDisk(request, timeout=api.timeout))
    return 0


def cmd_vm_attach_nic(args: argparse.Namespace, api: Api, console: Console) -> int:
    nic = _one(args.nic, args.nic_option, "a NIC: bridge=BR[,...] or --nic nic=NAME")
    request = compute_pb2.AttachNicRequest(name=vm_name(args.name), nic=nic)
    console.one(api.vms.AttachNic(request, timeout=api.timeout))
    return 0


def cmd_vm_detach_nic(args: argparse.Namespace, api: Api, console: Console) -> int:
    mac = _one(args.mac, args.nic, "the NIC's MAC, or --nic NAME for a network NIC")
    if args.nic:
        # A network NIC is unplugged by its MAC, which its record holds.
        name = args.nic if args.nic.startswith("nics/") else f"nics/{args.nic}"
        mac = api.network.GetNic(network_pb2.GetNicRequest(name=name), timeout=api.timeout).mac
    request = compute_pb2.DetachNicRequest(name=vm_name(args.name), mac=mac)
    console.one(api.vms.DetachNic(request, timeout=api.timeout))
    return 0


def _one(positional: T | None, option: T | None, what: str) -> T:
    """The one of two spellings of an argument that was given."""
    given = [v for v in (positional, option) if v is not None]
    if len(given) != 1:
        raise CommandError(f"give {what} (one of the two spellings, not both)")
    return given[0]


def cmd_vm_console(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = compute_pb2.StreamConsoleRequest(name=vm_name(args.name), follow=args.follow)
    out = sys.stdout.buffer if console.out is sys.stdout else None
    for chunk in api.vms.StreamConsole(request, timeout=api.stream_timeout):
        if out is not None:
            out.write(chunk.data)
            out.flush()
        else:
            console.out.write(chunk.data.decode(errors="replace"))
    return 0


def cmd_vm_display(args: argparse.Namespace, api: Api, console: Console) -> int:
    display = api.vms.GetDisplay(compute_pb2.GetDisplayRequest(name=vm_name(args.name)), timeout=api.timeout)
    if console.fmt == "table":
        console.line(f"{display.protocol}://{display.address}:{display.port}")
    else:
        console.one(display)
    return 0


# -- the noun -----------------------------------------------------------------------------------


def add_vm_noun(noun: NounFactory, operation_options: Callable[[argparse.ArgumentParser], None]) -> None:
    vms: VerbAdder = noun("vm", "virtual machines")
    vms.verb("list", "list the VMs", cmd_vm_list)
    vms.verb("show", "show one VM", cmd_vm_show).add_argument("name", metavar="VM")
    create = vms.verb("create", "create a VM (and start it unless --no-start)", cmd_vm_create)
    _create_options(create, operation_options)
    update = vms.verb("update", "change vCPUs or memory of a stopped VM", cmd_vm_update)
    update.add_argument("name", metavar="VM")
    update.add_argument("--vcpus", type=int)
    update.add_argument("--memory", type=memory_mib)
    delete = vms.verb("delete", "delete a stopped VM (its volumes are kept unless --volumes)", cmd_vm_delete)
    delete.add_argument("name", metavar="VM")
    delete.add_argument("--volumes", action="store_true", help="also delete its volumes")
    operation_options(delete)
    for verb, call, text in (
        ("start", "StartVm", "start a stopped VM"),
        ("reboot", "RebootVm", "ACPI reboot request"),
        ("pause", "PauseVm", "pause the vCPUs"),
        ("resume", "ResumeVm", "resume a paused VM"),
    ):
        vms.verb(verb, text, _power(call)).add_argument("name", metavar="VM")
    stop = vms.verb("stop", "ACPI shutdown, forced off after --guest-timeout", cmd_vm_stop)
    stop.add_argument("name", metavar="VM")
    stop.add_argument("--guest-timeout", dest="timeout_guest", type=int, help="seconds (default 60)")
    stop.add_argument("--force", action="store_true", help="power off at once")
    operation_options(stop)
    migrate = vms.verb("migrate", "move a VM to another host (live when it runs)", cmd_vm_migrate)
    migrate.add_argument("name", metavar="VM")
    migrate.add_argument("--to", metavar="HOST", help="default: the host placement chooses")
    operation_options(migrate)
    capture = vms.verb(
        "capture", "full clone: copy a stopped VM's boot disk into a new image", cmd_vm_capture
    )
    capture.add_argument("name", metavar="VM")
    capture.add_argument("image", metavar="POOL/IMAGE")
    capture.add_argument("--description")
    operation_options(capture)
    evacuate = vms.verb(
        "evacuate", "move every VM off a host (label it maintenance=true first)", cmd_vm_evacuate
    )
    evacuate.add_argument("host", metavar="HOST")
    operation_options(evacuate)
    attach = vms.verb("attach-disk", "attach a volume (hot-plug when running)", cmd_vm_attach_disk)
    attach.add_argument("name", metavar="VM")
    attach.add_argument("disk", type=disk_argument, metavar="POOL/VOLUME[,bus=B,readonly]")
    detach = vms.verb("detach-disk", "detach a volume (hot-unplug when running)", cmd_vm_detach_disk)
    detach.add_argument("name", metavar="VM")
    detach.add_argument("volume", metavar="POOL/VOLUME")
    attach_nic = vms.verb("attach-nic", "add a NIC (hot-plug when running)", cmd_vm_attach_nic)
    attach_nic.add_argument("name", metavar="VM")
    attach_nic.add_argument("nic", type=nic_argument, nargs="?", metavar="bridge=BR[,model=M,mac=MAC,...]|-")
    attach_nic.add_argument(
        "--nic",
        dest="nic_option",
        type=nic_argument,
        metavar="nic=NIC|bridge=BR[,model=M,...]",
        help="the NIC, as in vm create; nic=NAME plugs a network NIC (it must be free)",
    )
    detach_nic = vms.verb(
        "detach-nic", "remove a NIC (a network NIC is freed, not deleted)", cmd_vm_detach_nic
    )
    detach_nic.add_argument("name", metavar="VM")
    detach_nic.add_argument("mac", nargs="?", metavar="MAC")
    detach_nic.add_argument("--nic", metavar="NIC", help="a network NIC by name instead of its MAC")
    cons = vms.verb("console", "the serial console's output", cmd_vm_console)
    cons.add_argument("name", metavar="VM")
    cons.add_argument("--follow", "-f", action="store_true", help="keep printing new output")
    vms.verb("display", "where the VNC/SPICE display listens", cmd_vm_display).add_argument(
        "name", metavar="VM"
    )


def _create_options(
    create: argparse.ArgumentParser, operation_options: Callable[[argparse.ArgumentParser], None]
) -> None:
    create.add_argument("name", metavar="VM")
    create.add_argument("--image", metavar="POOL/IMAGE", help="boot from a linked clone of this image")
    create.add_argument(
        "--root-pool", metavar="POOL", help="where the root volume goes (default: the image's)"
    )
    create.add_argument("--root-size", type=size, help="root volume size (default: the image's)")
    create.add_argument("--vcpus", type=int, default=1)
    create.add_argument("--topology", metavar="SxCxT", help="sockets x cores x threads = vcpus")
    create.add_argument("--memory", type=memory_mib, default=512, help="e.g. 512M, 2G (default 512M)")
    create.add_argument("--machine", choices=("pc", "q35"))
    create.add_argument("--firmware", choices=("bios", "uefi"))
    create.add_argument("--graphics", choices=("vnc", "spice", "none"))
    create.add_argument(
        "--disk", type=disk_argument, action="append", metavar="POOL/VOLUME[,bus=B,readonly,boot=N]"
    )
    create.add_argument(
        "--nic", type=nic_argument, action="append", metavar="nic=NIC|bridge=BR[,model=M,mac=MAC,...]|-"
    )
    create.add_argument("--ha", action="store_true", help="restart it elsewhere when its host dies")
    create.add_argument(
        "--hostdev", action="append", metavar="DDDD:BB:SS.F", help="pass a host PCI device or VF through"
    )
    create.add_argument("--group", help="its VM scheduling group")
    create.add_argument("--description")
    create.add_argument("--no-start", action="store_true", help="define only")
    create.add_argument(
        "--flatten",
        action="store_true",
        help="instant full clone: boot from the linked clone at once, then copy the image in (live)",
    )
    create.add_argument("--host", help="run it on this host (placement still checks it can)")
    operation_options(create)

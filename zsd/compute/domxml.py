"""libvirt domain XML as plain objects: one frozen dataclass per element, each
rendering itself. No policy lives here (which bus, which cache mode, what a
"virtio NIC" means is the designer's job); these objects only say what libvirt
will read. Text and attribute values go through ElementTree, which escapes them,
so no value can inject markup.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    child = ET.SubElement(parent, tag, {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()})
    if text is not None:
        child.text = text
    return child


@dataclass(frozen=True, kw_only=True)
class CpuTopology:
    sockets: int
    cores: int
    threads: int


@dataclass(frozen=True, kw_only=True)
class Cpu:
    # "host-model"/"host-passthrough" need KVM; TCG guests get QEMU's default model.
    mode: str = ""
    topology: CpuTopology | None = None

    def render(self, parent: ET.Element) -> None:
        if not self.mode and self.topology is None:
            return
        cpu = _sub(parent, "cpu", **({"mode": self.mode} if self.mode else {}))
        if self.topology is not None:
            t = self.topology
            _sub(
                cpu, "topology", sockets=str(t.sockets), dies="1", cores=str(t.cores), threads=str(t.threads)
            )


@dataclass(frozen=True, kw_only=True)
class Firmware:
    """UEFI: OVMF code (read-only pflash) and the VM's own variable store."""

    loader: str
    nvram_template: str
    nvram: str
    secure: bool = False


@dataclass(frozen=True, kw_only=True)
class Os:
    machine: str
    arch: str = "x86_64"
    firmware: Firmware | None = None
    # Boot order lives on the devices (<boot order=N/>); this is only for
    # devices that have no element of their own (none today).
    bootmenu: bool = False

    def render(self, parent: ET.Element) -> None:
        os_ = _sub(parent, "os")
        _sub(os_, "type", "hvm", arch=self.arch, machine=self.machine)
        fw = self.firmware
        if fw is not None:
            _sub(
                os_,
                "loader",
                fw.loader,
                readonly="yes",
                secure="yes" if fw.secure else "no",
                type="pflash",
            )
            _sub(os_, "nvram", fw.nvram, template=fw.nvram_template)
        if self.bootmenu:
            _sub(os_, "bootmenu", enable="yes")


@dataclass(frozen=True, kw_only=True)
class IoTune:
    """<iotune> children in libvirt's order (names are libvirt's)."""

    params: tuple[tuple[str, str], ...]

    def render(self, parent: ET.Element) -> None:
        if not self.params:
            return
        iotune = _sub(parent, "iotune")
        for key, value in self.params:
            _sub(iotune, key, value)


@dataclass(frozen=True, kw_only=True)
class Disk:
    source_file: str
    target_dev: str
    bus: str
    format: str = "qcow2"
    cache: str = "none"
    io: str = ""
    device: str = "disk"
    readonly: bool = False
    boot_order: int = 0
    serial: str = ""
    iotune: IoTune | None = None
    alias: str = ""

    def render(self, parent: ET.Element) -> None:
        disk = _sub(parent, "disk", type="file", device=self.device)
        driver = {"name": "qemu", "type": self.format, "cache": self.cache}
        if self.io:
            driver["io"] = self.io
        if self.bus == "virtio":
            driver["discard"] = "unmap"
        _sub(disk, "driver", **driver)
        _sub(disk, "source", file=self.source_file)
        _sub(disk, "target", dev=self.target_dev, bus=self.bus)
        if self.iotune is not None:
            self.iotune.render(disk)
        if self.readonly:
            _sub(disk, "readonly")
        if self.serial:
            _sub(disk, "serial", self.serial)
        if self.boot_order:
            _sub(disk, "boot", order=str(self.boot_order))
        if self.alias:
            _sub(disk, "alias", name=self.alias)


@dataclass(frozen=True, kw_only=True)
class Interface:
    """A NIC. ``kind``: "bridge" (a tap on a Linux bridge), "ethernet" (a bare tap
    zsd plugs itself) or "vhostuser" (a unix socket served by a DPDK/SPDK backend)."""

    kind: str
    mac: str
    model: str
    bridge: str = ""
    tap: str = ""
    socket_path: str = ""
    # "vhost" (kernel vhost-net) or "qemu" (QEMU's own userspace backend); virtio only.
    driver: str = ""
    queues: int = 0
    mtu: int = 0
    boot_order: int = 0
    alias: str = ""

    def render(self, parent: ET.Element) -> None:
        iface = _sub(parent, "interface", type=self.kind)
        _sub(iface, "mac", address=self.mac)
        if self.kind == "bridge":
            _sub(iface, "source", bridge=self.bridge)
        elif self.kind == "vhostuser":
            _sub(iface, "source", type="unix", path=self.socket_path, mode="client")
        if self.tap:
            # libvirt creates the tap (and removes it with the VM); the network layer plugs it.
            _sub(iface, "target", dev=self.tap)
        _sub(iface, "model", type=self.model)
        driver: dict[str, str] = {}
        if self.driver:
            driver["name"] = self.driver
        if self.queues > 1:
            driver["queues"] = str(self.queues)
        if driver:
            _sub(iface, "driver", **driver)
        if self.mtu:
            _sub(iface, "mtu", size=str(self.mtu))
        if self.boot_order:
            _sub(iface, "boot", order=str(self.boot_order))
        if self.alias:
            _sub(iface, "alias", name=self.alias)


@dataclass(frozen=True, kw_only=True)
class PciAddress:
    domain: int
    bus: int
    slot: int
    function: int

    @property
    def text(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:x}"


@dataclass(frozen=True, kw_only=True)
class HostdevPci:
    """A host PCI device (or SR-IOV VF) given to the guest exclusively (VFIO)."""

    address: PciAddress
    alias: str = ""

    def render(self, parent: ET.Element) -> None:
        hostdev = _sub(parent, "hostdev", mode="subsystem", type="pci", managed="yes")
        _sub(hostdev, "driver", name="vfio")
        source = _sub(hostdev, "source")
        a = self.address
        _sub(
            source,
            "address",
            domain=f"0x{a.domain:04x}",
            bus=f"0x{a.bus:02x}",
            slot=f"0x{a.slot:02x}",
            function=f"0x{a.function:x}",
        )
        if self.alias:
            _sub(hostdev, "alias", name=self.alias)


@dataclass(frozen=True, kw_only=True)
class Lease:
    """A sanlock resource lease QEMU holds through libvirt while the VM runs."""

    lockspace: str
    key: str
    path: str
    offset: int = 0

    def render(self, parent: ET.Element) -> None:
        lease = _sub(parent, "lease")
        _sub(lease, "lockspace", self.lockspace)
        _sub(lease, "key", self.key)
        _sub(lease, "target", path=self.path, offset=str(self.offset))


@dataclass(frozen=True, kw_only=True)
class SerialConsole:
    """ttyS0 as a pty, every byte also appended to ``log_file`` by virtlogd: the
    console stream and history survive zsd restarts."""

    log_file: str

    def render(self, parent: ET.Element) -> None:
        serial = _sub(parent, "serial", type="pty")
        _sub(serial, "log", file=self.log_file, append="on")
        _sub(serial, "target", port="0")
        console = _sub(parent, "console", type="pty")
        _sub(console, "target", type="serial", port="0")


@dataclass(frozen=True, kw_only=True)
class Graphics:
    kind: str  # "vnc" or "spice"
    listen: str

    def render(self, parent: ET.Element) -> None:
        graphics = _sub(parent, "graphics", type=self.kind, autoport="yes", listen=self.listen)
        _sub(graphics, "listen", type="address", address=self.listen)


@dataclass(frozen=True, kw_only=True)
class Devices:
    emulator: str
    disks: tuple[Disk, ...] = ()
    interfaces: tuple[Interface, ...] = ()
    hostdevs: tuple[HostdevPci, ...] = ()
    leases: tuple[Lease, ...] = ()
    serial: SerialConsole | None = None
    graphics: Graphics | None = None
    # "virtio-scsi" when a disk uses the scsi bus.
    scsi_controller: bool = False
    video: str = ""
    pcie_root_ports: int = 0

    def render(self, parent: ET.Element) -> None:
        devices = _sub(parent, "devices")
        _sub(devices, "emulator", self.emulator)
        for disk in self.disks:
            disk.render(devices)
        if self.scsi_controller:
            _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
        for _ in range(self.pcie_root_ports):
            _sub(devices, "controller", type="pci", model="pcie-root-port")
        for lease in self.leases:
            lease.render(devices)
        for iface in self.interfaces:
            iface.render(devices)
        for hostdev in self.hostdevs:
            hostdev.render(devices)
        if self.serial is not None:
            self.serial.render(devices)
        if self.graphics is not None:
            self.graphics.render(devices)
        if self.video:
            video = _sub(devices, "video")
            _sub(video, "model", type=self.video)
        # Guests get entropy from the host and no balloon (memory is reserved, not shared).
        rng = _sub(devices, "rng", model="virtio")
        _sub(rng, "backend", "/dev/urandom", model="random")
        _sub(devices, "memballoon", model="none")


@dataclass(frozen=True, kw_only=True)
class Domain:
    kind: str  # "kvm" or "qemu" (TCG)
    name: str
    uuid: str
    memory_kib: int
    vcpus: int
    os: Os
    cpu: Cpu
    devices: Devices
    title: str = ""
    metadata: tuple[ET.Element, ...] = field(default=())

    def element(self) -> ET.Element:
        root = ET.Element("domain", {"type": self.kind})
        _sub(root, "name", self.name)
        _sub(root, "uuid", self.uuid)
        if self.title:
            _sub(root, "title", self.title)
        if self.metadata:
            meta = _sub(root, "metadata")
            meta.extend(self.metadata)
        _sub(root, "memory", str(self.memory_kib), unit="KiB")
        _sub(root, "currentMemory", str(self.memory_kib), unit="KiB")
        _sub(root, "vcpu", str(self.vcpus), placement="static")
        self.os.render(root)
        features = _sub(root, "features")
        _sub(features, "acpi")
        _sub(features, "apic")
        self.cpu.render(root)
        clock = _sub(root, "clock", offset="utc")
        _sub(clock, "timer", name="rtc", tickpolicy="catchup")
        _sub(clock, "timer", name="pit", tickpolicy="delay")
        _sub(clock, "timer", name="hpet", present="no")
        _sub(root, "on_poweroff", "destroy")
        _sub(root, "on_reboot", "restart")
        _sub(root, "on_crash", "destroy")
        self.devices.render(root)
        return root

    def to_xml(self) -> str:
        root = self.element()
        ET.indent(root)
        return ET.tostring(root, encoding="unicode")

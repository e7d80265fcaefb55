"""What libvirtd says about itself: reachable at all, the libvirt and QEMU versions,
and from its capabilities the host CPU model as libvirt names it (what guest CPU
definitions and migration compatibility are expressed in) and the domain types
it offers for the host's architecture."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from xml.etree import ElementTree


@dataclass(frozen=True, kw_only=True)
class LibvirtInfo:
    reachable: bool
    libvirt_version: str = ""
    # The hypervisor driver's version: QEMU's for qemu:// URIs.
    qemu_version: str = ""
    # Why libvirtd could not be asked (empty when reachable).
    error: str = ""
    cpu_model: str = ""
    # e.g. ("qemu", "kvm"): what libvirt believes it can run (it does not test KVM).
    domain_types: tuple[str, ...] = ()


class LibvirtInfoSource(Protocol):
    def read(self) -> LibvirtInfo:
        """Ask libvirtd; blocking and never raising. Callers bound how long they wait."""
        ...


class LibvirtConnection(Protocol):
    """The part of ``libvirt.virConnect`` used here."""

    def getLibVersion(self) -> int: ...
    def getVersion(self) -> int: ...
    def getCapabilities(self) -> str: ...
    def close(self) -> int: ...


def parse_capabilities(xml: str) -> tuple[str, tuple[str, ...]]:
    """(host CPU model, domain types for the host's arch) from capabilities XML; empty when absent."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return "", ()
    model = root.findtext("host/cpu/model", default="").strip()
    arch = root.findtext("host/cpu/arch", default="").strip()
    types: list[str] = []
    for guest in root.findall("guest"):
        guest_arch = guest.find("arch")
        if guest_arch is None or (arch and guest_arch.get("name") != arch):
            continue
        for domain in guest_arch.findall("domain"):
            kind = domain.get("type", "")
            if kind and kind not in types:
                types.append(kind)
    return model, tuple(types)


def format_version(number: int) -> str:
    """libvirt encodes versions as major * 1,000,000 + minor * 1,000 + micro."""
    return f"{number // 1_000_000}.{number // 1_000 % 1_000}.{number % 1_000}"


class LibvirtConnectionSource:
    """Opens a read-only connection per read: facts are collected rarely, and a
    connection kept open would need its own reconnect logic."""

    def __init__(self, *, uri: str, open_read_only: Callable[[str], LibvirtConnection] | None = None) -> None:
        self._uri = uri
        # None means libvirt.openReadOnly, looked up on use so a host without the
        # Python bindings still gets its other facts.
        self._open_read_only = open_read_only

    def read(self) -> LibvirtInfo:
        try:
            import libvirt
        except ImportError:
            return LibvirtInfo(reachable=False, error="the libvirt Python module is not installed")
        open_read_only = self._open_read_only or libvirt.openReadOnly
        try:
            connection = open_read_only(self._uri)
            try:
                lib_version = connection.getLibVersion()
                hv_version = connection.getVersion()
                cpu_model, domain_types = parse_capabilities(connection.getCapabilities())
            finally:
                connection.close()
        except libvirt.libvirtError as e:
            return LibvirtInfo(reachable=False, error=f"libvirt at {self._uri} not reachable: {e}")
        return LibvirtInfo(
            reachable=True,
            libvirt_version=format_version(lib_version),
            qemu_version=format_version(hv_version),
            cpu_model=cpu_model,
            domain_types=domain_types,
        )

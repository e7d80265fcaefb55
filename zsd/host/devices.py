"""Disks and network interfaces from sysfs, plus interface addresses in CIDR form."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from zsd.host.model import DiskFacts, NicFacts
from zsd.host.sysinfo import read_int, read_text

# Block devices that are not disks a VM could use: loop and RAM devices, device
# mapper stacks (built on disks that are listed themselves) and optical drives.
_SKIPPED_DISK_PREFIXES = ("loop", "ram", "zram", "dm-", "sr")
# /sys/block/*/size counts 512-byte sectors whatever the logical block size.
_SECTOR_BYTES = 512


def read_disks(*, sysfs: Path) -> tuple[DiskFacts, ...]:
    block = sysfs / "block"
    try:
        names = sorted(entry.name for entry in block.iterdir())
    except OSError:
        return ()
    disks = []
    for name in names:
        if name.startswith(_SKIPPED_DISK_PREFIXES):
            continue
        path = block / name
        disks.append(
            DiskFacts(
                name=name,
                size_bytes=(read_int(path / "size") or 0) * _SECTOR_BYTES,
                rotational=read_text(path / "queue/rotational") == "1",
                model=read_text(path / "device/model") or "",
                # virtio-blk puts its serial on the disk, SCSI/NVMe on the device.
                serial=read_text(path / "device/serial") or read_text(path / "serial") or "",
                wwid=read_text(path / "device/wwid") or read_text(path / "wwid") or "",
            )
        )
    return tuple(disks)


def read_nics(*, sysfs: Path, addresses: Mapping[str, Sequence[str]]) -> tuple[NicFacts, ...]:
    """Every interface but loopback; ``addresses`` maps interface names to CIDR strings."""
    net = sysfs / "class/net"
    try:
        names = sorted(entry.name for entry in net.iterdir())
    except OSError:
        return ()
    nics = []
    for name in names:
        if name == "lo":
            continue
        path = net / name
        # A down or virtual link answers EINVAL or -1 for its speed.
        speed = read_int(path / "speed") or 0
        nics.append(
            NicFacts(
                name=name,
                mac_address=read_text(path / "address") or "",
                mtu=read_int(path / "mtu") or 0,
                up=read_text(path / "operstate") == "up",
                speed_mbps=max(0, speed),
                addresses=tuple(addresses.get(name, ())),
                driver=_driver(path),
            )
        )
    return tuple(nics)


def _driver(nic: Path) -> str:
    try:
        return os.path.basename(os.readlink(nic / "device/driver"))
    except OSError:
        return ""  # virtual interfaces (bridges, taps, ifb) have no device


class InterfaceAddress(Protocol):
    """The parts of psutil's ``snicaddr`` used here."""

    @property
    def family(self) -> int: ...
    @property
    def address(self) -> str: ...
    @property
    def netmask(self) -> str | None: ...


def cidr_addresses(if_addrs: Mapping[str, Sequence[InterfaceAddress]]) -> dict[str, tuple[str, ...]]:
    """psutil.net_if_addrs() -> {interface: ("192.0.2.10/24", "2001:db8::1/64", ...)}; MACs dropped."""
    result: dict[str, tuple[str, ...]] = {}
    for name, entries in if_addrs.items():
        cidrs = [
            cidr
            for entry in entries
            if entry.family in (socket.AF_INET, socket.AF_INET6)
            and (cidr := _cidr(entry.address, entry.netmask)) is not None
        ]
        result[name] = tuple(cidrs)
    return result


def _cidr(address: str, netmask: str | None) -> str | None:
    try:
        # Link-local IPv6 addresses come with a "%eth0" zone suffix.
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        prefix = _prefix_length(netmask) if netmask else ip.max_prefixlen
    except ValueError:
        return None
    return f"{ip}/{prefix}"


def _prefix_length(netmask: str) -> int:
    """'255.255.255.0' -> 24, 'ffff:ffff::' -> 32; ValueError for a non-contiguous mask."""
    mask = ipaddress.ip_address(netmask)
    bits = int(mask)
    host_bits = (~bits) & ((1 << mask.max_prefixlen) - 1)
    if host_bits & (host_bits + 1):
        raise ValueError(f"non-contiguous netmask {netmask}")
    return mask.max_prefixlen - host_bits.bit_length()

"""NICs: a port on a port group with its MAC and IP addresses, allocated by the leader
and never duplicated. One ``nic`` record per NIC in cluster.db; the VM using a NIC is
the VM record that lists it (so a deleted VM frees its NICs with its record, and a
migrated one takes them along).

MACs are locally administered unicast (``02:`` + 40 random bits) unless asked for.
Addresses: one per subnet of the port group, the lowest free one of its allocation
ranges (or of the subnet, less its network, broadcast and gateway addresses), unless
asked for; an address asked for must lie in one of the subnets and be free.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from zsd.cluster.store.model import Record
from zsd.errors import AlreadyExists, Internal, InvalidArgument, ResourceExhausted
from zsd.network.model import Address, PortGroup, Subnet

KIND_NIC = "nic"
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_SCAN_LIMIT = 1 << 20
"""Addresses looked at per subnet before giving up (a /64 is never scanned whole)."""


@dataclass(frozen=True, kw_only=True)
class NicRecord:
    name: str
    port_group: str
    """``{switch}/{port_group}``."""
    mac: str
    addresses: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    """In priority order (the first associated first)."""
    ingress_default: str = "deny"
    """What reaches the NIC when no rule of its groups matches: "deny" or "allow"."""
    egress_default: str = "allow"
    description: str = ""
    create_time: float = 0.0

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> NicRecord:
        try:
            doc: dict[str, Any] = json.loads(data)
            return cls(
                name=str(doc["name"]),
                port_group=str(doc["port_group"]),
                mac=str(doc["mac"]),
                addresses=tuple(str(a) for a in doc.get("addresses", ())),
                security_groups=tuple(str(g) for g in doc.get("security_groups", ())),
                ingress_default=str(doc.get("ingress_default", "deny")),
                egress_default=str(doc.get("egress_default", "allow")),
                description=str(doc.get("description", "")),
                create_time=float(doc.get("create_time", 0.0)),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise Internal(f"damaged NIC record in the cluster state: {e}") from e


def decode_all(records: Iterable[Record]) -> list[NicRecord]:
    return [NicRecord.decode(r.data) for r in records]


def random_mac(token: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """Locally administered (bit 1 of the first octet), unicast (bit 0 clear)."""
    return ":".join(f"{b:02x}" for b in (0x02, *token(5)))


def allocate_mac(asked: str, taken: set[str], *, token: Callable[[int], bytes] = secrets.token_bytes) -> str:
    if asked:
        mac = asked.lower()
        if not _MAC.fullmatch(mac):
            raise InvalidArgument(f"{asked!r} is not a MAC address like 02:00:5e:10:00:01", field="nic.mac")
        if int(mac[:2], 16) & 1:
            raise InvalidArgument(f"{mac} is a multicast address", field="nic.mac")
        if mac in taken:
            raise AlreadyExists(f"MAC {mac} is taken by another NIC", field="nic.mac", reason="MAC_TAKEN")
        return mac
    for _ in range(64):
        mac = random_mac(token)
        if mac not in taken:
            return mac
    raise ResourceExhausted("no free MAC address found", reason="NO_FREE_MAC")


def _reserved(subnet: Subnet) -> set[Address]:
    """The subnet's network, broadcast and gateway addresses, and its last usable one:
    the port group's DHCP/DNS service on every host (``zsd.network.dhcp``)."""
    network = subnet.network
    out: set[Address] = {network.network_address, service_address(subnet)}
    if network.version == 4:
        out.add(network.broadcast_address)
    if subnet.gateway:
        out.add(ipaddress.ip_address(subnet.gateway))
    return out


def service_address(subnet: Subnet) -> Address:
    """Where the port group's DHCP/DNS service answers: the last usable address."""
    network = subnet.network
    return network.broadcast_address - 1 if network.version == 4 else network.broadcast_address


def allocate_addresses(pg: PortGroup, asked: Sequence[str], taken: dict[str, str]) -> tuple[str, ...]:
    """The NIC's addresses in ``pg``: those asked for (checked), then the lowest free
    one of each subnet no asked address is in. ``taken``: address -> NIC holding it."""
    chosen: list[str] = []
    covered: set[int] = set()
    for i, text in enumerate(asked):
        field = f"nic.ip_addresses[{i}]"
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise InvalidArgument(f"{text!r} is not an IPv4 or IPv6 address", field=field) from None
        index = next((k for k, s in enumerate(pg.subnets) if address in s.network), None)
        if index is None:
            subnets = ", ".join(s.cidr for s in pg.subnets) or "none"
            raise InvalidArgument(
                f"{address} is in no subnet of port group {pg.key} (subnets: {subnets})", field=field
            )
        if address in _reserved(pg.subnets[index]):
            raise InvalidArgument(
                f"{address} is the subnet's network, broadcast, gateway or DHCP service address", field=field
            )
        if str(address) in taken or str(address) in chosen:
            holder = taken.get(str(address), "this NIC")
            raise AlreadyExists(f"{address} is taken by {holder}", field=field, reason="ADDRESS_TAKEN")
        if index in covered:
            raise InvalidArgument(f"two addresses in subnet {pg.subnets[index].cidr}", field=field)
        covered.add(index)
        chosen.append(str(address))
    for index, subnet in enumerate(pg.subnets):
        if index not in covered:
            chosen.append(_lowest_free(pg, subnet, taken))
    return tuple(chosen)


def _lowest_free(pg: PortGroup, subnet: Subnet, taken: dict[str, str]) -> str:
    network = subnet.network
    reserved = _reserved(subnet)
    ranges = subnet.allocation_ranges or (
        (str(network.network_address + 1), str(network.network_address + network.num_addresses - 1)),
    )
    for start, end in ranges:
        first, last = int(ipaddress.ip_address(start)), int(ipaddress.ip_address(end))
        for value in range(first, min(last, first + _SCAN_LIMIT) + 1):
            address = ipaddress.ip_address(value)
            if address not in reserved and str(address) not in taken:
                return str(address)
    raise ResourceExhausted(
        f"subnet {subnet.cidr} of port group {pg.key} has no free address left",
        reason="SUBNET_EXHAUSTED",
    )

"""Distributed switches and port groups as zsd stores them, with every check a bad
request can fail. Errors name the field (``switch.mtu``, ``port_group.subnets[1].gateway``)
and say what is allowed.

A switch spans hosts through an uplink: a host NIC carrying 802.1Q tags (VLAN) or the
underlay interface of a VXLAN overlay. Each port group is one Linux bridge per host
(same name everywhere, derived from the port group's name), joined by the uplink's
VLAN sub-interface or by a VXLAN device.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

from zsd.errors import InvalidArgument
from zsd.storage import validate as names

KINDS = ("vlan", "vxlan")
MAX_VLAN = 4094
MAX_VNI = 16_777_215
MIN_MTU, MAX_MTU = 576, 9000
MAX_SUBNETS = 8
MAX_DNS = 4
IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, kw_only=True)
class Switch:
    name: str
    kind: str
    uplink: str
    host_uplinks: tuple[tuple[str, str], ...] = ()
    """(host, interface): hosts whose uplink has another name."""
    mtu: int = 0
    hosts: tuple[str, ...] = ()
    """The hosts carrying the switch; empty: every member."""
    description: str = ""
    create_time: float = 0.0

    def uplink_on(self, host: str) -> str:
        return dict(self.host_uplinks).get(host, self.uplink)

    def spans(self, host: str) -> bool:
        return not self.hosts or host in self.hosts


@dataclass(frozen=True, kw_only=True)
class Subnet:
    cidr: str
    gateway: str = ""
    allocation_ranges: tuple[tuple[str, str], ...] = ()

    @property
    def network(self) -> Network:
        return ipaddress.ip_network(self.cidr)


@dataclass(frozen=True, kw_only=True)
class PortGroup:
    switch: str
    name: str
    vlan_id: int = 0
    vni: int = 0
    subnets: tuple[Subnet, ...] = ()
    dns_servers: tuple[str, ...] = ()
    domain: str = ""
    dhcp: bool = False
    description: str = ""
    create_time: float = 0.0

    @property
    def key(self) -> str:
        """The port group's record name: ``{switch}/{port_group}``."""
        return f"{self.switch}/{self.name}"

    @property
    def segment(self) -> int:
        return self.vlan_id or self.vni

    @property
    def bridge(self) -> str:
        return link_name("zb", self.key)

    @property
    def vlan_link(self) -> str:
        return link_name("zv", self.key)

    @property
    def vxlan_link(self) -> str:
        return link_name("zx", self.key)


def link_name(prefix: str, key: str) -> str:
    """A kernel interface name (15 characters at most) for ``key`` that is the same on
    every host and cannot collide in practice: prefix + 10 hex digits of its hash."""
    return prefix + hashlib.sha256(key.encode()).hexdigest()[:10]


def _bad(field_: str, message: str, reason: str = "BAD_NETWORK") -> InvalidArgument:
    return InvalidArgument(message, field=field_, reason=reason)


def _ifname(value: str, field_: str) -> None:
    if not IFNAME.fullmatch(value):
        raise _bad(
            field_,
            f"{value!r} is not an interface name: 1-15 of A-Za-z0-9_.-, starting with a letter or digit",
        )


def validate_switch(switch: Switch, *, prefix: str = "switch") -> Switch:
    names.name(switch.name, field=f"{prefix}_id")
    if switch.kind not in KINDS:
        raise _bad(f"{prefix}.kind", f"{switch.kind!r} is not one of {', '.join(KINDS)}")
    _ifname(switch.uplink, f"{prefix}.uplink")
    for host, iface in switch.host_uplinks:
        names.name(host, field=f"{prefix}.host_uplinks")
        _ifname(iface, f"{prefix}.host_uplinks[{host}]")
    if switch.mtu and not MIN_MTU <= switch.mtu <= MAX_MTU:
        raise _bad(
            f"{prefix}.mtu", f"must be 0 (the kernel's default) or {MIN_MTU}..{MAX_MTU}, got {switch.mtu}"
        )
    for i, host in enumerate(switch.hosts):
        names.name(host, field=f"{prefix}.hosts[{i}]")
    if len(set(switch.hosts)) != len(switch.hosts):
        raise _bad(f"{prefix}.hosts", "a host is listed twice")
    if len(switch.description) > 1024:
        raise _bad(f"{prefix}.description", "at most 1024 characters")
    return switch


def validate_port_group(pg: PortGroup, switch: Switch, *, prefix: str = "port_group") -> PortGroup:
    names.name(pg.name, field=f"{prefix}_id")
    if switch.kind == "vlan":
        if pg.vni:
            raise _bad(f"{prefix}.vni", f"switch {switch.name} is a VLAN switch: set vlan_id, not vni")
        if not 1 <= pg.vlan_id <= MAX_VLAN:
            raise _bad(f"{prefix}.vlan_id", f"a VLAN id is 1..{MAX_VLAN}, got {pg.vlan_id}")
    else:
        if pg.vlan_id:
            raise _bad(f"{prefix}.vlan_id", f"switch {switch.name} is a VXLAN switch: set vni, not vlan_id")
        if not 1 <= pg.vni <= MAX_VNI:
            raise _bad(f"{prefix}.vni", f"a VXLAN id (VNI) is 1..{MAX_VNI}, got {pg.vni}")
    if len(pg.subnets) > MAX_SUBNETS:
        raise _bad(f"{prefix}.subnets", f"at most {MAX_SUBNETS} subnets, got {len(pg.subnets)}")
    networks = [_subnet(s, f"{prefix}.subnets[{i}]") for i, s in enumerate(pg.subnets)]
    for i, a in enumerate(networks):
        for j, b in enumerate(networks[:i]):
            if a.version == b.version and a.overlaps(b):
                raise _bad(
                    f"{prefix}.subnets[{i}].cidr",
                    f"{a} overlaps subnet {j} ({b}) of the same port group",
                    reason="SUBNETS_OVERLAP",
                )
    if len(pg.dns_servers) > MAX_DNS:
        raise _bad(f"{prefix}.dns_servers", f"at most {MAX_DNS} DNS servers")
    for i, server in enumerate(pg.dns_servers):
        _address(server, f"{prefix}.dns_servers[{i}]")
    if pg.domain and not DOMAIN.fullmatch(pg.domain):
        raise _bad(
            f"{prefix}.domain", f"{pg.domain!r} is not a DNS domain (lowercase labels, e.g. lab.example)"
        )
    if pg.dhcp and not networks:
        raise _bad(f"{prefix}.dhcp", "DHCP needs at least one subnet to hand out addresses from")
    if len(pg.description) > 1024:
        raise _bad(f"{prefix}.description", "at most 1024 characters")
    return pg


def _address(text: str, field_: str) -> Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise _bad(field_, f"{text!r} is not an IPv4 or IPv6 address") from None


def _subnet(subnet: Subnet, field_: str) -> Network:
    try:
        network = ipaddress.ip_network(subnet.cidr, strict=True)
    except ValueError as e:
        raise _bad(
            f"{field_}.cidr", f"{subnet.cidr!r} is not a subnet like 192.0.2.0/24 or 2001:db8::/64 ({e})"
        ) from None
    if network.num_addresses < 4:
        raise _bad(f"{field_}.cidr", f"{network} is too small for a port group (at least 4 addresses)")
    special = {network.network_address}
    if network.version == 4:
        special.add(network.broadcast_address)
    if subnet.gateway:
        gateway = _address(subnet.gateway, f"{field_}.gateway")
        if gateway not in network:
            raise _bad(
                f"{field_}.gateway",
                f"{gateway} is outside the subnet {network}",
                reason="GATEWAY_OUTSIDE_SUBNET",
            )
        if gateway in special:
            raise _bad(f"{field_}.gateway", f"{gateway} is the subnet's network or broadcast address")
    for k, (start, end) in enumerate(subnet.allocation_ranges):
        where = f"{field_}.allocation_ranges[{k}]"
        first, last = _address(start, where), _address(end, where)
        if first not in network or last not in network:
            raise _bad(where, f"{start}-{end} is not inside the subnet {network}")
        if int(first) > int(last):
            raise _bad(where, f"{start}-{end} ends before it starts")
        if first in special or last in special:
            raise _bad(where, f"{start}-{end} includes the subnet's network or broadcast address")
    return network

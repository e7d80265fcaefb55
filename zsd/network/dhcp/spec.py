"""What this host's DHCP/DNS service must serve: one ``DhcpScope`` per port group with
a bridge here, listing the NICs on this host. Addresses are allocated elsewhere (the
leader); dnsmasq only answers for the NICs listed. ``validate_scopes`` checks every
field and names the one at fault (``scopes[1].nics[3].ipv4``).

Addresses are strings, as in the cluster's records; ``validate_scopes`` parses them.

The service address (where dnsmasq listens, and the DHCP server identifier) is
``Ipv4Subnet.service_address``, by default the subnet's last usable address (IPv6:
its last address). Every host of a port group uses the same one, and the same MAC:
the uplink guard lets nothing pass between the service's port and the uplink, so each
VM only ever reaches its own host's service (and keeps reaching it, ARP entry and DHCP
server identifier unchanged, after a migration).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from zsd.errors import InvalidArgument
from zsd.network.model import DOMAIN, IFNAME

MIN_MTU, MAX_MTU = 576, 9000
MIN_IPV6_MTU = 1280
MIN_LEASE, MAX_LEASE = 120, 365 * 24 * 3600
MAX_DNS_SERVERS = 4
MAX_ROUTES = 16
_PORT_GROUP = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}(/[a-z0-9][a-z0-9._-]{0,62})?$")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_A = TypeVar("_A", ipaddress.IPv4Address, ipaddress.IPv6Address)


@dataclass(frozen=True, kw_only=True)
class StaticRoute:
    """A classless static route (DHCP option 121) handed to clients."""

    destination: str
    """A CIDR, e.g. ``10.20.0.0/16`` (not the default route: that is the gateway)."""
    via: str
    """The next hop, inside the subnet."""


@dataclass(frozen=True, kw_only=True)
class Ipv4Subnet:
    cidr: str
    gateway: str = ""
    """"": clients get no router option."""
    service_address: str = ""
    """The namespace's address; "": the last usable address of ``cidr``."""
    routes: tuple[StaticRoute, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Ipv6Subnet:
    """Served with stateful DHCPv6 (listed addresses only) and router advertisements
    (prefix on-link, "managed" flag, router lifetime 0: the namespace is no router)."""

    cidr: str
    """Prefix length 64..120."""
    service_address: str = ""
    """The namespace's address; "": the last address of ``cidr``."""


@dataclass(frozen=True, kw_only=True)
class DhcpNic:
    """A NIC on this host in the port group: DHCP answers for its MAC, DNS for its name."""

    mac: str
    """Lowercase, colon-separated."""
    ipv4: str = ""
    ipv6: str = ""
    """Needs the scope's ``ipv6`` subnet."""
    hostname: str = ""
    """One DNS label; "": no name (neither in DHCP nor in DNS)."""


@dataclass(frozen=True, kw_only=True)
class DnsRecord:
    """A name DNS answers without any DHCP (e.g. a NIC of the port group on another host)."""

    hostname: str
    ipv4: str = ""
    ipv6: str = ""


@dataclass(frozen=True, kw_only=True)
class DhcpScope:
    port_group: str
    """The port group's cluster-wide key, e.g. ``switch/portgroup``."""
    bridge: str
    """The Linux bridge that is the port group on this host."""
    ipv4: Ipv4Subnet
    uplink: str = ""
    """The bridge's port towards other hosts (VLAN sub-interface or VXLAN device);
    DHCP, DHCPv6 and router advertisements never cross it. "": the bridge has none."""
    ipv6: Ipv6Subnet | None = None
    dns_servers: tuple[str, ...] = ()
    """What clients are told to use; empty: the service address (then DNS answers the
    domain's names only). dnsmasq forwards other names to these, so listing the
    service address first gives clients both the local names and the rest."""
    domain: str = ""
    dhcp: bool = True
    """False: no DHCP, DHCPv6 or router advertisements; DNS is still served."""
    mtu: int = 0
    """0: the bridge's MTU, not announced; else announced to clients (option 26, RA)."""
    lease_seconds: int = 3600
    nics: tuple[DhcpNic, ...] = ()
    dns_records: tuple[DnsRecord, ...] = ()


def service_ipv4(subnet: Ipv4Subnet) -> ipaddress.IPv4Address:
    if subnet.service_address:
        return ipaddress.IPv4Address(subnet.service_address)
    return ipaddress.IPv4Network(subnet.cidr).broadcast_address - 1


def service_ipv6(subnet: Ipv6Subnet) -> ipaddress.IPv6Address:
    if subnet.service_address:
        return ipaddress.IPv6Address(subnet.service_address)
    return ipaddress.IPv6Network(subnet.cidr).broadcast_address


def service_mac(scope: DhcpScope) -> str:
    """The namespace's MAC: locally administered, derived from the port group and the
    service address, so it survives the namespace being made again (clients' ARP caches
    stay right)."""
    digest = hashlib.sha256(f"{scope.port_group}|{service_ipv4(scope.ipv4)}".encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])


def _bad(field: str, message: str, reason: str = "BAD_DHCP_SCOPE") -> InvalidArgument:
    return InvalidArgument(message, field=field, reason=reason)


def validate_scopes(scopes: Sequence[DhcpScope], *, prefix: str = "scopes") -> tuple[DhcpScope, ...]:
    """Checks every scope and that port groups and bridges are each served once."""
    seen_groups: dict[str, int] = {}
    seen_bridges: dict[str, int] = {}
    for i, scope in enumerate(scopes):
        where = f"{prefix}[{i}]"
        validate_scope(scope, prefix=where)
        if scope.port_group in seen_groups:
            raise _bad(
                f"{where}.port_group",
                f"port group {scope.port_group} is also {prefix}[{seen_groups[scope.port_group]}]",
            )
        if scope.bridge in seen_bridges:
            raise _bad(
                f"{where}.bridge",
                f"bridge {scope.bridge} already serves {prefix}[{seen_bridges[scope.bridge]}] "
                "(one port group per bridge)",
            )
        seen_groups[scope.port_group] = i
        seen_bridges[scope.bridge] = i
    return tuple(scopes)


def validate_scope(scope: DhcpScope, *, prefix: str = "scope") -> DhcpScope:
    if not _PORT_GROUP.fullmatch(scope.port_group) or ".." in scope.port_group:
        raise _bad(
            f"{prefix}.port_group",
            f"{scope.port_group!r} is not a port group key: 1-63 of a-z0-9._- starting with a letter "
            "or digit, optionally twice joined by '/' (switch/portgroup)",
        )
    _ifname(scope.bridge, f"{prefix}.bridge")
    if scope.uplink:
        _ifname(scope.uplink, f"{prefix}.uplink")
        if scope.uplink == scope.bridge:
            raise _bad(f"{prefix}.uplink", "the uplink is a port of the bridge, not the bridge itself")
    net4, special4 = _ipv4_subnet(scope.ipv4, f"{prefix}.ipv4")
    net6, special6 = _ipv6_subnet(scope.ipv6, f"{prefix}.ipv6") if scope.ipv6 else (None, {})
    if len(scope.dns_servers) > MAX_DNS_SERVERS:
        raise _bad(f"{prefix}.dns_servers", f"at most {MAX_DNS_SERVERS} DNS servers")
    for k, server in enumerate(scope.dns_servers):
        _address(server, f"{prefix}.dns_servers[{k}]")
    if scope.domain and not DOMAIN.fullmatch(scope.domain):
        raise _bad(
            f"{prefix}.domain", f"{scope.domain!r} is not a DNS domain (lowercase labels, e.g. lab.example)"
        )
    if scope.mtu and not MIN_MTU <= scope.mtu <= MAX_MTU:
        raise _bad(f"{prefix}.mtu", f"must be 0 (the bridge's) or {MIN_MTU}..{MAX_MTU}, got {scope.mtu}")
    if scope.mtu and net6 is not None and scope.mtu < MIN_IPV6_MTU:
        raise _bad(f"{prefix}.mtu", f"IPv6 needs an MTU of at least {MIN_IPV6_MTU}, got {scope.mtu}")
    if not MIN_LEASE <= scope.lease_seconds <= MAX_LEASE:
        raise _bad(
            f"{prefix}.lease_seconds", f"must be {MIN_LEASE}..{MAX_LEASE} seconds, got {scope.lease_seconds}"
        )
    addresses = _validate_nics(scope, prefix, (net4, special4), (net6, special6) if net6 else None)
    _validate_records(scope, prefix, addresses)
    return scope


_Seen = dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str]


def _validate_nics(
    scope: DhcpScope,
    prefix: str,
    v4: tuple[ipaddress.IPv4Network, Mapping[ipaddress.IPv4Address, str]],
    v6: tuple[ipaddress.IPv6Network, Mapping[ipaddress.IPv6Address, str]] | None,
) -> _Seen:
    """Checks the NICs; returns the addresses they use (by field)."""
    own_mac = service_mac(scope)
    macs: dict[str, int] = {}
    addresses: _Seen = {}
    for k, nic in enumerate(scope.nics):
        where = f"{prefix}.nics[{k}]"
        if not _MAC.fullmatch(nic.mac):
            raise _bad(f"{where}.mac", f"{nic.mac!r} is not a MAC address like 52:54:00:12:34:56 (lowercase)")
        if int(nic.mac[:2], 16) & 1:
            raise _bad(f"{where}.mac", f"{nic.mac} is a multicast address")
        if nic.mac == own_mac:
            raise _bad(f"{where}.mac", f"{nic.mac} is the DHCP service's own MAC in this port group")
        if nic.mac in macs:
            raise _bad(f"{where}.mac", f"{nic.mac} is also nics[{macs[nic.mac]}]")
        macs[nic.mac] = k
        _hostname(nic.hostname, f"{where}.hostname", required=False)
        if nic.ipv4:
            ip4 = _ipv4(nic.ipv4, f"{where}.ipv4")
            _inside(ip4, *v4, f"{where}.ipv4")
            _unique(ip4, addresses, f"{where}.ipv4")
        if nic.ipv6:
            ip6 = _ipv6(nic.ipv6, f"{where}.ipv6")
            if v6 is None:
                raise _bad(f"{where}.ipv6", "the scope has no IPv6 subnet")
            _inside(ip6, *v6, f"{where}.ipv6")
            _unique(ip6, addresses, f"{where}.ipv6")
    return addresses


def _validate_records(scope: DhcpScope, prefix: str, addresses: _Seen) -> None:
    for k, record in enumerate(scope.dns_records):
        where = f"{prefix}.dns_records[{k}]"
        _hostname(record.hostname, f"{where}.hostname", required=True)
        if not record.ipv4 and not record.ipv6:
            raise _bad(where, "a DNS record needs an ipv4 or an ipv6 address")
        if record.ipv4:
            _unique(_ipv4(record.ipv4, f"{where}.ipv4"), addresses, f"{where}.ipv4")
        if record.ipv6:
            _unique(_ipv6(record.ipv6, f"{where}.ipv6"), addresses, f"{where}.ipv6")


def _ipv4_subnet(
    subnet: Ipv4Subnet, where: str
) -> tuple[ipaddress.IPv4Network, dict[ipaddress.IPv4Address, str]]:
    try:
        net = ipaddress.IPv4Network(subnet.cidr, strict=True)
    except ValueError as e:
        raise _bad(f"{where}.cidr", f"{subnet.cidr!r} is not an IPv4 subnet like 192.0.2.0/24: {e}") from None
    if net.prefixlen > 30:
        raise _bad(f"{where}.cidr", f"{net} is too small: a /30 at most (gateway, service and a client)")
    special: dict[ipaddress.IPv4Address, str] = {
        net.network_address: "the subnet's network address",
        net.broadcast_address: "the subnet's broadcast address",
    }
    if subnet.gateway:
        gateway = _ipv4(subnet.gateway, f"{where}.gateway")
        _inside(gateway, net, special, f"{where}.gateway")
        special[gateway] = "the gateway"
    if subnet.service_address:
        service = _ipv4(subnet.service_address, f"{where}.service_address")
        _inside(service, net, special, f"{where}.service_address")
    elif service_ipv4(subnet) in special:
        raise _bad(
            f"{where}.service_address",
            f"the default service address {service_ipv4(subnet)} (the last usable) is "
            f"{special[service_ipv4(subnet)]}: set one",
        )
    special[service_ipv4(subnet)] = "the DHCP service's own address"
    if len(subnet.routes) > MAX_ROUTES:
        raise _bad(f"{where}.routes", f"at most {MAX_ROUTES} routes")
    for k, route in enumerate(subnet.routes):
        at = f"{where}.routes[{k}]"
        try:
            destination = ipaddress.IPv4Network(route.destination, strict=True)
        except ValueError as e:
            raise _bad(f"{at}.destination", f"{route.destination!r} is not an IPv4 CIDR ({e})") from None
        if destination.prefixlen == 0:
            raise _bad(f"{at}.destination", "the default route comes from the gateway, not from routes")
        via = _ipv4(route.via, f"{at}.via")
        if via not in net:
            raise _bad(f"{at}.via", f"the next hop {via} is outside the subnet {net}")
    return net, special


def _ipv6_subnet(
    subnet: Ipv6Subnet, where: str
) -> tuple[ipaddress.IPv6Network, dict[ipaddress.IPv6Address, str]]:
    try:
        net = ipaddress.IPv6Network(subnet.cidr, strict=True)
    except ValueError as e:
        raise _bad(
            f"{where}.cidr", f"{subnet.cidr!r} is not an IPv6 subnet like 2001:db8::/64: {e}"
        ) from None
    if not 64 <= net.prefixlen <= 120:
        raise _bad(f"{where}.cidr", f"DHCPv6 serves prefixes of length 64..120, got /{net.prefixlen}")
    special: dict[ipaddress.IPv6Address, str] = {net.network_address: "the subnet-router anycast address"}
    if subnet.service_address:
        service = _ipv6(subnet.service_address, f"{where}.service_address")
        _inside(service, net, special, f"{where}.service_address")
    special[service_ipv6(subnet)] = "the DHCP service's own address"
    return net, special


def _inside(
    address: _A, net: ipaddress.IPv4Network | ipaddress.IPv6Network, special: Mapping[_A, str], field: str
) -> None:
    if address not in net:
        raise _bad(field, f"{address} is outside the subnet {net}", reason="ADDRESS_OUTSIDE_SUBNET")
    what = special.get(address)
    if what is not None:
        raise _bad(field, f"{address} is {what}")


def _unique(address: ipaddress.IPv4Address | ipaddress.IPv6Address, seen: _Seen, field: str) -> None:
    if address in seen:
        raise _bad(field, f"{address} is also {seen[address]}", reason="DUPLICATE_ADDRESS")
    seen[address] = field.rsplit(".", 1)[0].split(".", 1)[-1]


def _ipv4(text: str, field: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise _bad(field, f"{text!r} is not an IPv4 address") from None


def _ipv6(text: str, field: str) -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        raise _bad(field, f"{text!r} is not an IPv6 address") from None


def _address(text: str, field: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise _bad(field, f"{text!r} is not an IPv4 or IPv6 address") from None


def _ifname(value: str, field: str) -> None:
    if not IFNAME.fullmatch(value):
        raise _bad(
            field, f"{value!r} is not an interface name: 1-15 of A-Za-z0-9_.- starting with a letter or digit"
        )


def _hostname(value: str, field: str, *, required: bool) -> None:
    if not value and not required:
        return
    if not _LABEL.fullmatch(value):
        raise _bad(
            field,
            f"{value!r} is not a host name: one DNS label of 1-63 lowercase letters, digits and '-', "
            "not starting or ending with '-'",
        )

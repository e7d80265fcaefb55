"""Scope validation: every bad field is refused with InvalidArgument naming it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from tests.unit.network.dhcp.samples import DB, WEB, full_scope, small_scope
from zsd.errors import InvalidArgument
from zsd.network.dhcp.spec import (
    DhcpNic,
    DhcpScope,
    DnsRecord,
    Ipv4Subnet,
    Ipv6Subnet,
    StaticRoute,
    service_ipv4,
    service_ipv6,
    service_mac,
    validate_scopes,
)


def test_good_scopes_pass_unchanged() -> None:
    scopes = [full_scope(), small_scope()]
    assert validate_scopes(scopes) == tuple(scopes)


def test_service_addresses_default_to_the_last_usable() -> None:
    scope = full_scope()
    assert str(service_ipv4(scope.ipv4)) == "10.9.0.254"
    assert scope.ipv6 is not None
    assert str(service_ipv6(scope.ipv6)) == "fd00:9::ffff:ffff:ffff:ffff"
    explicit = Ipv4Subnet(cidr="10.9.0.0/24", service_address="10.9.0.3")
    assert str(service_ipv4(explicit)) == "10.9.0.3"


def test_service_mac_is_stable_unicast_and_local() -> None:
    mac = service_mac(full_scope())
    assert mac == service_mac(full_scope())
    assert int(mac[:2], 16) & 0b11 == 0b10  # locally administered, unicast
    other = replace(full_scope(), ipv4=replace(full_scope().ipv4, service_address="10.9.0.253"))
    assert service_mac(other) != mac


def _nic(**changes: object) -> Callable[[DhcpScope], DhcpScope]:
    return lambda s: replace(s, nics=(replace(WEB, **changes), DB))  # type: ignore[arg-type]


def _v4(**changes: object) -> Callable[[DhcpScope], DhcpScope]:
    return lambda s: replace(s, ipv4=replace(s.ipv4, **changes))  # type: ignore[arg-type]


BAD: list[tuple[str, Callable[[DhcpScope], DhcpScope], str, str]] = [
    ("port group with spaces", lambda s: replace(s, port_group="my group"), "port_group", "port group key"),
    ("port group with two slashes", lambda s: replace(s, port_group="a/b/c"), "port_group", "port group key"),
    ("port group with ..", lambda s: replace(s, port_group="a..b"), "port_group", "port group key"),
    ("long bridge name", lambda s: replace(s, bridge="a-very-long-bridge"), "bridge", "interface name"),
    ("uplink is the bridge", lambda s: replace(s, uplink=s.bridge), "uplink", "not the bridge"),
    ("uplink with a slash", lambda s: replace(s, uplink="eth0/1"), "uplink", "interface name"),
    ("cidr with host bits", _v4(cidr="10.9.0.1/24"), "ipv4.cidr", "not an IPv4 subnet"),
    ("IPv6 cidr as ipv4", _v4(cidr="fd00::/64"), "ipv4.cidr", "not an IPv4 subnet"),
    ("a /31", _v4(cidr="10.9.0.0/31", gateway="", routes=()), "ipv4.cidr", "too small"),
    ("gateway outside", _v4(gateway="10.10.0.1"), "ipv4.gateway", "outside the subnet"),
    ("gateway is broadcast", _v4(gateway="10.9.0.255"), "ipv4.gateway", "broadcast"),
    ("gateway not an address", _v4(gateway="router"), "ipv4.gateway", "not an IPv4 address"),
    ("service is the gateway", _v4(service_address="10.9.0.1"), "ipv4.service_address", "the gateway"),
    ("service outside", _v4(service_address="10.1.0.1"), "ipv4.service_address", "outside"),
    (
        "default service is the gateway",
        _v4(gateway="10.9.0.254"),
        "ipv4.service_address",
        "default service address 10.9.0.254",
    ),
    (
        "default route in routes",
        _v4(routes=(StaticRoute(destination="0.0.0.0/0", via="10.9.0.1"),)),
        "ipv4.routes[0].destination",
        "default route",
    ),
    (
        "route via outside",
        _v4(routes=(StaticRoute(destination="10.20.0.0/16", via="10.1.0.1"),)),
        "ipv4.routes[0].via",
        "outside the subnet",
    ),
    (
        "route to a host-bits CIDR",
        _v4(routes=(StaticRoute(destination="10.20.0.1/16", via="10.9.0.2"),)),
        "ipv4.routes[0].destination",
        "not an IPv4 CIDR",
    ),
    ("IPv6 /48", lambda s: replace(s, ipv6=Ipv6Subnet(cidr="fd00:9::/48")), "ipv6.cidr", "64..120"),
    (
        "IPv6 service outside",
        lambda s: replace(s, ipv6=Ipv6Subnet(cidr="fd00:9::/64", service_address="fd00:8::1")),
        "ipv6.service_address",
        "outside",
    ),
    ("too many DNS servers", lambda s: replace(s, dns_servers=("10.0.0.1",) * 5), "dns_servers", "at most 4"),
    (
        "bad DNS server",
        lambda s: replace(s, dns_servers=("8.8.8.8", "dns")),
        "dns_servers[1]",
        "not an IPv4 or",
    ),
    ("upper-case domain", lambda s: replace(s, domain="Lab.Test"), "domain", "not a DNS domain"),
    ("tiny MTU", lambda s: replace(s, mtu=100), "mtu", "576..9000"),
    ("IPv6 with MTU below 1280", lambda s: replace(s, mtu=1200), "mtu", "at least 1280"),
    ("short lease", lambda s: replace(s, lease_seconds=60), "lease_seconds", "120.."),
    ("upper-case MAC", _nic(mac="52:54:00:00:00:AA"), "nics[0].mac", "lowercase"),
    ("multicast MAC", _nic(mac="01:00:5e:00:00:01"), "nics[0].mac", "multicast"),
    ("same MAC twice", _nic(mac=DB.mac), "nics[1].mac", "also nics[0]"),
    ("NIC outside the subnet", _nic(ipv4="10.10.0.5"), "nics[0].ipv4", "outside the subnet"),
    ("NIC on the gateway", _nic(ipv4="10.9.0.1"), "nics[0].ipv4", "the gateway"),
    ("NIC on the service address", _nic(ipv4="10.9.0.254"), "nics[0].ipv4", "service's own address"),
    ("NIC on the network address", _nic(ipv4="10.9.0.0"), "nics[0].ipv4", "network address"),
    ("NIC address taken", _nic(ipv4=DB.ipv4), "nics[1].ipv4", "also nics[0]"),
    ("NIC IPv6 outside", _nic(ipv6="fd00:8::1"), "nics[0].ipv6", "outside"),
    ("NIC IPv6 on the service", _nic(ipv6="fd00:9::ffff:ffff:ffff:ffff"), "nics[0].ipv6", "service's own"),
    ("NIC with a dotted name", _nic(hostname="web.lab"), "nics[0].hostname", "one DNS label"),
    ("NIC name ends in -", _nic(hostname="web-"), "nics[0].hostname", "one DNS label"),
    (
        "record on a NIC's address",
        lambda s: replace(s, dns_records=(DnsRecord(hostname="x", ipv4=WEB.ipv4),)),
        "dns_records[0].ipv4",
        "also nics[0]",
    ),
    (
        "record without an address",
        lambda s: replace(s, dns_records=(DnsRecord(hostname="x"),)),
        "dns_records[0]",
        "needs an ipv4 or an ipv6",
    ),
    (
        "record without a name",
        lambda s: replace(s, dns_records=(DnsRecord(hostname="", ipv4="10.9.0.40"),)),
        "dns_records[0].hostname",
        "host name",
    ),
]


@pytest.mark.parametrize(("mutate", "field", "says"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_field_is_named(mutate: Callable[[DhcpScope], DhcpScope], field: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_scopes([small_scope(), mutate(full_scope())])
    assert caught.value.field == f"scopes[1].{field}"
    assert says in caught.value.message
    assert caught.value.reason in ("BAD_DHCP_SCOPE", "ADDRESS_OUTSIDE_SUBNET", "DUPLICATE_ADDRESS")


def test_nic_ipv6_needs_an_ipv6_subnet() -> None:
    scope = small_scope(nics=(DhcpNic(mac=WEB.mac, ipv4="10.8.0.5", ipv6="fd00::5"),))
    with pytest.raises(InvalidArgument, match="no IPv6 subnet") as caught:
        validate_scopes([scope])
    assert caught.value.field == "scopes[0].nics[0].ipv6"


def test_nic_on_the_service_mac_is_refused() -> None:
    scope = small_scope()
    scope = replace(scope, nics=(DhcpNic(mac=service_mac(scope), ipv4="10.8.0.5"),))
    with pytest.raises(InvalidArgument, match="service's own MAC") as caught:
        validate_scopes([scope])
    assert caught.value.field == "scopes[0].nics[0].mac"


def test_a_port_group_or_bridge_is_served_once() -> None:
    with pytest.raises(InvalidArgument, match=r"also scopes\[0\]") as caught:
        validate_scopes([small_scope(), small_scope(bridge="br-other")])
    assert caught.value.field == "scopes[1].port_group"
    with pytest.raises(InvalidArgument, match="one port group per bridge") as caught:
        validate_scopes([small_scope(), small_scope(port_group="lab/other")])
    assert caught.value.field == "scopes[1].bridge"


def test_nic_without_addresses_or_name_is_allowed() -> None:
    validate_scopes([small_scope(nics=(DhcpNic(mac=WEB.mac),))])

"""Scopes the DHCP unit tests share."""

from __future__ import annotations

from dataclasses import replace

from zsd.network.dhcp.spec import DhcpNic, DhcpScope, DnsRecord, Ipv4Subnet, Ipv6Subnet, StaticRoute

WEB = DhcpNic(mac="52:54:00:00:00:01", ipv4="10.9.0.10", ipv6="fd00:9::10", hostname="web1")
DB = DhcpNic(mac="52:54:00:00:00:02", ipv4="10.9.0.11", hostname="db1")


def full_scope() -> DhcpScope:
    """Every option set."""
    return DhcpScope(
        port_group="lab/web",
        bridge="zb0123456789",
        uplink="zv0123456789",
        ipv4=Ipv4Subnet(
            cidr="10.9.0.0/24",
            gateway="10.9.0.1",
            routes=(StaticRoute(destination="10.20.0.0/16", via="10.9.0.2"),),
        ),
        ipv6=Ipv6Subnet(cidr="fd00:9::/64"),
        dns_servers=("10.9.0.254", "192.0.2.53", "2001:db8::53"),
        domain="web.lab.test",
        mtu=1450,
        lease_seconds=600,
        nics=(WEB, DB),
        dns_records=(DnsRecord(hostname="app1", ipv4="10.9.0.30"),),
    )


def small_scope(port_group: str = "lab/db", bridge: str = "br-db", **changes: object) -> DhcpScope:
    """IPv4 only, no uplink, nothing optional."""
    scope = DhcpScope(port_group=port_group, bridge=bridge, ipv4=Ipv4Subnet(cidr="10.8.0.0/24"))
    return replace(scope, **changes)  # type: ignore[arg-type]

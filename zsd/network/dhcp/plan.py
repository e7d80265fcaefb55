"""Everything one scope means on this host, derived without I/O: names, addresses,
files and their contents, the uplink guard. The manager compares plans with reality.

Names derive from the port group key, so they are the same after a zsd restart and
need no state: the namespace ``<prefix><slug>`` (the slug is the key with ``/`` as
``+``), the host's veth end ``zd`` + 10 hex digits of the namespace name's hash, and
the scope's directory ``<state_dir>/<slug>``.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from zsd.network.dhcp import guard
from zsd.network.dhcp.dnsmasqconf import (
    INNER_IF,
    ScopeFiles,
    render_config,
    render_dhcp_hosts,
    render_dns_hosts,
)
from zsd.network.dhcp.drivers import Plumbing
from zsd.network.dhcp.spec import DhcpScope, service_ipv4, service_ipv6, service_mac

DEFAULT_NETNS_PREFIX = "zsd-dhcp-"
HOST_VETH_PREFIX = "zd"


def slug(port_group: str) -> str:
    return port_group.replace("/", "+")


def host_veth(netns: str) -> str:
    return HOST_VETH_PREFIX + hashlib.sha256(netns.encode()).hexdigest()[:10]


def _digest(*texts: str) -> str:
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class ScopePlan:
    scope: DhcpScope
    slug: str
    plumbing: Plumbing
    files: ScopeFiles
    config_text: str
    config_digest: str
    dhcp_hosts: str
    dns_hosts: str
    hosts_digest: str
    """Of the files dnsmasq re-reads on SIGHUP."""
    guard_table: str
    """"": the bridge has no uplink, so no guard."""

    @property
    def config_path(self) -> Path:
        return self.files.config(self.config_digest)


def plan_scope(scope: DhcpScope, *, state_dir: Path, netns_prefix: str) -> ScopePlan:
    """``scope`` must have passed ``validate_scope``."""
    name = slug(scope.port_group)
    netns = netns_prefix + name
    net4 = ipaddress.IPv4Network(scope.ipv4.cidr)
    ipv6 = ""
    if scope.ipv6 is not None:
        ipv6 = f"{service_ipv6(scope.ipv6)}/{ipaddress.IPv6Network(scope.ipv6.cidr).prefixlen}"
    plumbing = Plumbing(
        netns=netns,
        host_veth=host_veth(netns),
        inner_if=INNER_IF,
        bridge=scope.bridge,
        mac=service_mac(scope),
        ipv4=f"{service_ipv4(scope.ipv4)}/{net4.prefixlen}",
        ipv6=ipv6,
        gateway=scope.ipv4.gateway,
        mtu=scope.mtu,
    )
    files = ScopeFiles(state_dir / name)
    config = render_config(scope, files)
    dhcp_hosts = render_dhcp_hosts(scope)
    dns_hosts = render_dns_hosts(scope)
    return ScopePlan(
        scope=scope,
        slug=name,
        plumbing=plumbing,
        files=files,
        config_text=config,
        # The plumbing is part of what a running dnsmasq was set up for.
        config_digest=_digest(config, repr(plumbing)),
        dhcp_hosts=dhcp_hosts,
        dns_hosts=dns_hosts,
        hosts_digest=_digest(dhcp_hosts, dns_hosts),
        guard_table=guard.table_name(scope.bridge) if scope.uplink else "",
    )

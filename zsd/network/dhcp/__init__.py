"""Distributed DHCP and DNS: per port group, on every host, a dnsmasq in a namespace
of its own that answers only for the NICs on that host.

    manager = DhcpManager.on_host(state_dir=default_state_dir(paths))
    await manager.apply([DhcpScope(...), ...])   # on every change, and periodically
    await manager.close()                        # dnsmasq keeps serving

Layout:
- ``spec``: what to serve (``DhcpScope`` and its parts) and ``validate_scopes``;
- ``plan``: a scope's names, addresses and file contents, derived without I/O;
- ``dnsmasqconf``: dnsmasq's config, hosts and lease files; ``guard``: the nftables
  table that keeps DHCP and router advertisements off the uplink;
- ``adoption``: whether a running dnsmasq is kept after a zsd restart;
- ``manager``: ``DhcpManager``, which converges the host to a list of scopes;
- ``drivers``: the interfaces of its blocking work, done on the kernel by ``netlink``
  (pyroute2), ``nft`` and ``dnsmasqproc``;
- ``testing``: fakes of the drivers, and a lab of namespaces with real clients.
"""

from zsd.network.dhcp.manager import DhcpManager, ScopeStatus, default_state_dir
from zsd.network.dhcp.spec import (
    DhcpNic,
    DhcpScope,
    DnsRecord,
    Ipv4Subnet,
    Ipv6Subnet,
    StaticRoute,
    validate_scopes,
)

__all__ = [
    "DhcpManager",
    "DhcpNic",
    "DhcpScope",
    "DnsRecord",
    "Ipv4Subnet",
    "Ipv6Subnet",
    "ScopeStatus",
    "StaticRoute",
    "default_state_dir",
    "validate_scopes",
]

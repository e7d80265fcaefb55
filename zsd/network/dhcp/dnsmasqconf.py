"""dnsmasq's files for one scope, as text: no I/O, no policy beyond the scope's.

The config holds what needs a restart to change (interface, subnets, options); the
two hosts files hold the NICs and names, which dnsmasq re-reads on SIGHUP:
``dhcp-hostsfile`` (MAC -> addresses, host name) and ``addn-hosts`` (names for DNS).

dnsmasq keeps a lease after its NIC left the hosts file, until it expires: the
address stays taken (a NIC it is given to next gets no answer) and the lease's name
stays in DNS. ``stale_leases`` finds those, for the manager to release.
Output is sorted, so the same scope always renders the same bytes (no needless SIGHUP
or restart).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from zsd.network.dhcp.spec import DhcpScope, service_ipv4, service_ipv6

INNER_IF = "dhcp0"
"""The namespace's end of the veth: dnsmasq's only interface."""
RA_INTERVAL = 60
"""Seconds between unsolicited router advertisements (clients also solicit one)."""
RELEASE_VENDOR_CLASS = "zsd-dhcp-release"
"""Option 60 of the DHCPRELEASEs zsd sends for gone NICs: dnsmasq ignores unknown
clients, and without it would ignore the release of a NIC no longer listed. A client
claiming it gains nothing: unknown clients get no address from a static range."""


@dataclass(frozen=True)
class ScopeFiles:
    """Where one scope's files live (a directory of their own, readable by dnsmasq,
    which drops root and re-reads the hosts files as nobody)."""

    dir: Path

    @property
    def pidfile(self) -> Path:
        return self.dir / "dnsmasq.pid"

    @property
    def leases(self) -> Path:
        return self.dir / "dnsmasq.leases"

    @property
    def dhcp_hosts(self) -> Path:
        return self.dir / "hosts.dhcp"

    @property
    def dns_hosts(self) -> Path:
        return self.dir / "hosts.dns"

    def config(self, digest: str) -> Path:
        """Named by its content's digest: the path on dnsmasq's command line says which
        config a running dnsmasq was started with."""
        return self.dir / f"dnsmasq-{digest}.conf"

    def stale_configs(self, keep: Path) -> list[Path]:
        return sorted(p for p in self.dir.glob("dnsmasq-*.conf") if p != keep)

    def read_pid(self) -> int | None:
        return read_pid(self.pidfile)


def read_pid(pidfile: Path) -> int | None:
    """The pid a daemon wrote (None: no pidfile, or not a number)."""
    try:
        text = pidfile.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def render_config(scope: DhcpScope, files: ScopeFiles) -> str:
    net4 = ipaddress.IPv4Network(scope.ipv4.cidr)
    svc4 = service_ipv4(scope.ipv4)
    svc6 = service_ipv6(scope.ipv6) if scope.ipv6 else None
    servers = [ipaddress.ip_address(s) for s in scope.dns_servers]
    lines = [
        f"# zsd: DHCP and DNS of port group {scope.port_group}. Generated: do not edit.",
        "# A new config means a new dnsmasq; the hosts files change with a SIGHUP.",
        f"interface={INNER_IF}",
        "bind-interfaces",
        f"pid-file={files.pidfile}",
        f"dhcp-leasefile={files.leases}",
        "no-resolv",
        "no-hosts",
        f"addn-hosts={files.dns_hosts}",
    ]
    if scope.domain:
        lines += [f"domain={scope.domain}", f"local=/{scope.domain}/"]
    lines += [f"server={s}" for s in servers if s not in (svc4, svc6)]
    if not scope.dhcp:
        return "\n".join(lines) + "\n"
    gateway = scope.ipv4.gateway
    dns4 = [str(s) for s in servers if s.version == 4] or [str(svc4)]
    lines += [
        f"dhcp-hostsfile={files.dhcp_hosts}",
        f"dhcp-range=set:ipv4,{net4.network_address},static,{net4.netmask},{scope.lease_seconds}",
        # Only the NICs listed get answers: no pool, unknown clients ignored; but zsd's
        # own releases of leases whose NIC is gone (and so unknown) are heard.
        f"dhcp-vendorclass=set:zsd-release,{RELEASE_VENDOR_CLASS}",
        "dhcp-ignore=tag:!known,tag:!zsd-release",
        # Names come from zsd, never from what a client claims.
        "dhcp-ignore-names",
        # The only DHCP server on this segment (the uplink guard keeps others out): a
        # client asking for an address it no longer has gets a NAK at once.
        "dhcp-authoritative",
        # Without a value dnsmasq sends no router (by default it names itself).
        "dhcp-option=option:router" + (f",{gateway}" if gateway else ""),
        f"dhcp-option=option:dns-server,{','.join(dns4)}",
    ]
    if scope.domain:
        lines.append(f"dhcp-option=option:domain-name,{scope.domain}")
    if scope.ipv4.routes:
        routes = [f"{r.destination},{r.via}" for r in scope.ipv4.routes]
        if gateway:
            # Clients ignore the router option when option 121 is present (RFC 3442).
            routes.append(f"0.0.0.0/0,{gateway}")
        lines.append(f"dhcp-option=option:classless-static-route,{','.join(routes)}")
    if scope.mtu:
        lines.append(f"dhcp-option=option:mtu,{scope.mtu}")
    if scope.ipv6 is not None and svc6 is not None:
        net6 = ipaddress.IPv6Network(scope.ipv6.cidr)
        dns6 = [f"[{s}]" for s in servers if s.version == 6] or [f"[{svc6}]"]
        mtu = f"mtu:{scope.mtu}," if scope.mtu else ""
        lines += [
            "enable-ra",
            f"dhcp-range=set:ipv6,{net6.network_address},static,{net6.prefixlen},{scope.lease_seconds}",
            # Router lifetime 0: the namespace announces the prefix and "use DHCPv6",
            # but it is no router.
            f"ra-param={INNER_IF},{mtu}{RA_INTERVAL},0",
            f"dhcp-option=option6:dns-server,{','.join(dns6)}",
        ]
        if scope.domain:
            lines.append(f"dhcp-option=option6:domain-search,{scope.domain}")
    return "\n".join(lines) + "\n"


def render_dhcp_hosts(scope: DhcpScope) -> str:
    """``dhcp-hostsfile``: ``mac,ipv4,[ipv6],hostname`` for every NIC with an address."""
    lines = [f"# zsd: the NICs of port group {scope.port_group} on this host."]
    for nic in sorted(scope.nics, key=lambda n: n.mac):
        fields = [nic.mac]
        if nic.ipv4:
            fields.append(str(ipaddress.IPv4Address(nic.ipv4)))
        if nic.ipv6:
            fields.append(f"[{ipaddress.IPv6Address(nic.ipv6)}]")
        if len(fields) == 1:
            continue  # nothing to hand out: left unknown, so ignored
        if nic.hostname:
            fields.append(nic.hostname)
        lines.append(",".join(fields))
    return "\n".join(lines) + "\n"


def render_dns_hosts(scope: DhcpScope) -> str:
    """``addn-hosts``: ``address fqdn name`` for every named NIC and DNS record."""
    entries: set[tuple[str, int, str]] = set()
    named = [(n.hostname, n.ipv4, n.ipv6) for n in scope.nics if n.hostname]
    named += [(r.hostname, r.ipv4, r.ipv6) for r in scope.dns_records]
    for hostname, ipv4, ipv6 in named:
        for text in (ipv4, ipv6):
            if text:
                ip = ipaddress.ip_address(text)
                entries.add((hostname, ip.version, str(ip)))
    lines = [f"# zsd: the names of port group {scope.port_group}."]
    for hostname, _version, address in sorted(entries):
        names = f"{hostname}.{scope.domain} {hostname}" if scope.domain else hostname
        lines.append(f"{address} {names}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, kw_only=True)
class LeaseEntry:
    """An IPv4 lease in dnsmasq's lease file."""

    mac: str
    ip: str
    client_id: str = ""
    """Colon-separated hex; "": the client sent none."""


def parse_leases(text: str) -> list[LeaseEntry]:
    """The IPv4 leases of a dnsmasq lease file (``expiry mac ip name client-id`` lines;
    the IPv6 ones follow a ``duid`` line)."""
    leases = []
    for line in text.splitlines():
        fields = line.split()
        if fields[:1] == ["duid"]:
            break
        if len(fields) >= 4:
            client_id = fields[4] if len(fields) > 4 and fields[4] != "*" else ""
            leases.append(LeaseEntry(mac=fields[1].lower(), ip=fields[2], client_id=client_id))
    return leases


def stale_leases(scope: DhcpScope, leases: Sequence[LeaseEntry]) -> list[LeaseEntry]:
    """The leases no listed NIC holds (its MAC with that address) any more."""
    held = {(nic.mac, str(ipaddress.IPv4Address(nic.ipv4))) for nic in scope.nics if nic.ipv4}
    return [lease for lease in leases if (lease.mac, lease.ip) not in held]

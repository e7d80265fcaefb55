"""The three kinds of blocking work the DHCP manager does, as interfaces: links and
namespaces (``LinkDriver``), the uplink guard's nftables tables (``FirewallDriver``) and
dnsmasq processes (``ProcessDriver``, with the one packet zsd sends them). The real
ones are ``netlink``, ``nft`` and ``dnsmasqproc``; ``testing.fakes`` has stand-ins that
behave like them.

All methods block; the manager calls them from a worker thread. Failures are
``zsd.errors`` (translated where the third-party error is caught).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from zsd.network.dhcp.dnsmasqconf import LeaseEntry
from zsd.network.dhcp.guard import Command


@dataclass(frozen=True, kw_only=True)
class Plumbing:
    """One scope's namespace and its veth to the bridge."""

    netns: str
    host_veth: str
    """The host's end, a port of ``bridge``."""
    inner_if: str
    """The namespace's end."""
    bridge: str
    mac: str
    """Of ``inner_if``."""
    ipv4: str
    """``address/prefixlen``."""
    ipv6: str = ""
    """``address/prefixlen``; "": none."""
    gateway: str = ""
    """The namespace's default route (dnsmasq forwards names outside the domain)."""
    mtu: int = 0
    """0: the bridge's."""


@dataclass(frozen=True, kw_only=True)
class HostLink:
    """A link in the host's namespace, as the manager needs to see it."""

    name: str
    index: int
    kind: str
    """"bridge", "veth", ... ("" when the kernel says nothing)."""
    master: int | None
    up: bool
    mtu: int


class LinkDriver(Protocol):
    def namespaces(self) -> set[str]:
        """Every named network namespace (``ip netns list``)."""
        ...

    def host_links(self, names: Collection[str]) -> dict[str, HostLink]:
        """Those of ``names`` that are links in the host's namespace, by name."""
        ...

    def create(self, plumbing: Plumbing, *, mtu: int) -> None:
        """Makes the namespace and veth (replacing a half-made one) and configures both
        ends (``attach`` and ``configure_inner``)."""
        ...

    def attach(self, plumbing: Plumbing, *, mtu: int) -> None:
        """The host end: a port of the bridge, ``mtu``, up."""
        ...

    def configure_inner(self, plumbing: Plumbing, *, mtu: int) -> None:
        """The namespace end: MAC, ``mtu``, exactly the plumbing's addresses, up; loopback
        up; the default route. Changes nothing that is already right."""
        ...

    def destroy(self, *, netns: str, host_veth: str) -> None:
        """Removes the veth and the namespace; either may be missing."""
        ...

    def close(self) -> None:
        """Lets go of what the driver keeps open (the kernel's state stays)."""
        ...


class FirewallDriver(Protocol):
    def tables(self) -> set[str]:
        """Names of the host's ``bridge`` family tables."""
        ...

    def commit(self, commands: Sequence[Command]) -> None:
        """Runs ``commands`` as one transaction: all or nothing."""
        ...


@dataclass(frozen=True, kw_only=True)
class ProcessInfo:
    pid: int
    started_at: float
    """With ``pid``, the process's identity (a pid alone may be reused)."""
    name: str
    """The executable's base name."""
    argv: tuple[str, ...]
    in_netns: bool
    """Whether it runs in the namespace it was looked up for."""


class ProcessDriver(Protocol):
    def inspect(self, pid: int, *, netns: str) -> ProcessInfo | None:
        """The live process ``pid`` (None: gone or a zombie)."""
        ...

    def in_netns(self, netns: str) -> list[ProcessInfo]:
        """Every live process in the namespace."""
        ...

    def alive(self, process: ProcessInfo) -> bool:
        """Still the same live process (not exited, not a reused pid)."""
        ...

    def start(self, *, netns: str, config: Path, pidfile: Path) -> ProcessInfo:
        """Starts a dnsmasq with ``config`` in the namespace; returns once it serves
        (its pid read from ``pidfile``). It outlives the caller."""
        ...

    def signal(self, process: ProcessInfo, signum: int) -> bool:
        """Sends ``signum`` if ``process`` is still that process; whether it was sent."""
        ...

    def stop(self, process: ProcessInfo, *, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; returns once it is gone."""
        ...

    def release(self, *, netns: str, iface: str, server: str, leases: Sequence[LeaseEntry]) -> None:
        """Makes the dnsmasq serving ``iface`` in the namespace drop ``leases`` (a
        DHCPRELEASE on each client's behalf, as dnsmasq's own dhcp_release does)."""
        ...


def expected_args(config: Path) -> tuple[str, ...]:
    """The arguments (after argv[0]) of a dnsmasq started with ``config``."""
    return (f"--conf-file={config}",)

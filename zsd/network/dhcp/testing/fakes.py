"""In-memory drivers for the DHCP manager's tests. Each keeps the rules of the real
thing that the manager relies on, so a manager bug shows up here too:

- ``FakeLinks``: a veth's two ends exist together (removing one removes the other,
  removing a namespace removes the end inside it); a port must have an existing bridge.
- ``FakeFirewall``: a commit is one transaction (a failing command changes nothing);
  deleting a missing table fails, as in nft.
- ``FakeProcesses``: processes have pid + start time (a reused pid is another process);
  ``start`` writes the pidfile as dnsmasq does and fails when a dnsmasq already serves
  the namespace (the port is taken); SIGHUPs are counted per process; leases are lines
  in the lease file the config names, and a release removes them, when a dnsmasq
  serves the namespace.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from zsd.errors import FailedPrecondition, Internal
from zsd.network.dhcp.dnsmasqconf import LeaseEntry
from zsd.network.dhcp.drivers import HostLink, Plumbing, ProcessInfo, expected_args
from zsd.network.dhcp.guard import Command


@dataclass(kw_only=True)
class FakeInner:
    """The namespace's end of a scope's veth."""

    ifname: str
    mac: str = ""
    mtu: int = 1500
    addresses: frozenset[str] = frozenset()
    up: bool = False
    gateway: str = ""


class FakeLinks:
    def __init__(self, *, bridges: Mapping[str, int] | None = None) -> None:
        """``bridges``: name -> MTU."""
        self.links: dict[str, HostLink] = {}
        self.netns: set[str] = set()
        self.inner: dict[str, FakeInner] = {}
        """By namespace."""
        self.peers: dict[str, str] = {}
        """Host veth -> the namespace holding its other end."""
        self.calls: list[str] = []
        """Every change made, e.g. ``create zsd-dhcp-pg``."""
        self.closed = False
        self._index = itertools.count(2)
        for name, mtu in (bridges or {}).items():
            self.add_bridge(name, mtu=mtu)

    # -- what tests do behind the manager's back ------------------------------------

    def add_bridge(self, name: str, *, mtu: int = 1500) -> None:
        self.links[name] = HostLink(
            name=name, index=next(self._index), kind="bridge", master=None, up=True, mtu=mtu
        )

    def delete_link(self, name: str) -> None:
        """As ``ip link del``: a veth takes its peer along; a bridge frees its ports."""
        gone = self.links.pop(name)
        netns = self.peers.pop(name, None)
        if netns is not None:
            self.inner.pop(netns, None)
        for port in list(self.links.values()):
            if port.master == gone.index:
                self.links[port.name] = replace(port, master=None)

    def delete_netns(self, name: str) -> None:
        """As ``ip netns del`` of an empty namespace: the veth end inside goes, and its peer."""
        self.netns.discard(name)
        self.inner.pop(name, None)
        for veth, netns in list(self.peers.items()):
            if netns == name:
                del self.peers[veth]
                self.links.pop(veth, None)

    def set_link(self, name: str, **changes: object) -> None:
        self.links[name] = replace(self.links[name], **changes)  # type: ignore[arg-type]

    # -- LinkDriver ------------------------------------------------------------------

    def namespaces(self) -> set[str]:
        return set(self.netns)

    def host_links(self, names: Collection[str]) -> dict[str, HostLink]:
        return {name: self.links[name] for name in names if name in self.links}

    def create(self, plumbing: Plumbing, *, mtu: int) -> None:
        self.calls.append(f"create {plumbing.netns}")
        self.netns.add(plumbing.netns)
        if plumbing.host_veth in self.links:
            self.delete_link(plumbing.host_veth)
        self.inner.pop(plumbing.netns, None)
        self.links[plumbing.host_veth] = HostLink(
            name=plumbing.host_veth, index=next(self._index), kind="veth", master=None, up=False, mtu=1500
        )
        self.peers[plumbing.host_veth] = plumbing.netns
        self.inner[plumbing.netns] = FakeInner(ifname=plumbing.inner_if, mac=plumbing.mac)
        self._attach(plumbing, mtu)
        self._configure_inner(plumbing, mtu)

    def attach(self, plumbing: Plumbing, *, mtu: int) -> None:
        self.calls.append(f"attach {plumbing.host_veth}")
        self._attach(plumbing, mtu)

    def configure_inner(self, plumbing: Plumbing, *, mtu: int) -> None:
        self.calls.append(f"configure {plumbing.netns}")
        self._configure_inner(plumbing, mtu)

    def destroy(self, *, netns: str, host_veth: str) -> None:
        self.calls.append(f"destroy {netns}")
        if host_veth in self.links:
            self.delete_link(host_veth)
        if netns in self.netns:
            self.delete_netns(netns)

    def close(self) -> None:
        self.closed = True

    def _attach(self, plumbing: Plumbing, mtu: int) -> None:
        bridge = self.links.get(plumbing.bridge)
        if bridge is None or bridge.kind != "bridge":
            raise FailedPrecondition(f"no bridge {plumbing.bridge} on this host", reason="BRIDGE_NOT_FOUND")
        port = self.links.get(plumbing.host_veth)
        if port is None:
            raise Internal(f"veth {plumbing.host_veth} vanished", reason="NETLINK_FAILED")
        self.links[port.name] = replace(port, master=bridge.index, up=True, mtu=mtu or port.mtu)

    def _configure_inner(self, plumbing: Plumbing, mtu: int) -> None:
        inner = self.inner.get(plumbing.netns)
        if inner is None:
            raise Internal(f"{plumbing.inner_if} is missing in {plumbing.netns}", reason="NETLINK_FAILED")
        inner.mac = plumbing.mac
        inner.mtu = mtu or inner.mtu
        inner.addresses = frozenset(a for a in (plumbing.ipv4, plumbing.ipv6) if a)
        inner.up = True
        inner.gateway = plumbing.gateway


class FakeFirewall:
    def __init__(self) -> None:
        self.content: dict[str, list[Command]] = {}
        """Table -> the commands that made its chains and rules."""
        self.commits = 0
        self.fail_next: str = ""
        """Non-empty: the next commit fails with this message (and changes nothing)."""

    def tables(self) -> set[str]:
        return set(self.content)

    def commit(self, commands: Sequence[Command]) -> None:
        if not commands:
            return
        if self.fail_next:
            message, self.fail_next = self.fail_next, ""
            raise Internal(f"nft: {message}", reason="NFT_FAILED")
        after = {name: list(body) for name, body in self.content.items()}
        for command in commands:
            ((verb, obj),) = command.items()
            ((kind, spec),) = obj.items()
            table = spec["name"] if kind == "table" else spec["table"]
            if verb == "add" and kind == "table":
                after.setdefault(table, [])
            elif verb == "delete" and kind == "table":
                if table not in after:
                    raise Internal(f"nft: no table {table}", reason="NFT_FAILED")  # nothing applied
                del after[table]
            elif verb == "add" and table in after:
                after[table].append(command)
            else:
                raise Internal(f"nft: cannot {verb} {kind} in {table}", reason="NFT_FAILED")
        self.content = after
        self.commits += 1

    def rules(self, table: str) -> list[Command]:
        return [c for c in self.content[table] if "rule" in c["add"]]


@dataclass(kw_only=True)
class FakeProcess:
    info: ProcessInfo
    netns: str
    """"": not in any named namespace."""
    hups: int = 0
    signals: list[int] = field(default_factory=list)
    leasefile: Path | None = None
    """From the config on its command line, as dnsmasq reads it."""


class FakeProcesses:
    def __init__(self) -> None:
        self.processes: dict[int, FakeProcess] = {}
        self.started: list[ProcessInfo] = []
        self.stopped: list[ProcessInfo] = []
        self.fail_start: str = ""
        """Non-empty: ``start`` fails with this message (dnsmasq's stderr)."""
        self.released: list[tuple[str, str, LeaseEntry]] = []
        """(namespace, server, lease) of every release received by a dnsmasq."""
        self._pids = itertools.count(1000)
        self._clock = itertools.count(1)

    # -- what tests do behind the manager's back ------------------------------------

    def spawn(
        self, *, name: str, argv: Sequence[str], netns: str = "", pid: int | None = None
    ) -> ProcessInfo:
        """A process the manager did not start: a dnsmasq of an earlier zsd, or an
        unrelated program (``pid``: reusing a number that is free again)."""
        pid = next(self._pids) if pid is None else pid
        if pid in self.processes:
            raise ValueError(f"pid {pid} is taken")
        info = ProcessInfo(
            pid=pid, started_at=float(next(self._clock)), name=name, argv=tuple(argv), in_netns=False
        )
        self.processes[pid] = FakeProcess(info=info, netns=netns, leasefile=_leasefile(argv))
        return info

    def crash(self, pid: int) -> None:
        del self.processes[pid]

    def hups(self, pid: int) -> int:
        return self.processes[pid].hups

    def grant(self, pid: int, lease: LeaseEntry) -> None:
        """The dnsmasq ``pid`` gave ``lease`` (written to its lease file, as dnsmasq does)."""
        leasefile = self.processes[pid].leasefile
        if leasefile is None:
            raise ValueError(f"pid {pid} has no lease file")
        with leasefile.open("a") as f:
            f.write(f"1900000000 {lease.mac} {lease.ip} * {lease.client_id or '*'}\n")

    # -- ProcessDriver ---------------------------------------------------------------

    def inspect(self, pid: int, *, netns: str) -> ProcessInfo | None:
        process = self.processes.get(pid)
        if process is None:
            return None
        return replace(process.info, in_netns=bool(process.netns) and process.netns == netns)

    def in_netns(self, netns: str) -> list[ProcessInfo]:
        return [replace(p.info, in_netns=True) for p in self.processes.values() if p.netns == netns]

    def alive(self, process: ProcessInfo) -> bool:
        live = self.processes.get(process.pid)
        return live is not None and live.info.started_at == process.started_at

    def start(self, *, netns: str, config: Path, pidfile: Path) -> ProcessInfo:
        if not config.is_file():
            raise FailedPrecondition(
                f"dnsmasq in {netns} did not start: no {config}", reason="DNSMASQ_FAILED"
            )
        if self.fail_start:
            raise FailedPrecondition(
                f"dnsmasq in {netns} did not start: {self.fail_start}", reason="DNSMASQ_FAILED"
            )
        if any(p.netns == netns and p.info.name == "dnsmasq" for p in self.processes.values()):
            raise FailedPrecondition(
                f"dnsmasq in {netns} did not start: failed to create listening socket for port 67: "
                "Address in use",
                reason="DNSMASQ_FAILED",
            )
        info = self.spawn(name="dnsmasq", argv=("dnsmasq", *expected_args(config)), netns=netns)
        pidfile.write_text(f"{info.pid}\n")
        self.started.append(info)
        return replace(info, in_netns=True)

    def signal(self, process: ProcessInfo, signum: int) -> bool:
        if not self.alive(process):
            return False
        live = self.processes[process.pid]
        live.signals.append(signum)
        if signum == signal.SIGHUP:
            live.hups += 1
        elif signum in (signal.SIGTERM, signal.SIGKILL):
            self.crash(process.pid)
        return True

    def stop(self, process: ProcessInfo, *, timeout: float) -> None:
        if self.alive(process):
            self.crash(process.pid)
            self.stopped.append(process)

    def release(self, *, netns: str, iface: str, server: str, leases: Sequence[LeaseEntry]) -> None:
        serving = [p for p in self.processes.values() if p.netns == netns and p.info.name == "dnsmasq"]
        if not serving or serving[0].leasefile is None:
            return  # a packet nobody receives
        leasefile = serving[0].leasefile
        gone = {(lease.mac, lease.ip) for lease in leases}
        kept = [line for line in leasefile.read_text().splitlines() if tuple(line.split()[1:3]) not in gone]
        leasefile.write_text("".join(f"{line}\n" for line in kept))
        self.released += [(netns, server, lease) for lease in leases]


def _leasefile(argv: Sequence[str]) -> Path | None:
    """The ``dhcp-leasefile`` of the config named by ``--conf-file=``, if any."""
    for arg in argv[1:]:
        if arg.startswith("--conf-file=") and Path(arg.split("=", 1)[1]).is_file():
            for line in Path(arg.split("=", 1)[1]).read_text().splitlines():
                if line.startswith("dhcp-leasefile="):
                    return Path(line.split("=", 1)[1])
    return None

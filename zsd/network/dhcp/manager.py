"""This host's DHCP/DNS service: ``DhcpManager.apply(scopes)`` converges the host to
exactly these scopes, level-triggered and idempotent; call it on every change and
periodically.

Per scope: a namespace with a veth to the bridge, dnsmasq in it, its files in the
scope's directory, and the bridge's uplink guard. A changed hosts file is written
atomically and dnsmasq gets a SIGHUP; only a changed config (anything but the NICs and
names) restarts it. Leases of NICs no longer listed are released, so their addresses
can go to other NICs at once and their names leave DNS. A new manager (zsd
restarted) adopts the dnsmasq already serving when it is provably the one the scope
needs (``adoption``), so clients see nothing.
What no scope asks for any more (namespace, veth, dnsmasq, files, guard table) is
removed. ``close`` leaves everything running.

A failure in one scope does not stop the others from converging; ``apply`` raises it
(or a summary of several) afterwards, and the next ``apply`` retries.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import trio
from pyroute2 import IPRoute  # type: ignore[import-untyped]

from zsd.errors import FailedPrecondition, Internal, ZsdError
from zsd.network.dhcp import guard
from zsd.network.dhcp.adoption import decide
from zsd.network.dhcp.dnsmasqconf import parse_leases, stale_leases
from zsd.network.dhcp.dnsmasqproc import DnsmasqProcesses
from zsd.network.dhcp.drivers import (
    FirewallDriver,
    HostLink,
    LinkDriver,
    ProcessDriver,
    ProcessInfo,
    expected_args,
)
from zsd.network.dhcp.netlink import NetlinkDriver
from zsd.network.dhcp.nft import NftDriver
from zsd.network.dhcp.plan import DEFAULT_NETNS_PREFIX, ScopePlan, host_veth, plan_scope
from zsd.network.dhcp.spec import DhcpScope, service_ipv4, validate_scopes
from zsd.paths import Paths
from zsd.util.fsutil import unsearchable_by_others, write_atomic
from zsd.util.netns import made_in

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0


def default_state_dir(paths: Paths) -> Path:
    """Volatile like the namespaces it describes, and outside zsd's RuntimeDirectory,
    which systemd empties when zsd stops: dnsmasq and its files outlive zsd."""
    return paths.root / "run" / "zsd-dhcp"


@dataclass(frozen=True, kw_only=True)
class ScopeStatus:
    port_group: str
    netns: str
    pid: int
    """The dnsmasq serving the scope."""
    adopted: bool
    """Found running when this manager first applied the scope, and kept."""
    starts: int
    """dnsmasq processes this manager started for the scope (restarts included)."""
    reloads: int
    """SIGHUPs this manager sent (hosts files changed)."""
    config_digest: str
    hosts_digest: str


@dataclass(kw_only=True)
class _Live:
    """What this manager knows of a scope's dnsmasq."""

    config_digest: str
    process: ProcessInfo
    hosts_digest: str | None
    """What the process has read; None: unknown (then it gets a SIGHUP)."""
    adopted: bool
    starts: int
    reloads: int


class DhcpManager:
    def __init__(
        self,
        *,
        state_dir: Path,
        links: LinkDriver,
        firewall: FirewallDriver,
        processes: ProcessDriver,
        netns_prefix: str = DEFAULT_NETNS_PREFIX,
    ) -> None:
        """``netns_prefix``: every namespace with this prefix, and every directory in
        ``state_dir``, is this manager's (removed when no scope asks for it)."""
        self._state_dir = state_dir
        self._links = links
        self._firewall = firewall
        self._processes = processes
        self._prefix = netns_prefix
        self._lock = trio.Lock()
        self._closed = False
        self._live: dict[str, _Live] = {}
        self._guards: dict[str, str] = {}
        self._status: dict[str, ScopeStatus] = {}

    @classmethod
    def on_host(
        cls,
        *,
        state_dir: Path,
        host_netns: str = "",
        netns_prefix: str = DEFAULT_NETNS_PREFIX,
        dnsmasq: str = "dnsmasq",
    ) -> DhcpManager:
        """With the real drivers. ``host_netns``: the namespace holding the bridges
        when it is not this process's (a simulated host). Every network namespace whose
        name starts with ``netns_prefix`` belongs to this manager: give each manager on
        a machine a prefix no other name starts with."""
        host = functools.partial(made_in, host_netns, IPRoute) if host_netns else IPRoute
        return cls(
            state_dir=state_dir,
            links=NetlinkDriver(host=host),
            firewall=NftDriver(netns=host_netns),
            processes=DnsmasqProcesses(dnsmasq=dnsmasq),
            netns_prefix=netns_prefix,
        )

    async def apply(self, scopes: Sequence[DhcpScope]) -> None:
        """Converges to exactly ``scopes`` (validated first: ``InvalidArgument`` naming
        the field, and nothing changes)."""
        validate_scopes(scopes)
        plans = [plan_scope(s, state_dir=self._state_dir, netns_prefix=self._prefix) for s in scopes]
        async with self._lock:
            if self._closed:
                raise FailedPrecondition("the DHCP manager is closed", reason="CLOSED")
            await trio.to_thread.run_sync(self._converge, plans)

    def status(self) -> dict[str, ScopeStatus]:
        """The scopes served after the last ``apply``, by port group."""
        return dict(self._status)

    async def close(self) -> None:
        """Waits for a running ``apply``; dnsmasq keeps serving (``apply([])`` removes)."""
        async with self._lock:
            if not self._closed:
                self._closed = True
                await trio.to_thread.run_sync(self._links.close)

    # -- the worker thread ------------------------------------------------------------

    def _converge(self, plans: list[ScopePlan]) -> None:
        failures: dict[str, ZsdError] = {}
        wanted = {p.plumbing.netns for p in plans}
        for netns in sorted(self._existing() - wanted):
            try:
                self._remove(netns)
            except ZsdError as e:
                failures[netns] = e
        self._converge_guards(plans)
        links = self._links.host_links(
            [p.scope.bridge for p in plans] + [p.plumbing.host_veth for p in plans]
        )
        namespaces = self._links.namespaces()
        for i, plan in enumerate(plans):
            try:
                self._converge_scope(plan, links, namespaces, field=f"scopes[{i}]")
            except ZsdError as e:
                failures[plan.scope.port_group] = e
        self._status = {p.scope.port_group: self._status_of(p) for p in plans if p.slug in self._live}
        if failures:
            raise _summary(failures)

    def _existing(self) -> set[str]:
        found = {n for n in self._links.namespaces() if n.startswith(self._prefix)}
        if self._state_dir.is_dir():
            found |= {self._prefix + d.name for d in self._state_dir.iterdir() if d.is_dir()}
        return found | {self._prefix + s for s in self._live}

    def _remove(self, netns: str) -> None:
        slug = netns[len(self._prefix) :]
        live = self._live.pop(slug, None)
        processes = {p.pid: p for p in self._processes.in_netns(netns)}
        if live is not None and live.process.pid not in processes and self._processes.alive(live.process):
            processes[live.process.pid] = live.process
        for process in processes.values():
            self._processes.stop(process, timeout=STOP_TIMEOUT)
        self._links.destroy(netns=netns, host_veth=host_veth(netns))
        try:
            shutil.rmtree(self._state_dir / slug, ignore_errors=False)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise Internal(f"removing {self._state_dir / slug}: {e}", reason="DHCP_FILES") from None
        log.info("dhcp: removed %s (no scope asks for it)", netns)

    def _converge_guards(self, plans: list[ScopePlan]) -> None:
        desired = {
            p.guard_table: guard.guard_commands(
                bridge=p.scope.bridge, uplink=p.scope.uplink, service_port=p.plumbing.host_veth
            )
            for p in plans
            if p.guard_table
        }
        present = {t for t in self._firewall.tables() if guard.owned(t)}
        commands: list[guard.Command] = []
        stale = sorted(present - desired.keys())
        for table in stale:
            commands += guard.delete_commands(table)
        digests = {
            t: hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest() for t, c in desired.items()
        }
        changed = sorted(t for t in desired if t not in present or self._guards.get(t) != digests[t])
        for table in changed:
            commands += desired[table]
        self._firewall.commit(commands)
        for table in stale:
            self._guards.pop(table, None)
        self._guards.update({t: digests[t] for t in changed})
        if commands:
            log.info("dhcp: uplink guards: set %s, removed %s", changed or "-", stale or "-")

    def _converge_scope(
        self, plan: ScopePlan, links: dict[str, HostLink], namespaces: set[str], *, field: str
    ) -> None:
        bridge = links.get(plan.scope.bridge)
        if bridge is None or bridge.kind != "bridge":
            raise FailedPrecondition(
                f"no bridge {plan.scope.bridge} on this host",
                reason="BRIDGE_NOT_FOUND",
                field=f"{field}.bridge",
            )
        mtu = plan.scope.mtu or bridge.mtu
        self._write_files(plan)
        live = self._live.get(plan.slug)
        current = live is not None and live.config_digest == plan.config_digest
        port = links.get(plan.plumbing.host_veth)
        made = False
        if plan.plumbing.netns not in namespaces or port is None:
            self._links.create(plan.plumbing, mtu=mtu)
            made = True
        else:
            if port.master != bridge.index or not port.up or port.mtu != mtu:
                self._links.attach(plan.plumbing, mtu=mtu)
            if not current:
                self._links.configure_inner(plan.plumbing, mtu=mtu)
        if live is not None and current and not made and self._processes.alive(live.process):
            if live.hosts_digest != plan.hosts_digest:
                self._reload(plan, live)
        else:
            # A new veth means dnsmasq's sockets are bound to an interface that is gone.
            self._start_or_adopt(plan, live, may_adopt=not made)
        if plan.scope.dhcp:
            self._release_stale_leases(plan)
        for stale in plan.files.stale_configs(plan.config_path):
            stale.unlink(missing_ok=True)

    def _release_stale_leases(self, plan: ScopePlan) -> None:
        try:
            leases = parse_leases(plan.files.leases.read_text())
        except FileNotFoundError:
            return
        stale = stale_leases(plan.scope, leases)
        if stale:
            log.info(
                "dhcp: releasing %d lease(s) of NICs gone from %s: %s",
                len(stale),
                plan.scope.port_group,
                ", ".join(f"{lease.ip} ({lease.mac})" for lease in stale),
            )
            self._processes.release(
                netns=plan.plumbing.netns,
                iface=plan.plumbing.inner_if,
                server=str(service_ipv4(plan.scope.ipv4)),
                leases=stale,
            )

    def _write_files(self, plan: ScopePlan) -> None:
        # dnsmasq drops root: it reads the hosts files as root when it starts, but
        # re-reads them on SIGHUP as nobody. Behind a directory nobody cannot enter it
        # would keep serving the NICs it started with and answer no new one, silently
        # (it logs "permission denied" and keeps the old list): refuse that up front.
        for directory in (self._state_dir, plan.files.dir):
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o755)
        blocked = unsearchable_by_others(plan.files.dir)
        if blocked is not None:
            raise FailedPrecondition(
                f"dnsmasq (running as nobody) cannot reach {plan.files.dir}: {blocked} is not "
                "searchable by others (needs o+x)",
                reason="DHCP_DIR_NOT_SEARCHABLE",
            )
        for path, text in (
            (plan.files.dhcp_hosts, plan.dhcp_hosts),
            (plan.files.dns_hosts, plan.dns_hosts),
            (plan.config_path, plan.config_text),
        ):
            try:
                same = path.read_text() == text
            except FileNotFoundError:
                same = False
            if not same:
                write_atomic(path, text.encode(), mode=0o644)

    def _start_or_adopt(self, plan: ScopePlan, live: _Live | None, *, may_adopt: bool) -> None:
        netns = plan.plumbing.netns
        pid = plan.files.read_pid()
        remembered = live.process if live is not None and self._processes.alive(live.process) else None
        decision = decide(
            args=expected_args(plan.config_path),
            from_pidfile=self._processes.inspect(pid, netns=netns) if pid is not None else None,
            in_netns=self._processes.in_netns(netns),
            remembered=remembered,
            may_keep=may_adopt,
        )
        for process in decision.stop:
            log.info("dhcp: stopping pid %d (%s) in %s", process.pid, process.name, netns)
            self._processes.stop(process, timeout=STOP_TIMEOUT)
        starts = live.starts if live is not None else 0
        reloads = live.reloads if live is not None else 0
        if decision.keep is not None:
            log.info("dhcp: adopted dnsmasq pid %d in %s: %s", decision.keep.pid, netns, decision.reason)
            adopted = _Live(
                config_digest=plan.config_digest,
                process=decision.keep,
                hosts_digest=None,
                adopted=True,
                starts=starts,
                reloads=reloads,
            )
            self._live[plan.slug] = adopted
            self._reload(plan, adopted)  # the hosts files may have changed while no zsd ran
            return
        process = self._processes.start(netns=netns, config=plan.config_path, pidfile=plan.files.pidfile)
        log.info("dhcp: started dnsmasq pid %d in %s (%s)", process.pid, netns, decision.reason)
        self._live[plan.slug] = _Live(
            config_digest=plan.config_digest,
            process=process,
            hosts_digest=plan.hosts_digest,
            adopted=False,
            starts=starts + 1,
            reloads=reloads,
        )

    def _reload(self, plan: ScopePlan, live: _Live) -> None:
        if self._processes.signal(live.process, signal.SIGHUP):
            live.hosts_digest = plan.hosts_digest
            live.reloads += 1
            return
        log.warning("dhcp: dnsmasq pid %d in %s is gone", live.process.pid, plan.plumbing.netns)
        self._start_or_adopt(plan, replace(live, adopted=False), may_adopt=True)

    def _status_of(self, plan: ScopePlan) -> ScopeStatus:
        live = self._live[plan.slug]
        return ScopeStatus(
            port_group=plan.scope.port_group,
            netns=plan.plumbing.netns,
            pid=live.process.pid,
            adopted=live.adopted,
            starts=live.starts,
            reloads=live.reloads,
            config_digest=live.config_digest,
            hosts_digest=live.hosts_digest or "",
        )


def _summary(failures: dict[str, ZsdError]) -> ZsdError:
    """One error for the caller: the first failure's category, every failure's text."""
    (first_key, first), *rest = sorted(failures.items())
    message = f"{first_key}: {first.message}"
    if rest:
        message += "; " + "; ".join(f"{k}: {e.message}" for k, e in rest)
    return type(first)(
        message,
        reason=first.reason,
        field=first.field,
        metadata={"failed": ",".join(sorted(failures))},
    )

"""The manager against the fakes: convergence, SIGHUP vs restart, adoption after a
restart, repairs, removal, failures."""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from tests.unit.network.dhcp.samples import DB, WEB, full_scope, small_scope
from zsd.errors import FailedPrecondition, Internal, InvalidArgument
from zsd.network.dhcp.dnsmasqconf import LeaseEntry, parse_leases
from zsd.network.dhcp.drivers import expected_args
from zsd.network.dhcp.manager import DhcpManager
from zsd.network.dhcp.plan import host_veth
from zsd.network.dhcp.spec import DhcpNic
from zsd.network.dhcp.testing.fakes import FakeFirewall, FakeLinks, FakeProcesses

WEB_NS = "zsd-dhcp-lab+web"
DB_NS = "zsd-dhcp-lab+db"
NEW_NIC = DhcpNic(mac="52:54:00:00:00:03", ipv4="10.9.0.12", hostname="web2")


@dataclass
class Host:
    """One host's kernel and processes, shared by the managers of successive zsd runs."""

    state_dir: Path
    links: FakeLinks = field(default_factory=lambda: FakeLinks(bridges={"zb0123456789": 1450, "br-db": 1500}))
    firewall: FakeFirewall = field(default_factory=FakeFirewall)
    processes: FakeProcesses = field(default_factory=FakeProcesses)

    def manager(self) -> DhcpManager:
        return DhcpManager(
            state_dir=self.state_dir, links=self.links, firewall=self.firewall, processes=self.processes
        )

    def dnsmasq(self, netns: str) -> list[int]:
        return [p.pid for p in self.processes.in_netns(netns)]


@pytest.fixture
def top() -> Iterator[Path]:
    """A directory everyone can enter. (pytest's tmp_path is under a 0700 one, and the
    manager refuses a state directory dnsmasq, as nobody, cannot reach: tested below.)"""
    path = Path(tempfile.mkdtemp(prefix="zsd-dhcp-unit-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def host(top: Path) -> Host:
    return Host(state_dir=top / "dhcp")


async def test_a_state_dir_dnsmasq_cannot_reach_is_refused(top: Path) -> None:
    """dnsmasq re-reads its hosts files as nobody: behind a 0700 directory a new NIC
    would silently get no answer, so nothing is started there."""
    closed = top / "closed"
    closed.mkdir(mode=0o700)
    host = Host(state_dir=closed / "dhcp")
    with pytest.raises(FailedPrecondition) as caught:
        await host.manager().apply([small_scope()])
    assert caught.value.reason == "DHCP_DIR_NOT_SEARCHABLE" and str(closed) in str(caught.value)
    assert host.processes.in_netns(DB_NS) == []
    closed.chmod(0o711)  # enter, not list: enough
    await host.manager().apply([small_scope()])
    assert len(host.processes.in_netns(DB_NS)) == 1


async def test_first_apply_builds_everything(host: Host) -> None:
    manager = host.manager()
    await manager.apply([full_scope(), small_scope()])
    assert host.links.namespaces() == {WEB_NS, DB_NS}
    port = host.links.links[host_veth(WEB_NS)]
    assert port.master == host.links.links["zb0123456789"].index and port.mtu == 1450
    assert host.links.inner[WEB_NS].addresses == {"10.9.0.254/24", "fd00:9::ffff:ffff:ffff:ffff/64"}
    assert host.links.inner[DB_NS].mtu == 1500  # the bridge's, as none is set
    # Only the scope with an uplink gets a guard.
    assert host.firewall.tables() == {"zsd-dhcp-zb0123456789"}
    status = manager.status()
    assert set(status) == {"lab/web", "lab/db"}
    web = status["lab/web"]
    assert (web.netns, web.starts, web.reloads, web.adopted) == (WEB_NS, 1, 0, False)
    directory = host.state_dir / "lab+web"
    (started,) = [p for p in host.processes.started if p.pid == web.pid]
    assert started.argv[1:] == expected_args(directory / f"dnsmasq-{web.config_digest}.conf")
    assert "web1.web.lab.test" in (directory / "hosts.dns").read_text()
    assert (directory / "hosts.dhcp").read_text().count("52:54:00") == 2
    assert (directory.stat().st_mode & 0o777, (directory / "hosts.dhcp").stat().st_mode & 0o777) == (
        0o755,
        0o644,
    )


async def test_the_same_scopes_again_change_nothing(host: Host) -> None:
    manager = host.manager()
    await manager.apply([full_scope(), small_scope()])
    calls, commits, before = list(host.links.calls), host.firewall.commits, manager.status()
    await manager.apply([small_scope(), full_scope()])
    assert host.links.calls == calls and host.firewall.commits == commits
    assert manager.status() == before
    assert all(host.processes.hups(s.pid) == 0 for s in before.values())


async def test_a_new_nic_is_a_sighup_not_a_restart(host: Host) -> None:
    manager = host.manager()
    scope = full_scope()
    await manager.apply([scope])
    pid = manager.status()["lab/web"].pid
    await manager.apply([replace(scope, nics=(*scope.nics, NEW_NIC))])
    web = manager.status()["lab/web"]
    assert (web.pid, web.starts, web.reloads) == (pid, 1, 1)
    assert host.processes.hups(pid) == 1
    assert "52:54:00:00:00:03,10.9.0.12,web2\n" in (host.state_dir / "lab+web" / "hosts.dhcp").read_text()
    # Names only (a DNS record) are a SIGHUP too.
    await manager.apply([replace(scope, dns_records=())])
    assert host.processes.hups(pid) == 2 and manager.status()["lab/web"].pid == pid


async def test_a_config_change_restarts_dnsmasq(host: Host) -> None:
    manager = host.manager()
    await manager.apply([full_scope()])
    old = manager.status()["lab/web"]
    await manager.apply([replace(full_scope(), domain="other.test")])
    new = manager.status()["lab/web"]
    assert new.pid != old.pid and new.starts == 2
    assert [p.pid for p in host.processes.stopped] == [old.pid]
    assert host.dnsmasq(WEB_NS) == [new.pid]
    configs = sorted(p.name for p in (host.state_dir / "lab+web").glob("dnsmasq-*.conf"))
    assert configs == [f"dnsmasq-{new.config_digest}.conf"]  # the old one is gone


async def test_a_new_service_address_reconfigures_the_namespace(host: Host) -> None:
    manager = host.manager()
    await manager.apply([small_scope()])
    moved = small_scope(ipv4=replace(small_scope().ipv4, service_address="10.8.0.2"))
    await manager.apply([moved])
    assert host.links.inner[DB_NS].addresses == {"10.8.0.2/24"}
    assert manager.status()["lab/db"].starts == 2
    assert f"configure {DB_NS}" in host.links.calls


async def test_a_restarted_zsd_adopts_the_running_dnsmasq(host: Host) -> None:
    first = host.manager()
    await first.apply([full_scope(), small_scope()])
    pids = {k: s.pid for k, s in first.status().items()}
    await first.close()
    calls = list(host.links.calls)

    second = host.manager()
    await second.apply([full_scope(), small_scope()])
    status = second.status()
    assert {k: s.pid for k, s in status.items()} == pids
    assert all(s.adopted and s.starts == 0 for s in status.values())
    # One SIGHUP each: the hosts files may have changed while no zsd ran.
    assert all(host.processes.hups(pid) == 1 for pid in pids.values())
    assert host.processes.stopped == []
    # Links already right are left alone (the inner side is checked once).
    assert [c for c in host.links.calls[len(calls) :] if not c.startswith("configure")] == []


async def test_a_restarted_zsd_with_a_new_config_restarts_dnsmasq(host: Host) -> None:
    await host.manager().apply([full_scope()])
    old = host.dnsmasq(WEB_NS)
    manager = host.manager()
    await manager.apply([replace(full_scope(), lease_seconds=7200)])
    web = manager.status()["lab/web"]
    assert not web.adopted and web.starts == 1 and [web.pid] != old
    assert [p.pid for p in host.processes.stopped] == old


async def test_adoption_without_a_pidfile(host: Host) -> None:
    await host.manager().apply([small_scope()])
    (pid,) = host.dnsmasq(DB_NS)
    (host.state_dir / "lab+db" / "dnsmasq.pid").unlink()
    manager = host.manager()
    await manager.apply([small_scope()])
    assert manager.status()["lab/db"].pid == pid and manager.status()["lab/db"].adopted


async def test_a_reused_pid_in_the_pidfile_is_left_alone(host: Host) -> None:
    await host.manager().apply([small_scope()])
    (pid,) = host.dnsmasq(DB_NS)
    host.processes.crash(pid)  # dnsmasq died while zsd was down...
    stranger = host.processes.spawn(name="postgres", argv=("postgres",), pid=pid)  # ...and its pid was reused
    manager = host.manager()
    await manager.apply([small_scope()])
    assert host.processes.alive(stranger) and host.processes.processes[pid].signals == []
    new = manager.status()["lab/db"]
    assert new.pid != pid and new.starts == 1 and host.dnsmasq(DB_NS) == [new.pid]


async def test_strangers_in_the_namespace_are_stopped(host: Host) -> None:
    await host.manager().apply([small_scope()])
    (pid,) = host.dnsmasq(DB_NS)
    config = next((host.state_dir / "lab+db").glob("dnsmasq-*.conf"))
    extra = host.processes.spawn(name="dnsmasq", argv=("dnsmasq", *expected_args(config)), netns=DB_NS)
    shell = host.processes.spawn(name="bash", argv=("bash",), netns=DB_NS)
    manager = host.manager()
    await manager.apply([small_scope()])
    assert manager.status()["lab/db"].pid == pid
    assert {p.pid for p in host.processes.stopped} == {extra.pid, shell.pid}


async def test_a_crashed_dnsmasq_is_started_again(host: Host) -> None:
    manager = host.manager()
    await manager.apply([small_scope()])
    old = manager.status()["lab/db"].pid
    host.processes.crash(old)
    await manager.apply([small_scope()])
    assert manager.status()["lab/db"].pid != old and manager.status()["lab/db"].starts == 2


async def test_a_sighup_to_a_dead_dnsmasq_starts_a_new_one(host: Host) -> None:
    manager = host.manager()
    await manager.apply([small_scope()])
    old = manager.status()["lab/db"].pid
    host.processes.crash(old)
    await manager.apply([small_scope(nics=(replace(DB, ipv4="10.8.0.11"),))])
    new = manager.status()["lab/db"]
    assert new.pid != old and host.dnsmasq(DB_NS) == [new.pid]


async def test_a_lost_veth_is_made_again_and_dnsmasq_restarted(host: Host) -> None:
    manager = host.manager()
    await manager.apply([small_scope()])
    old = manager.status()["lab/db"].pid
    host.links.delete_link(host_veth(DB_NS))  # takes dnsmasq's interface along
    await manager.apply([small_scope()])
    assert host.links.links[host_veth(DB_NS)].master == host.links.links["br-db"].index
    new = manager.status()["lab/db"]
    assert new.pid != old and [p.pid for p in host.processes.stopped] == [old]


async def test_a_detached_veth_is_attached_again_without_restart(host: Host) -> None:
    manager = host.manager()
    await manager.apply([small_scope()])
    pid = manager.status()["lab/db"].pid
    host.links.set_link(host_veth(DB_NS), master=None, up=False)
    await manager.apply([small_scope()])
    port = host.links.links[host_veth(DB_NS)]
    assert port.master == host.links.links["br-db"].index and port.up
    assert manager.status()["lab/db"].pid == pid and host.processes.stopped == []


async def test_the_guard_follows_the_uplink(host: Host) -> None:
    manager = host.manager()
    await manager.apply([full_scope()])
    # Deleted behind zsd's back: back on the next round.
    host.firewall.commit([{"delete": {"table": {"family": "bridge", "name": "zsd-dhcp-zb0123456789"}}}])
    await manager.apply([full_scope()])
    assert host.firewall.tables() == {"zsd-dhcp-zb0123456789"}
    # Another uplink: the table is replaced, not added to.
    await manager.apply([replace(full_scope(), uplink="zx0123456789")])
    assert len(host.firewall.rules("zsd-dhcp-zb0123456789")) == 7
    assert "zx0123456789" in str(host.firewall.rules("zsd-dhcp-zb0123456789"))
    # No uplink any more: no guard; other tables are not zsd-dhcp's to touch.
    host.firewall.commit([{"add": {"table": {"family": "bridge", "name": "zsd-secgroups"}}}])
    await manager.apply([replace(full_scope(), uplink="")])
    assert host.firewall.tables() == {"zsd-secgroups"}


async def test_a_restarted_zsd_reapplies_the_guard_once(host: Host) -> None:
    await host.manager().apply([full_scope()])
    commits = host.firewall.commits
    manager = host.manager()
    await manager.apply([full_scope()])
    await manager.apply([full_scope()])
    assert host.firewall.commits == commits + 1


async def test_a_removed_scope_leaves_nothing(host: Host) -> None:
    manager = host.manager()
    await manager.apply([full_scope(), small_scope()])
    web_pid = manager.status()["lab/web"].pid
    await manager.apply([small_scope()])
    assert host.links.namespaces() == {DB_NS}
    assert host_veth(WEB_NS) not in host.links.links
    assert not host.processes.alive(host.processes.started[0]) and web_pid not in host.processes.processes
    assert not (host.state_dir / "lab+web").exists() and host.firewall.tables() == set()
    assert set(manager.status()) == {"lab/db"}
    await manager.apply([])
    assert host.links.namespaces() == set() and host.processes.processes == {}
    assert list(host.state_dir.iterdir()) == []
    assert set(host.links.links) == {"zb0123456789", "br-db"}


async def test_a_restarted_zsd_removes_what_it_no_longer_serves(host: Host) -> None:
    await host.manager().apply([full_scope(), small_scope()])
    await host.manager().apply([small_scope()])
    assert host.links.namespaces() == {DB_NS} and not (host.state_dir / "lab+web").exists()
    # Leftovers without a namespace (a reboot) or without files are found too.
    host.links.netns.add("zsd-dhcp-gone")
    (host.state_dir / "orphan").mkdir()
    await host.manager().apply([small_scope()])
    assert host.links.namespaces() == {DB_NS} and not (host.state_dir / "orphan").exists()


async def test_other_namespaces_are_not_touched(host: Host) -> None:
    host.links.netns.update({"zsd-switch-x", "zsdt-other"})
    await host.manager().apply([])
    assert host.links.namespaces() == {"zsd-switch-x", "zsdt-other"}


async def test_a_missing_bridge_fails_its_scope_only(host: Host) -> None:
    manager = host.manager()
    with pytest.raises(FailedPrecondition, match="no bridge br-missing") as caught:
        await manager.apply([full_scope(), small_scope(bridge="br-missing")])
    assert caught.value.field == "scopes[1].bridge" and caught.value.reason == "BRIDGE_NOT_FOUND"
    assert caught.value.metadata == {"failed": "lab/db"}
    assert set(manager.status()) == {"lab/web"}
    host.links.add_bridge("br-missing")
    await manager.apply([full_scope(), small_scope(bridge="br-missing")])
    assert set(manager.status()) == {"lab/web", "lab/db"}


async def test_dnsmasq_failing_to_start_is_reported_and_retried(host: Host) -> None:
    manager = host.manager()
    host.processes.fail_start = "bad option at line 3"
    with pytest.raises(FailedPrecondition, match="bad option at line 3"):
        await manager.apply([small_scope()])
    host.processes.fail_start = ""
    await manager.apply([small_scope()])
    assert manager.status()["lab/db"].starts == 1


async def test_a_failing_guard_starts_no_dnsmasq(host: Host) -> None:
    host.firewall.fail_next = "Could not process rule"
    with pytest.raises(Internal, match="Could not process rule"):
        await host.manager().apply([full_scope()])
    assert host.processes.started == []


async def test_invalid_scopes_change_nothing(host: Host) -> None:
    manager = host.manager()
    await manager.apply([small_scope()])
    bad = full_scope()
    bad = replace(bad, nics=(replace(WEB, ipv4="10.1.1.1"),))
    with pytest.raises(InvalidArgument) as caught:
        await manager.apply([small_scope(), bad])
    assert caught.value.field == "scopes[1].nics[0].ipv4"
    assert host.links.namespaces() == {DB_NS}


async def test_close_leaves_dnsmasq_running(host: Host) -> None:
    manager = host.manager()
    await manager.apply([small_scope()])
    pid = manager.status()["lab/db"].pid
    await manager.close()
    await manager.close()
    assert host.links.closed
    with pytest.raises(FailedPrecondition, match="closed"):
        await manager.apply([])
    assert host.dnsmasq(DB_NS) == [pid]
    assert host.processes.processes[pid].signals == []


async def test_sighup_is_the_only_signal_for_changes(host: Host) -> None:
    manager = host.manager()
    scope = full_scope()
    await manager.apply([scope])
    pid = manager.status()["lab/web"].pid
    for i in range(20):
        nic = DhcpNic(mac=f"52:54:00:00:01:{i:02x}", ipv4=f"10.9.0.{100 + i}")
        await manager.apply([replace(scope, nics=(*scope.nics, nic))])
    assert host.processes.processes[pid].signals == [signal.SIGHUP] * 20


async def test_leases_of_nics_gone_are_released(host: Host) -> None:
    manager = host.manager()
    scope = full_scope()
    await manager.apply([scope])
    pid = manager.status()["lab/web"].pid
    host.processes.grant(pid, LeaseEntry(mac=WEB.mac, ip=WEB.ipv4, client_id="01:52:54:00:00:00:01"))
    host.processes.grant(pid, LeaseEntry(mac=DB.mac, ip=DB.ipv4))
    await manager.apply([scope])
    assert host.processes.released == []
    # DB leaves, and its address goes to a new NIC: DB's lease must go, or dnsmasq
    # would keep the address from the new NIC (and DB's name in DNS) until it expires.
    await manager.apply([replace(scope, nics=(WEB, replace(NEW_NIC, ipv4=DB.ipv4)))])
    assert host.processes.released == [(WEB_NS, "10.9.0.254", LeaseEntry(mac=DB.mac, ip=DB.ipv4))]
    assert [
        lease.mac for lease in parse_leases(Path(host.state_dir / "lab+web" / "dnsmasq.leases").read_text())
    ] == [WEB.mac]
    await manager.apply([replace(scope, nics=(WEB, replace(NEW_NIC, ipv4=DB.ipv4)))])
    assert len(host.processes.released) == 1  # released once: dnsmasq dropped it
    assert manager.status()["lab/web"].pid == pid


async def test_no_dhcp_no_release(host: Host) -> None:
    manager = host.manager()
    await manager.apply([small_scope()])
    host.processes.grant(manager.status()["lab/db"].pid, LeaseEntry(mac=DB.mac, ip="10.8.0.9"))
    await manager.apply([small_scope(dhcp=False)])
    assert host.processes.released == []

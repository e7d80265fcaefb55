"""The fakes keep the rules the manager relies on (kernel, nft, dnsmasq)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from zsd.errors import FailedPrecondition, Internal
from zsd.network.dhcp.dnsmasqconf import LeaseEntry, parse_leases
from zsd.network.dhcp.drivers import Plumbing, expected_args
from zsd.network.dhcp.guard import delete_commands, guard_commands
from zsd.network.dhcp.testing.fakes import FakeFirewall, FakeLinks, FakeProcesses

PLUMBING = Plumbing(
    netns="zsd-dhcp-pg",
    host_veth="zd0000000001",
    inner_if="dhcp0",
    bridge="br0",
    mac="02:00:00:00:00:01",
    ipv4="10.0.0.254/24",
    ipv6="fd00::ffff/64",
    gateway="10.0.0.1",
)


def test_links_create_attach_configure() -> None:
    links = FakeLinks(bridges={"br0": 1400})
    links.create(PLUMBING, mtu=1400)
    port = links.host_links(["zd0000000001"])["zd0000000001"]
    assert port.master == links.links["br0"].index and port.up and port.mtu == 1400
    inner = links.inner["zsd-dhcp-pg"]
    assert inner.addresses == {"10.0.0.254/24", "fd00::ffff/64"} and inner.up and inner.gateway == "10.0.0.1"
    assert links.namespaces() == {"zsd-dhcp-pg"}
    assert links.calls == ["create zsd-dhcp-pg"]


def test_links_need_the_bridge() -> None:
    links = FakeLinks()
    with pytest.raises(FailedPrecondition, match="no bridge br0"):
        links.create(PLUMBING, mtu=0)


def test_veth_ends_live_and_die_together() -> None:
    links = FakeLinks(bridges={"br0": 1500})
    links.create(PLUMBING, mtu=0)
    links.delete_link("zd0000000001")
    assert "zsd-dhcp-pg" not in links.inner and "zsd-dhcp-pg" in links.namespaces()
    links.create(PLUMBING, mtu=0)
    links.delete_netns("zsd-dhcp-pg")
    assert links.host_links(["zd0000000001", "nope"]) == {}


def test_deleting_a_bridge_frees_its_ports() -> None:
    links = FakeLinks(bridges={"br0": 1500})
    links.create(PLUMBING, mtu=0)
    links.delete_link("br0")
    assert links.host_links(["zd0000000001"])["zd0000000001"].master is None


def test_destroy_tolerates_missing_parts() -> None:
    links = FakeLinks(bridges={"br0": 1500})
    links.destroy(netns="zsd-dhcp-pg", host_veth="zd0000000001")
    links.create(PLUMBING, mtu=0)
    links.destroy(netns="zsd-dhcp-pg", host_veth="zd0000000001")
    assert links.namespaces() == set() and links.host_links(["zd0000000001", "nope"]) == {}


def test_firewall_transactions_are_all_or_nothing() -> None:
    fw = FakeFirewall()
    fw.commit(guard_commands(bridge="br0", uplink="up0"))
    assert fw.tables() == {"zsd-dhcp-br0"} and len(fw.rules("zsd-dhcp-br0")) == 5
    # Replacing the table whole leaves one copy of each rule.
    fw.commit(guard_commands(bridge="br0", uplink="up0"))
    assert len(fw.rules("zsd-dhcp-br0")) == 5 and fw.commits == 2
    # A delete of a missing table fails the whole transaction (as nft does).
    bad = [
        *guard_commands(bridge="br1", uplink="up1"),
        {"delete": {"table": {"family": "bridge", "name": "x"}}},
    ]
    with pytest.raises(Internal, match="no table x"):
        fw.commit(bad)
    assert fw.tables() == {"zsd-dhcp-br0"}
    fw.commit(delete_commands("zsd-dhcp-br0") + delete_commands("zsd-dhcp-never"))
    assert fw.tables() == set()


def test_firewall_injected_failure_changes_nothing() -> None:
    fw = FakeFirewall()
    fw.fail_next = "Operation not supported"
    with pytest.raises(Internal, match="not supported"):
        fw.commit(guard_commands(bridge="br0", uplink="up0"))
    assert fw.tables() == set() and fw.commits == 0
    fw.commit(guard_commands(bridge="br0", uplink="up0"))
    assert fw.tables() == {"zsd-dhcp-br0"}


def test_processes_start_writes_the_pidfile(tmp_path: Path) -> None:
    procs = FakeProcesses()
    config = tmp_path / "dnsmasq-x.conf"
    config.write_text("")
    started = procs.start(netns="ns", config=config, pidfile=tmp_path / "dnsmasq.pid")
    assert (tmp_path / "dnsmasq.pid").read_text() == f"{started.pid}\n"
    assert started.argv[1:] == expected_args(config) and started.in_netns
    assert procs.inspect(started.pid, netns="ns") == started
    assert procs.inspect(started.pid, netns="other") == started.__class__(
        **{**vars(started), "in_netns": False}
    )
    assert procs.in_netns("ns") == [started] and procs.in_netns("other") == []


def test_processes_one_dnsmasq_per_namespace(tmp_path: Path) -> None:
    procs = FakeProcesses()
    config = tmp_path / "c.conf"
    config.write_text("")
    procs.start(netns="ns", config=config, pidfile=tmp_path / "pid")
    with pytest.raises(FailedPrecondition, match="Address in use"):
        procs.start(netns="ns", config=config, pidfile=tmp_path / "pid")
    with pytest.raises(FailedPrecondition, match="no "):
        procs.start(netns="ns2", config=tmp_path / "missing.conf", pidfile=tmp_path / "pid")


def test_processes_signals_and_stop(tmp_path: Path) -> None:
    procs = FakeProcesses()
    config = tmp_path / "c.conf"
    config.write_text("")
    p = procs.start(netns="ns", config=config, pidfile=tmp_path / "pid")
    assert procs.signal(p, signal.SIGHUP) and procs.hups(p.pid) == 1
    procs.stop(p, timeout=1)
    assert not procs.alive(p) and not procs.signal(p, signal.SIGHUP)
    assert procs.stopped == [p] and procs.in_netns("ns") == []


def test_a_reused_pid_is_another_process() -> None:
    procs = FakeProcesses()
    old = procs.spawn(name="dnsmasq", argv=("dnsmasq",), netns="ns")
    procs.crash(old.pid)
    new = procs.spawn(name="bash", argv=("bash",), pid=old.pid)
    assert not procs.alive(old) and procs.alive(new)
    assert not procs.signal(old, signal.SIGTERM) and procs.alive(new)
    inspected = procs.inspect(old.pid, netns="ns")
    assert inspected is not None and inspected.name == "bash" and not inspected.in_netns


def test_processes_leases_and_release(tmp_path: Path) -> None:
    procs = FakeProcesses()
    config = tmp_path / "c.conf"
    config.write_text(f"interface=dhcp0\ndhcp-leasefile={tmp_path}/leases\n")
    p = procs.start(netns="ns", config=config, pidfile=tmp_path / "pid")
    procs.grant(p.pid, LeaseEntry(mac="52:54:00:00:00:01", ip="10.0.0.5"))
    procs.grant(p.pid, LeaseEntry(mac="52:54:00:00:00:02", ip="10.0.0.6", client_id="01:aa"))
    assert [lease.ip for lease in parse_leases((tmp_path / "leases").read_text())] == ["10.0.0.5", "10.0.0.6"]
    gone = LeaseEntry(mac="52:54:00:00:00:01", ip="10.0.0.5")
    procs.release(netns="other", iface="dhcp0", server="10.0.0.254", leases=[gone])
    assert procs.released == []  # nobody serves that namespace
    procs.release(netns="ns", iface="dhcp0", server="10.0.0.254", leases=[gone])
    assert procs.released == [("ns", "10.0.0.254", gone)]
    assert parse_leases((tmp_path / "leases").read_text()) == [
        LeaseEntry(mac="52:54:00:00:00:02", ip="10.0.0.6", client_id="01:aa")
    ]

"""The DHCP/DNS service with real dnsmasq, nftables and clients, in namespaces.

Simulated hosts are namespaces with a bridge; "VMs" are namespaces whose eth0 (with
the NIC's MAC) is a port of a host's bridge; clients are busybox udhcpc and nslookup
and the lab's DHCPv6 probe. Every namespace starts with ``zsdt-dhcp-<pid>-``, the DHCP
managers' own included, and the lab removes them all, also when a test fails.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from zsd.errors import FailedPrecondition
from zsd.network.dhcp.manager import DhcpManager
from zsd.network.dhcp.plan import host_veth
from zsd.network.dhcp.spec import DhcpNic, DhcpScope, DnsRecord, Ipv4Subnet, Ipv6Subnet, StaticRoute
from zsd.network.dhcp.testing.lab import Lab, sweep, tools_missing
from zsd.testing import netfabric

pytestmark = [pytest.mark.integration, pytest.mark.skipif(bool(tools_missing()), reason=tools_missing())]

PREFIX = f"zsdt-dhcp-{os.getpid()}-"
MAC1, MAC2, MAC3 = "52:54:00:77:00:01", "52:54:00:77:00:02", "52:54:00:77:00:03"


class Managers:
    """Makes the DHCP managers of a test (one per simulated zsd run) and closes them."""

    def __init__(self, lab: Lab) -> None:
        self._lab = lab
        self._made: list[DhcpManager] = []

    def __call__(self, host: str) -> DhcpManager:
        made = DhcpManager.on_host(
            state_dir=self._lab.state_dir(host),
            host_netns=self._lab.prefix + host,
            netns_prefix=self._lab.dns_prefix(host),
        )
        self._made.append(made)
        return made

    async def close(self) -> None:
        for made in self._made:
            await made.close()


@pytest.fixture
def lab() -> Iterator[Lab]:
    sweep(PREFIX)
    lab = Lab(PREFIX)
    try:
        yield lab
    finally:
        lab.close()
        assert [n for n in netfabric.names() if n.startswith(PREFIX)] == []


@pytest.fixture
async def manager(lab: Lab) -> AsyncIterator[Managers]:
    managers = Managers(lab)
    try:
        yield managers
    finally:
        await managers.close()


def web_scope(*nics: DhcpNic, **changes: object) -> DhcpScope:
    scope = DhcpScope(
        port_group="lab/web",
        bridge="br0",
        ipv4=Ipv4Subnet(
            cidr="10.77.0.0/24",
            gateway="10.77.0.1",
            routes=(StaticRoute(destination="10.20.0.0/16", via="10.77.0.2"),),
        ),
        domain="web.lab.test",
        mtu=1400,
        lease_seconds=600,
        nics=nics,
        dns_records=(DnsRecord(hostname="app1", ipv4="10.77.0.30"),),
    )
    return replace(scope, **changes)  # type: ignore[arg-type]


def dnsmasq_pids(lab: Lab, host: str, port_group: str = "lab+web") -> list[int]:
    return netfabric.pids_in(lab.dns_prefix(host) + port_group)


def running(pid: int) -> bool:
    """Alive and not a zombie (this machine's init may be slow to reap orphans)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def links_of(netns: str) -> set[str]:
    out = subprocess.run(["ip", "-n", netns, "-o", "link"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def ns_of_manager(lab: Lab, host: str) -> list[str]:
    return [n for n in netfabric.names() if n.startswith(lab.dns_prefix(host))]


async def test_leases_names_and_a_nic_added_without_restart(lab: Lab, manager: Managers) -> None:
    h1 = lab.host("h1")
    vm1, vm2, stranger = (lab.vm(f"vm{i}", host=h1, mac=mac) for i, mac in ((1, MAC1), (2, MAC2), (3, MAC3)))
    nic1 = DhcpNic(mac=MAC1, ipv4="10.77.0.10", hostname="web1")
    nic2 = DhcpNic(mac=MAC2, ipv4="10.77.0.11", hostname="web2")
    dhcp = manager("h1")
    await dhcp.apply([web_scope(nic1)])

    lease = lab.udhcpc(vm1)
    assert lease is not None
    assert (lease.ip, lease.subnet, lease.router, lease.dns) == (
        "10.77.0.10",
        "255.255.255.0",
        "10.77.0.1",
        ("10.77.0.254",),
    )
    assert (lease.domain, lease.hostname, lease.serverid, lease.lease, lease.mtu) == (
        "web.lab.test",
        "web1",
        "10.77.0.254",
        600,
        1400,
    )
    assert lease.staticroutes == "10.20.0.0/16 10.77.0.2 0.0.0.0/0 10.77.0.1"
    lab.configure(vm1, lease)
    assert lab.nslookup(vm1, "web1.web.lab.test", "10.77.0.254") == ["10.77.0.10"]
    assert lab.nslookup(vm1, "app1.web.lab.test", "10.77.0.254") == ["10.77.0.30"]
    assert lab.nslookup(vm1, "nobody.web.lab.test", "10.77.0.254") == []
    # Only the domain is answered: there is no upstream server.
    assert lab.nslookup(vm1, "example.com", "10.77.0.254") == []

    (pid,) = dnsmasq_pids(lab, "h1")
    assert dhcp.status()["lab/web"].pid == pid
    await dhcp.apply([web_scope(nic1, nic2)])
    lease2 = lab.udhcpc(vm2)
    assert lease2 is not None and (lease2.ip, lease2.hostname) == ("10.77.0.11", "web2")
    assert lab.nslookup(vm1, "web2.web.lab.test", "10.77.0.254") == ["10.77.0.11"]
    assert dnsmasq_pids(lab, "h1") == [pid]
    status = dhcp.status()["lab/web"]
    assert (status.pid, status.starts, status.reloads) == (pid, 1, 1)

    # An unknown MAC gets no answer at all.
    assert lab.udhcpc(stranger, tries=2) is None

    # A NIC that left is no longer answered; its lease is released, so its name
    # leaves DNS and its address can go to another NIC at once.
    await dhcp.apply([web_scope(nic1, DhcpNic(mac=MAC3, ipv4="10.77.0.11", hostname="web3"))])
    assert lab.udhcpc(vm2, tries=2) is None
    assert lab.nslookup(vm1, "web2.web.lab.test", "10.77.0.254") == []
    lease3 = lab.udhcpc(stranger)
    assert lease3 is not None and (lease3.ip, lease3.hostname) == ("10.77.0.11", "web3")
    assert lab.nslookup(vm1, "web3.web.lab.test", "10.77.0.254") == ["10.77.0.11"]
    assert dnsmasq_pids(lab, "h1") == [pid]


async def test_removal_leaves_nothing(lab: Lab, manager: Managers) -> None:
    h1 = lab.host("h1")
    before = links_of(h1)
    dhcp = manager("h1")
    await dhcp.apply([web_scope(DhcpNic(mac=MAC1, ipv4="10.77.0.10"), uplink="up0")])
    netns = lab.dns_prefix("h1") + "lab+web"
    assert ns_of_manager(lab, "h1") == [netns] and host_veth(netns) in links_of(h1)
    (pid,) = dnsmasq_pids(lab, "h1")
    await dhcp.apply([])
    assert ns_of_manager(lab, "h1") == [] and links_of(h1) == before
    assert not running(pid)
    assert list(lab.state_dir("h1").iterdir()) == []
    tables = subprocess.run(
        ["ip", "netns", "exec", h1, "nft", "list", "tables"], capture_output=True, text=True, check=True
    )
    assert "zsd-dhcp" not in tables.stdout


async def test_dnsmasq_survives_a_zsd_restart(lab: Lab, manager: Managers) -> None:
    h1 = lab.host("h1")
    vm1, vm2 = lab.vm("vm1", host=h1, mac=MAC1), lab.vm("vm2", host=h1, mac=MAC2)
    nic1 = DhcpNic(mac=MAC1, ipv4="10.77.0.10", hostname="web1")
    nic2 = DhcpNic(mac=MAC2, ipv4="10.77.0.11", hostname="web2")
    first = manager("h1")
    await first.apply([web_scope(nic1, uplink="up0")])
    (pid,) = dnsmasq_pids(lab, "h1")
    await first.close()

    # A new zsd, and a NIC added while none ran: adopted, then a SIGHUP.
    second = manager("h1")
    await second.apply([web_scope(nic1, nic2, uplink="up0")])
    status = second.status()["lab/web"]
    assert (status.pid, status.adopted, status.starts) == (pid, True, 0)
    assert dnsmasq_pids(lab, "h1") == [pid]
    lease2 = lab.udhcpc(vm2)
    assert lease2 is not None and lease2.ip == "10.77.0.11"

    # A config change is a restart, and clients see the new config.
    await second.apply([web_scope(nic1, nic2, uplink="up0", domain="new.lab.test")])
    (new_pid,) = dnsmasq_pids(lab, "h1")
    assert new_pid != pid and not running(pid)
    lease1 = lab.udhcpc(vm1)
    assert lease1 is not None and lease1.domain == "new.lab.test"

    # A third zsd that serves nothing removes what the others made.
    await manager("h1").apply([])
    assert ns_of_manager(lab, "h1") == [] and dnsmasq_pids(lab, "h1") == []


async def test_a_stale_namespace_name_is_replaced(lab: Lab, manager: Managers) -> None:
    """A namespace name that no longer opens (its mount went away with the mount
    namespace of the zsd that made it, as under `ip netns exec`) counts as absent:
    the next zsd makes the namespace again, stops the stranded dnsmasq, serves."""
    h1 = lab.host("h1")
    vm1 = lab.vm("vm1", host=h1, mac=MAC1)
    scope = web_scope(DhcpNic(mac=MAC1, ipv4="10.77.0.10", hostname="web1"), uplink="up0")
    first = manager("h1")
    await first.apply([scope])
    (pid,) = dnsmasq_pids(lab, "h1")
    await first.close()
    name = lab.dns_prefix("h1") + "lab+web"
    subprocess.run(["umount", f"/run/netns/{name}"], check=True)  # dnsmasq keeps it alive
    assert Path(f"/run/netns/{name}").exists() and name in netfabric.names()

    second = manager("h1")
    await second.apply([scope])
    (new_pid,) = dnsmasq_pids(lab, "h1")
    assert new_pid != pid and not running(pid)
    lease = lab.udhcpc(vm1)
    assert lease is not None and lease.ip == "10.77.0.10"


async def test_dhcp_never_crosses_the_uplink(lab: Lab, manager: Managers) -> None:
    h1, h2 = lab.host("h1"), lab.host("h2")
    lab.link_hosts(h1, h2, port="up0")
    local = lab.vm("vm1", host=h1, mac=MAC1)
    roamer = lab.vm("vm2", host=h1, mac=MAC2)
    dhcp1, dhcp2 = manager("h1"), manager("h2")
    # One port group on both hosts, a service address each. h2 also lists vm1 (as
    # during a migration) and lists vm2, which runs on h1 where nobody lists it.
    scope1 = web_scope(DhcpNic(mac=MAC1, ipv4="10.77.0.10"), uplink="up0")
    scope2 = web_scope(
        DhcpNic(mac=MAC1, ipv4="10.77.0.50"),
        DhcpNic(mac=MAC2, ipv4="10.77.0.51"),
        uplink="up0",
        ipv4=replace(web_scope().ipv4, service_address="10.77.0.253"),
    )
    await dhcp1.apply([scope1])
    await dhcp2.apply([scope2])

    for _ in range(3):
        lease = lab.udhcpc(local)
        assert lease is not None and (lease.ip, lease.serverid) == ("10.77.0.10", "10.77.0.254")
    assert lab.udhcpc(roamer, tries=2) is None
    assert lab.nft_counters(h1, "zsd-dhcp-br0") > 0  # the guard did drop the broadcasts

    # Without the guards, h2 does answer across the uplink: the path is real.
    for host in (h1, h2):
        subprocess.run(
            ["ip", "netns", "exec", host, "nft", "delete", "table", "bridge", "zsd-dhcp-br0"], check=True
        )
    lease = lab.udhcpc(roamer)
    assert lease is not None and (lease.ip, lease.serverid) == ("10.77.0.51", "10.77.0.253")

    # The next round puts the guards back.
    await dhcp1.apply([scope1])
    await dhcp2.apply([scope2])
    assert lab.udhcpc(roamer, tries=2) is None


async def test_ipv6_router_advertisements_and_dhcpv6(lab: Lab, manager: Managers) -> None:
    h1 = lab.host("h1")
    vm1, stranger = lab.vm("vm1", host=h1, mac=MAC1), lab.vm("vm2", host=h1, mac=MAC3)
    nic = DhcpNic(mac=MAC1, ipv4="10.77.0.10", ipv6="fd77::10", hostname="web1")
    await manager("h1").apply([web_scope(nic, ipv6=Ipv6Subnet(cidr="fd77::/64"))])

    probe = lab.dhcp6(vm1)
    ra = probe["ra"]
    assert ra is not None and ra["managed"] and ra["router_lifetime"] == 0 and ra["mtu"] == 1400
    assert ra["prefixes"] == [{"prefix": "fd77::/64", "on_link": True, "autonomous": False}]
    lease = probe["lease"]
    assert lease is not None and lease["status"] == 0
    assert (lease["address"], lease["valid"]) == ("fd77::10", 600)
    assert lease["dns"] == ["fd77::ffff:ffff:ffff:ffff"] and lease["domains"] == ["web.lab.test"]

    assert lab.dhcp6(stranger, timeout=3)["lease"] is None

    lease4 = lab.udhcpc(vm1)
    assert lease4 is not None
    lab.configure(vm1, lease4)
    assert lab.nslookup(vm1, "web1.web.lab.test", "10.77.0.254") == ["10.77.0.10", "fd77::10"]


async def test_a_missing_bridge_is_reported_and_others_still_served(lab: Lab, manager: Managers) -> None:
    h1 = lab.host("h1")
    vm1 = lab.vm("vm1", host=h1, mac=MAC1)
    dhcp = manager("h1")
    elsewhere = DhcpScope(port_group="lab/db", bridge="br-missing", ipv4=Ipv4Subnet(cidr="10.78.0.0/24"))
    with pytest.raises(FailedPrecondition, match="no bridge br-missing") as caught:
        await dhcp.apply([web_scope(DhcpNic(mac=MAC1, ipv4="10.77.0.10")), elsewhere])
    assert caught.value.field == "scopes[1].bridge"
    lease = lab.udhcpc(vm1)
    assert lease is not None and lease.ip == "10.77.0.10"
    assert Path(lab.state_dir("h1") / "lab+web" / "hosts.dhcp").is_file()

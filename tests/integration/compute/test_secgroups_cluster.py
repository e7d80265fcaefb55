"""The seed's three tiers on a two-host dev cluster, with real TCP and ICMP between
network namespaces on different hosts, everything set up through zsctl.

Each NIC belongs to a VM that is defined on its host but not started; a namespace
stands in for the guest: a veth whose host end carries the VM's tap name (made from
the NIC's MAC, as libvirt would) on the port group's bridge in that host, and whose
other end has the NIC's MAC. So the hosts' zsd treat it as the VM's tap: their
nftables rulesets filter it, their VXLAN carries it to the other host (static
forwarding entries from the VM records), and their dnsmasq gives it its address
(a real busybox udhcpc in the namespace). An agent in each namespace answers TCP
on the tiers' ports and probes paths in parallel (tests/unit/network/secgroups/netlab).

    h1: web1, db1              h2: web2, app1, admin
    web: tcp 80, 443 from anywhere (and its members: web1 <-> web2)
    app: tcp 8080 from group web
    db:  tcp 3306 from group app
    ops: tcp 22 and ICMP from admin's address; on web, app and db; members rule off
    admin: a NIC in no group (ingress deny, egress allow: the defaults)
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.compute.clusterkit import PREFIX, PrivateLibvirtds, data, eventually, ok
from tests.unit.network.secgroups.netlab import Agent
from zsd.compute.designer import tap_name
from zsd.testing.devcluster import DevCluster, host_processes

pytestmark = pytest.mark.integration

PORTS = (22, 80, 443, 3306, 8080)
TIMEOUT = 1.0
# name -> (host, address, groups in order)
LAYOUT = {
    "web1": ("h1", "10.60.0.11", ("web", "ops")),
    "web2": ("h2", "10.60.0.12", ("web", "ops")),
    "app1": ("h2", "10.60.0.21", ("app", "ops")),
    "db1": ("h1", "10.60.0.31", ("db", "ops")),
    "admin": ("h2", "10.60.0.200", ()),
}
UDHCPC_SCRIPT = """#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface" ;;
esac
"""


@dataclass(frozen=True)
class Guest:
    name: str
    host: str
    ip: str
    mac: str
    netns: str


def sh(*argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout)


def ruleset(dc: DevCluster, host: str) -> str:
    return sh("ip", "netns", "exec", dc.host(host).netns, "nft", "list", "ruleset").stdout


def bridge_and_taps(dc: DevCluster, host: str) -> list[tuple[int, str, str]]:
    """(index, name, master) of the host's port group bridges and VM taps."""
    shown = json.loads(sh("ip", "-n", dc.host(host).netns, "-j", "link", "show").stdout)
    found = [(int(x["ifindex"]), str(x["ifname"]), str(x.get("master", ""))) for x in shown]
    return sorted(f for f in found if f[1].startswith(("zb", "zt")))


def plug(dc: DevCluster, guest: Guest, bridge: str) -> None:
    """The guest's namespace, its eth0 with the NIC's MAC, the host end named as the
    VM's tap on the port group's bridge of the guest's host."""
    tap, host_ns = tap_name(guest.mac), dc.host(guest.host).netns
    sh("ip", "netns", "add", guest.netns)
    sh("ip", "-n", guest.netns, "link", "add", "eth0", "type", "veth", "peer", "name", tap, "netns", host_ns)
    sh("ip", "-n", guest.netns, "link", "set", "eth0", "address", guest.mac, "mtu", "1450")
    sh("ip", "-n", guest.netns, "link", "set", "lo", "up")
    sh("ip", "-n", guest.netns, "link", "set", "eth0", "up")
    sh("ip", "-n", host_ns, "link", "set", tap, "master", bridge, "mtu", "1450", "up")


def lease(netns: str, script: Path) -> str:
    """The address the guest's host's dnsmasq gives it (set on eth0 by the script)."""
    ask = ["busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "10", "-T", "1", "-s", str(script)]
    sh("ip", "netns", "exec", netns, *ask, timeout=60)
    shown = json.loads(sh("ip", "-n", netns, "-j", "-4", "addr", "show", "eth0").stdout)
    return str(shown[0]["addr_info"][0]["local"]) if shown and shown[0]["addr_info"] else ""


@pytest.fixture
def guests(cluster: tuple[DevCluster, PrivateLibvirtds], tmp_path: Path) -> Iterator[dict[str, Agent]]:
    """The network, the groups, and a running agent per guest namespace."""
    dc, _ = cluster
    ok(dc, "h1", "switch", "create", "lab", "vxlan", "--uplink", "eth0")
    pg = data(
        dc, "h1", "portgroup", "create", "lab/tiers", "--vni", "60", "--subnet", "10.60.0.0/24,gw=10.60.0.1",
        "--dhcp", "--domain", "tiers.lab",
    )  # fmt: skip
    define_groups(dc, tmp_path)
    made: list[Guest] = []
    agents: dict[str, Agent] = {}
    script = tmp_path / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    try:
        for name, (host, ip, groups) in LAYOUT.items():
            nic = data(dc, "h2", "nic", "create", f"{name}-0", "lab/tiers", "--ip", ip)
            for group in groups:
                ok(dc, "h1", "secgroup", "attach", f"{name}-0", group)
            vm = data(
                dc, "h1", "vm", "create", name, "--memory", "64M", "--graphics", "none", "--no-start",
                "--nic", f"nic={name}-0", "--host", host,
            )  # fmt: skip
            assert vm["host"] == f"hosts/{host}"
            guest = Guest(name=name, host=host, ip=ip, mac=nic["mac"], netns=f"{PREFIX}-g-{name}")
            made.append(guest)
            plug(dc, guest, pg["bridge"])
        for guest in made:
            eventually(lambda g=guest: tap_name(g.mac) in ruleset(dc, g.host))
            # From its own host's DHCP service: the only one that answers it.
            assert lease(guest.netns, script) == guest.ip
            agents[guest.name] = Agent(guest.netns)
            agents[guest.name].ask(op="listen", ports=list(PORTS))
        yield agents
    finally:
        for agent in agents.values():
            agent.stop()
        for guest in made:
            subprocess.run(["ip", "netns", "delete", guest.netns], check=False, capture_output=True)


def define_groups(dc: DevCluster, work: Path) -> None:
    admin = LAYOUT["admin"][1]
    for group in ("web", "app", "db"):
        ok(dc, "h1", "secgroup", "create", group)
    ok(dc, "h1", "secgroup", "create", "ops", "--no-members-rule", "--description", "operations")
    ingress = ("--direction", "ingress", "--protocol")
    ok(dc, "h2", "secgroup", "rule", "add", "web", *ingress, "tcp", "--ports", "80")
    ok(dc, "h2", "secgroup", "rule", "add", "web", *ingress, "tcp", "--ports", "443")
    ok(
        dc,
        "h2",
        "secgroup",
        "rule",
        "add",
        "app",
        *ingress,
        "tcp",
        "--ports",
        "8080",
        "--remote-group",
        "web",
    )
    ok(dc, "h2", "secgroup", "rule", "add", "db", *ingress, "tcp", "--ports", "3306", "--remote-group", "app")
    # ops is written as JSON and imported, as an operator moving rules between clusters would.
    document = {
        "format": "zsd.secgroup-rules/v1",
        "rules": [
            {"direction": "ingress", "protocol": "tcp", "port_range": {"first": 22, "last": 22},
             "remote_cidr": f"{admin}/32"},
            {"direction": "ingress", "protocol": "icmp", "remote_cidr": f"{admin}/32"},
        ],
    }  # fmt: skip
    path = work / "ops.json"
    path.write_text(json.dumps(document))
    ok(dc, "h2", "secgroup", "import", "ops", str(path))


def reachable(agents: dict[str, Agent], paths: list[tuple[str, str, int]]) -> set[tuple[str, str, int]]:
    """The (source, destination, port) paths where a TCP connection got its answer."""
    ok_paths: set[tuple[str, str, int]] = set()
    for source in sorted({p[0] for p in paths}):
        mine = [p for p in paths if p[0] == source]
        targets = [[LAYOUT[d][1], port, None] for _, d, port in mine]
        results = agents[source].ask(op="probe", targets=targets, timeout=TIMEOUT)
        ok_paths |= {p for p, good in zip(mine, results, strict=True) if good}
    return ok_paths


def pings(agents: dict[str, Agent], pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    answered: set[tuple[str, str]] = set()
    for source in sorted({s for s, _ in pairs}):
        mine = [p for p in pairs if p[0] == source]
        results = agents[source].ask(op="ping", hosts=[LAYOUT[d][1] for _, d in mine], timeout=TIMEOUT)
        answered |= {p for p, good in zip(mine, results, strict=True) if good}
    return answered


def test_three_tiers_across_hosts(
    cluster: tuple[DevCluster, PrivateLibvirtds], guests: dict[str, Agent], tmp_path: Path
) -> None:
    dc, _ = cluster
    names = list(LAYOUT)
    paths = [(s, d, p) for s in names for d in names for p in PORTS if s != d]
    allowed = {
        *((s, w, p) for s in names for w in ("web1", "web2") for p in (80, 443) if s != w),
        ("web1", "web2", 22), ("web2", "web1", 22),  # web's members rule: anything between them
        ("web1", "web2", 3306), ("web2", "web1", 3306),
        ("web1", "web2", 8080), ("web2", "web1", 8080),
        ("web1", "app1", 8080), ("web2", "app1", 8080),  # web1 from h1, web2 from h2
        ("app1", "db1", 3306),  # h2 -> h1
        *(("admin", d, 22) for d in ("web1", "web2", "app1", "db1")),
    }  # fmt: skip
    assert reachable(guests, paths) == allowed

    icmp = [(s, d) for s in names for d in names if s != d]
    assert pings(guests, icmp) == {
        *(("admin", d) for d in ("web1", "web2", "app1", "db1")),
        ("web1", "web2"), ("web2", "web1"),
    }  # fmt: skip

    # DNS is distributed too: each host's dnsmasq knows every NIC of the port group by
    # its VM's name, also those on the other host (the service's address is the
    # subnet's last usable one, the same on every host).
    for source, name in (("web1", "app1"), ("app1", "db1"), ("admin", "web1")):
        asked = sh(
            "ip",
            "netns",
            "exec",
            f"{PREFIX}-g-{source}",
            "busybox",
            "nslookup",
            f"{name}.tiers.lab",
            "10.60.0.254",
        )
        assert LAYOUT[name][1] in asked.stdout, asked.stdout

    # Remote-group rules follow membership cluster-wide: web1 (on h1) leaves web, and
    # app1's host (h2) no longer lets it in, while web2 still gets there.
    ok(dc, "h2", "secgroup", "detach", "web1-0", "web")
    eventually(lambda: reachable(guests, [("web1", "app1", 8080)]) == set(), timeout=30)
    assert reachable(guests, [("web2", "app1", 8080), ("web1", "web2", 80), ("web2", "web1", 80)]) == {
        ("web2", "app1", 8080), ("web1", "web2", 80),
    }  # fmt: skip

    # A zsd restart on h1 takes nothing from its guests: the links and the ruleset
    # stay as they are until its state copy has caught up (it starts empty), then
    # converge to what they already are; DHCP keeps answering. (On a real host the
    # running dnsmasq is adopted; here zsd runs under `ip netns exec`, whose private
    # mount namespace takes the DHCP namespace's name with it, so the new zsd makes
    # the namespace again and replaces the dnsmasq stranded in the old one.)
    before = bridge_and_taps(dc, "h1")
    dc.restart_zsd("h1")
    assert reachable(guests, [("app1", "db1", 3306), ("web2", "db1", 3306)]) == {("app1", "db1", 3306)}
    log = dc.host("h1").log_path
    # Whether h1 leads now or follows, its DHCP service is taken on (or replaced) once.
    eventually(lambda: "dnsmasq pid" in log.read_text().rsplit("starting zsd", 1)[-1])
    eventually(lambda: len(host_processes([dc.host("h1").dhcp_dir])) == 1)
    assert lease(f"{PREFIX}-g-db1", tmp_path / "udhcpc.sh") == LAYOUT["db1"][1]
    assert reachable(guests, [("app1", "db1", 3306), ("web1", "web2", 80)]) == {
        ("app1", "db1", 3306), ("web1", "web2", 80),
    }  # fmt: skip
    assert bridge_and_taps(dc, "h1") == before  # the same links (indexes), taps on the bridge
    # The hosts' state feeds held all along (peers ping every 2 s; the server allows it).
    for host in ("h1", "h2"):
        assert "too_many_pings" not in dc.host(host).log_path.read_text()

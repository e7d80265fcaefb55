"""Distributed switches on a real two-host dev cluster: a VXLAN switch and its port
groups created through zsctl become bridges and VXLAN devices in each host's kernel
(namespace), and real packets cross between "VMs" (namespaces on a veth into the
port group's bridge, as libvirt attaches a tap) on different hosts — within a port
group only. Bad requests are refused naming the field; what is in use is not deleted.

VLAN switches are not exercised here: this machine's kernel has neither 802.1Q
sub-interfaces nor VLAN filtering on bridges (SANDBOX.md); their plan is unit-tested.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.integration.zsdproc import zsctl
from zsd.testing.devcluster import DevCluster

pytestmark = pytest.mark.integration

PREFIX = f"zsdt-net{os.getpid() % 10000}"
SUBNET2 = ("--subnet", "10.9.1.0/24")


def ip(*args: str, netns: str = "", check: bool = True) -> str:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {done.stderr}")
    return done.stdout


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.3)


@pytest.fixture
def dc(tmp_path: Path) -> Iterator[DevCluster]:
    cluster = DevCluster(state_dir=tmp_path / "dc", prefix=PREFIX)
    endpoints: list[str] = []
    try:
        cluster.up(2)
        cluster.endpoints = endpoints  # type: ignore[attr-defined]
        yield cluster
    finally:
        for ns in endpoints:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
        cluster.down()


def ok(dc: DevCluster, *args: str, host: str = "h1") -> str:
    done = zsctl(dc.host(host).endpoint_unix, *args, timeout=60)
    assert done.returncode == 0, f"zsctl {' '.join(args)}: {done.stderr}"
    return done.stdout


def data(dc: DevCluster, *args: str, host: str = "h1") -> Any:
    return json.loads(ok(dc, "-o", "json", *args, host=host))


def refused(dc: DevCluster, *args: str) -> str:
    done = zsctl(dc.host("h2").endpoint_unix, *args, timeout=60)
    assert done.returncode != 0, f"zsctl {' '.join(args)} should have failed: {done.stdout}"
    return done.stderr


def links(dc: DevCluster, host: str) -> dict[str, dict[str, Any]]:
    raw = json.loads(ip("-d", "-j", "link", "show", netns=dc.host(host).netns))
    return {str(link["ifname"]): link for link in raw}


def flood(dc: DevCluster, host: str, dev: str) -> set[str]:
    raw = json.loads(
        subprocess.run(
            ["bridge", "-n", dc.host(host).netns, "-j", "fdb", "show", "dev", dev],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    return {str(e["dst"]) for e in raw if e.get("mac") == "00:00:00:00:00:00" and "dst" in e}


def realised(dc: DevCluster, host: str, *, bridge: str, vxlan: str, vni: int, peer: str) -> bool:
    have = links(dc, host)
    if bridge not in have or vxlan not in have:
        return False
    info = have[vxlan].get("linkinfo", {})
    return (
        info.get("info_kind") == "vxlan"
        and info.get("info_data", {}).get("id") == vni
        and have[vxlan].get("master") == bridge
        and flood(dc, host, vxlan) == {peer}
    )


def vm(dc: DevCluster, host: str, name: str, bridge: str, address: str) -> str:
    """A "VM": namespace {PREFIX}-{name} whose eth0 is a veth into ``bridge`` on ``host``."""
    ns = f"{PREFIX}-{name}"
    dc.endpoints.append(ns)  # type: ignore[attr-defined]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    port = f"t-{name}"
    ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns, netns=dc.host(host).netns)
    ip("link", "set", port, "master", bridge, "up", netns=dc.host(host).netns)
    ip("addr", "add", f"{address}/24", "dev", "eth0", netns=ns)
    ip("link", "set", "eth0", "up", netns=ns)
    ip("link", "set", "lo", "up", netns=ns)
    return ns


def pings(ns: str, address: str) -> bool:
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "busybox", "ping", "-c", "2", "-W", "2", address],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0


def test_vxlan_switch_carries_port_groups_between_hosts(dc: DevCluster) -> None:
    h1, h2 = dc.host("h1"), dc.host("h2")
    switch = data(dc, "switch", "create", "lab", "vxlan", "--uplink", "eth0", "--description", "lab fabric")
    assert (switch["name"], switch["kind"], switch["uplink"]) == ("switches/lab", "VXLAN", "eth0")
    web = data(dc, "portgroup", "create", "lab/web", "--vni", "100", "--subnet", "10.10.0.0/24,gw=10.10.0.1")
    db = data(dc, "portgroup", "create", "lab/db", "--vni", "200", "--subnet", "10.10.0.0/24", host="h2")
    assert web["bridge"] != db["bridge"] and len(web["bridge"]) <= 15
    assert [g["name"] for g in data(dc, "portgroup", "list", "lab", host="h2")] == [
        "switches/lab/portGroups/db",
        "switches/lab/portGroups/web",
    ]

    # Each host holds the port groups' bridges, with a VXLAN port flooding to the other host.
    vx_web = "zx" + web["bridge"][2:]
    for host, peer in (("h1", h2.address), ("h2", h1.address)):
        eventually(partial(realised, dc, host, bridge=web["bridge"], vxlan=vx_web, vni=100, peer=peer))

    # Real packets between hosts, inside one port group only.
    a = vm(dc, "h1", "a", web["bridge"], "10.10.0.11")
    vm(dc, "h2", "b", web["bridge"], "10.10.0.12")
    vm(dc, "h2", "c", db["bridge"], "10.10.0.13")
    assert pings(a, "10.10.0.12")
    assert not pings(a, "10.10.0.13"), "port groups must not leak into each other"

    # Changed behind zsd's back: the next round (any change, or the resync) restores it.
    ip("link", "del", vx_web, netns=h1.netns)
    data(dc, "portgroup", "create", "lab/tmp", "--vni", "300")
    eventually(partial(realised, dc, "h1", bridge=web["bridge"], vxlan=vx_web, vni=100, peer=h2.address))
    assert pings(a, "10.10.0.12")

    # Bad input names the field; nothing is created.
    for args, expected in (
        (("portgroup", "create", "lab/x", "--vlan", "7"), "field: port_group.vlan_id"),
        (("portgroup", "create", "lab/x", "--vni", "16777216"), "port_group.vni"),
        (("portgroup", "create", "lab/x", "--vni", "100"), "SEGMENT_TAKEN"),
        (("portgroup", "create", "lab/x", "--vni", "9", "--subnet", "10.9.0.0/24,gw=10.8.0.1"), "gateway"),
        (
            (
                "portgroup",
                "create",
                "lab/x",
                "--vni",
                "9",
                "--subnet",
                "10.9.0.0/16",
                "--subnet",
                "10.9.1.0/24",
            ),
            "port_group.subnets[1].cidr",
        ),
        (("portgroup", "create", "nope/x", "--vni", "9"), "SWITCH_NOT_FOUND"),
        (("switch", "create", "bad", "vlan", "--uplink", "eth0", "--mtu", "100"), "switch.mtu"),
        (("switch", "create", "bad", "vxlan", "--uplink", "no/such"), "switch.uplink"),
    ):
        assert expected in refused(dc, *args), args
    assert "switches/lab/portGroups/x" not in ok(dc, "portgroup", "list")

    # In use: the switch keeps its port groups; deleting a port group removes its bridges.
    stderr = refused(dc, "switch", "delete", "lab")
    assert "SWITCH_IN_USE" in stderr and "switches/lab/portGroups/db" in stderr
    ok(dc, "portgroup", "delete", "lab/db")
    ok(dc, "portgroup", "delete", "lab/tmp", host="h2")
    for host in ("h1", "h2"):
        eventually(partial(lambda h: db["bridge"] not in links(dc, h), host))
    assert pings(a, "10.10.0.12"), "the other port group is untouched"
    ok(dc, "portgroup", "delete", "lab/web")
    ok(dc, "switch", "delete", "lab")
    for host in ("h1", "h2"):
        eventually(partial(lambda h: not any(n.startswith(("zb", "zx")) for n in links(dc, h)), host))
    assert data(dc, "switch", "list") == []

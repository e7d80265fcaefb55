"""VMs on the network, on a two-host dev cluster with private libvirtds: a NIC created
on a VXLAN port group gives the VM its MAC and its tap the port group's bridge on
whichever host the VM runs; placement keeps the VM where the switch is; a NIC serves
one VM; what is in use is not deleted; the NIC follows its VM through a migration."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from tests.integration.compute.clusterkit import (
    MARK,
    PrivateLibvirtds,
    booted,
    data,
    eventually,
    ok,
    shared_pool_with_guest,
)
from tests.integration.zsdproc import zsctl
from zsd.testing.devcluster import DevCluster, host_processes

pytestmark = pytest.mark.integration


def refused(dc: DevCluster, *args: str) -> str:
    done = zsctl(dc.host("h2").endpoint_unix, *args, timeout=120)
    assert done.returncode != 0, f"zsctl {' '.join(args)} should have failed: {done.stdout}"
    return done.stderr


def interface(hook: PrivateLibvirtds, host: str, vm: str) -> tuple[str, str]:
    """(MAC, bridge) of the VM's first interface as the host's libvirt runs it."""
    conn = libvirt.open(hook.by_host[host].uri)
    try:
        iface = ET.fromstring(conn.lookupByName(vm).XMLDesc(0)).find("./devices/interface")
        assert iface is not None
        mac, source = iface.find("mac"), iface.find("source")
        assert mac is not None and source is not None
        return mac.get("address", ""), source.get("bridge", "")
    finally:
        conn.close()


def console(dc: DevCluster, host: str, vm: str) -> str:
    """What the VM's guest printed on its console so far (through ``host``)."""
    done = zsctl(dc.host(host).endpoint_unix, "vm", "console", vm, timeout=60)
    return done.stdout if done.returncode == 0 else ""


def ruleset(dc: DevCluster, host: str) -> str:
    """The host's nftables ruleset as text."""
    argv = ["ip", "netns", "exec", dc.host(host).netns, "nft", "list", "ruleset"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def test_a_vm_plugs_into_its_port_group_wherever_it_runs(
    cluster: tuple[DevCluster, PrivateLibvirtds], guest_image: Path, tmp_path: Path
) -> None:
    dc, hook = cluster
    shared_pool_with_guest(dc, tmp_path / "share", guest_image)
    ok(dc, "h1", "switch", "create", "lab", "vxlan", "--uplink", "eth0")
    pg = data(
        dc, "h1", "portgroup", "create", "lab/web", "--vni", "42", "--subnet", "10.42.0.0/24,gw=10.42.0.1",
        "--dhcp", "--domain", "web.lab",
    )  # fmt: skip
    nic = data(dc, "h2", "nic", "create", "web1-0", "lab/web")
    assert nic["ip_addresses"] == ["10.42.0.2"] and nic["mac"].startswith("02:") and nic.get("vm", "") == ""
    pinned = data(
        dc, "h1", "nic", "create", "pinned-0", "lab/web", "--ip", "10.42.0.50", "--mac", "02:00:5e:00:00:50"
    )
    assert (pinned["ip_addresses"], pinned["mac"]) == (["10.42.0.50"], "02:00:5e:00:00:50")
    assert "ADDRESS_TAKEN" in refused(dc, "nic", "create", "dup", "lab/web", "--ip", "10.42.0.50")
    assert "field: nic.port_group" in refused(dc, "nic", "create", "x", "lab/nope")

    # The port group's DHCP service runs on every host before any VM asks it.
    for host in ("h1", "h2"):
        where = dc.host(host).dhcp_dir
        eventually(lambda where=where: bool(host_processes([where])), timeout=30)
    vm = data(
        dc, "h2", "vm", "create", "web1", "--image", "shared/guest", "--memory", "96M", "--graphics", "none",
        "--nic", "nic=web1-0", "--host", "h1",
    )  # fmt: skip
    assert vm["host"] == "hosts/h1"
    assert vm["nics"][0]["nic"] == "nics/web1-0" and vm["nics"][0]["mac"] == nic["mac"]
    assert interface(hook, "h1", "web1") == (nic["mac"], pg["bridge"])
    eventually(lambda: booted(dc, "h1", "web1"), timeout=120)
    # h1's DHCP service (dnsmasq in its own namespace on the port group's bridge)
    # answers the NIC with exactly its address and the VM's name; the guest takes it.
    hosts = dc.host("h1").dhcp_dir / "lab+web" / "hosts.dhcp"
    entry = f"{nic['mac']},{nic['ip_addresses'][0]},web1"
    eventually(lambda: hosts.exists() and entry in hosts.read_text())
    eventually(lambda: f"{MARK}lease eth0 10.42.0.2" in console(dc, "h1", "web1"), timeout=90)
    shown = data(dc, "h2", "nic", "show", "web1-0")
    assert (shown["vm"], shown["host"], shown["bridge"]) == ("vms/web1", "hosts/h1", pg["bridge"])

    # Security groups, enforced by h1's nftables on the guest's tap (named from its
    # MAC): the NIC's port is in h1's ruleset from the start (ingress default deny); a
    # group's rule lands in it when the group is attached, and leaves when detached.
    tap = "zt" + nic["mac"].replace(":", "")[-10:]
    eventually(lambda: tap in ruleset(dc, "h1"))
    ok(dc, "h2", "secgroup", "create", "pingable", "--description", "ICMP from anywhere")
    group = data(
        dc, "h1", "secgroup", "rule", "add", "pingable", "--direction", "ingress", "--protocol", "icmp"
    )
    assert [(r.get("priority", 0), r["protocol"], r["action"]) for r in group["rules"]] == [
        (0, "icmp", "allow")
    ]
    bad_rule = ("secgroup", "rule", "add", "pingable", "--direction", "ingress", "--protocol", "icmp")
    assert "field: rule.port_range" in refused(dc, *bad_rule, "--ports", "80")
    attached = data(dc, "h2", "secgroup", "attach", "web1-0", "pingable")
    assert attached["security_groups"] == ["securityGroups/pingable"]
    eventually(lambda: "pingable" in ruleset(dc, "h1"))
    # The rule is counted where the NIC is (its VM's host), per direction; any host
    # answers with the sum over the hosts that count (h2 asks h1), or one host's own.
    summed = data(dc, "h2", "secgroup", "hits", "pingable")
    assert (summed["hosts"], summed["missing_hosts"]) == (["hosts/h1"], []), summed
    hits = summed["hits"]
    assert [h.get("direction") for h in hits if h.get("priority", 0) == 0] == ["ingress"], hits
    assert data(dc, "h1", "secgroup", "hits", "pingable", "--host", "h2")["hits"] == []
    assert "SECURITY_GROUP_IN_USE" in refused(dc, "secgroup", "delete", "pingable")
    ok(dc, "h1", "secgroup", "detach", "web1-0", "pingable")
    eventually(lambda: "pingable" not in ruleset(dc, "h1"))
    ok(dc, "h1", "secgroup", "delete", "pingable")

    # One VM per NIC; nothing in use is deleted.
    stderr = refused(dc, "vm", "create", "thief", "--nic", "nic=web1-0", "--no-start")
    assert "NIC_IN_USE" in stderr and "vms/web1" in stderr
    assert "NIC_NOT_FOUND" in refused(dc, "vm", "create", "ghost", "--nic", "nic=nope", "--no-start")
    assert "NIC_IN_USE" in refused(dc, "nic", "delete", "web1-0")
    stderr = refused(dc, "portgroup", "delete", "lab/web")
    assert "PORT_GROUP_IN_USE" in stderr and "nics/web1-0" in stderr and "nics/pinned-0" in stderr

    # The NIC moves with its VM: same MAC, the same port group's bridge on h2.
    ok(dc, "h2", "vm", "migrate", "web1", "--to", "h2")
    assert interface(hook, "h2", "web1") == (nic["mac"], pg["bridge"])
    eventually(lambda: data(dc, "h1", "nic", "show", "web1-0")["host"] == "hosts/h2")

    # Gone with its VM's record: the NIC is free again, and then deletable.
    ok(dc, "h1", "vm", "stop", "web1", "--force")
    ok(dc, "h1", "vm", "delete", "web1", "--volumes")
    eventually(lambda: data(dc, "h1", "nic", "show", "web1-0").get("vm", "") == "")
    ok(dc, "h1", "nic", "delete", "web1-0")
    ok(dc, "h2", "nic", "delete", "pinned-0")
    ok(dc, "h1", "portgroup", "delete", "lab/web")
    ok(dc, "h1", "switch", "delete", "lab")

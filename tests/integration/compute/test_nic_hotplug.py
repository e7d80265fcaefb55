"""Network NICs hot-plugged into a running VM and out again, on a two-host dev cluster
with private libvirtds: the leader claims the NIC for the VM, the VM's host plugs it
into the port group's bridge, its DHCP answers the new NIC and the guest takes the
lease; refusals name ``nic.nic``; detach unplugs it and frees the NIC (not deleted),
which a stopped VM on the other host then takes in its definition."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from tests.integration.compute.clusterkit import (
    Console,
    PrivateLibvirtds,
    data,
    eventually,
    ok,
    shared_pool_with_guest,
)
from tests.integration.compute.test_vm_network import refused
from zsd.testing.devcluster import DevCluster, host_processes

pytestmark = pytest.mark.integration


def interfaces(
    hook: PrivateLibvirtds, host: str, vm: str, *, inactive: bool = False
) -> list[tuple[str, str]]:
    """(MAC, bridge) of the VM's interfaces as the host's libvirt has them (running, or
    its definition)."""
    conn = libvirt.open(hook.by_host[host].uri)
    try:
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        root = ET.fromstring(conn.lookupByName(vm).XMLDesc(flags))
        out = []
        for iface in root.findall("./devices/interface"):
            mac, source = iface.find("mac"), iface.find("source")
            assert mac is not None and source is not None
            out.append((mac.get("address", ""), source.get("bridge", "")))
        return out
    finally:
        conn.close()


def user(dc: DevCluster, host: str, nic: str) -> tuple[str, str]:
    """(VM, host) the NIC is given to, as ``host`` answers; empty when it is free."""
    shown = data(dc, host, "nic", "show", nic)
    return shown.get("vm", ""), shown.get("host", "")


def test_a_network_nic_is_hot_plugged_into_a_running_vm_and_freed_again(
    cluster: tuple[DevCluster, PrivateLibvirtds], guest_image: Path, tmp_path: Path
) -> None:
    dc, hook = cluster
    shared_pool_with_guest(dc, tmp_path / "share", guest_image)
    ok(dc, "h1", "switch", "create", "lab", "vxlan", "--uplink", "eth0")
    pg = data(
        dc, "h1", "portgroup", "create", "lab/web", "--vni", "43", "--subnet", "10.43.0.0/24,gw=10.43.0.1",
        "--dhcp",
    )  # fmt: skip
    nic = data(dc, "h2", "nic", "create", "web2-0", "lab/web")
    mac, address = nic["mac"], nic["ip_addresses"][0]
    # A switch on h2 only, for the refusal of a port group the VM's host lacks.
    ok(dc, "h1", "switch", "create", "edge", "vxlan", "--uplink", "eth0", "--hosts", "h2")
    ok(dc, "h1", "portgroup", "create", "edge/dmz", "--vni", "44")
    ok(dc, "h1", "nic", "create", "dmz-0", "edge/dmz")
    for host in ("h1", "h2"):
        where = dc.host(host).dhcp_dir
        eventually(lambda where=where: bool(host_processes([where])), timeout=30)

    # Created without any network NIC, running on h1.
    vm = data(
        dc, "h2", "vm", "create", "web2", "--image", "shared/guest", "--memory", "96M", "--graphics", "none",
        "--host", "h1",
    )  # fmt: skip
    assert vm["host"] == "hosts/h1" and vm.get("nics", []) == []
    assert interfaces(hook, "h1", "web2") == []
    console = Console(dc, "h2", "web2")
    console.expect("booted")

    # Hot-plug, asked of h2: the leader claims the NIC, h1 plugs it on the port group's
    # bridge, h1's DHCP answers it, and the guest sees a new eth0 and takes its lease.
    attached = data(dc, "h2", "vm", "attach-nic", "web2", "--nic", "nic=web2-0")
    assert [(n["nic"], n["mac"]) for n in attached["nics"]] == [("nics/web2-0", mac)]
    assert interfaces(hook, "h1", "web2") == [(mac, pg["bridge"])]
    assert interfaces(hook, "h1", "web2", inactive=True) == [(mac, pg["bridge"])]
    assert user(dc, "h1", "web2-0") == ("vms/web2", "hosts/h1")
    hosts = dc.host("h1").dhcp_dir / "lab+web" / "hosts.dhcp"
    eventually(lambda: hosts.exists() and f"{mac},{address},web2" in hosts.read_text())
    console.expect("nic+ eth0")
    console.expect(f"lease eth0 {address}", timeout=90)

    # Refusals, each naming the field and what is allowed; nothing changes.
    ok(dc, "h1", "vm", "create", "web3", "--image", "shared/guest", "--memory", "96M", "--graphics", "none",
       "--host", "h2", "--no-start")  # fmt: skip
    stderr = refused(dc, "vm", "attach-nic", "web3", "--nic", "nic=web2-0")
    assert "NIC_IN_USE" in stderr and "vms/web2" in stderr and "nic.nic" in stderr
    stderr = refused(dc, "vm", "attach-nic", "web2", "--nic", "nic=nope")
    assert "NIC_NOT_FOUND" in stderr and "nic.nic" in stderr
    stderr = refused(dc, "vm", "attach-nic", "web2", "--nic", "nic=dmz-0")
    assert "PORT_GROUP_NOT_ON_HOST" in stderr and "h1" in stderr
    assert user(dc, "h2", "dmz-0") == ("", "")
    assert "NIC_IN_USE" in refused(dc, "nic", "delete", "web2-0")
    assert interfaces(hook, "h1", "web2") == [(mac, pg["bridge"])]

    # Unplugged (by the NIC's name, through h2): the guest sees it go, the NIC is free
    # (still there), and h1's DHCP no longer answers its MAC.
    detached = data(dc, "h2", "vm", "detach-nic", "web2", "--nic", "web2-0")
    assert detached.get("nics", []) == []
    console.expect("nic- eth0")
    assert interfaces(hook, "h1", "web2") == [] and interfaces(hook, "h1", "web2", inactive=True) == []
    assert user(dc, "h1", "web2-0") == ("", "")
    assert data(dc, "h1", "nic", "show", "web2-0")["mac"] == mac
    eventually(lambda: mac not in hosts.read_text())

    # A plain bridge NIC hot-plugs too, and its detach (asked of h2, through the leader,
    # which holds no claim for it) only unplugs.
    plain = "02:00:00:00:43:99"
    ok(dc, "h2", "vm", "attach-nic", "web2", f"bridge={pg['bridge']},mac={plain}")
    console.expect("nic+ eth")
    ok(dc, "h2", "vm", "detach-nic", "web2", plain)
    console.expect("nic- eth")
    assert interfaces(hook, "h1", "web2") == []

    # Free again: a stopped VM on h2 takes it in its definition, gives it back (by MAC),
    # and then it can be deleted.
    stopped = data(dc, "h1", "vm", "attach-nic", "web3", "--nic", "nic=nics/web2-0")
    assert [n["mac"] for n in stopped["nics"]] == [mac]
    assert interfaces(hook, "h2", "web3", inactive=True) == [(mac, pg["bridge"])]
    assert user(dc, "h2", "web2-0") == ("vms/web3", "hosts/h2")
    ok(dc, "h1", "vm", "detach-nic", "web3", mac.upper())
    assert interfaces(hook, "h2", "web3", inactive=True) == []
    eventually(lambda: user(dc, "h2", "web2-0") == ("", ""))
    ok(dc, "h2", "nic", "delete", "web2-0")

    ok(dc, "h1", "vm", "stop", "web2", "--force")
    for name in ("web2", "web3"):
        ok(dc, "h1", "vm", "delete", name, "--volumes")
    ok(dc, "h1", "nic", "delete", "dmz-0")
    for group in ("lab/web", "edge/dmz"):
        ok(dc, "h1", "portgroup", "delete", group)
    for switch in ("lab", "edge"):
        ok(dc, "h1", "switch", "delete", switch)

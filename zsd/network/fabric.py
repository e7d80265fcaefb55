"""What one host's kernel must hold for the cluster's switches: a pure function from
the cluster state to links and forwarding entries (``plan``), applied by
``zsd.network.links``.

Per port group on a switch that spans the host:
- a Linux bridge (``zb…``), the port group itself: libvirt attaches VM taps to it;
- VLAN switch: the uplink's 802.1Q sub-interface (``zv…``, the port group's VLAN id)
  as a bridge port, so the VMs' untagged frames leave tagged;
- VXLAN switch: a VXLAN device (``zx…``, the port group's VNI, UDP 4789, no learning)
  as a bridge port, its local address the host's cluster address, leaving through
  the uplink. Broadcast and unknown unicast go to every other host carrying the switch
  (head-end replication: one all-zero forwarding entry per peer, from membership).

Link names derive from the port group's name, so they are equal on every host and
need no state; zsd owns every link whose name starts with ``zb``, ``zv`` or ``zx``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from zsd.compute.designer import tap_name
from zsd.network.model import PortGroup, Switch

OWNED_PREFIXES = ("zb", "zv", "zx")
VXLAN_PORT = 4789
FLOOD_MAC = "00:00:00:00:00:00"


@dataclass(frozen=True, kw_only=True)
class LinkSpec:
    name: str
    kind: str
    """"bridge", "vlan" or "vxlan"."""
    master: str = ""
    """The bridge this link is a port of."""
    parent: str = ""
    """vlan: the uplink it tags onto; vxlan: the underlay interface."""
    segment: int = 0
    """vlan: the VLAN id; vxlan: the VNI."""
    local: str = ""
    """vxlan: the tunnel's local address."""
    mtu: int = 0
    """0: the kernel's default."""


@dataclass(frozen=True, kw_only=True)
class FdbEntry:
    link: str
    """The VXLAN device."""
    mac: str
    dst: str
    """The peer host's tunnel address."""


@dataclass(frozen=True, kw_only=True)
class TapPort:
    """A VM tap that belongs on a port group's bridge on this host. libvirt plugs it
    when the VM starts; zsd puts it back if it comes off (a bridge replaced or
    removed behind zsd's back would otherwise cut the VM off for good)."""

    name: str
    bridge: str


@dataclass(frozen=True, kw_only=True)
class HostFabric:
    links: tuple[LinkSpec, ...] = ()
    fdb: tuple[FdbEntry, ...] = ()
    taps: tuple[TapPort, ...] = ()

    def bridges(self) -> tuple[str, ...]:
        return tuple(link.name for link in self.links if link.kind == "bridge")


def plan(
    *,
    host: str,
    address: str,
    switches: Sequence[Switch],
    port_groups: Sequence[PortGroup],
    members: Mapping[str, str],
    nic_locations: Sequence[tuple[str, str, str]] = (),
) -> HostFabric:
    """This host's links for the cluster's switches. ``members``: every member host's
    name -> its cluster address (the VXLAN underlay address). ``nic_locations``:
    (port group key, MAC, host) of every NIC whose VM runs somewhere: on VXLAN port
    groups, NICs on other hosts get a static forwarding entry towards their host (so
    unicast to them is never flooded, and follows a migration with the VM record);
    those on this host name the taps that belong on the port groups' bridges."""
    by_name = {s.name: s for s in switches}
    links: list[LinkSpec] = []
    fdb: list[FdbEntry] = []
    taps: list[TapPort] = []
    for pg in sorted(port_groups, key=lambda g: g.key):
        switch = by_name.get(pg.switch)
        if switch is None or not switch.spans(host):
            continue
        links.append(LinkSpec(name=pg.bridge, kind="bridge", mtu=switch.mtu))
        taps += [
            TapPort(name=tap_name(mac), bridge=pg.bridge)
            for key, mac, where in sorted(nic_locations)
            if key == pg.key and where == host
        ]
        uplink = switch.uplink_on(host)
        if switch.kind == "vlan":
            links.append(
                LinkSpec(
                    name=pg.vlan_link,
                    kind="vlan",
                    master=pg.bridge,
                    parent=uplink,
                    segment=pg.vlan_id,
                    mtu=switch.mtu,
                )
            )
            continue
        links.append(
            LinkSpec(
                name=pg.vxlan_link,
                kind="vxlan",
                master=pg.bridge,
                parent=uplink,
                segment=pg.vni,
                local=address,
                mtu=switch.mtu,
            )
        )
        for peer, peer_address in sorted(members.items()):
            if peer != host and switch.spans(peer) and peer_address and peer_address != address:
                fdb.append(FdbEntry(link=pg.vxlan_link, mac=FLOOD_MAC, dst=peer_address))
        for key, mac, where in sorted(nic_locations):
            dst = members.get(where, "")
            if key == pg.key and where != host and dst and dst != address:
                fdb.append(FdbEntry(link=pg.vxlan_link, mac=mac, dst=dst))
    return HostFabric(links=tuple(links), fdb=tuple(fdb), taps=tuple(taps))


def owned(name: str) -> bool:
    return name.startswith(OWNED_PREFIXES) and len(name) == 12

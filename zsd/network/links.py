"""Makes this host's kernel hold a ``HostFabric`` (pyroute2, blocking: run it in a
worker thread). Level-triggered and idempotent: links already right are left alone
(so VM taps stay on their bridges; a tap that came off is put back), wrong ones are
replaced, zsd-owned links nothing asks for any more are removed (ports before their
bridge). What cannot be done now (an uplink that does not exist yet) is reported and
retried on the next round; the rest is applied regardless."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from zsd.network.fabric import FLOOD_MAC, VXLAN_PORT, HostFabric, LinkSpec, TapPort, owned

log = logging.getLogger(__name__)

Netlink = Callable[[], AbstractContextManager[Any]]
"""Opens a pyroute2 IPRoute (or NetNS, for another namespace)."""


def _info(msg: Any) -> tuple[str, Any]:
    info = msg.get_attr("IFLA_LINKINFO")
    if info is None:
        return "", None
    return str(info.get_attr("IFLA_INFO_KIND") or ""), info.get_attr("IFLA_INFO_DATA")


class Links:
    def __init__(self, netlink: Netlink = IPRoute) -> None:
        self._netlink = netlink

    def apply(self, fabric: HostFabric) -> list[str]:
        """Converges the kernel to ``fabric``; returns the problems left (empty: done)."""
        problems: list[str] = []
        with self._netlink() as ipr:
            wanted = {link.name for link in fabric.links}
            for link in sorted(fabric.links, key=lambda x: x.kind != "bridge"):
                try:
                    self._ensure(ipr, link)
                except _Problem as e:
                    problems.append(str(e))
                except NetlinkError as e:
                    problems.append(f"{link.kind} {link.name}: {e.args[-1] if e.args else e}")
            current = self._links(ipr)
            stale = [n for n in current if owned(n) and n not in wanted]
            for name in sorted(stale, key=lambda n: n.startswith("zb")):
                try:
                    ipr.link("del", index=current[name]["index"])
                    log.info("removed %s: no port group needs it here any more", name)
                except NetlinkError as e:
                    problems.append(f"removing {name}: {e.args[-1] if e.args else e}")
            problems += self._replug(ipr, fabric.taps, self._links(ipr))
            for link in fabric.links:
                if link.kind == "vxlan" and link.name in current:
                    index = current[link.name]["index"]
                    dsts = {e.dst for e in fabric.fdb if e.link == link.name and e.mac == FLOOD_MAC}
                    problems += self._flood(ipr, index, dsts)
                    known = {e.mac: e.dst for e in fabric.fdb if e.link == link.name and e.mac != FLOOD_MAC}
                    problems += self._static(ipr, index, known)
        return problems

    @staticmethod
    def _replug(ipr: Any, taps: Sequence[TapPort], current: dict[str, Any]) -> list[str]:
        """Puts running VMs' taps that came off back on their bridges (a tap that is
        not there belongs to a VM not running here now: nothing to do)."""
        problems = []
        for tap in taps:
            link, bridge = current.get(tap.name), current.get(tap.bridge)
            if link is None or bridge is None or link.get_attr("IFLA_MASTER") == bridge["index"]:
                continue
            try:
                ipr.link("set", index=link["index"], master=bridge["index"])
                log.info("put tap %s back on bridge %s", tap.name, tap.bridge)
            except NetlinkError as e:
                problems.append(f"tap {tap.name} on {tap.bridge}: {e.args[-1] if e.args else e}")
        return problems

    @staticmethod
    def _links(ipr: Any) -> dict[str, Any]:
        return {str(m.get_attr("IFLA_IFNAME")): m for m in ipr.get_links()}

    def _ensure(self, ipr: Any, link: LinkSpec) -> None:
        current = self._links(ipr)
        existing = current.get(link.name)
        parent = current.get(link.parent) if link.parent else None
        if link.parent and parent is None:
            if existing is not None:
                ipr.link("del", index=existing["index"])
            raise _Problem(f"{link.kind} {link.name}: uplink {link.parent} does not exist on this host")
        if existing is not None and not self._matches(existing, link, parent):
            log.info("replacing %s: it is not the %s the port group needs", link.name, link.kind)
            ipr.link("del", index=existing["index"])
            existing = None
        if existing is None:
            ipr.link("add", **self._create_args(link, parent))
            existing = self._links(ipr)[link.name]
        changes: dict[str, Any] = {}
        if link.master:
            master = current.get(link.master) or self._links(ipr).get(link.master)
            if master is None:
                raise _Problem(f"{link.kind} {link.name}: its bridge {link.master} is missing")
            if existing.get_attr("IFLA_MASTER") != master["index"]:
                changes["master"] = master["index"]
        if link.mtu and existing.get_attr("IFLA_MTU") != link.mtu:
            changes["mtu"] = link.mtu
        if not existing["flags"] & 1:  # IFF_UP
            changes["state"] = "up"
        if changes:
            ipr.link("set", index=existing["index"], **changes)

    @staticmethod
    def _matches(msg: Any, link: LinkSpec, parent: Any) -> bool:
        kind, data = _info(msg)
        if kind != link.kind:
            return False
        if kind == "vlan":
            return bool(
                data.get_attr("IFLA_VLAN_ID") == link.segment and msg.get_attr("IFLA_LINK") == parent["index"]
            )
        if kind == "vxlan":
            return bool(
                data.get_attr("IFLA_VXLAN_ID") == link.segment
                and data.get_attr("IFLA_VXLAN_LINK") == parent["index"]
                and data.get_attr("IFLA_VXLAN_LOCAL") == link.local
                and data.get_attr("IFLA_VXLAN_PORT") == VXLAN_PORT
            )
        return True

    @staticmethod
    def _create_args(link: LinkSpec, parent: Any) -> dict[str, Any]:
        args: dict[str, Any] = {"ifname": link.name, "kind": link.kind}
        if link.kind == "vlan":
            args.update(link=parent["index"], vlan_id=link.segment)
        elif link.kind == "vxlan":
            args.update(
                vxlan_id=link.segment,
                vxlan_link=parent["index"],
                vxlan_local=link.local,
                vxlan_port=VXLAN_PORT,
                # MACs are known where NICs run: no learning from flooded traffic.
                vxlan_learning=0,
            )
        return args

    @staticmethod
    def _flood(ipr: Any, index: int, dsts: set[str]) -> list[str]:
        have = {
            str(e.get_attr("NDA_DST"))
            for e in ipr.fdb("dump", ifindex=index)
            if e.get_attr("NDA_LLADDR") == FLOOD_MAC and e["ifindex"] == index
        }
        problems = []
        for dst in sorted(dsts - have):
            try:
                ipr.fdb("append", ifindex=index, lladdr=FLOOD_MAC, dst=dst)
            except NetlinkError as e:
                problems.append(f"flood entry to {dst}: {e.args[-1] if e.args else e}")
        for dst in sorted(have - dsts):
            try:
                ipr.fdb("del", ifindex=index, lladdr=FLOOD_MAC, dst=dst)
            except NetlinkError as e:
                problems.append(f"removing flood entry to {dst}: {e.args[-1] if e.args else e}")
        return problems

    @staticmethod
    def _static(ipr: Any, index: int, known: dict[str, str]) -> list[str]:
        """Exactly the NIC entries ``known`` (MAC -> remote host) on the VXLAN device;
        moved NICs are replaced, gone ones removed."""
        have = {
            str(e.get_attr("NDA_LLADDR")): str(e.get_attr("NDA_DST"))
            for e in ipr.fdb("dump", ifindex=index)
            if e["ifindex"] == index and e.get_attr("NDA_LLADDR") != FLOOD_MAC and e.get_attr("NDA_DST")
        }
        problems = []
        for mac in sorted(have.keys() - known.keys()):
            try:
                ipr.fdb("del", ifindex=index, lladdr=mac, dst=have[mac])
            except NetlinkError as e:
                problems.append(f"removing the entry of {mac}: {e.args[-1] if e.args else e}")
        for mac, dst in sorted(known.items()):
            if have.get(mac) != dst:
                try:
                    # On the VXLAN device itself (NTF_SELF), permanent (NUD_PERMANENT).
                    ipr.fdb("replace", ifindex=index, lladdr=mac, dst=dst, state=0x80, flags=0x02)
                except NetlinkError as e:
                    problems.append(f"entry of {mac} towards {dst}: {e.args[-1] if e.args else e}")
        return problems


class _Problem(Exception):
    pass


def bridge_ports(netlink: Netlink, bridge: str) -> Iterator[str]:
    """The names of the links enslaved to ``bridge`` (for people and tests)."""
    with netlink() as ipr:
        links = {m["index"]: m for m in ipr.get_links()}
        index = next((i for i, m in links.items() if m.get_attr("IFLA_IFNAME") == bridge), None)
        for m in links.values():
            if index is not None and m.get_attr("IFLA_MASTER") == index:
                yield str(m.get_attr("IFLA_IFNAME"))

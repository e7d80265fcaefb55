"""The kernel's connection tracking table through ctnetlink (pyroute2), as a
:class:`~zsd.network.secgroups.revocation.ConntrackTable`.

The sockets are opened on first use, in the network namespace of the thread
using the table then (build and use it inside ``in_netns`` for another
namespace), and stay bound to it. Calls block; the daemon runs them in a worker
thread. Needs the ``nf_conntrack_netlink`` module (loaded on demand).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Collection, Iterator
from typing import Any

from zsd.errors import FailedPrecondition
from zsd.network.secgroups.admission import ICMP, ICMPV6, TCP, UDP, Flow

_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class KernelConntrack:
    def __init__(self) -> None:
        self._sockets: dict[int, Any] = {}

    def flows(self, zones: Collection[int]) -> Iterator[Flow]:
        for family in _FAMILIES:
            ct = self._socket(family)
            for zone in zones:
                # the kernel filters a dump by zone (CTA_ZONE, since 5.8); older ones
                # ignore it, hence the check here
                for entry in ct.dump_entries(zone=zone):
                    if (entry.zone or 0) == zone:
                        yield _flow(entry, zone)

    def size(self) -> int:
        return int(self._socket(socket.AF_INET).count() or 0)

    def flows_of(self, zone: int, address: str) -> Iterator[Flow]:
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple  # type: ignore[import-untyped]

        wanted = ipaddress.ip_address(address)
        family = socket.AF_INET if wanted.version == 4 else socket.AF_INET6
        ct = self._socket(family)
        for side in ("saddr", "daddr"):
            # the kernel filters by original tuple and zone (CTA_FILTER, 5.8+); older
            # ones return everything, hence the checks here
            orig = NFCTAttrTuple(family=family, **{side: str(wanted)})
            for entry in ct.dump_entries(zone=zone, tuple_orig=orig):
                if (entry.zone or 0) != zone:
                    continue
                flow = _flow(entry, zone)
                if ipaddress.ip_address(flow.src if side == "saddr" else flow.dst) == wanted:
                    yield flow

    def delete(self, flow: Flow) -> bool:
        from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

        family = socket.AF_INET if flow.family == 4 else socket.AF_INET6
        icmp = flow.proto in (ICMP, ICMPV6)
        ports = flow.proto in (TCP, UDP)
        tuple_orig = NFCTAttrTuple(
            family=family,
            saddr=flow.src,
            daddr=flow.dst,
            proto=flow.proto,
            sport=flow.sport if ports else None,
            dport=flow.dport if ports else None,
            icmp_id=flow.icmp_id if icmp else None,
            icmp_type=flow.icmp_type if icmp else None,
            icmp_code=flow.icmp_code if icmp else None,
        )
        try:
            self._socket(family).entry("del", tuple_orig=tuple_orig, zone=flow.zone)
        except NetlinkError as e:
            if e.code == errno.ENOENT:
                return False  # ended or timed out since the dump
            raise
        return True

    def close(self) -> None:
        for ct in self._sockets.values():
            ct.close()
        self._sockets.clear()

    def _socket(self, family: int) -> Any:
        ct = self._sockets.get(family)
        if ct is None:
            from pyroute2 import Conntrack  # type: ignore[import-untyped]

            try:
                ct = Conntrack(nfgen_family=family)
            except OSError as e:
                raise FailedPrecondition(
                    f"cannot open the conntrack table (ctnetlink): {e}", reason="CONNTRACK_UNAVAILABLE"
                ) from e
            self._sockets[family] = ct
        return ct


def _flow(entry: Any, zone: int) -> Flow:
    t = entry.tuple_orig
    return Flow(
        zone=zone,
        src=str(t.saddr),
        dst=str(t.daddr),
        proto=int(t.proto),
        sport=int(t.sport or 0),
        dport=int(t.dport or 0),
        icmp_type=int(t.icmp_type or 0),
        icmp_code=int(t.icmp_code or 0),
        icmp_id=int(t.icmp_id or 0),
    )

"""The dev cluster's network: a namespace per host, wired to a bridge in a fabric namespace.

Namespaces are made the way ``ip netns add`` makes them (a bind mount under
/run/netns; pyroute2 ports iproute2's code), so ``ip netns list`` shows them and
``ip netns exec`` enters them. The fabric namespace holds a bridge ("the switch")
and the bridge-side end of each host's veth ("the cable"); the host side is
``eth0`` in the host's namespace. Nothing is connected to the machine's own
namespace and no namespace has a default route, so no test address can leave
the machine. Interface names are per namespace, so concurrent clusters with
different prefixes never clash.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, cast

from pyroute2 import IPRoute, netns  # type: ignore[import-untyped]

NETNS_DIR = "/run/netns"
BRIDGE = "br0"
HOST_IF = "eth0"


def exists(name: str) -> bool:
    return name in netns.listnetns()


def names() -> list[str]:
    return sorted(cast(list[str], netns.listnetns()))


@contextlib.contextmanager
def _ipr(ns: str) -> Iterator[Any]:
    with IPRoute(netns=ns) as ipr:
        yield ipr


def _index(ipr: Any, ifname: str) -> int:
    found = cast(list[int], ipr.link_lookup(ifname=ifname))
    if not found:
        raise LookupError(f"no interface {ifname}")
    return found[0]


def create_fabric(name: str) -> None:
    """The fabric namespace with its bridge, up. STP stays off: ports forward at once."""
    netns.create(name)
    with _ipr(name) as ipr:
        ipr.link("add", ifname=BRIDGE, kind="bridge")
        ipr.link("set", index=_index(ipr, BRIDGE), state="up")


def add_host(*, fabric: str, host_ns: str, port: str, address: str, prefixlen: int) -> None:
    """The host's namespace, loopback up, and a veth: ``port`` on the bridge, ``eth0``
    with ``address`` in the host. ``port`` must be at most 15 characters."""
    netns.create(host_ns)
    with _ipr(fabric) as ipr:
        # Created inside the fabric with the peer sent straight to the host namespace:
        # neither end ever exists in the machine's own namespace.
        ipr.link("add", ifname=port, kind="veth", peer={"ifname": HOST_IF, "net_ns_fd": host_ns})
        ipr.link("set", index=_index(ipr, port), master=_index(ipr, BRIDGE), state="up")
    with _ipr(host_ns) as ipr:
        ipr.link("set", index=_index(ipr, "lo"), state="up")
        eth = _index(ipr, HOST_IF)
        ipr.addr("add", index=eth, address=address, prefixlen=prefixlen)
        ipr.link("set", index=eth, state="up")


def set_port(*, fabric: str, port: str, up: bool) -> None:
    """Plugs or unplugs a host's cable at the switch. The host keeps its address and
    routes and only sees carrier loss; peers' packets to it are dropped silently."""
    with _ipr(fabric) as ipr:
        ipr.link("set", index=_index(ipr, port), state="up" if up else "down")


def port_states(fabric: str) -> dict[str, bool]:
    """Admin state (up?) of every interface in the fabric namespace, by name."""
    with _ipr(fabric) as ipr:
        return {
            str(link.get("IFLA_IFNAME")): bool(link["flags"] & 1)  # IFF_UP
            for link in ipr.get_links()
        }


def pids_in(name: str) -> list[int]:
    """Pids of the processes inside namespace ``name`` (``ip netns pids``)."""
    try:
        target = os.stat(os.path.join(NETNS_DIR, name))
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # exited meanwhile
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            found.append(int(entry))
    return found


def remove(name: str) -> None:
    """Unmounts and unlinks the name (``ip netns del``); missing is fine. Its
    interfaces, and their veth peers, vanish with the last process inside it."""
    if exists(name):
        netns.remove(name)

"""``LinkDriver`` on the kernel: namespaces and veths through pyroute2.

Namespaces are made by ``ip netns add``, so ``ip netns list`` and ``ip netns exec`` see
them; sockets inside them are made without forking (``zsd.util.netns``). The veth is created in the
host's namespace with its peer sent straight into the scope's namespace. Two knobs
netlink cannot set are set with ``sysctl`` inside the new namespace, once: it ignores
router advertisements (a VM's rogue RA must not route dnsmasq's forwarded queries) and
does no duplicate address detection (its addresses are usable at once).
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from pyroute2 import IPRoute  # type: ignore[import-untyped]
from pyroute2 import netns as named_netns
from pyroute2.netlink.exceptions import NetlinkError  # type: ignore[import-untyped]

from zsd.errors import FailedPrecondition, Internal
from zsd.network.dhcp.dnsmasqproc import NETNS_DIR
from zsd.network.dhcp.drivers import HostLink, Plumbing
from zsd.network.links import Netlink
from zsd.util.netns import made_in

log = logging.getLogger(__name__)

IFF_UP = 1
IFA_F_NODAD = 0x02
RT_SCOPE_LINK = 253
_SYSCTLS = (
    "net.ipv6.conf.all.accept_ra=0",
    "net.ipv6.conf.default.accept_ra=0",
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
)


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Netlink and namespace errors become ``Internal`` naming what was being done."""
    try:
        yield
    except NetlinkError as e:
        raise Internal(f"{what}: {e.args[-1] if e.args else e}", reason="NETLINK_FAILED") from None
    except OSError as e:
        raise Internal(f"{what}: {e}", reason="NETLINK_FAILED") from None


@contextmanager
def scope_socket(name: str) -> Iterator[Any]:
    """A netlink socket in namespace ``name``, made without forking (``made_in``)."""
    ipr = made_in(name, IPRoute)
    try:
        yield ipr
    finally:
        ipr.close()


class NetlinkDriver:
    def __init__(
        self,
        *,
        host: Netlink = IPRoute,
        scope_netns: Callable[[str], AbstractContextManager[Any]] = scope_socket,
    ) -> None:
        """``host`` opens the host's namespace (``functools.partial(made_in, name,
        IPRoute)`` for a simulated host); ``scope_netns`` opens a scope's namespace by
        name."""
        self._open_host = host
        self._host_socket: Any = None
        self._scope_netns = scope_netns

    def close(self) -> None:
        if self._host_socket is not None:
            self._host_socket.close()
            self._host_socket = None

    @contextmanager
    def _host(self) -> Iterator[Any]:
        """The host's netlink socket, kept open between calls (every ``apply`` reads the
        host's links); one that saw an error is closed and made again next time."""
        if self._host_socket is None:
            self._host_socket = self._open_host()
        try:
            yield self._host_socket
        except BaseException:
            self.close()
            raise

    def namespaces(self) -> set[str]:
        # A name whose file is no namespace mount cannot be entered (its namespace was
        # mounted in a mount namespace that is gone, e.g. of a zsd run under `ip netns
        # exec` before a restart): absent, so ``create`` replaces it.
        return {str(n) for n in named_netns.listnetns() if os.path.ismount(NETNS_DIR / str(n))}

    def host_links(self, names: Collection[str]) -> dict[str, HostLink]:
        # One request per name, not a dump: a host with a thousand VM taps would make
        # every apply decode them all.
        links = {}
        with _translated("reading the host's links"), self._host() as ipr:
            for name in sorted(set(names)):
                try:
                    (msg,) = ipr.link("get", ifname=name)
                except NetlinkError as e:
                    if e.code == errno.ENODEV:
                        continue
                    raise
                info = msg.get_attr("IFLA_LINKINFO")
                links[name] = HostLink(
                    name=name,
                    index=int(msg["index"]),
                    kind=str(info.get_attr("IFLA_INFO_KIND") or "") if info is not None else "",
                    master=msg.get_attr("IFLA_MASTER"),
                    up=bool(msg["flags"] & IFF_UP),
                    mtu=int(msg.get_attr("IFLA_MTU")),
                )
        return links

    def create(self, plumbing: Plumbing, *, mtu: int) -> None:
        with _translated(f"making namespace {plumbing.netns}"):
            if plumbing.netns not in self.namespaces():
                if (NETNS_DIR / plumbing.netns).exists():
                    _ip_netns("delete", plumbing.netns)  # the stale name (see namespaces)
                # `ip netns add`, not pyroute2's netns.create: that forks this (threaded)
                # process, and the child crashed (SIGSEGV) now and then under zsd.
                _ip_netns("add", plumbing.netns)
                self._sysctl(plumbing.netns)
            with self._scope_netns(plumbing.netns) as ipr:
                # A veth end left alone in the namespace (its peer renamed or moved).
                for index in ipr.link_lookup(ifname=plumbing.inner_if):
                    ipr.link("del", index=index)
        with _translated(f"making veth {plumbing.host_veth}"), self._host() as ipr:
            for index in ipr.link_lookup(ifname=plumbing.host_veth):
                ipr.link("del", index=index)  # a veth whose namespace is gone
            ipr.link(
                "add",
                ifname=plumbing.host_veth,
                kind="veth",
                peer={"ifname": plumbing.inner_if, "net_ns_fd": plumbing.netns, "address": plumbing.mac},
            )
        log.info("dhcp: made namespace %s and veth %s", plumbing.netns, plumbing.host_veth)
        self.attach(plumbing, mtu=mtu)
        self.configure_inner(plumbing, mtu=mtu)

    def attach(self, plumbing: Plumbing, *, mtu: int) -> None:
        with _translated(f"attaching {plumbing.host_veth} to {plumbing.bridge}"), self._host() as ipr:
            bridge = ipr.link_lookup(ifname=plumbing.bridge)
            if not bridge:
                raise FailedPrecondition(
                    f"no bridge {plumbing.bridge} on this host", reason="BRIDGE_NOT_FOUND"
                )
            found = ipr.link_lookup(ifname=plumbing.host_veth)
            if not found:
                raise Internal(f"veth {plumbing.host_veth} vanished", reason="NETLINK_FAILED")
            link = ipr.get_links(found[0])[0]
            changes: dict[str, Any] = {}
            if link.get_attr("IFLA_MASTER") != bridge[0]:
                changes["master"] = bridge[0]
            if mtu and link.get_attr("IFLA_MTU") != mtu:
                changes["mtu"] = mtu
            if not link["flags"] & IFF_UP:
                changes["state"] = "up"
            if changes:
                ipr.link("set", index=found[0], **changes)

    def configure_inner(self, plumbing: Plumbing, *, mtu: int) -> None:
        where = f"configuring {plumbing.inner_if} in {plumbing.netns}"
        with _translated(where), self._scope_netns(plumbing.netns) as ipr:
            self._configure_inner(ipr, plumbing, mtu)

    @staticmethod
    def _configure_inner(ipr: Any, plumbing: Plumbing, mtu: int) -> None:
        lo = ipr.link_lookup(ifname="lo")
        if lo and not ipr.get_links(lo[0])[0]["flags"] & IFF_UP:
            ipr.link("set", index=lo[0], state="up")
        found = ipr.link_lookup(ifname=plumbing.inner_if)
        if not found:
            raise Internal(f"{plumbing.inner_if} is missing in {plumbing.netns}", reason="NETLINK_FAILED")
        index = found[0]
        link = ipr.get_links(index)[0]
        changes: dict[str, Any] = {}
        if link.get_attr("IFLA_ADDRESS") != plumbing.mac:
            changes["address"] = plumbing.mac
        if mtu and link.get_attr("IFLA_MTU") != mtu:
            changes["mtu"] = mtu
        if changes:
            ipr.link("set", index=index, **changes)
        wanted = {tuple(a.split("/")) for a in (plumbing.ipv4, plumbing.ipv6) if a}
        have = set()
        for msg in ipr.get_addr(index=index):
            if msg["scope"] == RT_SCOPE_LINK:
                continue
            key = (str(msg.get_attr("IFA_ADDRESS")), str(msg["prefixlen"]))
            if key in wanted:
                have.add(key)
            else:
                ipr.addr("del", index=index, address=key[0], prefixlen=int(key[1]))
        for address, prefixlen in sorted(wanted - have):
            ipr.addr("add", index=index, address=address, prefixlen=int(prefixlen), flags=IFA_F_NODAD)
        if not link["flags"] & IFF_UP:
            ipr.link("set", index=index, state="up")
        defaults = [r for r in ipr.get_routes(family=2, table=254) if r["dst_len"] == 0]
        gateways = {str(r.get_attr("RTA_GATEWAY")) for r in defaults}
        if plumbing.gateway and gateways != {plumbing.gateway}:
            ipr.route("replace", dst="0.0.0.0/0", gateway=plumbing.gateway, oif=index)
        elif not plumbing.gateway and defaults:
            ipr.route("del", dst="0.0.0.0/0")

    def destroy(self, *, netns: str, host_veth: str) -> None:
        with _translated(f"removing veth {host_veth}"), self._host() as ipr:
            for index in ipr.link_lookup(ifname=host_veth):
                ipr.link("del", index=index)
        with _translated(f"removing namespace {netns}"):
            if netns in self.namespaces():
                _ip_netns("delete", netns)
        log.info("dhcp: removed namespace %s and veth %s", netns, host_veth)

    @staticmethod
    def _sysctl(name: str) -> None:
        done = subprocess.run(
            ["ip", "netns", "exec", name, "sysctl", "-q", "-w", *_SYSCTLS],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise Internal(f"sysctl in {name}: {done.stderr.strip()}", reason="NETNS_SETUP_FAILED")


def _ip_netns(verb: str, name: str) -> None:
    done = subprocess.run(["ip", "netns", verb, name], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise Internal(f"ip netns {verb} {name}: {done.stderr.strip()}", reason="NETLINK_FAILED")

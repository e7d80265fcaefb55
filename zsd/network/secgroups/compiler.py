"""Security groups compiled into one host's nftables ruleset.

Design
======

zsd owns two tables, ``bridge zsd_secgroups`` and ``inet zsd_secgroups``; they are
always replaced or changed as a whole in one atomic transaction (see
:mod:`nftobjects` and :mod:`nftapply`), and nothing else on the host is touched.

The kernel here has no ``nf_conntrack_bridge``, so the bridge family cannot be
stateful. Bridged IP traffic is therefore filtered in the ``inet`` family through
br_netfilter (``net.bridge.bridge-nf-call-iptables`` and ``-ip6tables`` = 1 in the
host's namespace), where conntrack works. In those hooks the interfaces are the
bridge, not its ports, so the ``bridge`` table tells the ``inet`` table which port
a packet came from or goes to through the packet mark:

- ``bridge prerouting`` (priority -200, before br_netfilter's hook at 0), for
  frames from a zsd port: sets ``meta mark`` to FROM_TAG | port index (a map
  lookup by ``iifname``) and drops spoofed frames — a source MAC other than the
  NIC's, an ether type other than IPv4/IPv6/ARP (802.1Q-tagged frames would
  bypass br_netfilter), ARP or IP sources other than the NIC's addresses. The
  unspecified source is allowed only where the protocols need it (ARP probes,
  DHCPv4 discover, IPv6 DAD), IPv6 link-local sources always;
- ``inet prerouting`` (priority 0, after conntrack): ``meta mark vmap`` jumps to the
  sending NIC's egress chain. Egress is checked once per packet, before flooding;
- ``bridge forward`` (priority -100, before br_netfilter): for frames to a zsd port,
  overwrites the mark with TO_TAG | port index (``oifname`` map), once per output
  port, flooded copies included;
- ``inet forward`` (priority 0): ``meta mark vmap`` jumps to the receiving NIC's
  ingress chain.

Before all of these, ``inet prerouting`` and ``output`` at priority -300 (before
conntrack at -200) put a packet in its port group's conntrack zone (:mod:`zones`):
an ``iifname`` (``oifname`` for the host's own packets) verdict map jumps to a
chain ``zone_<n>`` that sets ``ct zone``. For bridged packets the inet hooks see
the bridge as ``iifname`` (``nft monitor trace`` shows ``iif "zb..."`` for frames
from any port), and a port group is one bridge, so every connection of a port
group, both directions and the host's replies included, lives in one zone, and
the same addresses in two port groups are two connections. (libnftables JSON
1.0.6 cannot declare a map whose data is a ct zone, hence the chain per zone.)
Routing by the host between a zsd bridge and another interface would put the two
directions in different zones; zsd does not route.

Each vmap lookup costs the same whatever the number of NICs. A NIC chain
(``nic_<port>_in`` / ``_out``) accepts established/related packets (replies to
allowed traffic — stateful; a rule change affects new connections only), applies
the implicit rules below, drops ``ct state invalid`` and new TCP connections
that do not start with a SYN, jumps to its groups' chains in
the NIC's order and ends with the NIC's default for that direction (counted on
the NIC's mark in the ``default_hits`` set). A
group chain (``sg_<group>_in`` / ``_out``, :mod:`groupchains`) is shared by every
NIC that uses the group: its statements are the group's rules in priority order,
each run of same-action rules packed into a few lookups in interval sets whose
elements are the rules' keys, each element counting its rule's hits
(:mod:`packing`), so a chain's length follows the
number of action changes, not of rules. The first matching rule decides (accept
or drop ends the hook); no match returns to the NIC chain, which tries the next
group, then the default. Because egress and ingress are different hooks, an
egress accept still leaves the packet to the receiving NIC's ingress check.

Why new TCP must start with a SYN: conntrack picks up a TCP connection it has
no entry for from any mid-stream packet (``nf_conntrack_tcp_loose``), as new, in
the direction of that packet. When zsd revokes access it deletes the connection's
entry (:mod:`revocation`); without this rule the next packet of the side that is
still allowed to open connections (a server VM's reply: egress allows it) would
re-create the entry in its own direction, and the revoked side's packets would
pass as its replies. The cost: connections that lose their entry any other way
(a conntrack flush) end too. A NIC that has just arrived on the host (a live
migration, zsd's start) is exempt for a while: its marks are in the ``pickup``
set (elements with timeouts, :mod:`pickup`), which the rule checks, so its
connections are picked up mid-stream and judged as new by the rules.

Remote-group rules and built-in rules match ``ip saddr @members_<group>_v4`` (daddr
for egress), sets of the addresses of the group's members cluster-wide: membership
changes only change set elements.

Default policy
==============

The seed contradicts itself (a group denies inbound and allows outbound; a NIC
defaults to inbound allow, outbound deny). zsd chooses per NIC: **ingress deny,
egress allow**, both settable (``HostNic.ingress_default`` / ``egress_default``).
Nothing reaches a VM unless one of its groups allows it (secure), a VM can open
connections out and get their replies (stateful), and it is what "a group denies
inbound and allows outbound" means once several groups are combined.

Implicit rules (before any group, because a NIC must work)
==========================================================

- ARP never reaches the inet hooks: it is only checked for spoofing.
- Ingress: IPv6 router advertisements, neighbour solicitations/advertisements and
  MLD queries; DHCPv4 (udp 67 -> 68) and DHCPv6 (547 -> 546) replies. Conntrack does
  not track ND, and DHCP replies come from another address than the request went to.
- Egress: router and neighbour solicitations, neighbour advertisements, MLD
  reports; DHCPv4 (68 -> 67) and DHCPv6 (546 -> 547) requests.
- Egress, always dropped, even for established flows: router advertisements and
  redirects (a VM is not the router) and DHCP server replies (a VM is not the
  DHCP server).

Not covered: traffic the host itself sends to a VM through the bridge's own
address (bridge output, not forward) is not ingress-filtered; traffic from a VM to
the host is egress-filtered. zsd sets the mark of every bridged packet that enters
or leaves a zsd port (values FROM_TAG/TO_TAG | index) and nothing else may rely on
it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from zsd.errors import InvalidArgument, ResourceExhausted
from zsd.network.secgroups import nftobjects as nx
from zsd.network.secgroups.group import SecurityGroup
from zsd.network.secgroups.groupchains import GroupParts, chain_name, compile_group, member_set
from zsd.network.secgroups.hostmodel import (
    CompiledRuleset,
    CounterIndex,
    CounterRef,
    DefaultRef,
    GroupMembers,
    HostFirewall,
    HostNic,
)
from zsd.network.secgroups.nftobjects import Chain, Hook, Json, NftSet, Ruleset, Table
from zsd.network.secgroups.pickup import PICKUP_SET
from zsd.network.secgroups.rules import Action, Direction
from zsd.network.secgroups.zones import ZoneAllocator

TABLE = "zsd_secgroups"
FROM_TAG = 0x5A1 << 20
TO_TAG = 0x5A2 << 20
DEFAULT_HITS = "default_hits"
MAX_NICS = (1 << 20) - 1
_IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_ESTABLISHED = nx.match({"ct": {"key": "state"}}, ["established", "related"], "in")
_INVALID = nx.match({"ct": {"key": "state"}}, "invalid", "in")
_TCP_NOT_SYN = (
    nx.match(nx.meta("l4proto"), 6),
    # tcp flags & (fin|syn|rst|ack) != syn; libnftables 1.0.6 parses the mask only as a number
    nx.match({"&": [nx.payload("tcp", "flags"), 0x17]}, "syn", "!="),
    nx.match(nx.meta("mark"), f"@{PICKUP_SET}", "!="),  # not in a pickup window
)
_V4, _V6 = nx.match(nx.meta("nfproto"), "ipv4"), nx.match(nx.meta("nfproto"), "ipv6")
_ICMPV6_TYPE = nx.payload("icmpv6", "type")


def _udp(sport: int, dport: int) -> list[Json]:
    return [
        nx.match(nx.meta("l4proto"), 17),
        nx.match(nx.payload("udp", "sport"), sport),
        nx.match(nx.payload("udp", "dport"), dport),
    ]


_ACCEPT, _DROP = nx.verdict("accept"), nx.verdict("drop")
EGRESS_GUARD = Chain(
    name="egress_guard",
    rules=(
        (_V6, nx.match(_ICMPV6_TYPE, nx.anon_set("nd-router-advert", "nd-redirect")), _DROP),
        (_V4, *_udp(67, 68), _DROP),
        (_V6, *_udp(547, 546), _DROP),
    ),
)
EGRESS_IMPLICIT = Chain(
    name="egress_implicit",
    rules=(
        (
            _V6,
            nx.match(
                _ICMPV6_TYPE,
                nx.anon_set(
                    "nd-router-solicit",
                    "nd-neighbor-solicit",
                    "nd-neighbor-advert",
                    "mld-listener-report",
                    "mld-listener-done",
                    "mld2-listener-report",
                ),
            ),
            _ACCEPT,
        ),
        (_V4, *_udp(68, 67), _ACCEPT),
        (_V6, *_udp(546, 547), _ACCEPT),
    ),
)
INGRESS_IMPLICIT = Chain(
    name="ingress_implicit",
    rules=(
        (
            _V6,
            nx.match(
                _ICMPV6_TYPE,
                nx.anon_set(
                    "nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert", "mld-listener-query"
                ),
            ),
            _ACCEPT,
        ),
        (_V4, *_udp(67, 68), _ACCEPT),
        (_V6, *_udp(547, 546), _ACCEPT),
    ),
)
ZONE_MAP = "bridge_zones"
_INET_BASE = (
    Chain(
        name="zone_in",
        hook=Hook(hook="prerouting", priority=-300),
        rules=((nx.vmap(nx.meta("iifname"), ZONE_MAP),),),
    ),
    Chain(
        name="zone_out",
        hook=Hook(hook="output", priority=-300),
        rules=((nx.vmap(nx.meta("oifname"), ZONE_MAP),),),
    ),
    Chain(
        name="egress",
        hook=Hook(hook="prerouting", priority=0),
        rules=((nx.vmap(nx.meta("mark"), "egress_nics"),),),
    ),
    Chain(
        name="ingress",
        hook=Hook(hook="forward", priority=0),
        rules=((nx.vmap(nx.meta("mark"), "ingress_nics"),),),
    ),
    EGRESS_GUARD,
    EGRESS_IMPLICIT,
    INGRESS_IMPLICIT,
)
_IIF, _OIF = nx.meta("iifname"), nx.meta("oifname")
_BRIDGE_CHAINS = (
    Chain(
        name="prerouting",
        hook=Hook(hook="prerouting", priority=-200),
        rules=(
            (nx.match(_IIF, "@ports", "!="), _ACCEPT),
            (nx.set_mark(nx.map_lookup(_IIF, "from_mark")),),
            (nx.match(nx.concat(_IIF, nx.payload("ether", "saddr")), "@port_mac", "!="), _DROP),
            (nx.match(nx.payload("ether", "type"), nx.anon_set("ip", "ip6", "arp"), "!="), _DROP),
            (
                nx.match(nx.payload("ether", "type"), "arp"),
                nx.match(nx.concat(_IIF, nx.payload("arp", "saddr ether")), "@port_mac", "!="),
                _DROP,
            ),
            (
                nx.match(nx.payload("ether", "type"), "arp"),
                nx.match(nx.payload("arp", "saddr ip"), "0.0.0.0", "!="),
                nx.match(nx.concat(_IIF, nx.payload("arp", "saddr ip")), "@port_ipv4", "!="),
                _DROP,
            ),
            (nx.match(nx.payload("ip", "saddr"), "0.0.0.0"), *_udp(68, 67), _ACCEPT),
            (nx.match(nx.concat(_IIF, nx.payload("ip", "saddr")), "@port_ipv4", "!="), _DROP),
            # any link-local source (guests pick their own, often not from the MAC) and
            # the unspecified one (duplicate address detection); then the NIC's own
            (nx.match(nx.payload("ip6", "saddr"), nx.prefix("fe80::", 10, 128)), _ACCEPT),
            (nx.match(nx.payload("ip6", "saddr"), "::"), _ACCEPT),
            (nx.match(nx.concat(_IIF, nx.payload("ip6", "saddr")), "@port_ipv6", "!="), _DROP),
        ),
    ),
    Chain(
        name="forward",
        hook=Hook(hook="forward", priority=-100),
        rules=((nx.set_mark(nx.map_lookup(_OIF, "to_mark")),),),
    ),
)


def zone_chain(zone: int) -> str:
    return f"zone_{zone}"


def nic_chain(port: str, direction: Direction) -> str:
    return f"nic_{port}_{'in' if direction == Direction.INGRESS else 'out'}"


def default_counter(port: str, direction: Direction) -> str:
    return f"default_{port}_{'in' if direction == Direction.INGRESS else 'out'}"


@dataclass(frozen=True)
class _NicParts:
    nic: HostNic
    index: int
    chains: tuple[Chain, Chain]
    bridge_elements: tuple[tuple[Json, ...], ...]
    """Elements of ports, from_mark, to_mark, port_mac, port_ipv4, port_ipv6, in that order."""
    vmaps: tuple[Json, Json]
    """(egress_nics element, ingress_nics element)."""


@dataclass(frozen=True)
class _NicSide:
    """Everything the NIC list alone decides."""

    parts: tuple[_NicParts, ...]
    bridge_sets: tuple[NftSet, ...]
    inet_sets: tuple[NftSet, ...]
    zone_chains: tuple[Chain, ...]
    zones: Mapping[str, int]
    defaults: CounterIndex


class Compiler:
    """Compiles host firewalls, reusing what did not change since the last call
    (groups by value, NICs by value, the NIC list by identity), so a one-rule change
    on a host with thousands of NICs and rules costs little. Mark indices of ports
    stay stable from one call to the next. Not thread-safe.

    A big host's compiled state is many objects (10 000 rules, 1000 NICs: ~150 000
    tracked containers); a full garbage collection over them takes 25-40 ms, and
    those were the only one-rule changes above 30 ms in the benchmark. A daemon can
    ``gc.freeze()`` after its first compile to keep the long-lived ones out of those collections."""

    def __init__(
        self, *, previous: CompiledRuleset | None = None, zones: Mapping[str, int] | None = None
    ) -> None:
        """``previous`` keeps marks and zones stable; without it, ``zones`` (bridge ->
        zone, as the kernel's ruleset holds them after a restart) keeps the zones."""
        self._marks: dict[str, int] = dict(previous.marks) if previous else {}
        self._zones = ZoneAllocator(previous.zones if previous else zones)
        self._groups: dict[str, GroupParts] = {}
        self._nics: dict[str, _NicParts] = {}
        self._nic_side_cache: tuple[tuple[HostNic, ...], _NicSide] | None = None

    def compile(self, desired: HostFirewall, *, pickup: Mapping[str, float] | None = None) -> CompiledRuleset:
        """``pickup``: port -> when its pickup window ends (:class:`~.pickup.PickupWindows`);
        ports not on this host are ignored."""
        nic_side = self._nic_side(desired)
        used: list[str] = []
        for i, nic in enumerate(desired.nics):
            for j, g in enumerate(nic.groups):
                if g not in desired.groups:
                    raise InvalidArgument(
                        f"NIC {nic.port} uses security group {g!r}, which is not given",
                        field=f"nics[{i}].groups[{j}]",
                        reason="UNKNOWN_SECURITY_GROUP",
                    )
                if g not in used:
                    used.append(g)
        groups = [self._group(desired.groups[g]) for g in sorted(used)]
        referenced = sorted({r for parts in groups for r in parts.group.remote_groups()})
        inet = Table(
            family="inet",
            name=TABLE,
            sets=(
                *nic_side.inet_sets,
                *_member_sets(referenced, desired.members),
                *(s for parts in groups for s in parts.sets),
            ),
            chains=(
                *_INET_BASE,
                *nic_side.zone_chains,
                *(c for parts in groups for c in parts.chains),
                *(c for part in nic_side.parts for c in part.chains),
            ),
        )
        bridge = Table(family="bridge", name=TABLE, sets=nic_side.bridge_sets, chains=_BRIDGE_CHAINS)
        self._groups = {parts.group.name: parts for parts in groups}
        return CompiledRuleset(
            ruleset=Ruleset(tables=(bridge, inet)),
            marks=dict(self._marks),
            counter_index=(nic_side.defaults, *(parts.index for parts in groups)),
            zones=nic_side.zones,
            pickup={
                tag | self._marks[port]: end
                for port, end in (pickup or {}).items()
                if port in self._marks
                for tag in (FROM_TAG, TO_TAG)
            },
        )

    def _group(self, group: SecurityGroup) -> GroupParts:
        cached = self._groups.get(group.name)
        if cached is not None and (cached.group is group or cached.group == group):
            return cached
        return compile_group(group)

    def _nic_side(self, desired: HostFirewall) -> _NicSide:
        if self._nic_side_cache is not None and self._nic_side_cache[0] is desired.nics:
            return self._nic_side_cache[1]
        ports = [n.port for n in desired.nics]
        if len(set(ports)) != len(ports):
            dup = next(p for p in ports if ports.count(p) > 1)
            i = len(ports) - 1 - ports[::-1].index(dup)
            raise InvalidArgument(
                f"port {dup!r} appears twice", field=f"nics[{i}].port", reason="BAD_HOST_NIC"
            )
        self._allocate(ports)
        parts_list = []
        for i, nic in enumerate(desired.nics):
            cached = self._nics.get(nic.port)
            index = self._marks[nic.port]
            if cached is None or cached.index != index or not (cached.nic is nic or cached.nic == nic):
                cached = _nic_parts(nic, index, field=f"nics[{i}]")
            parts_list.append(cached)
        parts = tuple(parts_list)
        self._nics = {p.nic.port: p for p in parts}
        refs: dict[str, CounterRef] = {}
        elements: dict[tuple[str, nx.Canonical], str] = {}
        for p in parts:
            for direction, tag in ((Direction.EGRESS, FROM_TAG), (Direction.INGRESS, TO_TAG)):
                name = default_counter(p.nic.port, direction)
                refs[name] = DefaultRef(port=p.nic.port, direction=direction)
                elements[(DEFAULT_HITS, ((tag | p.index, tag | p.index),))] = name
        zones = self._zones.assign(p.nic.bridge for p in parts if p.nic.bridge)
        side = _NicSide(
            parts=parts,
            bridge_sets=_bridge_sets(parts),
            zone_chains=tuple(
                Chain(
                    name=zone_chain(z), rules=(({"mangle": {"key": {"ct": {"key": "zone"}}, "value": z}},),)
                )
                for z in sorted(zones.values())
            ),
            zones=zones,
            inet_sets=(
                NftSet(
                    name=ZONE_MAP,
                    key=("ifname",),
                    data="verdict",
                    elements=tuple((b, nx.verdict("goto", zone_chain(z))) for b, z in sorted(zones.items())),
                ),
                NftSet(
                    name="egress_nics",
                    key=("mark",),
                    data="verdict",
                    elements=tuple(p.vmaps[0] for p in parts),
                ),
                NftSet(
                    name="ingress_nics",
                    key=("mark",),
                    data="verdict",
                    elements=tuple(p.vmaps[1] for p in parts),
                ),
                NftSet(name=PICKUP_SET, key=("mark",), timeout=True),
                NftSet(
                    name=DEFAULT_HITS,
                    key=("mark",),
                    counters=True,
                    elements=tuple(tag | p.index for p in parts for tag in (FROM_TAG, TO_TAG)),
                ),
            ),
            defaults=CounterIndex(elements=elements, refs=refs),
        )
        self._nic_side_cache = (desired.nics, side)
        return side

    def _allocate(self, ports: Sequence[str]) -> None:
        present = set(ports)
        self._marks = {p: i for p, i in self._marks.items() if p in present}
        used = set(self._marks.values())
        candidate = 1
        for port in ports:
            if port in self._marks:
                continue
            while candidate in used:
                candidate += 1
            if candidate > MAX_NICS:
                raise ResourceExhausted(f"more than {MAX_NICS} NICs on one host", reason="TOO_MANY_NICS")
            self._marks[port] = candidate
            used.add(candidate)


def compile_ruleset(desired: HostFirewall, *, previous: CompiledRuleset | None = None) -> CompiledRuleset:
    """One host's ruleset; ``previous`` keeps the ports' mark indices stable."""
    return Compiler(previous=previous).compile(desired)


def _nic_parts(nic: HostNic, index: int, *, field: str) -> _NicParts:
    _check_nic(nic, field)
    chains = []
    for direction in (Direction.INGRESS, Direction.EGRESS):
        rules: list[tuple[Json, ...]] = []
        if direction == Direction.EGRESS:
            rules.append((nx.verdict("jump", EGRESS_GUARD.name),))
        rules.append((_ESTABLISHED, _ACCEPT))
        implicit = EGRESS_IMPLICIT if direction == Direction.EGRESS else INGRESS_IMPLICIT
        rules.append((nx.verdict("jump", implicit.name),))
        rules.append((_INVALID, _DROP))
        rules.append((*_TCP_NOT_SYN, _DROP))
        rules.extend((nx.verdict("jump", chain_name(g, direction)),) for g in nic.groups)
        rules.append((nx.match(nx.meta("mark"), f"@{DEFAULT_HITS}"),))  # counts (the mark is this NIC's)
        rules.append((_ACCEPT if nic.default(direction) == Action.ALLOW else _DROP,))
        chains.append(Chain(name=nic_chain(nic.port, direction), rules=tuple(rules)))
    mac = nic.mac.lower()
    bridge = (
        (nic.port,),
        ((nic.port, FROM_TAG | index),),
        ((nic.port, TO_TAG | index),),
        (nx.concat(nic.port, mac),),
        tuple(nx.concat(nic.port, a) for a in nic.ipv4),
        tuple(nx.concat(nic.port, a) for a in nic.ipv6),
    )
    vmap = (
        (FROM_TAG | index, nx.verdict("goto", nic_chain(nic.port, Direction.EGRESS))),
        (TO_TAG | index, nx.verdict("goto", nic_chain(nic.port, Direction.INGRESS))),
    )
    return _NicParts(nic=nic, index=index, chains=(chains[0], chains[1]), bridge_elements=bridge, vmaps=vmap)


def _bridge_sets(parts: Sequence[_NicParts]) -> tuple[NftSet, ...]:
    def elements(k: int) -> tuple[Json, ...]:
        return tuple(e for p in parts for e in p.bridge_elements[k])

    return (
        NftSet(name="ports", key=("ifname",), elements=elements(0)),
        NftSet(name="from_mark", key=("ifname",), data="mark", elements=elements(1)),
        NftSet(name="to_mark", key=("ifname",), data="mark", elements=elements(2)),
        NftSet(name="port_mac", key=("ifname", "ether_addr"), elements=elements(3)),
        NftSet(name="port_ipv4", key=("ifname", "ipv4_addr"), elements=elements(4)),
        # no interval sets here: deleting from one (pipapo) took up to 150 ms at 1000 NICs
        NftSet(name="port_ipv6", key=("ifname", "ipv6_addr"), elements=elements(5)),
    )


def _member_sets(groups: Sequence[str], members: Mapping[str, GroupMembers]) -> list[NftSet]:
    out = []
    empty = GroupMembers()
    for g in groups:
        m = members.get(g, empty)
        out.append(NftSet(name=member_set(g, 4), key=("ipv4_addr",), elements=tuple(sorted(m.ipv4))))
        out.append(NftSet(name=member_set(g, 6), key=("ipv6_addr",), elements=tuple(sorted(m.ipv6))))
    return out


def _check_nic(nic: HostNic, field: str) -> None:
    def bad(name: str, text: str) -> InvalidArgument:
        return InvalidArgument(text, field=f"{field}.{name}", reason="BAD_HOST_NIC")

    names = (("port", nic.port), ("bridge", nic.bridge)) if nic.bridge else (("port", nic.port),)
    for name, value in names:
        if not _IFNAME.fullmatch(value):
            raise bad(name, f"{value!r} is not an interface name (1-15 of letters, digits, '_', '.', '-')")
    if not _MAC.fullmatch(nic.mac.lower()):
        raise bad("mac", f"{nic.mac!r} is not a MAC address (six hex pairs separated by ':')")
    for name, addresses, version in (("ipv4", nic.ipv4, 4), ("ipv6", nic.ipv6, 6)):
        for k, a in enumerate(addresses):
            try:
                ok = ipaddress.ip_address(a).version == version
            except ValueError:
                ok = False
            if not ok:
                raise bad(f"{name}[{k}]", f"{a!r} is not an IPv{version} address")
    for name, action in (("ingress_default", nic.ingress_default), ("egress_default", nic.egress_default)):
        if action not in set(Action):
            raise bad(name, f"{action!r} is not one of allow, deny")

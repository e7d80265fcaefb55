"""Security groups enforced by the real kernel: real nftables, real TCP and ICMP.

One bridge namespace (the host: br0, zsd's ruleset, br_netfilter on) with a veth
"tap" per endpoint namespace. Endpoints web, app and db carry the seed's three
tiers plus the ops (SSH) group; spare is a NIC in no group until the test puts it
in web; ext (anything, like the uplink) and admin (the operations workstation)
are bridge ports but not zsd NICs. An agent process in each endpoint answers TCP
on every port the tiers use (the reply proves replies pass) and probes paths in
parallel, so the whole matrix costs about one timeout.

Two more labs of the same kind: two port groups (two bridges) whose endpoints have
the same addresses, for conntrack zones; and held connections that must end when
access is revoked, or survive losing their conntrack entry while their NIC is in
its pickup window (just arrived on the host).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.unit.network.secgroups import netlab
from tests.unit.network.secgroups.hosts import tcp_in, three_tier
from tests.unit.network.secgroups.netlab import Agent, Endpoint
from zsd.errors import ZsdError
from zsd.network.secgroups.admission import Flow
from zsd.network.secgroups.compiler import TABLE, Compiler
from zsd.network.secgroups.ctnetlink import KernelConntrack
from zsd.network.secgroups.group import new_group
from zsd.network.secgroups.hostmodel import (
    CompiledRuleset,
    DefaultRef,
    HostFirewall,
    HostNic,
    MembersRuleRef,
    RuleRef,
    membership,
)
from zsd.network.secgroups.nftapply import RulesetApplier, in_netns, libnftables, loaded_zones
from zsd.network.secgroups.nftobjects import Chain, Ruleset
from zsd.network.secgroups.revocation import Revoker, SweepReport
from zsd.network.secgroups.rules import Action, Direction, EtherType, PortRange, Protocol, RuleSpec
from zsd.network.secgroups.zones import ZONE_FIRST

pytestmark = pytest.mark.integration

PREFIX = f"zsdt-sg{os.getpid() % 10000}"
BRIDGE_NS = f"{PREFIX}-br"
PORTS = (22, 80, 443, 3306, 8080)
TIMEOUT = 1.0
EPS = {
    e.name: e
    for e in (
        Endpoint("web", "10.50.0.10", "fd50::10", "52:54:00:50:00:10"),
        Endpoint("app", "10.50.0.20", "fd50::20", "52:54:00:50:00:20"),
        Endpoint("db", "10.50.0.30", "fd50::30", "52:54:00:50:00:30"),
        Endpoint("spare", "10.50.0.40", "fd50::40", "52:54:00:50:00:40"),
        Endpoint("ext", "10.50.0.100", "fd50::100", "52:54:00:50:01:00"),
        Endpoint("admin", "10.50.0.200", "fd50::200", "52:54:00:50:02:00"),
    )
}
TIER_GROUPS = {"web": ("web", "ops"), "app": ("app", "ops"), "db": ("db", "ops"), "spare": ()}


@pytest.fixture
def lab() -> Iterator[dict[str, Agent]]:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nft", "busybox")):
        pytest.skip("needs root, iproute2, nftables and busybox")
    with netlab.lab(PREFIX, list(EPS.values()), PORTS) as made:
        yield made.agents


def nic(name: str, **changes: Any) -> HostNic:
    ep = EPS[name]
    base = HostNic(
        port=ep.port, mac=ep.mac, ipv4=(ep.ipv4,), ipv6=(ep.ipv6,), groups=TIER_GROUPS[name], bridge=ep.bridge
    )
    return replace(base, **changes)


def firewall(*nics: HostNic) -> HostFirewall:
    groups = three_tier(ops_cidr=f"{EPS['admin'].ipv4}/32")
    web6 = RuleSpec(
        direction=Direction.INGRESS,
        ethertype=EtherType.IPV6,
        protocol=Protocol.TCP,
        port_range=PortRange.single(80),
    )
    groups["web"] = groups["web"].add_rule(web6, known_groups=set(groups))
    return HostFirewall(nics=nics, groups=groups, members=membership(nics))


def reachable(agents: dict[str, Agent], paths: list[tuple[str, str, int]]) -> set[tuple[str, str, int]]:
    """The (source, destination, port) paths a TCP connection gets through and answered."""
    by_source: dict[str, list[tuple[str, str, int]]] = {}
    for path in paths:
        by_source.setdefault(path[0], []).append(path)
    ok: set[tuple[str, str, int]] = set()
    for source, mine in by_source.items():
        targets = [[EPS[d].ipv6 if p < 0 else EPS[d].ipv4, abs(p), None] for _, d, p in mine]
        results = agents[source].ask(op="probe", targets=targets, timeout=TIMEOUT)
        ok |= {path for path, good in zip(mine, results, strict=True) if good}
    return ok


def pings(agents: dict[str, Agent], pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    ok: set[tuple[str, str]] = set()
    for source in {s for s, _ in pairs}:
        mine = [p for p in pairs if p[0] == source]
        results = agents[source].ask(op="ping", hosts=[EPS[d].ipv4 for _, d in mine], timeout=TIMEOUT)
        ok |= {p for p, good in zip(mine, results, strict=True) if good}
    return ok


def hits(applier: RulesetApplier) -> dict[Any, int]:
    return {h.ref: h.packets for h in applier.hits()}


def dhcp_lease(server: str, client: str, tmp: Path) -> bool:
    """Whether ``client`` gets a DHCP lease from busybox udhcpd running in ``server``."""
    conf = tmp / f"udhcpd-{server}.conf"
    leases = tmp / f"leases-{server}"
    leases.touch()
    conf.write_text(
        f"interface eth0\nstart 10.50.0.150\nend 10.50.0.160\nlease_file {leases}\n"
        f"pidfile {tmp}/udhcpd-{server}.pid\nopt subnet 255.255.255.0\n"
    )
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", f"{PREFIX}-{server}", "busybox", "udhcpd", "-f", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.2)
        # -s /bin/true: keep the client's address as it is, only ask
        ask = ["busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "2", "-T", "1", "-s", "/bin/true"]
        run = subprocess.run(
            ["ip", "netns", "exec", f"{PREFIX}-{client}", *ask], check=False, capture_output=True, timeout=20
        )
        return run.returncode == 0
    finally:
        daemon.kill()
        daemon.wait()


def listing(nft: Any) -> list[Any]:
    """zsd's tables as the kernel lists them, without handles and counter values."""
    out = []
    for family in ("bridge", "inet"):
        rc, data, err = nft.json_cmd({"nftables": [{"list": {"table": {"family": family, "name": TABLE}}}]})
        assert rc == 0, err
        for item in data["nftables"]:
            ((kind, body),) = item.items()
            if kind == "metainfo":
                continue
            body = {k: v for k, v in body.items() if k != "handle"}
            if "elem" in body:
                keys = [e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e for e in body["elem"]]
                body["elem"] = sorted(json.dumps(k, sort_keys=True) for k in keys)
            out.append((kind, json.dumps(body, sort_keys=True)))
    return sorted(out)


def test_three_tiers_with_real_packets(lab: dict[str, Agent], tmp_path: Path) -> None:
    nft = libnftables(BRIDGE_NS)
    applier = RulesetApplier(nft)
    compiler = Compiler()
    tiers = (nic("web"), nic("app"), nic("db", egress_default=Action.DENY), nic("spare"))
    assert applier.apply(compiler.compile(firewall(*tiers))).mode == "full"

    # every path to the tiers, and out of them
    sources = ("ext", "admin", "web", "app", "db", "spare")
    paths = [(s, d, p) for s in sources for d in ("web", "app", "db") for p in PORTS if s != d]
    paths += [(s, "ext", 80) for s in ("web", "app", "db", "spare")]
    paths += [("ext", d, -80) for d in ("web", "app", "db")]  # IPv6 (negative port: use the v6 address)
    allowed = {
        # from anywhere, but db's egress default is deny: db itself cannot send
        *((s, "web", p) for s in sources if s not in ("web", "db") for p in (80, 443)),
        *((("admin", d, 22)) for d in ("web", "app", "db")),
        ("web", "app", 8080),
        ("app", "db", 3306),  # db's answer passes although its egress default is deny: stateful
        ("web", "ext", 80),  # egress allowed by default ...
        ("app", "ext", 80),
        ("spare", "ext", 80),  # ... but not from db
        ("ext", "web", -80),  # web's IPv6 rule (and neighbour discovery working)
    }
    assert reachable(lab, paths) == allowed
    icmp = [("ext", "web"), ("ext", "app"), ("ext", "db"), ("web", "ext"), ("db", "ext"), ("app", "web")]
    assert pings(lab, icmp) == {("ext", "web"), ("web", "ext"), ("app", "web")}

    # DHCP keeps working for a NIC nothing is allowed to reach (spare: no group), from
    # the real server (a bridge port that is no zsd NIC); a VM cannot be a DHCP server
    assert dhcp_lease("ext", "spare", tmp_path)
    assert not dhcp_lease("web", "spare", tmp_path)

    counted = hits(applier)
    assert counted[RuleRef(group="web", priority=0, direction=Direction.INGRESS)] >= 4  # 80 from 4 sources
    assert counted[RuleRef(group="app", priority=0, direction=Direction.INGRESS)] >= 1
    assert counted[RuleRef(group="db", priority=0, direction=Direction.INGRESS)] >= 1
    assert counted[RuleRef(group="ops", priority=0, direction=Direction.INGRESS)] >= 3
    assert counted[RuleRef(group="web", priority=3, direction=Direction.INGRESS)] >= 1  # IPv6 80
    assert counted[DefaultRef(port="tap-db", direction=Direction.EGRESS)] >= 1
    assert counted[DefaultRef(port="tap-app", direction=Direction.INGRESS)] >= 1

    # spoofing: web sending from an address that is not its own is dropped at the bridge
    web = EPS["web"]
    netlab.sh("ip", "-n", f"{PREFIX}-web", "addr", "add", "10.50.0.99/24", "dev", "eth0")
    probe = [[EPS["ext"].ipv4, 80, "10.50.0.99"], [EPS["ext"].ipv4, 80, web.ipv4]]
    assert lab["web"].ask(op="probe", targets=probe, timeout=TIMEOUT) == [False, True]

    # the remote-group rule follows membership: spare joins web, then leaves it
    assert reachable(lab, [("spare", "app", 8080), ("ext", "spare", 80)]) == set()
    joined = (*tiers[:3], nic("spare", groups=("web",)))
    before = counted[RuleRef(group="app", priority=0, direction=Direction.INGRESS)]
    assert applier.apply(compiler.compile(firewall(*joined))).mode == "diff"
    assert reachable(lab, [("spare", "app", 8080), ("ext", "spare", 80)]) == {
        ("spare", "app", 8080),
        ("ext", "spare", 80),
    }
    assert hits(applier)[RuleRef(group="app", priority=0, direction=Direction.INGRESS)] > before
    assert applier.apply(compiler.compile(firewall(*tiers))).mode == "diff"
    assert reachable(lab, [("spare", "app", 8080), ("web", "app", 8080)]) == {("web", "app", 8080)}

    # a rule change, then the same ruleset reloaded whole: the diffs left exactly what a full load makes
    groups_changed = firewall(*tiers)
    ssh_any = RuleSpec(direction=Direction.INGRESS, protocol=Protocol.TCP, port_range=PortRange.single(22))
    groups = dict(groups_changed.groups)
    groups["db"] = groups["db"].insert_rule(0, ssh_any, known_groups=set(groups))
    assert applier.apply(compiler.compile(replace(groups_changed, groups=groups))).mode == "diff"
    assert reachable(lab, [("ext", "db", 22), ("ext", "app", 22)]) == {("ext", "db", 22)}
    after_diffs = listing(nft)
    applier.apply_full(applier.applied)  # type: ignore[arg-type]
    assert listing(nft) == after_diffs
    assert (
        hits(applier)[RuleRef(group="db", priority=1, direction=Direction.INGRESS)] >= 1
    )  # kept across reload
    assert MembersRuleRef(group="web", direction=Direction.INGRESS) not in hits(applier)  # built-in off here

    # a ruleset the kernel refuses changes nothing: the previous one keeps enforcing
    good = applier.applied
    assert good is not None
    broken = _with_broken_chain(good)
    with pytest.raises(ZsdError) as e:
        applier.apply(broken)
    assert e.value.reason == "NFT_TRANSACTION_FAILED"
    assert applier.applied is good
    assert listing(nft) == after_diffs
    assert reachable(lab, [("ext", "db", 22), ("ext", "app", 22), ("web", "app", 8080)]) == {
        ("ext", "db", 22),
        ("web", "app", 8080),
    }

    applier.remove()
    assert reachable(lab, [("ext", "app", 22)]) == {("ext", "app", 22)}
    assert dhcp_lease("web", "spare", tmp_path)  # the refusal above was the filter's doing


def _with_broken_chain(compiled: CompiledRuleset) -> CompiledRuleset:
    """``compiled`` plus a chain that jumps nowhere (the kernel refuses the whole batch)."""
    bridge, inet = compiled.ruleset.tables
    bad = Chain(name="broken", rules=(({"jump": {"target": "no-such-chain"}},),))
    inet = replace(inet, chains=(*inet.chains, bad))
    return replace(compiled, ruleset=Ruleset(tables=(bridge, inet)))


# -- conntrack zones and revocation ---------------------------------------------------------

ECHO_OPEN, ECHO_REVOKED = 7001, 7002
PG_EPS = {
    e.name: e
    for e in (
        # the same addresses in both port groups (bridges zbt1, zbt2): overlapping subnets
        Endpoint("c1", "10.72.0.1", "fd72::1", "52:54:00:72:00:01", bridge="zbt1"),
        Endpoint("s1", "10.72.0.10", "fd72::10", "52:54:00:72:00:10", bridge="zbt1"),
        Endpoint("c2", "10.72.0.1", "fd72::1", "52:54:00:72:01:01", bridge="zbt2"),
        Endpoint("s2", "10.72.0.10", "fd72::10", "52:54:00:72:01:10", bridge="zbt2"),
    )
}


def _needs_root() -> None:
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nft")):
        pytest.skip("needs root, iproute2 and nftables")


def _flows(ns: str, zones: list[int]) -> list[Flow]:
    def read() -> list[Flow]:
        table = KernelConntrack()
        try:
            return list(table.flows(zones))
        finally:
            table.close()

    return in_netns(ns, read)


def test_port_groups_with_the_same_addresses_keep_their_own_connection_state() -> None:
    _needs_root()
    udp_in = RuleSpec(direction=Direction.INGRESS, protocol=Protocol.UDP, port_range=PortRange.single(5353))
    groups = {
        "open": new_group("open", [tcp_in(80), udp_in], known_groups=set()),
        "shut": new_group("shut", [tcp_in(80)], known_groups=set()),
    }

    def server(name: str, group: str, *, zoned: bool) -> HostNic:
        ep = PG_EPS[name]
        bridge = ep.bridge if zoned else ""
        return HostNic(
            port=ep.port, mac=ep.mac, ipv4=(ep.ipv4,), ipv6=(ep.ipv6,), groups=(group,), bridge=bridge
        )

    def host(*, zoned: bool) -> HostFirewall:
        # s1 takes UDP 5353, s2 does not; the clients are bridge ports, not zsd NICs
        nics = (server("s1", "open", zoned=zoned), server("s2", "shut", zoned=zoned))
        return HostFirewall(nics=nics, groups=groups, members=membership(nics))

    with netlab.lab(f"{PREFIX}z", list(PG_EPS.values()), [80]) as made:
        agents = made.agents
        for name in ("s1", "s2"):
            agents[name].ask(op="echo", ports=[5353])
        applier = RulesetApplier(libnftables(made.bridge_ns))
        compiler = Compiler()
        server_v4 = PG_EPS["s1"].ipv4

        # Without zones both port groups share one table: c2's datagram to s2, which s2
        # refuses, has the tuple of c1's allowed one to s1 and passes as its reply.
        applier.apply(compiler.compile(host(zoned=False)))
        assert agents["c1"].ask(op="udp", targets=[[server_v4, 5353, 40001]], timeout=TIMEOUT) == [True]
        leaked = agents["c2"].ask(
            op="udp", targets=[[server_v4, 5353, 40001], [server_v4, 5353, 40002]], timeout=TIMEOUT
        )
        assert leaked == [True, False]

        # One zone per port group: the same tuple is two connections, each judged by its own NIC.
        compiled = compiler.compile(host(zoned=True))
        assert applier.apply(compiled).mode == "diff"  # zone chains and map elements added
        zone1, zone2 = compiled.zones["zbt1"], compiled.zones["zbt2"]
        assert zone1 != zone2
        assert agents["c1"].ask(op="udp", targets=[[server_v4, 5353, 40011]], timeout=TIMEOUT) == [True]
        assert agents["c2"].ask(op="udp", targets=[[server_v4, 5353, 40011]], timeout=TIMEOUT) == [False]
        # real TCP still passes in both, and each port group's connection is in its zone
        for client in ("c1", "c2"):
            assert agents[client].ask(op="probe", targets=[[server_v4, 80, None]], timeout=TIMEOUT) == [True]
        tcp80 = {(f.zone, f.src, f.dst) for f in _flows(made.bridge_ns, [zone1, zone2]) if f.dport == 80}
        assert tcp80 == {(zone1, "10.72.0.1", server_v4), (zone2, "10.72.0.1", server_v4)}
        udp = {(f.zone, f.sport) for f in _flows(made.bridge_ns, [zone1, zone2]) if f.proto == 17}
        assert udp == {(zone1, 40011)}  # c2's refused datagram left no entry


def test_revoking_access_ends_established_connections_and_only_those(lab: dict[str, Agent]) -> None:
    echo = [tcp_in(ECHO_OPEN), tcp_in(ECHO_REVOKED)]
    base = firewall(nic("web"), nic("app"))
    groups = dict(base.groups)
    known = set(groups)
    groups["web"] = groups["web"].replace_rules([*groups["web"].specs, *echo], known_groups=known)
    before = replace(base, groups=groups)
    applier = RulesetApplier(libnftables(BRIDGE_NS))
    compiled = Compiler().compile(before)
    applier.apply(compiled)
    revoker = Revoker()

    def revoke(desired: HostFirewall, zones: Mapping[str, int]) -> SweepReport:
        def run() -> SweepReport:
            table = KernelConntrack()
            try:
                return revoker.after_apply(table, firewall=desired, zones=zones)
            finally:
                table.close()

        return in_netns(BRIDGE_NS, run)

    lab["web"].ask(op="echo", ports=[ECHO_OPEN, ECHO_REVOKED])
    web = EPS["web"].ipv4
    assert revoke(before, compiled.zones).deleted == 0  # the first sweep: everything still allowed
    ext = lab["ext"]
    assert ext.ask(op="hold", name="open", host=web, port=ECHO_OPEN, timeout=TIMEOUT)
    assert ext.ask(op="hold", name="revoked", host=web, port=ECHO_REVOKED, timeout=TIMEOUT)
    assert lab["app"].ask(op="hold", name="app", host=web, port=ECHO_REVOKED, timeout=TIMEOUT)

    # the rule allowing 7002 removed: a new ruleset alone keeps established connections
    revoked_at = len(groups["web"].rules) - 1
    after_groups = dict(groups)
    after_groups["web"] = groups["web"].delete_rule(revoked_at)
    after = replace(before, groups=after_groups)
    compiled = Compiler(previous=compiled).compile(after)
    assert applier.apply(compiled).mode == "diff"
    assert ext.ask(op="check", names=["open", "revoked"], timeout=TIMEOUT) == [True, True]

    report = revoke(after, compiled.zones)
    assert report.deleted == 2 and report.nics == 1  # ext's and app's connections to 7002; web only judged
    # web (whose egress allows anything) speaks first: conntrack would pick the
    # connection up in web's direction, and ext's data would pass as its reply, but
    # new TCP that is no SYN is dropped
    assert lab["web"].ask(op="push", port=ECHO_REVOKED) == 2
    assert ext.ask(op="check", names=["open", "revoked"], timeout=TIMEOUT) == [True, False]
    assert lab["app"].ask(op="check", names=["app"], timeout=TIMEOUT) == [False]
    assert ext.ask(op="hold", name="open-again", host=web, port=ECHO_OPEN, timeout=TIMEOUT)
    assert not ext.ask(op="hold", name="revoked-again", host=web, port=ECHO_REVOKED, timeout=TIMEOUT)
    # nothing changed since: a sweep judges no NIC and reads nothing
    again = revoke(after, compiled.zones)
    assert (again.nics, again.seen, again.deleted) == (0, 0, 0)


def test_a_nic_that_has_just_arrived_picks_up_its_connections_others_do_not(lab: dict[str, Agent]) -> None:
    base = firewall(nic("web"), nic("app"))
    groups = dict(base.groups)
    for name in ("web", "app"):
        groups[name] = groups[name].add_rule(tcp_in(ECHO_OPEN), known_groups=set(groups))
    desired = replace(base, groups=groups)
    applier = RulesetApplier(libnftables(BRIDGE_NS))
    compiler = Compiler()
    # web has just arrived (a migration); app has been here all along
    compiled = compiler.compile(desired, pickup={"tap-web": time.monotonic() + 120})
    applier.apply(compiled)
    zone = compiled.zones[EPS["web"].bridge]
    for name in ("web", "app"):
        lab[name].ask(op="echo", ports=[ECHO_OPEN])
    ext = lab["ext"]
    assert ext.ask(op="hold", name="to-web", host=EPS["web"].ipv4, port=ECHO_OPEN, timeout=TIMEOUT)
    assert ext.ask(op="hold", name="to-app", host=EPS["app"].ipv4, port=ECHO_OPEN, timeout=TIMEOUT)

    def drop() -> int:
        def run() -> int:
            table = KernelConntrack()
            try:
                doomed = [f for f in table.flows([zone]) if f.dport == ECHO_OPEN]
                return sum(table.delete(f) for f in doomed)
            finally:
                table.close()

        return in_netns(BRIDGE_NS, run)

    assert drop() == 2
    # web's connection is picked up mid-stream (judged as new: its rule admits it);
    # app's next packet is new TCP without a SYN: dropped, as revocation needs
    assert ext.ask(op="check", names=["to-web", "to-app"], timeout=TIMEOUT) == [True, False]
    picked = [f for f in _flows(BRIDGE_NS, [zone]) if f.dport == ECHO_OPEN]
    assert [(f.src, f.dst) for f in picked] == [(EPS["ext"].ipv4, EPS["web"].ipv4)]

    # the window is the kernel's to end: given 1 s left (re-adding sets the element's
    # timeout anew), then gone without another apply
    applier.apply_full(compiler.compile(desired, pickup={"tap-web": time.monotonic() + 1}))
    assert ext.ask(op="check", names=["to-web"], timeout=TIMEOUT) == [True]  # the reload keeps connections
    time.sleep(1.5)
    assert drop() == 1
    assert ext.ask(op="check", names=["to-web"], timeout=TIMEOUT) == [False]


def test_the_zones_in_the_kernel_are_read_back(lab: dict[str, Agent]) -> None:
    nft = libnftables(BRIDGE_NS)
    moved = {"br0": ZONE_FIRST + 7}
    compiled = Compiler(zones=moved).compile(firewall(nic("web")))
    RulesetApplier(nft).apply(compiled)
    assert compiled.zones == moved and loaded_zones(nft) == moved

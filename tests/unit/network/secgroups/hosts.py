"""Host firewalls for tests and the benchmark: the seed's three tiers, and synthetic
hosts of any size."""

from __future__ import annotations

from zsd.network.secgroups.group import SecurityGroup, new_group
from zsd.network.secgroups.hostmodel import HostFirewall, HostNic, membership
from zsd.network.secgroups.rules import Direction, IcmpMatch, PortRange, Protocol, RuleSpec

TIERS = ("web", "app", "db", "ops")


def tcp_in(port: int, *, remote_group: str | None = None, remote_cidr: str | None = None) -> RuleSpec:
    return RuleSpec(
        direction=Direction.INGRESS,
        protocol=Protocol.TCP,
        port_range=PortRange.single(port),
        remote_group=remote_group,
        remote_cidr=remote_cidr,
    )


def three_tier(*, ops_cidr: str = "0.0.0.0/0") -> dict[str, SecurityGroup]:
    """Web accepts 80/443 (and ping) from anywhere, App 8080 from Web, DB 3306 from
    App, Ops SSH from ``ops_cidr`` on everything. Members of a tier do not talk to
    each other (built-in rule off), so every path is decided by one rule."""
    known = set(TIERS)
    return {
        "web": new_group(
            "web",
            [
                tcp_in(80),
                tcp_in(443),
                RuleSpec(direction=Direction.INGRESS, protocol=Protocol.ICMP, icmp=IcmpMatch(type=8)),
            ],
            known_groups=known,
            allow_members=False,
        ),
        "app": new_group("app", [tcp_in(8080, remote_group="web")], known_groups=known, allow_members=False),
        "db": new_group("db", [tcp_in(3306, remote_group="app")], known_groups=known, allow_members=False),
        "ops": new_group("ops", [tcp_in(22, remote_cidr=ops_cidr)], known_groups=known, allow_members=False),
    }


def synthetic(*, nics: int, groups: int, rules_per_group: int, groups_per_nic: int = 3) -> HostFirewall:
    """``nics`` NICs on this host, each in ``groups_per_nic`` of ``groups`` groups;
    each group has ``rules_per_group`` ingress TCP rules (distinct /32 and port: no
    overlaps) and one rule per 10 taking its peers from the next group."""
    names = [f"g{i:04}" for i in range(groups)]
    known = set(names)
    sgs = {}
    for gi, name in enumerate(names):
        specs = []
        for r in range(rules_per_group):
            peer = names[(gi + 1) % groups] if r % 10 == 9 else None
            specs.append(
                RuleSpec(
                    direction=Direction.INGRESS,
                    protocol=Protocol.TCP,
                    port_range=PortRange.single(1024 + r),
                    remote_cidr=None if peer else f"10.{gi & 255}.{r >> 8 & 255}.{r & 255}/32",
                    remote_group=peer,
                )
            )
        sgs[name] = new_group(name, specs, known_groups=known)
    host_nics = tuple(
        HostNic(
            port=f"vnet{n}",
            mac=f"52:54:00:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}",
            ipv4=(f"172.16.{n >> 8 & 255}.{n & 255}",),
            ipv6=(f"fd00::{n:x}",),
            groups=tuple(names[(n + k) % groups] for k in range(groups_per_nic)),
        )
        for n in range(nics)
    )
    return HostFirewall(nics=host_nics, groups=sgs, members=membership(host_nics))

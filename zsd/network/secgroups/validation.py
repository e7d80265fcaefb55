"""Checks of security-group input, each naming the field and saying what is allowed.

Rule checks collect every problem instead of stopping at the first one, so a bulk
change (an import, a whole rule list) is refused with one error that lists each bad
rule by index (``rules[3].port_range``) and why. ``InvalidArgument`` carries one
``field``; with several problems it names the list (``rules``), the message lists
them all and ``metadata`` maps each field to its reason.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from zsd.errors import InvalidArgument
from zsd.network.secgroups.rules import (
    ICMP_PROTOCOLS,
    PORT_PROTOCOLS,
    Action,
    Direction,
    EtherType,
    Protocol,
    RuleSpec,
)
from zsd.storage import validate as names

REASON = "BAD_SECURITY_GROUP_RULE"
MAX_DESCRIPTION = 255
_SHOWN_GROUPS = 10


@dataclass(frozen=True, kw_only=True)
class Violation:
    field: str
    description: str


def group_name(value: str, *, field: str) -> str:
    """Group names follow zsd's resource names (1-63 of [a-z0-9._-]): they appear in
    nftables chain and set names."""
    return names.name(value, field=field)


def rule_violations(spec: RuleSpec, *, known_groups: Collection[str], field: str) -> list[Violation]:
    """Everything wrong with one rule (empty: it is fine)."""
    bad: list[Violation] = []

    def add(name: str, text: str) -> None:
        bad.append(Violation(field=f"{field}.{name}", description=text))

    for name, value, enum in (
        ("direction", spec.direction, Direction),
        ("ethertype", spec.ethertype, EtherType),
        ("protocol", spec.protocol, Protocol),
        ("action", spec.action, Action),
    ):
        if value not in set(enum):
            add(name, f"{value!r} is not one of {', '.join(e.value for e in enum)}")
    if bad:
        return bad  # the checks below rely on these
    if spec.protocol == Protocol.ICMP and spec.ethertype == EtherType.IPV6:
        add("protocol", "icmp is for ipv4 rules; an ipv6 rule uses icmpv6")
    if spec.protocol == Protocol.ICMPV6 and spec.ethertype == EtherType.IPV4:
        add("protocol", "icmpv6 is for ipv6 rules; an ipv4 rule uses icmp")
    if spec.port_range is not None:
        if spec.protocol not in PORT_PROTOCOLS:
            add("port_range", f"ports only apply to tcp and udp rules, not to protocol {spec.protocol}")
        else:
            first, last = spec.port_range.first, spec.port_range.last
            if not (1 <= first <= 65535 and 1 <= last <= 65535):
                add("port_range", f"ports are 1..65535, got {first}-{last}")
            elif first > last:
                add("port_range", f"the first port ({first}) is above the last ({last})")
    if spec.icmp is not None:
        if spec.protocol not in ICMP_PROTOCOLS:
            add("icmp", f"an ICMP type and code only apply to icmp and icmpv6 rules, not to {spec.protocol}")
        else:
            if not 0 <= spec.icmp.type <= 255:
                add("icmp.type", f"ICMP types are 0..255, got {spec.icmp.type}")
            if spec.icmp.code is not None and not 0 <= spec.icmp.code <= 255:
                add("icmp.code", f"ICMP codes are 0..255, got {spec.icmp.code}")
    if spec.remote_cidr is not None and spec.remote_group is not None:
        add("remote_group", "a rule has a remote CIDR or a remote group, not both")
    if spec.remote_cidr is not None:
        problem = _cidr_problem(spec.remote_cidr, spec.ethertype)
        if problem:
            add("remote_cidr", problem)
    if spec.remote_group is not None and spec.remote_group not in known_groups:
        add("remote_group", f"no security group named {spec.remote_group!r}{_known(known_groups)}")
    if len(spec.description) > MAX_DESCRIPTION:
        add("description", f"at most {MAX_DESCRIPTION} characters, got {len(spec.description)}")
    return bad


def normalized(spec: RuleSpec) -> RuleSpec:
    """A valid rule in canonical form: enums (not bare strings), a CIDR's network
    written the standard way (``10.0.0.1`` -> ``10.0.0.1/32``, IPv6 compressed)."""
    cidr = str(ipaddress.ip_network(spec.remote_cidr)) if spec.remote_cidr is not None else None
    return replace(
        spec,
        direction=Direction(spec.direction),
        ethertype=EtherType(spec.ethertype),
        protocol=Protocol(spec.protocol),
        action=Action(spec.action),
        remote_cidr=cidr,
    )


def checked_rule(spec: RuleSpec, *, known_groups: Collection[str], field: str) -> RuleSpec:
    """``spec`` normalized, or InvalidArgument listing all its problems."""
    raise_violations(rule_violations(spec, known_groups=known_groups, field=field), whole=field)
    return normalized(spec)


def checked_rules(
    specs: Sequence[RuleSpec], *, known_groups: Collection[str], field: str = "rules"
) -> tuple[RuleSpec, ...]:
    """All rules normalized, or one InvalidArgument listing every bad rule by index."""
    bad = [
        v
        for i, spec in enumerate(specs)
        for v in rule_violations(spec, known_groups=known_groups, field=f"{field}[{i}]")
    ]
    raise_violations(bad, whole=field)
    return tuple(normalized(s) for s in specs)


def raise_violations(bad: Sequence[Violation], *, whole: str) -> None:
    """Nothing for no problems; one problem: its field and text; several: ``whole``
    as the field, every problem in the message and in metadata (field -> text)."""
    if not bad:
        return
    if len(bad) == 1:
        raise InvalidArgument(bad[0].description, field=bad[0].field, reason=REASON)
    listed = "; ".join(f"{v.field}: {v.description}" for v in bad)
    metadata: dict[str, str] = {}
    for v in bad:
        metadata[v.field] = f"{metadata[v.field]}; {v.description}" if v.field in metadata else v.description
    raise InvalidArgument(f"{len(bad)} problems: {listed}", field=whole, reason=REASON, metadata=metadata)


def _cidr_problem(value: str, ethertype: EtherType) -> str:
    try:
        network = ipaddress.ip_network(value)
    except ValueError:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"{value!r} is not a CIDR (e.g. 10.0.0.0/8, 2001:db8::/32 or a single address)"
        return f"{value} has host bits set; the network is {loose}"
    want = 4 if ethertype == EtherType.IPV4 else 6
    if network.version != want:
        return f"{value} is an IPv{network.version} CIDR but the rule's ethertype is {ethertype}"
    return ""


def _known(known: Collection[str]) -> str:
    if not known:
        return " (there are no groups)"
    shown = sorted(known)[:_SHOWN_GROUPS]
    more = f" and {len(known) - len(shown)} more" if len(known) > len(shown) else ""
    return f"; known groups: {', '.join(shown)}{more}"

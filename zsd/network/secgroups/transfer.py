"""A group's rules as a JSON document, and importing such a document into a group.

The document::

    {"format": "zsd.secgroup-rules/v1", "group": "web", "allow_members": true,
     "rules": [{"priority": 0, "direction": "ingress", "ethertype": "ipv4",
                "protocol": "tcp", "port_range": {"first": 80, "last": 80},
                "remote_cidr": "0.0.0.0/0", "action": "allow"}, ...]}

Rules are listed in priority order; a rule's ``priority``, when given, must be its
index. Fields left out take their defaults (ethertype ipv4, protocol any, action
allow, remote anywhere); ``group`` is informational. Importing is all or nothing:
the document is read completely and every bad rule is reported with its index and
reason in one ``InvalidArgument`` (see :func:`validation.raise_violations`); only
then are the group's rules replaced (and ``allow_members`` set when the document has it).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeGuard, TypeVar

from zsd.errors import InvalidArgument
from zsd.network.secgroups.group import SecurityGroup
from zsd.network.secgroups.rules import Action, Direction, EtherType, IcmpMatch, PortRange, Protocol, RuleSpec
from zsd.network.secgroups.validation import REASON, Violation, raise_violations, rule_violations

FORMAT = "zsd.secgroup-rules/v1"
_RULE_KEYS = (
    "priority",
    "direction",
    "ethertype",
    "protocol",
    "port_range",
    "icmp",
    "remote_cidr",
    "remote_group",
    "action",
    "description",
)
_E = TypeVar("_E", bound=StrEnum)


@dataclass(frozen=True, kw_only=True)
class RulesDocument:
    rules: tuple[RuleSpec, ...]
    allow_members: bool | None
    """None: the document does not say (importing leaves the group's setting)."""


def export_rules(group: SecurityGroup) -> str:
    """The group's rules and built-in rule setting as a JSON document."""
    doc = {
        "format": FORMAT,
        "group": group.name,
        "allow_members": group.allow_members,
        "rules": [_rule_json(r.priority, r.spec) for r in group.rules],
    }
    return json.dumps(doc, indent=2) + "\n"


def import_rules(group: SecurityGroup, text: str, *, known_groups: Collection[str]) -> SecurityGroup:
    """``group`` with its rules replaced by the document's, or InvalidArgument listing
    every problem; the group's own name counts as known (rules may reference it)."""
    doc = parse_rules(text, known_groups={*known_groups, group.name})
    imported = group.replace_rules(doc.rules, known_groups=known_groups)
    return imported if doc.allow_members is None else imported.with_allow_members(doc.allow_members)


def parse_rules(text: str, *, known_groups: Collection[str]) -> RulesDocument:
    """The document's rules, all checked; one InvalidArgument with every problem."""
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise InvalidArgument(f"not JSON: {e}", field="document", reason=REASON) from None
    if not isinstance(raw, dict):
        raise InvalidArgument("must be a JSON object with a 'rules' list", field="document", reason=REASON)
    bad: list[Violation] = []
    if raw.get("format", FORMAT) != FORMAT:
        bad.append(
            Violation(field="format", description=f"unknown format {raw['format']!r}; expected {FORMAT}")
        )
    allow_members = raw.get("allow_members")
    if allow_members is not None and not isinstance(allow_members, bool):
        bad.append(Violation(field="allow_members", description="must be true or false"))
        allow_members = None
    items = raw.get("rules")
    if not isinstance(items, list):
        bad.append(Violation(field="rules", description="must be a list of rule objects"))
        items = []
    rules: list[RuleSpec] = []
    for i, item in enumerate(items):
        reader = _RuleReader(f"rules[{i}]", i)
        spec = reader.read(item)
        if spec is not None and not reader.bad:
            reader.bad.extend(rule_violations(spec, known_groups=known_groups, field=f"rules[{i}]"))
        bad.extend(reader.bad)
        if spec is not None:
            rules.append(spec)
    raise_violations(bad, whole="rules")
    return RulesDocument(rules=tuple(rules), allow_members=allow_members)


def _rule_json(priority: int, spec: RuleSpec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "priority": priority,
        "direction": spec.direction.value,
        "ethertype": spec.ethertype.value,
        "protocol": spec.protocol.value,
    }
    if spec.port_range is not None:
        out["port_range"] = {"first": spec.port_range.first, "last": spec.port_range.last}
    if spec.icmp is not None:
        out["icmp"] = {"type": spec.icmp.type} | ({} if spec.icmp.code is None else {"code": spec.icmp.code})
    if spec.remote_cidr is not None:
        out["remote_cidr"] = spec.remote_cidr
    if spec.remote_group is not None:
        out["remote_group"] = spec.remote_group
    out["action"] = spec.action.value
    if spec.description:
        out["description"] = spec.description
    return out


class _RuleReader:
    """Reads one rule object, collecting type problems instead of raising."""

    def __init__(self, field: str, index: int) -> None:
        self.field = field
        self.index = index
        self.bad: list[Violation] = []

    def _add(self, name: str, text: str) -> None:
        self.bad.append(Violation(field=f"{self.field}.{name}" if name else self.field, description=text))

    def read(self, item: object) -> RuleSpec | None:
        if not isinstance(item, dict):
            self._add("", "must be a rule object")
            return None
        for key in item:
            if key not in _RULE_KEYS:
                self._add(str(key), f"unknown field; a rule has {', '.join(_RULE_KEYS)}")
        priority = item.get("priority")
        if priority is not None and priority != self.index:
            self._add("priority", f"rules are listed in priority order: this one's priority is {self.index}")
        if "direction" not in item:
            self._add("direction", "required: ingress or egress")
            return None
        direction = self._enum(item, "direction", Direction, None)
        ethertype = self._enum(item, "ethertype", EtherType, EtherType.IPV4)
        protocol = self._enum(item, "protocol", Protocol, Protocol.ANY)
        action = self._enum(item, "action", Action, Action.ALLOW)
        if direction is None or ethertype is None or protocol is None or action is None:
            return None
        return RuleSpec(
            direction=direction,
            ethertype=ethertype,
            protocol=protocol,
            port_range=self._ports(item.get("port_range")),
            icmp=self._icmp(item.get("icmp")),
            remote_cidr=self._text(item, "remote_cidr"),
            remote_group=self._text(item, "remote_group"),
            action=action,
            description=self._text(item, "description") or "",
        )

    def _enum(self, item: Mapping[str, object], name: str, enum: type[_E], default: _E | None) -> _E | None:
        value = item.get(name)
        if value is None:
            return default
        if isinstance(value, str) and value in {e.value for e in enum}:
            return enum(value)
        self._add(name, f"{value!r} is not one of {', '.join(e.value for e in enum)}")
        return None

    def _text(self, item: Mapping[str, object], name: str) -> str | None:
        value = item.get(name)
        if value is None or isinstance(value, str):
            return value
        self._add(name, "must be a string")
        return None

    def _ports(self, value: object) -> PortRange | None:
        if value is None:
            return None
        first = value.get("first") if isinstance(value, dict) else None
        last = value.get("last", first) if isinstance(value, dict) else None
        if not _is_int(first) or not _is_int(last):
            self._add("port_range", 'must be an object {"first": N, "last": M} with whole numbers')
            return None
        return PortRange(first=first, last=last)

    def _icmp(self, value: object) -> IcmpMatch | None:
        if value is None:
            return None
        kind = value.get("type") if isinstance(value, dict) else None
        code = value.get("code") if isinstance(value, dict) else None
        if not _is_int(kind) or (code is not None and not _is_int(code)):
            self._add("icmp", 'must be an object {"type": N} or {"type": N, "code": M} with whole numbers')
            return None
        return IcmpMatch(type=kind, code=code)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)

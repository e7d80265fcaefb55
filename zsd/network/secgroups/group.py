"""Security groups and their rule lists, as zsd stores them.

A group is an ordered list of rules plus one built-in rule. Priorities are the
positions in that list: consecutive, unique, 0 first. A new rule goes last,
inserting at a priority shifts that rule and every later one down by one, deleting
renumbers the rest. Every change returns a new frozen group and checks the rule it
adds (:mod:`zsd.network.secgroups.validation`), so a stored group is always valid
against the groups that existed when it was changed.

The built-in rule "allow traffic between members of this group" (``allow_members``)
has no priority: it is the group's last rule, evaluated after every numbered rule,
so numbered rules (deny ones included) refine it. It can be disabled, never
deleted. It matches both directions, IPv4 and IPv6, any protocol, with the group
itself as the remote group.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace

from zsd.errors import InvalidArgument, NotFound
from zsd.network.secgroups.rules import Rule, RuleSpec
from zsd.network.secgroups.validation import checked_rule, checked_rules, group_name


@dataclass(frozen=True, kw_only=True)
class SecurityGroup:
    """A named, ordered rule list. Build and change it only through :func:`new_group`
    and the methods below: they validate and renumber."""

    name: str
    rules: tuple[Rule, ...] = ()
    allow_members: bool = True
    """The built-in rule: traffic from and to the group's members is allowed."""
    description: str = ""

    def __post_init__(self) -> None:
        for i, rule in enumerate(self.rules):
            if rule.priority != i:
                raise InvalidArgument(
                    f"priorities are consecutive from 0: rule {i} has priority {rule.priority}",
                    field=f"rules[{i}].priority",
                    reason="BAD_RULE_PRIORITY",
                )

    @property
    def specs(self) -> tuple[RuleSpec, ...]:
        return tuple(r.spec for r in self.rules)

    def rule(self, priority: int) -> Rule:
        if not 0 <= priority < len(self.rules):
            raise NotFound(
                f"group '{self.name}' has no rule at priority {priority} ({_have(len(self.rules))})",
                field="priority",
                reason="RULE_NOT_FOUND",
            )
        return self.rules[priority]

    def add_rule(self, spec: RuleSpec, *, known_groups: Collection[str]) -> SecurityGroup:
        """The rule appended last (priority = the current rule count)."""
        return self.insert_rule(len(self.rules), spec, known_groups=known_groups)

    def insert_rule(self, priority: int, spec: RuleSpec, *, known_groups: Collection[str]) -> SecurityGroup:
        """The rule at ``priority`` (0..rule count); the rule there and all after it move down one."""
        if not 0 <= priority <= len(self.rules):
            raise InvalidArgument(
                f"must be between 0 and {len(self.rules)} (the rule count, to append), got {priority}",
                field="priority",
                reason="BAD_RULE_PRIORITY",
            )
        spec = checked_rule(spec, known_groups=_with(known_groups, self.name), field="rule")
        specs = list(self.specs)
        specs.insert(priority, spec)
        return replace(self, rules=_numbered(specs))

    def delete_rule(self, priority: int) -> SecurityGroup:
        """The rule at ``priority`` removed; later rules move up one."""
        self.rule(priority)
        specs = list(self.specs)
        del specs[priority]
        return replace(self, rules=_numbered(specs))

    def move_rule(self, priority: int, to: int) -> SecurityGroup:
        """The rule at ``priority`` taken out and put back at ``to`` (both in 0..count-1)."""
        self.rule(priority)
        if not 0 <= to < len(self.rules):
            raise InvalidArgument(
                f"must be between 0 and {len(self.rules) - 1}, got {to}",
                field="to",
                reason="BAD_RULE_PRIORITY",
            )
        specs = list(self.specs)
        specs.insert(to, specs.pop(priority))
        return replace(self, rules=_numbered(specs))

    def replace_rules(self, specs: Iterable[RuleSpec], *, known_groups: Collection[str]) -> SecurityGroup:
        """All rules at once, in priority order; all are checked and every bad one is
        reported in one error (``rules[i].field``), and nothing changes if any is bad."""
        checked = checked_rules(tuple(specs), known_groups=_with(known_groups, self.name), field="rules")
        return replace(self, rules=_numbered(checked))

    def with_allow_members(self, enabled: bool) -> SecurityGroup:
        """The built-in rule enabled or disabled (it cannot be deleted)."""
        return replace(self, allow_members=enabled)

    def remote_groups(self) -> frozenset[str]:
        """Groups whose members these rules match (the built-in rule counts: the group itself)."""
        named = {r.spec.remote_group for r in self.rules if r.spec.remote_group}
        if self.allow_members:
            named.add(self.name)
        return frozenset(named)


def new_group(
    name: str,
    specs: Iterable[RuleSpec] = (),
    *,
    known_groups: Collection[str],
    allow_members: bool = True,
    description: str = "",
) -> SecurityGroup:
    """A validated group; a rule may name the group itself as its remote group."""
    group_name(name, field="security_group_id")
    return SecurityGroup(name=name, allow_members=allow_members, description=description).replace_rules(
        specs, known_groups=known_groups
    )


def _numbered(specs: Iterable[RuleSpec]) -> tuple[Rule, ...]:
    return tuple(Rule(priority=i, spec=s) for i, s in enumerate(specs))


def _with(known: Collection[str], name: str) -> Collection[str]:
    return known if name in known else {*known, name}


def _have(count: int) -> str:
    return "it has no rules" if count == 0 else f"priorities 0..{count - 1}"

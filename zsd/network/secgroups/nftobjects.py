"""nftables objects as frozen values, and the libnftables JSON transactions that
create them or turn one ruleset into another. No policy lives here: what the
tables contain is :mod:`zsd.network.secgroups.compiler`'s business.

A :class:`Ruleset` is a set of whole tables that zsd owns. Two transactions exist:

- :func:`full_transaction` deletes and recreates every owned table (``add table``
  first, so a missing table is no error) — one atomic batch, nothing else touched;
- :func:`diff_transaction` turns an applied ruleset into a new one with the fewest
  commands: changed chains are flushed and refilled, set elements are deleted and
  added, elements that stay are never touched (so their counters keep counting).
  It returns None when the change cannot be expressed as a diff (a table or a
  hook changed).

Counters live on set elements (a set with ``counters``), not in named counter
objects: libnftables (1.0.6) fetches every object of the table before it adds a
rule or an element, so ten thousand named counters made every change cost ~20 ms.

Rule statements and set elements are libnftables JSON values (the library's wire
format), built by the small helpers at the end of this module; :func:`canonical`
reads an element key back from a listing whatever notation nft chose.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Json = Any
"""A libnftables JSON value (dict, list, str or int)."""
Command = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Hook:
    hook: str
    priority: int
    policy: str = "accept"
    type: str = "filter"


@dataclass(frozen=True, kw_only=True)
class Chain:
    name: str
    rules: tuple[tuple[Json, ...], ...] = ()
    """Each rule is its statement list."""
    hook: Hook | None = None


@dataclass(frozen=True, kw_only=True)
class NftSet:
    """A named set, or a map when ``data`` is given ("mark", "verdict")."""

    name: str
    key: tuple[str, ...]
    """Data types; several make a concatenation."""
    data: str | None = None
    interval: bool = False
    elements: tuple[Json, ...] = ()
    """Keys (a set) or (key, value) pairs (a map)."""
    counters: bool = False
    """Every element counts the packets that match it."""
    timeout: bool = False
    """Elements may carry a timeout (the kernel removes them when it passes); such
    elements are added outside of :func:`diff_transaction` (see :mod:`pickup`)."""

    @property
    def shape(self) -> tuple[tuple[str, ...], str | None, bool, bool, bool]:
        return (self.key, self.data, self.interval, self.counters, self.timeout)


@dataclass(frozen=True, kw_only=True)
class Table:
    family: str
    name: str
    sets: tuple[NftSet, ...] = ()
    chains: tuple[Chain, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Ruleset:
    tables: tuple[Table, ...]


Canonical = tuple[tuple[int, int], ...]
"""An element key as one inclusive integer interval per field."""


def full_transaction(ruleset: Ruleset) -> list[Command]:
    """Deletes and recreates every table of ``ruleset`` (element counters start at 0:
    libnftables 1.0.6 ignores counter values given in JSON elements)."""
    cmds: list[Command] = []
    for t in ruleset.tables:
        cmds.append({"add": {"table": {"family": t.family, "name": t.name}}})
        cmds.append({"delete": {"table": {"family": t.family, "name": t.name}}})
        cmds.append({"add": {"table": {"family": t.family, "name": t.name}}})
        cmds.extend({"add": {"chain": _chain(t, c)}} for c in t.chains)
        cmds.extend({"add": _set(t, s, s.elements)} for s in t.sets)
        for c in t.chains:
            cmds.extend(_rules(t, c))
    return cmds


def diff_transaction(old: Ruleset, new: Ruleset) -> list[Command] | None:
    """The commands that turn ``old`` (applied) into ``new``; [] when equal; None when
    only a full transaction can do it."""
    if [(t.family, t.name) for t in old.tables] != [(t.family, t.name) for t in new.tables]:
        return None
    phases: list[list[Command]] = [[] for _ in range(6)]
    for before, after in zip(old.tables, new.tables, strict=True):
        if before is after:
            continue
        if not _diff_table(before, after, phases):
            return None
    return [c for phase in phases for c in phase]


def _diff_table(old: Table, new: Table, phases: list[list[Command]]) -> bool:
    flush, del_elems, del_chains, add_chains, add_sets, add_rules = phases
    old_chains = {c.name: c for c in old.chains}
    new_chains = {c.name: c for c in new.chains}
    for name, chain in old_chains.items():
        after = new_chains.get(name)
        if after is None:
            flush.append({"flush": {"chain": _ref(old, name)}})
            del_chains.append({"delete": {"chain": _ref(old, name)}})
        elif after is not chain and after != chain:
            if after.hook != chain.hook:
                return False
            flush.append({"flush": {"chain": _ref(old, name)}})
            add_rules.extend(_rules(new, after))
    for name, chain in new_chains.items():
        if name not in old_chains:
            add_chains.append({"add": {"chain": _chain(new, chain)}})
            add_rules.extend(_rules(new, chain))

    old_sets = {s.name: s for s in old.sets}
    new_sets = {s.name: s for s in new.sets}
    for name, before in old_sets.items():
        after_set = new_sets.get(name)
        if after_set is None or after_set.shape != before.shape:
            del_elems.append({"delete": {"map" if before.data else "set": _ref(old, name)}})
        elif after_set is not before and after_set != before:
            gone, added = _element_changes(before, after_set)
            if gone:
                del_elems.append({"delete": {"element": {**_ref(old, name), "elem": gone}}})
            if added:
                add_sets.append({"add": {"element": {**_ref(new, name), "elem": added}}})
    for name, after_set in new_sets.items():
        before_set = old_sets.get(name)
        if before_set is None or before_set.shape != after_set.shape:
            add_sets.append({"add": _set(new, after_set, after_set.elements)})
    return True


def _element_changes(old: NftSet, new: NftSet) -> tuple[list[Json], list[Json]]:
    """Elements to delete (keys) and to add (elements); a map element whose value
    changes is deleted and added again. Element objects found in both sets (the
    compiler reuses what did not change) are skipped without looking inside them."""
    shared = {id(e) for e in old.elements} & {id(e) for e in new.elements}
    before = {_ident(e): e for e in old.elements if id(e) not in shared}
    after = {_ident(e): e for e in new.elements if id(e) not in shared}
    gone = [(e[0] if old.data else e) for k, e in before.items() if k not in after]
    added = [e for k, e in after.items() if k not in before]
    if old.data:
        for k, e in after.items():
            if k in before and _ident(before[k], whole=True) != _ident(e, whole=True):
                gone.append(before[k][0])
                added.append(e)
    return gone, added


def _ident(element: Json, *, whole: bool = False) -> str:
    """A hashable identity: a set element itself, a map element's key (or whole pair)."""
    if isinstance(element, tuple | list) and not whole:
        element = element[0]
    if isinstance(element, str | int):
        return repr(element)
    return json.dumps(element, sort_keys=True)


def _ref(t: Table, name: str) -> dict[str, Any]:
    return {"family": t.family, "table": t.name, "name": name}


def _chain(t: Table, c: Chain) -> dict[str, Any]:
    out = _ref(t, c.name)
    if c.hook is not None:
        out |= {"type": c.hook.type, "hook": c.hook.hook, "prio": c.hook.priority, "policy": c.hook.policy}
    return out


def _set(t: Table, s: NftSet, elements: Iterable[Json]) -> dict[str, Any]:
    body: dict[str, Any] = {**_ref(t, s.name), "type": s.key[0] if len(s.key) == 1 else list(s.key)}
    if s.data:
        body["map"] = s.data
    flags = [f for f, on in (("interval", s.interval), ("timeout", s.timeout)) if on]
    if flags:
        body["flags"] = flags
    if s.counters:
        body["stmt"] = [{"counter": None}]
    elems = [list(e) if isinstance(e, tuple) else e for e in elements]
    if elems:
        body["elem"] = elems
    return {"map" if s.data else "set": body}


def _rules(t: Table, c: Chain) -> list[Command]:
    return [
        {"add": {"rule": {"family": t.family, "table": t.name, "chain": c.name, "expr": list(r)}}}
        for r in c.rules
    ]


# -- statement and expression helpers (libnftables JSON) ------------------------------


def meta(key: str) -> Json:
    return {"meta": {"key": key}}


def payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def concat(*parts: Json) -> Json:
    return parts[0] if len(parts) == 1 else {"concat": list(parts)}


def match(left: Json, right: Json, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def anon_set(*values: Json) -> Json:
    return {"set": list(values)}


def span(lo: int, hi: int) -> Json:
    """One value or an inclusive range."""
    return lo if lo == hi else {"range": [lo, hi]}


def prefix(address: str, length: int, bits: int) -> Json:
    return address if length == bits else {"prefix": {"addr": address, "len": length}}


def vmap(key: Json, map_name: str) -> Json:
    return {"vmap": {"key": key, "data": f"@{map_name}"}}


def set_mark(value: Json) -> Json:
    return {"mangle": {"key": meta("mark"), "value": value}}


def map_lookup(key: Json, map_name: str) -> Json:
    return {"map": {"key": key, "data": f"@{map_name}"}}


def verdict(name: str, target: str | None = None) -> Json:
    """accept, drop, return; jump/goto with a target chain."""
    return {name: {"target": target}} if target else {name: None}


def canonical(key: Json) -> Canonical:
    """An element key (as zsd writes it or as nft lists it with numeric output) as
    integer intervals: addresses, prefixes and ranges of either become (low, high)."""
    parts = key["concat"] if isinstance(key, dict) and "concat" in key else [key]
    return tuple(_interval(p) for p in parts)


def _interval(part: Json) -> tuple[int, int]:
    if isinstance(part, bool):
        raise TypeError(f"not an element field: {part!r}")
    if isinstance(part, int):
        return part, part
    if isinstance(part, str):
        value = _scalar(part)
        return value, value
    if "range" in part:
        lo, hi = part["range"]
        return _scalar(lo), _scalar(hi)
    net = ipaddress.ip_network(f"{part['prefix']['addr']}/{part['prefix']['len']}")
    return int(net.network_address), int(net.broadcast_address)


def _scalar(value: Json) -> int:
    return value if isinstance(value, int) else int(ipaddress.ip_address(value))

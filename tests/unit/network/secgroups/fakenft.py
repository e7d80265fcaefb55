"""A stateful fake of libnftables' JSON interface, strict where the kernel is:
transactions are all or nothing, objects must exist before they are used or
deleted, and nothing in use may be deleted. Enough of nftables for zsd's
security-group tables (tables, chains, rules, named sets and maps, counters on set
elements, element timeouts: kept as given, never expiring; adding an element that
exists to a set with timeouts sets its timeout anew, as kernel 6.x does)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from zsd.network.secgroups.nftobjects import canonical


class NftFailure(Exception):
    pass


@dataclass
class FakeTable:
    chains: dict[str, dict[str, Any]] = field(default_factory=dict)
    sets: dict[str, dict[str, Any]] = field(default_factory=dict)


class FakeNft:
    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], FakeTable] = {}
        self.transactions: list[list[dict[str, Any]]] = []
        self.failures: list[str] = []
        """Error texts: each of the next transactions fails with one (and changes nothing)."""

    # -- the NftRunner interface -----------------------------------------------------

    def json_cmd(self, json_root: Mapping[str, Any]) -> tuple[int, Any, str]:
        cmds = json.loads(json.dumps(json_root))["nftables"]  # as the library would see it
        if len(cmds) == 1 and "list" in cmds[0]:
            return self._list(cmds[0]["list"])
        self.transactions.append(cmds)
        if self.failures:
            return 1, "", self.failures.pop(0)
        state = copy.deepcopy(self.tables)
        try:
            for cmd in cmds:
                self._do(state, cmd)
        except NftFailure as e:
            return 1, "", f"Error: {e}\n"
        self.tables = state
        return 0, "", ""

    # -- test helpers ----------------------------------------------------------------

    def hit(self, family: str, table: str, set_name: str, key: Any, *, packets: int, nbytes: int) -> None:
        """Counts traffic on the element of a counting set whose key is ``key``."""
        s = self.tables[(family, table)].sets[set_name]
        (ident,) = [e for e in s["elements"] if canonical(json.loads(e)) == canonical(key)]
        c = s["counters"][ident]
        c[0] += packets
        c[1] += nbytes

    def timeouts(self, family: str, table: str, set_name: str) -> dict[Any, int]:
        """Element -> the timeout it was last given (elements with one only)."""
        s = self.tables[(family, table)].sets[set_name]
        return {json.loads(e): t for e, t in s["timeouts"].items()}

    def snapshot(self) -> dict[str, Any]:
        """The state without counter values, comparable between two fakes."""
        return {
            f"{f} {n}": {
                "chains": t.chains,
                "sets": {
                    k: {**{a: b for a, b in v.items() if a != "counters"}, "elements": sorted(v["elements"])}
                    for k, v in t.sets.items()
                },
            }
            for (f, n), t in sorted(self.tables.items())
        }

    # -- commands --------------------------------------------------------------------

    def _list(self, what: Mapping[str, Any]) -> tuple[int, Any, str]:
        """``list table`` (sets with elements, chains, rules) or ``list sets`` of a table."""
        ((kind, spec),) = what.items()
        name = spec["name"] if kind == "table" else spec["table"]
        table = self.tables.get((spec["family"], name))
        if table is None:
            return 1, "", "Error: No such file or directory\n"
        ref = {"family": spec["family"], "table": name}
        items: list[dict[str, Any]] = [{"metainfo": {}}, {"table": {"family": spec["family"], "name": name}}]
        for set_name, s in table.sets.items():
            elem: list[Any] = []
            for e in s["elements"]:
                value = json.loads(e)
                if e in s["timeouts"]:
                    value = {"elem": {"val": value, "timeout": s["timeouts"][e], "expires": s["timeouts"][e]}}
                if s["counters"] is not None:
                    packets, nbytes = s["counters"][e]
                    value = {"elem": {"val": value, "counter": {"packets": packets, "bytes": nbytes}}}
                elem.append(value)
            body = {**ref, "name": set_name, "type": s["type"], "elem": elem}
            items.append({"map" if s["map"] else "set": body})
        if kind == "table":
            for chain_name, chain in table.chains.items():
                items.append({"chain": {**ref, "name": chain_name}})
                items.extend({"rule": {**ref, "chain": chain_name, "expr": r}} for r in chain["rules"])
        return 0, {"nftables": items}, ""

    def _do(self, state: dict[tuple[str, str], FakeTable], cmd: Mapping[str, Any]) -> None:
        ((verb, body),) = cmd.items()
        ((kind, obj),) = body.items()
        if kind == "table":
            key = (obj["family"], obj["name"])
            if verb == "add":
                state.setdefault(key, FakeTable())
            elif verb == "delete":
                if key not in state:
                    raise NftFailure(f"no table {key}")
                del state[key]
            return
        table = state.get((obj["family"], obj["table"]))
        if table is None:
            raise NftFailure(f"no table {obj['family']} {obj['table']}")
        getattr(self, f"_{verb}_{kind}")(table, obj)

    def _add_chain(self, t: FakeTable, o: Mapping[str, Any]) -> None:
        _absent(t.chains, o["name"], "chain")
        t.chains[o["name"]] = {"hook": [o.get(k) for k in ("type", "hook", "prio", "policy")], "rules": []}

    def _flush_chain(self, t: FakeTable, o: Mapping[str, Any]) -> None:
        _present(t.chains, o["name"], "chain")
        t.chains[o["name"]]["rules"] = []

    def _delete_chain(self, t: FakeTable, o: Mapping[str, Any]) -> None:
        _present(t.chains, o["name"], "chain")
        if t.chains[o["name"]]["rules"]:
            raise NftFailure(f"chain {o['name']} is not empty")
        if o["name"] in _used(t, "chains"):
            raise NftFailure(f"chain {o['name']} is in use")
        del t.chains[o["name"]]

    def _add_rule(self, t: FakeTable, o: Mapping[str, Any]) -> None:
        _present(t.chains, o["chain"], "chain")
        refs = _refs(o["expr"])
        for name in refs["sets"]:
            _present(t.sets, name, "set")
        for name in refs["chains"]:
            _present(t.chains, name, "chain")
        t.chains[o["chain"]]["rules"].append(o["expr"])

    def _add_set(self, t: FakeTable, o: Mapping[str, Any], data: str | None = None) -> None:
        _absent(t.sets, o["name"], "set")
        counting = o.get("stmt") == [{"counter": None}]
        t.sets[o["name"]] = {
            "type": o["type"],
            "map": data,
            "flags": o.get("flags", []),
            "elements": [],
            "counters": {} if counting else None,
            "timeouts": {},
        }
        self._add_element(t, {"name": o["name"], "elem": o.get("elem", [])})

    def _add_map(self, t: FakeTable, o: Mapping[str, Any]) -> None:
        self._add_set(t, o, o["map"])

    def _delete_set(self, t: FakeTable, o: Mapping[str, Any]) -> None:
        _present(t.sets, o["name"], "set")
        if o["name"] in _used(t, "sets"):
            raise NftFailure(f"set {o['name']} is in use")
        del t.sets[o["name"]]

    _delete_map = _delete_set

    def _add_element(self, t: FakeTable, o: Mapping[str, Any]) -> None:
        s = _present(t.sets, o["name"], "set")
        keys = {_key(json.loads(e), s["map"]) for e in s["elements"]}
        for given in o["elem"]:
            e, timeout = given, None
            if isinstance(given, dict) and "elem" in given:
                if "timeout" not in s["flags"]:
                    raise NftFailure(f"set {o['name']} has no timeout flag")
                e, timeout = given["elem"]["val"], given["elem"].get("timeout")
            if timeout is not None and _key(e, s["map"]) in keys:
                s["timeouts"][json.dumps(e, sort_keys=True)] = timeout
                continue
            if _key(e, s["map"]) in keys:
                raise NftFailure(f"element {e} exists in {o['name']}")
            if s["map"] == "verdict":
                ((_, target),) = e[1].items()
                _present(t.chains, target["target"], "chain")
            keys.add(_key(e, s["map"]))
            ident = json.dumps(e, sort_keys=True)
            s["elements"].append(ident)
            if timeout is not None:
                s["timeouts"][ident] = timeout
            if s["counters"] is not None:
                s["counters"][ident] = [0, 0]

    def _delete_element(self, t: FakeTable, o: Mapping[str, Any]) -> None:
        s = _present(t.sets, o["name"], "set")
        by_key = {_key(json.loads(e), s["map"]): e for e in s["elements"]}
        for k in o["elem"]:
            ident = json.dumps(k, sort_keys=True)
            if ident not in by_key:
                raise NftFailure(f"no element {k} in {o['name']}")
            gone = by_key.pop(ident)
            s["elements"].remove(gone)
            s["timeouts"].pop(gone, None)
            if s["counters"] is not None:
                del s["counters"][gone]


def _key(element: Any, data: str | None) -> str:
    return json.dumps(element[0] if data else element, sort_keys=True)


def _absent(objs: Mapping[str, Any], name: str, what: str) -> None:
    if name in objs:
        raise NftFailure(f"{what} {name} exists")


def _present(objs: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in objs:
        raise NftFailure(f"no {what} {name}")
    return objs[name]


def _walk(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)


def _refs(expr: Any) -> dict[str, set[str]]:
    refs: dict[str, set[str]] = {"sets": set(), "chains": set()}
    for key, value in _walk(expr):
        if isinstance(value, str) and value.startswith("@"):
            refs["sets"].add(value[1:])
        if key in ("jump", "goto") and isinstance(value, dict):
            refs["chains"].add(value["target"])
    return refs


def _used(t: FakeTable, what: str) -> set[str]:
    used: set[str] = set()
    for chain in t.chains.values():
        used |= _refs(chain["rules"])[what]
    for s in t.sets.values():
        for e in s["elements"]:
            pair = json.loads(e)
            if what == "chains" and s["map"] == "verdict":
                ((_, target),) = pair[1].items()
                used.add(target["target"])
    return used

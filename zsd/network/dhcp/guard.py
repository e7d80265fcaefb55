"""The uplink guard: an nftables ``bridge`` table per bridge (``zsd-dhcp-<bridge>``)
that drops DHCP (udp 67/68), DHCPv6 (udp 546/547) and router advertisements entering
or leaving through the bridge's uplink port. Every host's dnsmasq answers only for its
own NICs, so a client's broadcast must never reach another host's dnsmasq, and no
answer from another host (or any other DHCP server on the segment) may reach a client.

Router advertisements of a real router beyond the uplink are dropped too; dnsmasq's
own advertisements say "not a router" (lifetime 0), so VMs learn an IPv6 default route
only from a router on their own host's side of the uplink.

As libnftables JSON commands; applied by ``nft.NftDriver`` in one transaction.
"""

from __future__ import annotations

from typing import Any

FAMILY = "bridge"
TABLE_PREFIX = "zsd-dhcp-"
# The bridge family's "filter" priority; before any security-group chain.
PRIORITY = -200

Command = dict[str, Any]


def table_name(bridge: str) -> str:
    return TABLE_PREFIX + bridge


def owned(table: str) -> bool:
    return table.startswith(TABLE_PREFIX)


def _match(left: dict[str, Any], right: Any) -> dict[str, Any]:
    return {"match": {"op": "==", "left": left, "right": right}}


def _payload(protocol: str, field: str) -> dict[str, Any]:
    return {"payload": {"protocol": protocol, "field": field}}


def guard_commands(*, bridge: str, uplink: str, service_port: str = "") -> list[Command]:
    """Replaces the bridge's guard table whole (add, delete, add: atomic, and correct
    whether or not the table exists). ``service_port``: the bridge side of the DHCP/DNS
    namespace's veth; nothing at all passes between it and the uplink, so every host's
    service can use the same address and MAC (a VM keeps its DHCP server, and its ARP
    entry for it, across a migration) and only the local one ever answers."""
    name = table_name(bridge)
    table = {"family": FAMILY, "name": name}
    forward = {
        "family": FAMILY,
        "table": name,
        "name": "forward",
        "type": "filter",
        "hook": "forward",
        "prio": PRIORITY,
        "policy": "accept",
    }

    def rule(chain: str, *expr: dict[str, Any]) -> Command:
        return {"add": {"rule": {"family": FAMILY, "table": name, "chain": chain, "expr": list(expr)}}}

    drop = ({"counter": None}, {"drop": None})
    return [
        {"add": {"table": table}},
        {"delete": {"table": table}},
        {"add": {"table": table}},
        {"add": {"chain": forward}},
        {"add": {"chain": {"family": FAMILY, "table": name, "name": "uplink"}}},
        # Flooded frames pass the forward hook once per output port, so a client's
        # broadcast is dropped towards the uplink only: local ports still get it.
        *(
            [
                rule("forward", *_ports(service_port, uplink), *drop),
                rule("forward", *_ports(uplink, service_port), *drop),
            ]
            if service_port
            else []
        ),
        rule("forward", _match({"meta": {"key": "iifname"}}, uplink), {"jump": {"target": "uplink"}}),
        rule("forward", _match({"meta": {"key": "oifname"}}, uplink), {"jump": {"target": "uplink"}}),
        rule(
            "uplink",
            _match(_payload("ether", "type"), "ip"),
            _match(_payload("udp", "dport"), {"set": [67, 68]}),
            *drop,
        ),
        rule(
            "uplink",
            _match(_payload("ether", "type"), "ip6"),
            _match(_payload("udp", "dport"), {"set": [546, 547]}),
            *drop,
        ),
        rule(
            "uplink",
            _match(_payload("ether", "type"), "ip6"),
            _match(_payload("icmpv6", "type"), "nd-router-advert"),
            *drop,
        ),
    ]


def _ports(into: str, out: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Matches frames entering on port ``into`` and leaving on ``out``."""
    return _match({"meta": {"key": "iifname"}}, into), _match({"meta": {"key": "oifname"}}, out)


def delete_commands(table: str) -> list[Command]:
    """Removes a guard table, whether or not it exists."""
    ref = {"family": FAMILY, "name": table}
    return [{"add": {"table": ref}}, {"delete": {"table": ref}}]

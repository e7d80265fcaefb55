"""Switches and port groups in cluster.db: one ``switch`` record per switch (name:
the switch), one ``portgroup`` record per port group (name: ``{switch}/{port_group}``).
Written by the leader, read by every host's fabric reconciler from its state copy."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from zsd.cluster.store.model import Record
from zsd.errors import Internal
from zsd.network.model import PortGroup, Subnet, Switch

KIND_SWITCH = "switch"
KIND_PORT_GROUP = "portgroup"


def encode_switch(switch: Switch) -> bytes:
    return json.dumps(asdict(switch), sort_keys=True).encode()


def decode_switch(data: bytes) -> Switch:
    try:
        doc: dict[str, Any] = json.loads(data)
        return Switch(
            name=str(doc["name"]),
            kind=str(doc["kind"]),
            uplink=str(doc["uplink"]),
            host_uplinks=tuple((str(h), str(i)) for h, i in doc.get("host_uplinks", ())),
            mtu=int(doc.get("mtu", 0)),
            hosts=tuple(str(h) for h in doc.get("hosts", ())),
            description=str(doc.get("description", "")),
            create_time=float(doc.get("create_time", 0.0)),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise Internal(f"damaged switch record in the cluster state: {e}") from e


def encode_port_group(pg: PortGroup) -> bytes:
    return json.dumps(asdict(pg), sort_keys=True).encode()


def decode_port_group(data: bytes) -> PortGroup:
    try:
        doc: dict[str, Any] = json.loads(data)
        return PortGroup(
            switch=str(doc["switch"]),
            name=str(doc["name"]),
            vlan_id=int(doc.get("vlan_id", 0)),
            vni=int(doc.get("vni", 0)),
            subnets=tuple(
                Subnet(
                    cidr=str(s["cidr"]),
                    gateway=str(s.get("gateway", "")),
                    allocation_ranges=tuple((str(a), str(b)) for a, b in s.get("allocation_ranges", ())),
                )
                for s in doc.get("subnets", ())
            ),
            dns_servers=tuple(str(d) for d in doc.get("dns_servers", ())),
            domain=str(doc.get("domain", "")),
            dhcp=bool(doc.get("dhcp", False)),
            description=str(doc.get("description", "")),
            create_time=float(doc.get("create_time", 0.0)),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise Internal(f"damaged port group record in the cluster state: {e}") from e


def switches(records: Iterable[Record]) -> list[Switch]:
    return [decode_switch(r.data) for r in records]


def port_groups(records: Iterable[Record]) -> list[PortGroup]:
    return [decode_port_group(r.data) for r in records]

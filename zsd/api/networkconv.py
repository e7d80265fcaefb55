"""NetworkService messages <-> switches and port groups (``zsd.network.model``), with
errors that name the request field."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence

from zsd.api.convert import timestamp
from zsd.api.grouphits import GroupHits, Hit
from zsd.api.names import host_id
from zsd.compute.records import VmRecord
from zsd.errors import InvalidArgument, Unavailable
from zsd.network.model import PortGroup, Subnet, Switch, link_name, validate_switch
from zsd.network.nics import NicRecord
from zsd.network.secgroups.rules import RuleSpec
from zsd.network.secgroups.transfer import parse_rules
from zsd.network.secrecords import GroupRecord
from zsd.storage import validate
from zsd.v1 import network_pb2

_Msg = network_pb2.Switch
_KINDS = {_Msg.VLAN: "vlan", _Msg.VXLAN: "vxlan"}
_KIND_ENUM = {v: k for k, v in _KINDS.items()}


def switch_id(name: str, *, field: str = "name") -> str:
    """The {switch} of "switches/{switch}"."""
    parts = name.split("/")
    if len(parts) != 2 or parts[0] != "switches" or not parts[1]:
        raise InvalidArgument(
            f"{name!r} is not a switch name; expected 'switches/{{switch}}'",
            field=field,
            reason="INVALID_NAME",
        )
    return parts[1] if parts[1] == "-" else validate.name(parts[1], field=field)


def port_group_ids(name: str, *, field: str = "name") -> tuple[str, str]:
    """({switch}, {port_group}) of "switches/{switch}/portGroups/{port_group}"."""
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "switches" or parts[2] != "portGroups":
        raise InvalidArgument(
            f"{name!r} is not a port group name; expected 'switches/{{switch}}/portGroups/{{port_group}}'",
            field=field,
            reason="INVALID_NAME",
        )
    return validate.name(parts[1], field=field), validate.name(parts[3], field=field)


def switch_model(switch_id_: str, msg: network_pb2.Switch) -> Switch:
    name = validate.name(switch_id_, field="switch_id")
    if msg.name and msg.name != f"switches/{name}":
        raise InvalidArgument(
            f"switch.name {msg.name!r} disagrees with switch_id {name!r}; leave it empty", field="switch.name"
        )
    if msg.kind not in _KINDS:
        raise InvalidArgument("required: VLAN or VXLAN", field="switch.kind")
    hosts = tuple(host_id(h, field=f"switch.hosts[{i}]") for i, h in enumerate(msg.hosts))
    uplinks = tuple(
        sorted((host_id(h, field="switch.host_uplinks"), iface) for h, iface in msg.host_uplinks.items())
    )
    return validate_switch(
        Switch(
            name=name,
            kind=_KINDS[msg.kind],
            uplink=msg.uplink,
            host_uplinks=uplinks,
            mtu=msg.mtu,
            hosts=hosts,
            description=msg.description,
        )
    )


def switch_message(switch: Switch, port_groups: list[PortGroup]) -> network_pb2.Switch:
    return network_pb2.Switch(
        name=f"switches/{switch.name}",
        kind=_KIND_ENUM[switch.kind],
        uplink=switch.uplink,
        host_uplinks={f"hosts/{h}": i for h, i in switch.host_uplinks},
        mtu=switch.mtu,
        hosts=[f"hosts/{h}" for h in switch.hosts],
        description=switch.description,
        create_time=timestamp(switch.create_time),
        port_groups=sorted(
            f"switches/{switch.name}/portGroups/{g.name}" for g in port_groups if g.switch == switch.name
        ),
    )


def port_group_model(switch: str, port_group_id: str, msg: network_pb2.PortGroup) -> PortGroup:
    """A new port group from the request; whether it fits its switch and the others is
    the leader's check (``NetworkCatalog``)."""
    name = validate.name(port_group_id, field="port_group_id")
    full = f"switches/{switch}/portGroups/{name}"
    if msg.name and msg.name != full:
        raise InvalidArgument(
            f"port_group.name {msg.name!r} disagrees with {full!r}; leave it empty", field="port_group.name"
        )
    subnets = []
    for i, s in enumerate(msg.subnets):
        ranges = []
        for k, text in enumerate(s.allocation_ranges):
            start, sep, end = text.partition("-")
            if not sep:
                raise InvalidArgument(
                    f"{text!r} is not a range like 192.0.2.10-192.0.2.99",
                    field=f"port_group.subnets[{i}].allocation_ranges[{k}]",
                )
            ranges.append((start.strip(), end.strip()))
        subnets.append(Subnet(cidr=s.cidr, gateway=s.gateway, allocation_ranges=tuple(ranges)))
    return PortGroup(
        switch=switch,
        name=name,
        vlan_id=msg.vlan_id,
        vni=msg.vni,
        subnets=tuple(subnets),
        dns_servers=tuple(msg.dns_servers),
        domain=msg.domain,
        dhcp=msg.dhcp,
        description=msg.description,
    )


def port_group_message(pg: PortGroup) -> network_pb2.PortGroup:
    return network_pb2.PortGroup(
        name=f"switches/{pg.switch}/portGroups/{pg.name}",
        vlan_id=pg.vlan_id,
        vni=pg.vni,
        subnets=[
            network_pb2.Subnet(
                cidr=s.cidr, gateway=s.gateway, allocation_ranges=[f"{a}-{b}" for a, b in s.allocation_ranges]
            )
            for s in pg.subnets
        ],
        dns_servers=list(pg.dns_servers),
        domain=pg.domain,
        dhcp=pg.dhcp,
        description=pg.description,
        create_time=timestamp(pg.create_time),
        bridge=pg.bridge,
    )


def nic_id(name: str, *, field: str = "name") -> str:
    """The {nic} of "nics/{nic}"."""
    parts = name.split("/")
    if len(parts) != 2 or parts[0] != "nics":
        raise InvalidArgument(
            f"{name!r} is not a NIC name; expected 'nics/{{nic}}'", field=field, reason="INVALID_NAME"
        )
    return validate.name(parts[1], field=field)


def nic_record(nic_id_: str, msg: network_pb2.VirtualNic) -> NicRecord:
    """A new NIC from CreateNicRequest; its MAC and addresses are the leader's to
    allocate (``NetworkCatalog.create_nic``)."""
    name = validate.name(nic_id_, field="nic_id")
    if msg.name and msg.name != f"nics/{name}":
        raise InvalidArgument(
            f"nic.name {msg.name!r} disagrees with nic_id {name!r}; leave it empty", field="nic.name"
        )
    switch, group = port_group_ids(msg.port_group, field="nic.port_group")
    if len(msg.description) > 1024:
        raise InvalidArgument("at most 1024 characters", field="nic.description")
    return NicRecord(name=name, port_group=f"{switch}/{group}", mac=msg.mac, description=msg.description)


def nic_message(record: NicRecord, user: VmRecord | None) -> network_pb2.VirtualNic:
    switch, _, group = record.port_group.partition("/")
    return network_pb2.VirtualNic(
        name=f"nics/{record.name}",
        port_group=f"switches/{switch}/portGroups/{group}",
        mac=record.mac,
        ip_addresses=list(record.addresses),
        description=record.description,
        create_time=timestamp(record.create_time),
        vm=f"vms/{user.name}" if user is not None else "",
        host=f"hosts/{user.host}" if user is not None else "",
        bridge=link_name("zb", record.port_group),
        security_groups=[f"securityGroups/{g}" for g in record.security_groups],
        ingress_default=record.ingress_default,
        egress_default=record.egress_default,
    )


# -- security groups ---------------------------------------------------------------------

SG_PREFIX = "securityGroups/"


def security_group_id(name: str, *, field: str = "name") -> str:
    """The {group} of "securityGroups/{group}"."""
    if not name.startswith(SG_PREFIX) or "/" in name[len(SG_PREFIX) :] or len(name) == len(SG_PREFIX):
        raise InvalidArgument(
            f"{name!r} is not a security group name; expected 'securityGroups/{{group}}'",
            field=field,
            reason="INVALID_NAME",
        )
    return name[len(SG_PREFIX) :]


def _rule_doc(msg: network_pb2.SecurityGroupRule, field: str) -> dict[str, object]:
    """The export document's form of one rule (its reader checks every field)."""
    doc: dict[str, object] = {"direction": msg.direction} if msg.direction else {}
    for key in ("ethertype", "protocol", "action", "remote_cidr", "description"):
        if getattr(msg, key):
            doc[key] = getattr(msg, key)
    if msg.remote_group:
        doc["remote_group"] = security_group_id(msg.remote_group, field=f"{field}.remote_group")
    if msg.port_min or msg.port_max:
        doc["port_range"] = {"first": msg.port_min or msg.port_max, "last": msg.port_max or msg.port_min}
    if msg.HasField("icmp_type") or msg.HasField("icmp_code"):
        doc["icmp"] = {"type": msg.icmp_type if msg.HasField("icmp_type") else -1}
        if msg.HasField("icmp_code"):
            doc["icmp"]["code"] = msg.icmp_code  # type: ignore[index]
    return doc


def rule_specs(
    rules: Sequence[network_pb2.SecurityGroupRule], *, known_groups: Collection[str], field: str = "rules"
) -> tuple[RuleSpec, ...]:
    """Request rules checked like an import: one error naming every bad one
    (``{field}[i].port_range: ...``); a single rule (``field`` without an index) is
    named ``{field}.port_range``."""
    single = field != "rules"
    docs = [_rule_doc(r, f"{field}[{i}]" if not single else field) for i, r in enumerate(rules)]
    try:
        return parse_rules(json.dumps({"rules": docs}), known_groups=known_groups).rules
    except InvalidArgument as e:
        if not single:
            raise
        raise InvalidArgument(
            e.message.replace("rules[0]", field),
            field=(e.field or field).replace("rules[0]", field),
            reason=e.reason,
        ) from None


def rule_message(priority: int, spec: RuleSpec) -> network_pb2.SecurityGroupRule:
    msg = network_pb2.SecurityGroupRule(
        priority=priority,
        direction=spec.direction.value,
        ethertype=spec.ethertype.value,
        protocol=spec.protocol.value,
        remote_cidr=spec.remote_cidr or "",
        remote_group=f"{SG_PREFIX}{spec.remote_group}" if spec.remote_group else "",
        action=spec.action.value,
        description=spec.description,
    )
    if spec.port_range is not None:
        msg.port_min, msg.port_max = spec.port_range.first, spec.port_range.last
    if spec.icmp is not None:
        msg.icmp_type = spec.icmp.type
        if spec.icmp.code is not None:
            msg.icmp_code = spec.icmp.code
    return msg


def security_group_message(record: GroupRecord, nics: Sequence[NicRecord]) -> network_pb2.SecurityGroup:
    group = record.group
    return network_pb2.SecurityGroup(
        name=f"{SG_PREFIX}{group.name}",
        description=group.description,
        allow_members=group.allow_members,
        rules=[rule_message(r.priority, r.spec) for r in group.rules],
        create_time=timestamp(record.create_time),
        nics=sorted(f"nics/{n.name}" for n in nics if group.name in n.security_groups),
    )


# -- hit counters -----------------------------------------------------------------------


def hit_message(hit: Hit) -> network_pb2.SecurityGroupHit:
    return network_pb2.SecurityGroupHit(
        priority=hit.priority, direction=hit.direction, packets=hit.packets, bytes=hit.bytes
    )


def host_hits(answer: network_pb2.ListSecurityGroupHitsResponse, host: str) -> tuple[Hit, ...]:
    """``host``'s answer for its own counters, back into counters to be summed with
    the others'. A host that could not read its own (its firewall is busy past the
    deadline, or it has none) answers with itself missing, not with an error: that
    is raised here, with its reason, rather than counted as zeros."""
    if f"hosts/{host}" not in answer.hosts:
        why = next((m for m in answer.missing_hosts if m.host == f"hosts/{host}"), None)
        if why is None:
            raise Unavailable(
                f"host {host} answered for {list(answer.hosts)}, not itself", reason="WRONG_HOST"
            )
        raise Unavailable(why.message, reason=why.reason)
    return tuple(
        Hit(priority=m.priority, direction=m.direction, packets=m.packets, bytes=m.bytes) for m in answer.hits
    )


def hits_response(result: GroupHits, *, by_host: bool) -> network_pb2.ListSecurityGroupHitsResponse:
    return network_pb2.ListSecurityGroupHitsResponse(
        hits=[hit_message(h) for h in result.total],
        hosts=[f"hosts/{h.host}" for h in result.counted],
        missing_hosts=[
            network_pb2.UncountedHost(host=f"hosts/{m.host}", reason=m.reason, message=m.message)
            for m in result.missing
        ],
        host_hits=[
            network_pb2.HostSecurityGroupHits(host=f"hosts/{h.host}", hits=[hit_message(x) for x in h.hits])
            for h in result.counted
        ]
        if by_host
        else [],
    )

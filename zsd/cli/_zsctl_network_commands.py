"""zsctl's ``switch`` and ``portgroup`` nouns: distributed switches and their port groups.

    zsctl switch create lab vxlan --uplink eth0 [--mtu 1450] [--hosts h1,h2] [--host-uplink h2=eth1]
    zsctl portgroup create lab/web --vni 100 \\
        --subnet 10.10.0.0/24,gw=10.10.0.1,range=10.10.0.100-10.10.0.199 --dns 10.10.0.1 --dhcp
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Sequence

from google.protobuf import field_mask_pb2

from zsd.v1 import network_pb2

from ._zsctl_commands import Api, Console, collect_pages
from ._zsctl_output import EMPTY
from ._zsctl_policy_commands import host_list
from ._zsctl_storage_commands import NounFactory

_Switch = network_pb2.Switch
KINDS = {"vlan": _Switch.VLAN, "vxlan": _Switch.VXLAN}
SWITCH_COLUMNS = ("NAME", "KIND", "UPLINK", "MTU", "HOSTS", "PORT GROUPS")
PORT_GROUP_COLUMNS = ("NAME", "SEGMENT", "SUBNETS", "DHCP", "BRIDGE")
NIC_COLUMNS = ("NAME", "PORT GROUP", "MAC", "ADDRESSES", "VM", "HOST")


def switch_name(text: str) -> str:
    return text if text.startswith("switches/") else f"switches/{text}"


def port_group_name(text: str) -> str:
    """ "SWITCH/PG" or the full name."""
    if text.startswith("switches/"):
        return text
    switch, sep, pg = text.partition("/")
    if not sep or not switch or not pg or "/" in pg:
        raise argparse.ArgumentTypeError(f"{text!r}: give SWITCH/PORTGROUP")
    return f"switches/{switch}/portGroups/{pg}"


def host_uplink(text: str) -> tuple[str, str]:
    host, sep, iface = text.partition("=")
    if not sep or not host or not iface:
        raise argparse.ArgumentTypeError(f"{text!r}: give HOST=INTERFACE")
    return (host if host.startswith("hosts/") else f"hosts/{host}", iface)


def subnet(text: str) -> network_pb2.Subnet:
    """CIDR[,gw=GATEWAY][,range=START-END]..."""
    cidr, *options = text.split(",")
    msg = network_pb2.Subnet(cidr=cidr.strip())
    for option in options:
        key, sep, value = option.partition("=")
        if key == "gw" and sep:
            msg.gateway = value
        elif key == "range" and sep:
            msg.allocation_ranges.append(value)
        else:
            raise argparse.ArgumentTypeError(f"{option!r}: subnet options are gw=ADDRESS and range=START-END")
    return msg


def switch_rows(switches: Sequence[network_pb2.Switch]) -> list[list[str]]:
    kinds = {v: k for k, v in KINDS.items()}
    return [
        [
            s.name.removeprefix("switches/"),
            kinds.get(s.kind, EMPTY),
            s.uplink,
            str(s.mtu or EMPTY),
            ",".join(h.removeprefix("hosts/") for h in s.hosts) or "all",
            str(len(s.port_groups)),
        ]
        for s in switches
    ]


def port_group_rows(groups: Sequence[network_pb2.PortGroup]) -> list[list[str]]:
    return [
        [
            g.name.removeprefix("switches/").replace("/portGroups/", "/"),
            f"vlan {g.vlan_id}" if g.vlan_id else f"vni {g.vni}",
            ",".join(s.cidr for s in g.subnets) or EMPTY,
            "yes" if g.dhcp else "no",
            g.bridge,
        ]
        for g in groups
    ]


def cmd_switch_list(args: argparse.Namespace, api: Api, console: Console) -> int:
    def fetch(token: str) -> tuple[Sequence[network_pb2.Switch], str]:
        r = api.network.ListSwitches(network_pb2.ListSwitchesRequest(page_token=token), timeout=api.timeout)
        return r.switches, r.next_page_token

    switches = collect_pages(fetch)
    console.many(switches, SWITCH_COLUMNS, switch_rows(switches))
    return 0


def cmd_switch_show(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = network_pb2.GetSwitchRequest(name=switch_name(args.name))
    console.one(api.network.GetSwitch(request, timeout=api.timeout))
    return 0


def cmd_switch_create(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = network_pb2.CreateSwitchRequest(
        switch_id=args.name.removeprefix("switches/"),
        switch=network_pb2.Switch(
            kind=KINDS[args.kind],
            uplink=args.uplink,
            host_uplinks=dict(args.host_uplink or []),
            mtu=args.mtu,
            hosts=args.hosts or [],
            description=args.description or "",
        ),
        request_id=args.request_id or str(uuid.uuid4()),
    )
    console.one(api.network.CreateSwitch(request, timeout=api.timeout))
    return 0


def cmd_switch_delete(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = network_pb2.DeleteSwitchRequest(
        name=switch_name(args.name), request_id=args.request_id or str(uuid.uuid4())
    )
    api.network.DeleteSwitch(request, timeout=api.timeout)
    console.line(f"deleted {request.name}")
    return 0


def cmd_portgroup_list(args: argparse.Namespace, api: Api, console: Console) -> int:
    parent = switch_name(args.switch) if args.switch else "switches/-"

    def fetch(token: str) -> tuple[Sequence[network_pb2.PortGroup], str]:
        r = api.network.ListPortGroups(
            network_pb2.ListPortGroupsRequest(parent=parent, page_token=token), timeout=api.timeout
        )
        return r.port_groups, r.next_page_token

    groups = collect_pages(fetch)
    console.many(groups, PORT_GROUP_COLUMNS, port_group_rows(groups))
    return 0


def cmd_portgroup_show(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = network_pb2.GetPortGroupRequest(name=args.name)
    console.one(api.network.GetPortGroup(request, timeout=api.timeout))
    return 0


def cmd_portgroup_create(args: argparse.Namespace, api: Api, console: Console) -> int:
    parent, _, pg = args.name.rpartition("/portGroups/")
    request = network_pb2.CreatePortGroupRequest(
        parent=parent,
        port_group_id=pg,
        port_group=network_pb2.PortGroup(
            vlan_id=args.vlan or 0,
            vni=args.vni or 0,
            subnets=args.subnet or [],
            dns_servers=args.dns or [],
            domain=args.domain or "",
            dhcp=args.dhcp,
            description=args.description or "",
        ),
        request_id=args.request_id or str(uuid.uuid4()),
    )
    console.one(api.network.CreatePortGroup(request, timeout=api.timeout))
    return 0


def cmd_portgroup_delete(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = network_pb2.DeletePortGroupRequest(
        name=args.name, request_id=args.request_id or str(uuid.uuid4())
    )
    api.network.DeletePortGroup(request, timeout=api.timeout)
    console.line(f"deleted {request.name}")
    return 0


def nic_name(text: str) -> str:
    return text if text.startswith("nics/") else f"nics/{text}"


def nic_rows(nics: Sequence[network_pb2.VirtualNic]) -> list[list[str]]:
    return [
        [
            n.name.removeprefix("nics/"),
            n.port_group.removeprefix("switches/").replace("/portGroups/", "/"),
            n.mac,
            ",".join(n.ip_addresses) or EMPTY,
            n.vm.removeprefix("vms/") or EMPTY,
            n.host.removeprefix("hosts/") or EMPTY,
        ]
        for n in nics
    ]


def cmd_nic_list(args: argparse.Namespace, api: Api, console: Console) -> int:
    def fetch(token: str) -> tuple[Sequence[network_pb2.VirtualNic], str]:
        r = api.network.ListNics(network_pb2.ListNicsRequest(page_token=token), timeout=api.timeout)
        return r.nics, r.next_page_token

    nics = collect_pages(fetch)
    console.many(nics, NIC_COLUMNS, nic_rows(nics))
    return 0


def cmd_nic_show(args: argparse.Namespace, api: Api, console: Console) -> int:
    console.one(api.network.GetNic(network_pb2.GetNicRequest(name=nic_name(args.name)), timeout=api.timeout))
    return 0


def cmd_nic_create(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = network_pb2.CreateNicRequest(
        nic_id=args.name.removeprefix("nics/"),
        nic=network_pb2.VirtualNic(
            port_group=args.port_group,
            mac=args.mac or "",
            ip_addresses=args.ip or [],
            description=args.description or "",
        ),
        request_id=args.request_id or str(uuid.uuid4()),
    )
    console.one(api.network.CreateNic(request, timeout=api.timeout))
    return 0


def cmd_nic_delete(args: argparse.Namespace, api: Api, console: Console) -> int:
    request_id = args.request_id or str(uuid.uuid4())
    request = network_pb2.DeleteNicRequest(name=nic_name(args.name), request_id=request_id)
    api.network.DeleteNic(request, timeout=api.timeout)
    console.line(f"deleted {request.name}")
    return 0


def cmd_nic_update(args: argparse.Namespace, api: Api, console: Console) -> int:
    nic = network_pb2.VirtualNic(name=nic_name(args.name))
    paths = []
    for key in ("ingress_default", "egress_default", "description"):
        value = getattr(args, key)
        if value is not None:
            setattr(nic, key, value)
            paths.append(key)
    if not paths:
        raise argparse.ArgumentTypeError("give --ingress-default, --egress-default or --description")
    request = network_pb2.UpdateNicRequest(
        nic=nic, update_mask=field_mask_pb2.FieldMask(paths=paths), request_id=str(uuid.uuid4())
    )
    console.one(api.network.UpdateNic(request, timeout=api.timeout))
    return 0


def add_network_nouns(noun: NounFactory) -> None:
    switches = noun("switch", "distributed switches (VLAN or VXLAN) spanning the hosts")
    switches.verb("list", "list the switches", cmd_switch_list)
    switches.verb("show", "show one switch", cmd_switch_show).add_argument("name", metavar="SWITCH")
    create = switches.verb("create", "create a switch", cmd_switch_create)
    create.add_argument("name", metavar="SWITCH")
    create.add_argument("kind", choices=tuple(KINDS))
    create.add_argument(
        "--uplink", required=True, help="the host interface (VLAN: tagged NIC; VXLAN: underlay)"
    )
    create.add_argument(
        "--host-uplink",
        type=host_uplink,
        action="append",
        metavar="HOST=IF",
        help="another uplink on one host",
    )
    create.add_argument("--mtu", type=int, default=0, help="576..9000 (default: the kernel's)")
    create.add_argument("--hosts", type=host_list, metavar="HOST[,HOST...]", help="default: every host")
    create.add_argument("--description")
    create.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    delete = switches.verb("delete", "delete a switch without port groups", cmd_switch_delete)
    delete.add_argument("name", metavar="SWITCH")
    delete.add_argument("--request-id", help="idempotency key (default: a new UUID)")

    groups = noun("portgroup", "port groups: VLANs or VXLAN segments of a switch, with subnets and DHCP")
    groups.verb("list", "list port groups (of one switch, or all)", cmd_portgroup_list).add_argument(
        "switch", nargs="?", metavar="SWITCH"
    )
    groups.verb("show", "show one port group", cmd_portgroup_show).add_argument(
        "name", type=port_group_name, metavar="SWITCH/PORTGROUP"
    )
    create = groups.verb("create", "create a port group", cmd_portgroup_create)
    create.add_argument("name", type=port_group_name, metavar="SWITCH/PORTGROUP")
    segment = create.add_mutually_exclusive_group(required=True)
    segment.add_argument("--vlan", type=int, help="the VLAN id (VLAN switches), 1..4094")
    segment.add_argument("--vni", type=int, help="the VXLAN id (VXLAN switches), 1..16777215")
    create.add_argument(
        "--subnet",
        type=subnet,
        action="append",
        metavar="CIDR[,gw=IP][,range=A-B]",
        help="an IPv4 or IPv6 subnet (repeat for more)",
    )
    create.add_argument("--dns", action="append", metavar="IP", help="a DNS server for DHCP (repeat)")
    create.add_argument("--domain", help="the DNS domain handed by DHCP")
    create.add_argument("--dhcp", action="store_true", help="zsd's DHCP answers the port group's NICs")
    create.add_argument("--description")
    create.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    delete = groups.verb("delete", "delete a port group no NIC uses", cmd_portgroup_delete)
    delete.add_argument("name", type=port_group_name, metavar="SWITCH/PORTGROUP")
    delete.add_argument("--request-id", help="idempotency key (default: a new UUID)")

    nics = noun("nic", "NICs: ports on a port group with their MAC and addresses (vm create --nic nic=NAME)")
    nics.verb("list", "list the NICs, with the VM and host using each", cmd_nic_list)
    nics.verb("show", "show one NIC", cmd_nic_show).add_argument("name", metavar="NIC")
    create = nics.verb("create", "create a NIC (the leader allocates its MAC and addresses)", cmd_nic_create)
    create.add_argument("name", metavar="NIC")
    create.add_argument("port_group", type=port_group_name, metavar="SWITCH/PORTGROUP")
    create.add_argument("--mac", help="default: a unique locally administered one")
    create.add_argument(
        "--ip", action="append", metavar="ADDRESS", help="an address to take (repeat; default: allocated)"
    )
    create.add_argument("--description")
    create.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    update = nics.verb("update", "change a NIC's default policies or description", cmd_nic_update)
    update.add_argument("name", metavar="NIC")
    update.add_argument("--ingress-default", choices=("allow", "deny"), help="when no rule matches (deny)")
    update.add_argument("--egress-default", choices=("allow", "deny"), help="when no rule matches (allow)")
    update.add_argument("--description")
    delete = nics.verb("delete", "delete a NIC no VM uses", cmd_nic_delete)
    delete.add_argument("name", metavar="NIC")
    delete.add_argument("--request-id", help="idempotency key (default: a new UUID)")

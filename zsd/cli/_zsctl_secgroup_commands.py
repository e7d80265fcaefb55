"""zsctl's ``secgroup`` noun: security groups, their rules, export/import, and which
NICs they guard.

    zsctl secgroup create web
    zsctl secgroup rule add web --direction ingress --protocol tcp --ports 80 --remote 0.0.0.0/0
    zsctl secgroup rule insert web 0 --direction ingress --protocol icmp --action deny
    zsctl secgroup rule delete web 1
    zsctl secgroup export web > web.json ; zsctl secgroup import app web.json
    zsctl secgroup attach web1-0 web [--position 0] ; zsctl secgroup detach web1-0 web
    zsctl secgroup hits web [--host h2 | --by-host]
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import field_mask_pb2

from zsd.v1 import network_pb2

from ._zsctl_commands import Api, Console, collect_pages, resource_name
from ._zsctl_output import EMPTY
from ._zsctl_storage_commands import NounFactory

GROUP_COLUMNS = ("NAME", "RULES", "MEMBERS RULE", "NICS", "DESCRIPTION")
RULE_COLUMNS = ("PRIORITY", "DIRECTION", "ETHERTYPE", "PROTOCOL", "PORTS/ICMP", "REMOTE", "ACTION")
HIT_COLUMNS = ("PRIORITY", "DIRECTION", "PACKETS", "BYTES")
HOST_HIT_COLUMNS = ("HOST", *HIT_COLUMNS)


def group_name(text: str) -> str:
    return text if text.startswith("securityGroups/") else f"securityGroups/{text}"


def nic_name(text: str) -> str:
    return text if text.startswith("nics/") else f"nics/{text}"


def ports(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    if not first.isdigit() or (last and not last.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: give PORT or FIRST-LAST")
    return int(first), int(last or first)


def group_rows(groups: Sequence[network_pb2.SecurityGroup]) -> list[list[str]]:
    return [
        [
            g.name.removeprefix("securityGroups/"),
            str(len(g.rules)),
            "on" if g.allow_members else "off",
            str(len(g.nics)),
            g.description or EMPTY,
        ]
        for g in groups
    ]


def rule_rows(rules: Sequence[network_pb2.SecurityGroupRule]) -> list[list[str]]:
    out = []
    for r in rules:
        detail = EMPTY
        if r.port_min:
            detail = str(r.port_min) if r.port_min == r.port_max else f"{r.port_min}-{r.port_max}"
        elif r.HasField("icmp_type"):
            detail = f"type {r.icmp_type}" + (f" code {r.icmp_code}" if r.HasField("icmp_code") else "")
        remote = r.remote_group.removeprefix("securityGroups/") or r.remote_cidr or "any"
        out.append([str(r.priority), r.direction, r.ethertype, r.protocol, detail, remote, r.action])
    return out


def _rule(args: argparse.Namespace) -> network_pb2.SecurityGroupRule:
    rule = network_pb2.SecurityGroupRule(
        direction=args.direction,
        ethertype=args.ethertype or "",
        protocol=args.protocol or "",
        remote_cidr=args.remote or "",
        remote_group=group_name(args.remote_group) if args.remote_group else "",
        action=args.action or "",
        description=args.description or "",
    )
    if args.ports:
        rule.port_min, rule.port_max = args.ports
    if args.icmp_type is not None:
        rule.icmp_type = args.icmp_type
    if args.icmp_code is not None:
        rule.icmp_code = args.icmp_code
    return rule


def _rid(args: argparse.Namespace) -> str:
    return getattr(args, "request_id", None) or str(uuid.uuid4())


def cmd_secgroup_list(args: argparse.Namespace, api: Api, console: Console) -> int:
    def fetch(token: str) -> tuple[Sequence[network_pb2.SecurityGroup], str]:
        r = api.network.ListSecurityGroups(
            network_pb2.ListSecurityGroupsRequest(page_token=token), timeout=api.timeout
        )
        return r.security_groups, r.next_page_token

    groups = collect_pages(fetch)
    console.many(groups, GROUP_COLUMNS, group_rows(groups))
    return 0


def cmd_secgroup_show(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = network_pb2.GetSecurityGroupRequest(name=group_name(args.name))
    console.one(api.network.GetSecurityGroup(request, timeout=api.timeout))
    return 0


def cmd_secgroup_create(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = network_pb2.CreateSecurityGroupRequest(
        security_group_id=args.name.removeprefix("securityGroups/"),
        security_group=network_pb2.SecurityGroup(
            description=args.description or "", allow_members_disabled=args.no_members_rule
        ),
        request_id=_rid(args),
    )
    console.one(api.network.CreateSecurityGroup(request, timeout=api.timeout))
    return 0


def cmd_secgroup_delete(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = network_pb2.DeleteSecurityGroupRequest(name=group_name(args.name), request_id=_rid(args))
    api.network.DeleteSecurityGroup(request, timeout=api.timeout)
    console.line(f"deleted {request.name}")
    return 0


def cmd_secgroup_members_rule(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = network_pb2.UpdateSecurityGroupRequest(
        security_group=network_pb2.SecurityGroup(
            name=group_name(args.name), allow_members=args.state == "on"
        ),
        update_mask=field_mask_pb2.FieldMask(paths=["allow_members"]),
        request_id=_rid(args),
    )
    console.one(api.network.UpdateSecurityGroup(request, timeout=api.timeout))
    return 0


def cmd_rule_list(args: argparse.Namespace, api: Api, console: Console) -> int:
    group = api.network.GetSecurityGroup(
        network_pb2.GetSecurityGroupRequest(name=group_name(args.name)), timeout=api.timeout
    )
    console.many(group.rules, RULE_COLUMNS, rule_rows(group.rules))
    return 0


def cmd_rule_add(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = network_pb2.AddSecurityGroupRuleRequest(
        name=group_name(args.name), rule=_rule(args), request_id=_rid(args)
    )
    if getattr(args, "priority", None) is not None:
        request.priority = args.priority
    console.one(api.network.AddSecurityGroupRule(request, timeout=api.timeout))
    return 0


def cmd_rule_delete(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = network_pb2.DeleteSecurityGroupRuleRequest(
        name=group_name(args.name), priority=args.priority, request_id=_rid(args)
    )
    console.one(api.network.DeleteSecurityGroupRule(request, timeout=api.timeout))
    return 0


def cmd_secgroup_export(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = network_pb2.ExportSecurityGroupRulesRequest(name=group_name(args.name))
    sys.stdout.write(api.network.ExportSecurityGroupRules(request, timeout=api.timeout).json)
    return 0


def cmd_secgroup_import(args: argparse.Namespace, api: Api, console: Console) -> int:
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    request = network_pb2.ImportSecurityGroupRulesRequest(
        name=group_name(args.name), json=text, request_id=_rid(args)
    )
    console.one(api.network.ImportSecurityGroupRules(request, timeout=api.timeout))
    return 0


def _set_groups(api: Api, nic: str, change: object) -> network_pb2.VirtualNic:
    current = api.network.GetNic(network_pb2.GetNicRequest(name=nic), timeout=api.timeout)
    groups = list(current.security_groups)
    assert callable(change)
    change(groups)
    request = network_pb2.UpdateNicRequest(
        nic=network_pb2.VirtualNic(name=nic, security_groups=groups),
        update_mask=field_mask_pb2.FieldMask(paths=["security_groups"]),
        request_id=str(uuid.uuid4()),
    )
    return api.network.UpdateNic(request, timeout=api.timeout)


def cmd_secgroup_attach(args: argparse.Namespace, api: Api, console: Console) -> int:
    group = group_name(args.group)

    def attach(groups: list[str]) -> None:
        if group in groups:
            groups.remove(group)
        groups.insert(len(groups) if args.position is None else args.position, group)

    console.one(_set_groups(api, nic_name(args.nic), attach))
    return 0


def cmd_secgroup_detach(args: argparse.Namespace, api: Api, console: Console) -> int:
    group = group_name(args.group)

    def detach(groups: list[str]) -> None:
        if group not in groups:
            raise SystemExit(f"error: {args.nic} is not in {group}")
        groups.remove(group)

    console.one(_set_groups(api, nic_name(args.nic), detach))
    return 0


def hit_rows(hits: Sequence[network_pb2.SecurityGroupHit]) -> list[list[str]]:
    return [
        ["members" if h.priority < 0 else str(h.priority), h.direction, str(h.packets), str(h.bytes)]
        for h in hits
    ]


def hosts_footer(response: network_pb2.ListSecurityGroupHitsResponse) -> list[str]:
    """Which hosts the counters come from, and which are not in them (and why)."""
    counted = [h.removeprefix("hosts/") for h in response.hosts]
    lines = [
        f"counted on {len(counted)} host{'s' if len(counted) != 1 else ''}: {', '.join(counted) or EMPTY}"
    ]
    lines += [
        f"missing {m.host.removeprefix('hosts/')}: {m.reason}: {m.message}" for m in response.missing_hosts
    ]
    return lines


def cmd_secgroup_hits(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = network_pb2.ListSecurityGroupHitsRequest(
        name=group_name(args.name),
        host=resource_name("hosts", args.host) if args.host else "",
        by_host=args.by_host,
    )
    response = api.network.ListSecurityGroupHits(request, timeout=api.timeout)
    if console.fmt != "table":
        console.one(response)
    elif args.by_host:
        rows = [[h.host.removeprefix("hosts/"), *row] for h in response.host_hits for row in hit_rows(h.hits)]
        console.many(response.host_hits, HOST_HIT_COLUMNS, rows)
    else:
        console.many(response.hits, HIT_COLUMNS, hit_rows(response.hits))
    if console.fmt == "table":
        for line in hosts_footer(response):
            console.line(line)
    # Nothing counted because no host answered is a failure; a group no VM uses counts nothing too.
    return 1 if response.missing_hosts and not response.hosts else 0


def _rule_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--direction", required=True, choices=("ingress", "egress"))
    parser.add_argument("--ethertype", choices=("ipv4", "ipv6"), help="default ipv4")
    parser.add_argument("--protocol", choices=("any", "icmp", "icmpv6", "tcp", "udp"), help="default any")
    parser.add_argument("--ports", type=ports, metavar="PORT[-PORT]", help="tcp/udp destination ports")
    parser.add_argument("--icmp-type", type=int)
    parser.add_argument("--icmp-code", type=int)
    remote = parser.add_mutually_exclusive_group()
    remote.add_argument("--remote", metavar="CIDR", help="the other end (default: anywhere)")
    remote.add_argument("--remote-group", metavar="GROUP", help="the other end: the group's members")
    parser.add_argument("--action", choices=("allow", "deny"), help="default allow")
    parser.add_argument("--description")


def add_secgroup_noun(noun: NounFactory) -> None:
    groups = noun("secgroup", "security groups: stateful rules enforced on NICs by every host")
    groups.verb("list", "list the security groups", cmd_secgroup_list)
    groups.verb("show", "show a group with its rules and NICs", cmd_secgroup_show).add_argument(
        "name", metavar="GROUP"
    )
    create = groups.verb("create", "create a group (no rules; the members rule on)", cmd_secgroup_create)
    create.add_argument("name", metavar="GROUP")
    create.add_argument("--no-members-rule", action="store_true", help="start with the built-in rule off")
    create.add_argument("--description")
    groups.verb("delete", "delete a group no NIC or rule uses", cmd_secgroup_delete).add_argument(
        "name", metavar="GROUP"
    )
    members = groups.verb(
        "members-rule", "turn the built-in 'allow between members' rule on or off", cmd_secgroup_members_rule
    )
    members.add_argument("name", metavar="GROUP")
    members.add_argument("state", choices=("on", "off"))

    rules = groups.verb("rule", "a group's rules: add, insert, delete, list", cmd_rule_list)
    verbs = rules.add_subparsers(dest="rule_verb", metavar="RULE-VERB", required=True)
    listing = verbs.add_parser("list", help="the rules in priority order")
    listing.add_argument("name", metavar="GROUP")
    listing.set_defaults(handler=cmd_rule_list)
    add = verbs.add_parser("add", help="add a rule last")
    add.add_argument("name", metavar="GROUP")
    _rule_arguments(add)
    add.set_defaults(handler=cmd_rule_add)
    insert = verbs.add_parser("insert", help="insert a rule at PRIORITY (later ones shift down)")
    insert.add_argument("name", metavar="GROUP")
    insert.add_argument("priority", type=int)
    _rule_arguments(insert)
    insert.set_defaults(handler=cmd_rule_add)
    delete = verbs.add_parser("delete", help="delete the rule at PRIORITY (later ones shift up)")
    delete.add_argument("name", metavar="GROUP")
    delete.add_argument("priority", type=int)
    delete.set_defaults(handler=cmd_rule_delete)

    groups.verb("export", "print the group's rules as JSON", cmd_secgroup_export).add_argument(
        "name", metavar="GROUP"
    )
    imported = groups.verb("import", "replace the group's rules with a JSON document", cmd_secgroup_import)
    imported.add_argument("name", metavar="GROUP")
    imported.add_argument("file", metavar="FILE", help="'-' for standard input")
    attach = groups.verb("attach", "add the group to a NIC (last, or at --position)", cmd_secgroup_attach)
    attach.add_argument("nic", metavar="NIC")
    attach.add_argument("group", metavar="GROUP")
    attach.add_argument("--position", type=int, help="0: evaluated first")
    detach = groups.verb("detach", "remove the group from a NIC", cmd_secgroup_detach)
    detach.add_argument("nic", metavar="NIC")
    detach.add_argument("group", metavar="GROUP")
    hits = groups.verb(
        "hits",
        "per-rule hit counters summed over the hosts running the group's NICs "
        "(exit 1 when none of them answered)",
        cmd_secgroup_hits,
    )
    hits.add_argument("name", metavar="GROUP")
    where = hits.add_mutually_exclusive_group()
    where.add_argument("--host", metavar="HOST", help="one host's counters only ('-': the serving host)")
    where.add_argument("--by-host", action="store_true", help="each host's counters on its own rows")

"""zsctl's ``policy`` noun: VM scheduling policies (create, list, show, delete).

A policy binds a VM scheduling group (``vm create --group G``) to a rule:
``vm-exclusive`` (different hosts), ``vm-aggregate`` (one host), ``host-affinity`` or
``host-exclusion`` (with ``--hosts``), each ``--mode mandatory`` (the default: a
filter) or ``preferred`` (a weight).
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Sequence

from zsd.v1 import scheduling_pb2

from ._zsctl_commands import Api, Console, collect_pages
from ._zsctl_output import EMPTY
from ._zsctl_storage_commands import NounFactory

_Policy = scheduling_pb2.SchedulingPolicy
KINDS = {
    "vm-exclusive": _Policy.VM_EXCLUSIVE,
    "vm-aggregate": _Policy.VM_AGGREGATE,
    "host-affinity": _Policy.HOST_AFFINITY,
    "host-exclusion": _Policy.HOST_EXCLUSION,
}
MODES = {"mandatory": _Policy.MANDATORY, "preferred": _Policy.PREFERRED}
COLUMNS = ("NAME", "KIND", "MODE", "VM GROUP", "HOSTS", "VMS", "VIOLATIONS")


def policy_name(text: str) -> str:
    return text if text.startswith("schedulingPolicies/") else f"schedulingPolicies/{text}"


def host_list(text: str) -> list[str]:
    hosts = [h.strip() for h in text.split(",") if h.strip()]
    if not hosts:
        raise argparse.ArgumentTypeError("give at least one host: HOST[,HOST...]")
    return [h if h.startswith("hosts/") else f"hosts/{h}" for h in hosts]


def rows(policies: Sequence[scheduling_pb2.SchedulingPolicy]) -> list[list[str]]:
    kinds = {v: k for k, v in KINDS.items()}
    modes = {v: k for k, v in MODES.items()}
    return [
        [
            p.name.removeprefix("schedulingPolicies/"),
            kinds.get(p.kind, EMPTY),
            modes.get(p.mode, EMPTY),
            p.vm_group,
            ",".join(h.removeprefix("hosts/") for h in p.host_group) or EMPTY,
            str(len(p.vms)),
            str(len(p.violations)),
        ]
        for p in policies
    ]


def cmd_policy_list(args: argparse.Namespace, api: Api, console: Console) -> int:
    def fetch(token: str) -> tuple[Sequence[scheduling_pb2.SchedulingPolicy], str]:
        r = api.scheduling.ListSchedulingPolicies(
            scheduling_pb2.ListSchedulingPoliciesRequest(page_token=token), timeout=api.timeout
        )
        return r.policies, r.next_page_token

    policies = collect_pages(fetch)
    console.many(policies, COLUMNS, rows(policies))
    return 0


def cmd_policy_show(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = scheduling_pb2.GetSchedulingPolicyRequest(name=policy_name(args.name))
    console.one(api.scheduling.GetSchedulingPolicy(request, timeout=api.timeout))
    return 0


def cmd_policy_create(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = scheduling_pb2.CreateSchedulingPolicyRequest(
        policy_id=args.name.removeprefix("schedulingPolicies/"),
        policy=scheduling_pb2.SchedulingPolicy(
            kind=KINDS[args.kind],
            mode=MODES[args.mode],
            vm_group=args.group,
            host_group=args.hosts or [],
            description=args.description or "",
        ),
        request_id=args.request_id or str(uuid.uuid4()),
    )
    console.one(api.scheduling.CreateSchedulingPolicy(request, timeout=api.timeout))
    return 0


def cmd_policy_delete(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = scheduling_pb2.DeleteSchedulingPolicyRequest(
        name=policy_name(args.name), request_id=args.request_id or str(uuid.uuid4())
    )
    api.scheduling.DeleteSchedulingPolicy(request, timeout=api.timeout)
    console.line(f"deleted {request.name}")
    return 0


def add_policy_noun(noun: NounFactory) -> None:
    policies = noun("policy", "VM scheduling policies")
    policies.verb("list", "list the scheduling policies", cmd_policy_list)
    policies.verb(
        "show", "show one policy, its group's VMs and any violations", cmd_policy_show
    ).add_argument("name", metavar="POLICY")
    create = policies.verb("create", "bind a VM scheduling group to a placement rule", cmd_policy_create)
    create.add_argument("name", metavar="POLICY")
    create.add_argument("kind", choices=tuple(KINDS))
    create.add_argument("--group", required=True, help="the VM scheduling group (vm create --group)")
    create.add_argument(
        "--hosts", type=host_list, metavar="HOST[,HOST...]", help="the host group (host-* kinds)"
    )
    create.add_argument("--mode", choices=tuple(MODES), default="mandatory")
    create.add_argument("--description")
    create.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    delete = policies.verb("delete", "delete a policy (VMs stay where they run)", cmd_policy_delete)
    delete.add_argument("name", metavar="POLICY")
    delete.add_argument("--request-id", help="idempotency key (default: a new UUID)")

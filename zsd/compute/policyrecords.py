"""The cluster's scheduling policies: one ``vmpolicy`` record per policy in cluster.db,
written by the leader after ``check_policy``, read by every placement (the leader's
CreateVm, and each host choosing where to migrate or evacuate a VM)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from zsd.cluster.store.model import Record
from zsd.compute.placement.policies import Policy
from zsd.errors import Internal

KIND_POLICY = "vmpolicy"


@dataclass(frozen=True, kw_only=True)
class PolicyRecord:
    policy: Policy
    description: str = ""
    create_time: float = 0.0

    def encode(self) -> bytes:
        p = self.policy
        return json.dumps(
            {
                "name": p.name,
                "kind": p.kind,
                "mode": p.mode,
                "vm_group": p.vm_group,
                "host_group": sorted(p.host_group),
                "description": self.description,
                "create_time": self.create_time,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> PolicyRecord:
        try:
            doc = json.loads(data)
            return cls(
                policy=Policy(
                    name=str(doc["name"]),
                    kind=str(doc["kind"]),
                    mode=str(doc["mode"]),
                    vm_group=str(doc["vm_group"]),
                    host_group=frozenset(str(h) for h in doc.get("host_group", ())),
                ),
                description=str(doc.get("description", "")),
                create_time=float(doc.get("create_time", 0.0)),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise Internal(f"damaged scheduling policy record in the cluster state: {e}") from e


def decode_all(records: Iterable[Record]) -> list[PolicyRecord]:
    return [PolicyRecord.decode(r.data) for r in records]


def policies(records: Iterable[Record]) -> list[Policy]:
    """What the placement engine takes."""
    return [p.policy for p in decode_all(records)]

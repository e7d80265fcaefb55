"""Security groups in cluster.db: one ``secgroup`` record per group, its rules kept in
the export document format (``zsd.network.secgroups.transfer``), so what is stored
is exactly what an export shows and an import takes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from zsd.cluster.store.model import Record
from zsd.errors import Internal, InvalidArgument
from zsd.network.secgroups.group import SecurityGroup, new_group
from zsd.network.secgroups.transfer import export_rules, parse_rules

KIND_SECGROUP = "secgroup"


@dataclass(frozen=True, kw_only=True)
class GroupRecord:
    group: SecurityGroup
    create_time: float = 0.0

    def encode(self) -> bytes:
        return json.dumps(
            {
                "name": self.group.name,
                "description": self.group.description,
                "create_time": self.create_time,
                "document": export_rules(self.group),
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> GroupRecord:
        try:
            doc: dict[str, Any] = json.loads(data)
            text = str(doc["document"])
            # Remote groups were checked when the rules were stored.
            remotes = {r["remote_group"] for r in json.loads(text)["rules"] if "remote_group" in r}
            parsed = parse_rules(text, known_groups={*remotes, str(doc["name"])})
            group = new_group(
                str(doc["name"]),
                parsed.rules,
                known_groups={*remotes, str(doc["name"])},
                allow_members=parsed.allow_members if parsed.allow_members is not None else True,
                description=str(doc.get("description", "")),
            )
            return cls(group=group, create_time=float(doc.get("create_time", 0.0)))
        except (ValueError, KeyError, TypeError, InvalidArgument) as e:
            raise Internal(f"damaged security group record in the cluster state: {e}") from e


def decode_all(records: Iterable[Record]) -> list[GroupRecord]:
    return [GroupRecord.decode(r.data) for r in records]

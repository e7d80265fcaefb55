"""What the cluster state (cluster.db, and each host's copy) holds about hosts.

Two kinds per host, written only by the leader:

- ``host``: the membership entry (name, stable host id, identity, address, labels),
  written at init/join, by UpdateHost (labels) and removed by DeleteHost;
- ``hoststatus``: the host's own view of itself (an encoded ``zsd.v1.Host``:
  inventory, state, version), which each host reports through the leader when it
  changes, so any host can list every host from its local copy.

Payloads are JSON for ``host`` (small, read by people with sqlite3 when things go
wrong) and protobuf for ``hoststatus`` (it is the API message already).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from zsd.errors import Internal

KIND_HOST = "host"
KIND_HOST_STATUS = "hoststatus"
KIND_CLUSTER = "cluster"
KIND_JOIN_TOKEN = "join_token"
KIND_HOST_ID = "host_id"
"""One per allocated sanlock host id (named by the id): the store's uniqueness of names
is what keeps two joins from getting the same id."""
MAX_HOST_ID = 2000
"""sanlock's host ids are 1..2000."""


@dataclass(frozen=True, kw_only=True)
class HostEntry:
    name: str
    host_id: int
    uid: str = ""
    """zsd's host identity (host.json): the same machine joining again keeps its id."""
    address: str = ""
    labels: tuple[tuple[str, str], ...] = field(default=())
    """Sorted by key."""
    joined_at: float = 0.0

    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    def encode(self) -> bytes:
        return json.dumps(
            {
                "name": self.name,
                "host_id": self.host_id,
                "uid": self.uid,
                "address": self.address,
                "labels": dict(self.labels),
                "joined_at": self.joined_at,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> HostEntry:
        try:
            doc = json.loads(data)
            return cls(
                name=str(doc["name"]),
                host_id=int(doc["host_id"]),
                uid=str(doc.get("uid", "")),
                address=str(doc.get("address", "")),
                labels=tuple(sorted((str(k), str(v)) for k, v in dict(doc.get("labels", {})).items())),
                joined_at=float(doc.get("joined_at", 0.0)),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise Internal(f"damaged host entry in the cluster state: {e}") from e


def free_host_id(taken: set[int]) -> int | None:
    """The lowest host id not in ``taken``; None when all sanlock ids are used."""
    return next((i for i in range(1, MAX_HOST_ID + 1) if i not in taken), None)

"""``leader.json`` on shared storage: where the current leader's API listens.

Written by each new leader right after it opened cluster.db; read by hosts that
do not know the cluster's members yet (a joining host, a follower with an empty
state copy). Only a hint: the leader lease is the truth, so readers check the
hint's epoch against the lease (or simply get NOT_LEADER and read it again).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from zsd.errors import Unavailable
from zsd.util.fsutil import write_atomic

HINT_FILE = "leader.json"


@dataclass(frozen=True, kw_only=True)
class LeaderHint:
    host_id: int
    host_name: str
    endpoint: str
    """``IP:PORT`` of the leader's mutual-TLS API listener (peers use the same one)."""
    epoch: int


def write_hint(shared_dir: Path, hint: LeaderHint) -> None:
    write_atomic(shared_dir / HINT_FILE, json.dumps(asdict(hint), indent=2).encode(), mode=0o644)


def read_hint(shared_dir: Path) -> LeaderHint:
    """Unavailable NO_LEADER_HINT when no leader has written one (or it is damaged)."""
    path = shared_dir / HINT_FILE
    try:
        doc = json.loads(path.read_text())
        return LeaderHint(
            host_id=int(doc["host_id"]),
            host_name=str(doc["host_name"]),
            endpoint=str(doc["endpoint"]),
            epoch=int(doc["epoch"]),
        )
    except FileNotFoundError:
        raise Unavailable(
            f"no leader has announced itself in {path} yet; is zsd running on a member?",
            reason="NO_LEADER_HINT",
        ) from None
    except (ValueError, KeyError, TypeError) as e:
        raise Unavailable(
            f"{path} is damaged ({e}); the next leader rewrites it", reason="NO_LEADER_HINT"
        ) from e

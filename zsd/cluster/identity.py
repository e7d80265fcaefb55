"""Stable identities: this host's and the cluster's, created on first start."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from zsd.errors import FailedPrecondition
from zsd.util.fsutil import write_atomic


@dataclass(frozen=True, kw_only=True)
class HostIdentity:
    uid: str
    host_id: int
    created: float


@dataclass(frozen=True, kw_only=True)
class ClusterIdentity:
    uid: str
    name: str
    created: float


def _load(path: Path) -> dict[str, object] | None:
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        # Never overwrite: a damaged identity file needs a person, not a new identity.
        raise FailedPrecondition(
            f"{path} is damaged ({e}); restore it from backup or move it away to create a new identity",
            reason="IDENTITY_DAMAGED",
            field=str(path),
        ) from e
    if not isinstance(doc, dict):
        raise FailedPrecondition(
            f"{path} does not hold a JSON object", reason="IDENTITY_DAMAGED", field=str(path)
        )
    return doc


def host_identity(path: Path) -> HostIdentity:
    doc = _load(path)
    if doc is None:
        # A cluster of one: host id 1. Joining a cluster (cluster issue) assigns the real id.
        ident = HostIdentity(uid=str(uuid.uuid4()), host_id=1, created=time.time())
        write_atomic(path, json.dumps(asdict(ident), indent=2).encode())
        return ident
    try:
        return HostIdentity(
            uid=str(doc["uid"]), host_id=int(str(doc["host_id"])), created=float(str(doc["created"]))
        )
    except (KeyError, ValueError) as e:
        raise FailedPrecondition(
            f"{path} lacks a valid {e}", reason="IDENTITY_DAMAGED", field=str(path)
        ) from e


def cluster_identity(path: Path, *, default_name: str) -> ClusterIdentity:
    doc = _load(path)
    if doc is None:
        ident = ClusterIdentity(uid=str(uuid.uuid4()), name=default_name, created=time.time())
        write_atomic(path, json.dumps(asdict(ident), indent=2).encode())
        return ident
    try:
        return ClusterIdentity(uid=str(doc["uid"]), name=str(doc["name"]), created=float(str(doc["created"])))
    except (KeyError, ValueError) as e:
        raise FailedPrecondition(
            f"{path} lacks a valid {e}", reason="IDENTITY_DAMAGED", field=str(path)
        ) from e

"""Where a file-based pool keeps things, below its root:

.zsd-pool                 marker: which pool this directory is (uid, name)
.zsd-pool.hosts/<host>    each host that verified it sees this pool, and when
images/<name>.json        image records; data in images/<uid>.<format>
cache/<sha256>.<format>   read-only bases of linked volumes (one per image content)
volumes/<name>.json       volume records; layers in volumes/<uid>/<layer>.qcow2
.zsd/journal/<op>.json    multi-step operations in progress (see journal)
.zsd/tmp/                 files being written (renamed into place when complete)
.zsd/locks/               lock files (fcntl; works across hosts on NFSv4/CephFS/GFS2)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from zsd.errors import FailedPrecondition
from zsd.util.fsutil import write_atomic

MARKER = ".zsd-pool"


@dataclass(frozen=True)
class PoolFiles:
    root: Path

    @property
    def marker(self) -> Path:
        return self.root / MARKER

    @property
    def hosts_dir(self) -> Path:
        return self.root / f"{MARKER}.hosts"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    @property
    def journal(self) -> Path:
        return self.root / ".zsd" / "journal"

    @property
    def tmp(self) -> Path:
        return self.root / ".zsd" / "tmp"

    @property
    def locks(self) -> Path:
        return self.root / ".zsd" / "locks"

    def image_record(self, name: str) -> Path:
        return self.images / f"{name}.json"

    def volume_record(self, name: str) -> Path:
        return self.volumes / f"{name}.json"

    def volume_dir(self, uid: str) -> Path:
        return self.volumes / uid

    def layer(self, volume_uid: str, layer_id: str) -> Path:
        return self.volumes / volume_uid / f"{layer_id}.qcow2"

    def make_dirs(self) -> None:
        for d in (self.images, self.cache, self.volumes, self.journal, self.tmp, self.locks, self.hosts_dir):
            d.mkdir(parents=True, exist_ok=True)

    def read_marker(self) -> dict[str, str] | None:
        try:
            data = json.loads(self.marker.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise FailedPrecondition(f"{self.marker} is unreadable: {e}", reason="POOL_MARKER") from e
        return {str(k): str(v) for k, v in data.items()}

    def write_marker(self, *, uid: str, name: str, host: str, now: float) -> None:
        """Written once, exclusively: two pools can never claim one directory."""
        data = json.dumps({"uid": uid, "name": name, "created_by": host, "create_time": now}).encode()
        fd = os.open(self.marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def check_marker(self, *, uid: str, name: str) -> None:
        found = self.read_marker()
        if found is None:
            raise FailedPrecondition(
                f"{self.root} has no {MARKER} marker: it is not pool {name!r} as this host sees it "
                "(for a shared pool: is the filesystem mounted here?)",
                reason="POOL_MARKER_MISSING",
            )
        if found.get("uid") != uid:
            raise FailedPrecondition(
                f"{self.root} holds pool {found.get('name')!r} (uid {found.get('uid')}), not pool "
                f"{name!r} (uid {uid}): this host does not see the same storage",
                reason="POOL_MARKER_MISMATCH",
            )

    def record_host(self, host: str, now: float) -> None:
        write_atomic(
            self.hosts_dir / f"{host}.json", json.dumps({"host": host, "seen": now}).encode(), mode=0o644
        )

    def hosts_seen(self) -> dict[str, float]:
        seen: dict[str, float] = {}
        for path in sorted(self.hosts_dir.glob("*.json")):
            try:
                data = json.loads(path.read_bytes())
                seen[str(data["host"])] = float(data["seen"])
            except (OSError, ValueError, KeyError):
                continue  # being rewritten, or junk: the host reports again
        return seen

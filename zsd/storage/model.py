"""The storage records: what a pool holds, as frozen dataclasses with a JSON form.

Images and volumes are described by small JSON files inside the pool itself
(next to their data), so a shared pool describes itself to every host that
mounts it, and a record and its data can never belong to different clusters.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


class PoolKind(enum.Enum):
    LOCAL_DIR = "local-dir"
    SHARED_FS = "shared-fs"
    SHARED_BLOCK = "shared-block"


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What a pool driver can do; the API refuses what a pool cannot."""

    shared: bool
    """Every host sees the same data (a VM on it can run or move anywhere)."""
    thin: bool
    snapshots: bool
    linked_clones: bool
    images: bool
    """It can hold an image store and an image cache."""


@dataclass(frozen=True, kw_only=True)
class Capacity:
    size: int
    used: int
    free: int
    provisioned: int
    """Sum of the virtual sizes of the pool's volumes."""

    @property
    def overcommit(self) -> float:
        return self.provisioned / self.size if self.size else 0.0


@dataclass(frozen=True, kw_only=True)
class Qos:
    """Per-volume I/O limits, token-bucket style as QEMU throttles them: a *_max
    burst may be used for up to *_max_length seconds, then the base rate refills it.
    0 means unlimited."""

    total_iops: int = 0
    read_iops: int = 0
    write_iops: int = 0
    total_bytes_per_sec: int = 0
    read_bytes_per_sec: int = 0
    write_bytes_per_sec: int = 0
    total_iops_max: int = 0
    read_iops_max: int = 0
    write_iops_max: int = 0
    total_bytes_per_sec_max: int = 0
    read_bytes_per_sec_max: int = 0
    write_bytes_per_sec_max: int = 0
    burst_seconds: int = 0
    """How long a burst may last (QEMU's *_max_length for every limit with a max)."""

    @property
    def unlimited(self) -> bool:
        return all(getattr(self, f.name) == 0 for f in fields(self))


@dataclass(frozen=True, kw_only=True)
class ImageRecord:
    name: str
    uid: str
    format: str
    virtual_size: int
    size: int
    """Bytes of the image file."""
    sha256: str
    source: str
    create_time: float
    description: str = ""

    @property
    def data_name(self) -> str:
        return f"{self.uid}.{self.format}"


@dataclass(frozen=True, kw_only=True)
class Layer:
    """One qcow2 file of a volume's chain. The bottom layer has no parent (it is
    backed by the volume's base image, if any)."""

    id: str
    parent: str | None
    create_time: float


@dataclass(frozen=True, kw_only=True)
class SnapshotRecord:
    name: str
    layer: str
    """The (frozen) layer whose chain holds the snapshot's content."""
    parent: str | None
    """The snapshot this one was taken after (the volume's current snapshot then)."""
    create_time: float
    description: str = ""
    deleting: bool = False
    """A delete started (and may have merged part of the layer away): the snapshot can
    no longer be reverted to or copied, only deleted (again)."""


@dataclass(frozen=True, kw_only=True)
class BaseImage:
    """A linked volume's read-only base in the pool's image cache."""

    sha256: str
    format: str
    image: str
    """The image it was created from (may since have been deleted; the cache copy stays)."""

    @property
    def cache_name(self) -> str:
        return f"{self.sha256}.{self.format}"


@dataclass(frozen=True, kw_only=True)
class VolumeRecord:
    name: str
    uid: str
    virtual_size: int
    create_time: float
    active: str
    """Id of the layer the guest writes to."""
    layers: tuple[Layer, ...]
    snapshots: tuple[SnapshotRecord, ...] = ()
    current_snapshot: str | None = None
    base: BaseImage | None = None
    qos: Qos = field(default_factory=Qos)
    attached_to: tuple[str, ...] = ()
    description: str = ""

    def layer(self, layer_id: str) -> Layer:
        return next(x for x in self.layers if x.id == layer_id)

    def children(self, layer_id: str) -> tuple[Layer, ...]:
        return tuple(x for x in self.layers if x.parent == layer_id)

    def snapshot(self, name: str) -> SnapshotRecord | None:
        return next((s for s in self.snapshots if s.name == name), None)

    def chain(self, top: str) -> tuple[Layer, ...]:
        """``top`` and its ancestors, top first."""
        out = []
        current: str | None = top
        while current is not None:
            layer = self.layer(current)
            out.append(layer)
            current = layer.parent
        return tuple(out)


def encode(record: ImageRecord | VolumeRecord) -> bytes:
    return json.dumps(asdict(record), sort_keys=True, indent=1).encode()


def decode_image(data: bytes) -> ImageRecord:
    return ImageRecord(**json.loads(data))


def decode_volume(data: bytes) -> VolumeRecord:
    raw: dict[str, Any] = json.loads(data)
    base = raw.pop("base")
    return VolumeRecord(
        **{k: v for k, v in raw.items() if k not in ("layers", "snapshots", "qos", "attached_to")},
        layers=tuple(Layer(**x) for x in raw["layers"]),
        snapshots=tuple(SnapshotRecord(**x) for x in raw["snapshots"]),
        base=BaseImage(**base) if base is not None else None,
        qos=Qos(**raw["qos"]),
        attached_to=tuple(raw["attached_to"]),
    )

"""Storage records <-> zsd.v1 storage messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields

from zsd.api.convert import timestamp
from zsd.errors import InvalidArgument
from zsd.storage.host import PoolView
from zsd.storage.model import ImageRecord, PoolKind, Qos, SnapshotRecord, VolumeRecord
from zsd.storage.pools.base import DEFAULT_MAX_OVERCOMMIT, PoolSpec, PoolState, PoolStatus
from zsd.v1 import host_pb2, storage_pb2

POOL_KINDS = {
    PoolKind.LOCAL_DIR: storage_pb2.Pool.LOCAL_DIR,
    PoolKind.SHARED_FS: storage_pb2.Pool.SHARED_FS,
    PoolKind.SHARED_BLOCK: storage_pb2.Pool.SHARED_BLOCK,
}
_POOL_STATES = {
    PoolState.ACTIVE: storage_pb2.Pool.ACTIVE,
    PoolState.INACTIVE: storage_pb2.Pool.INACTIVE,
    PoolState.ERROR: storage_pb2.Pool.ERROR,
}
FORMATS = {"qcow2": storage_pb2.QCOW2, "raw": storage_pb2.RAW}


def pool_kind(value: int) -> PoolKind:
    for kind, number in POOL_KINDS.items():
        if number == value:
            return kind
    raise InvalidArgument(
        "pool.kind must be LOCAL_DIR, SHARED_FS or SHARED_BLOCK", field="pool.kind", reason="BAD_POOL_KIND"
    )


def image_format(value: int) -> str | None:
    """None for IMAGE_FORMAT_UNSPECIFIED (detect)."""
    if value == storage_pb2.IMAGE_FORMAT_UNSPECIFIED:
        return None
    for name, number in FORMATS.items():
        if number == value:
            return name
    raise InvalidArgument(f"unknown image format {value}", field="format")


def pool_definition(spec: PoolSpec) -> storage_pb2.Pool:
    """The definition alone (what a forwarded CreatePool/UpdatePool carries to the leader)."""
    return storage_pb2.Pool(
        name=f"pools/{spec.name}",
        uid=spec.uid,
        kind=POOL_KINDS[spec.kind],
        path=spec.path,
        host=spec.host,
        vg_name=spec.vg_name,
        wwids=list(spec.wwids),
        max_overcommit=spec.max_overcommit,
        description=spec.description,
        create_time=timestamp(spec.create_time),
    )


def pool_spec(name: str, msg: storage_pb2.Pool) -> PoolSpec:
    """The inverse of ``pool_definition``, on the leader."""
    if not msg.uid:
        raise InvalidArgument("a forwarded pool definition must carry its uid", field="pool.uid")
    return PoolSpec(
        name=name,
        uid=msg.uid,
        kind=pool_kind(msg.kind),
        path=msg.path,
        host=msg.host,
        vg_name=msg.vg_name,
        wwids=tuple(msg.wwids),
        max_overcommit=msg.max_overcommit or DEFAULT_MAX_OVERCOMMIT,
        create_time=msg.create_time.ToNanoseconds() / 1e9,
        description=msg.description,
    )


def pool(view: PoolView, reports: Mapping[str, host_pb2.HostPool] | None = None) -> storage_pb2.Pool:
    """``reports``: host name -> that host's report of this pool."""
    msg = pool_definition(view.spec)
    msg.state = _POOL_STATES[view.status.state]
    msg.state_reason = view.status.reason
    msg.state_message = view.status.message
    if view.capacity is not None:
        cap = view.capacity
        msg.capacity.CopyFrom(
            storage_pb2.PoolCapacity(
                size_bytes=cap.size,
                used_bytes=cap.used,
                free_bytes=cap.free,
                provisioned_bytes=cap.provisioned,
                overcommit=cap.overcommit,
            )
        )
    if view.capabilities is not None:
        c = view.capabilities
        msg.capabilities.CopyFrom(
            storage_pb2.PoolCapabilities(
                shared=c.shared,
                thin=c.thin,
                snapshots=c.snapshots,
                linked_clones=c.linked_clones,
                images=c.images,
            )
        )
    reports = reports or {}
    for host in sorted(set(view.hosts) | set(reports)):
        entry = storage_pb2.PoolHost(host=f"hosts/{host}")
        if host in view.hosts:
            entry.seen_time.CopyFrom(timestamp(view.hosts[host]))
        report = reports.get(host)
        if report is not None:
            entry.state, entry.state_reason, entry.state_message = report.state, report.reason, report.message
        msg.hosts.append(entry)
    return msg


def host_pools(states: Sequence[tuple[str, PoolStatus]]) -> list[host_pb2.HostPool]:
    """This host's view of its pools, for its Host message."""
    return [
        host_pb2.HostPool(
            pool=f"pools/{name}", state=_POOL_STATES[s.state], reason=s.reason, message=s.message
        )
        for name, s in states
    ]


def image(pool_name: str, record: ImageRecord) -> storage_pb2.Image:
    return storage_pb2.Image(
        name=f"pools/{pool_name}/images/{record.name}",
        uid=record.uid,
        format=FORMATS[record.format],
        virtual_size_bytes=record.virtual_size,
        size_bytes=record.size,
        sha256=record.sha256,
        source=record.source,
        create_time=timestamp(record.create_time),
        description=record.description,
    )


def volume(pool_name: str, record: VolumeRecord, *, allocated: int) -> storage_pb2.Volume:
    name = f"pools/{pool_name}/volumes/{record.name}"
    return storage_pb2.Volume(
        name=name,
        uid=record.uid,
        size_bytes=record.virtual_size,
        allocated_bytes=allocated,
        image=f"pools/{pool_name}/images/{record.base.image}" if record.base is not None else "",
        linked=record.base is not None,
        qos=qos_message(record.qos),
        attached_to=list(record.attached_to),
        current_snapshot=f"{name}/snapshots/{record.current_snapshot}" if record.current_snapshot else "",
        snapshot_count=len(record.snapshots),
        create_time=timestamp(record.create_time),
        description=record.description,
    )


def snapshot(
    volume_name: str, record: VolumeRecord, snap: SnapshotRecord, *, size: int
) -> storage_pb2.Snapshot:
    return storage_pb2.Snapshot(
        name=f"{volume_name}/snapshots/{snap.name}",
        parent=f"{volume_name}/snapshots/{snap.parent}" if snap.parent else "",
        create_time=timestamp(snap.create_time),
        size_bytes=size,
        description=snap.description,
        current=record.current_snapshot == snap.name,
        deleting=snap.deleting,
    )


def qos_message(qos: Qos) -> storage_pb2.VolumeQos:
    return storage_pb2.VolumeQos(**{f.name: getattr(qos, f.name) for f in fields(qos)})


def qos(message: storage_pb2.VolumeQos) -> Qos:
    return Qos(**{f.name: getattr(message, f.name) for f in fields(Qos)})

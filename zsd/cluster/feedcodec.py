"""The store's feed on the wire: Snapshot / ChangeSet <-> zsd.peer.v1 messages."""

from __future__ import annotations

from zsd.cluster.store import Change, ChangeSet, Op, Record, Snapshot
from zsd.peer.v1 import peer_pb2


def record_to_pb(r: Record) -> peer_pb2.Record:
    return peer_pb2.Record(
        kind=r.kind,
        name=r.name,
        data=r.data,
        revision=r.revision,
        epoch=r.epoch,
        create_revision=r.create_revision,
        update_time=r.update_time,
    )


def record_from_pb(m: peer_pb2.Record) -> Record:
    return Record(
        kind=m.kind,
        name=m.name,
        data=m.data,
        revision=m.revision,
        epoch=m.epoch,
        create_revision=m.create_revision,
        update_time=m.update_time,
    )


def snapshot_to_pb(s: Snapshot) -> peer_pb2.Snapshot:
    return peer_pb2.Snapshot(revision=s.revision, records=[record_to_pb(r) for r in s.records])


def snapshot_from_pb(m: peer_pb2.Snapshot) -> Snapshot:
    return Snapshot(revision=m.revision, records=tuple(record_from_pb(r) for r in m.records))


def changeset_to_pb(cs: ChangeSet) -> peer_pb2.ChangeSet:
    return peer_pb2.ChangeSet(
        revision=cs.revision,
        epoch=cs.epoch,
        changes=[
            peer_pb2.Change(
                revision=c.revision,
                epoch=c.epoch,
                delete=c.op is Op.DELETE,
                kind=c.kind,
                name=c.name,
                data=c.data or b"",
                create_revision=c.create_revision,
                update_time=c.update_time,
            )
            for c in cs.changes
        ],
    )


def changeset_from_pb(m: peer_pb2.ChangeSet) -> ChangeSet:
    return ChangeSet(
        revision=m.revision,
        epoch=m.epoch,
        changes=tuple(
            Change(
                revision=c.revision,
                epoch=c.epoch,
                op=Op.DELETE if c.delete else Op.PUT,
                kind=c.kind,
                name=c.name,
                data=None if c.delete else c.data,
                create_revision=c.create_revision,
                update_time=c.update_time,
            )
            for c in m.changes
        ),
    )


def event_from_pb(m: peer_pb2.WatchEvent) -> Snapshot | ChangeSet:
    which = m.WhichOneof("event")
    if which == "snapshot":
        return snapshot_from_pb(m.snapshot)
    if which == "changes":
        return changeset_from_pb(m.changes)
    raise ValueError("empty watch event")

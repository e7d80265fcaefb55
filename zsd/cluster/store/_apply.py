"""Applying one commit's mutations inside its transaction: checks, rows, changes."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from zsd.cluster.store.model import Change, Create, Delete, Mutation, Op, Put, Record, Update
from zsd.errors import AlreadyExists, Conflict, InvalidArgument, NotFound

RECORD_COLUMNS = "kind, name, data, revision, epoch, create_revision, update_time"
CHANGE_COLUMNS = "revision, epoch, op, kind, name, data, create_revision, update_time"


def record_from_row(row: tuple[str, str, bytes, int, int, int, float]) -> Record:
    kind, name, data, revision, epoch, create_revision, update_time = row
    return Record(
        kind=kind,
        name=name,
        data=bytes(data),
        revision=revision,
        epoch=epoch,
        create_revision=create_revision,
        update_time=update_time,
    )


def change_from_row(row: tuple[int, int, str, str, str, bytes | None, int, float]) -> Change:
    revision, epoch, op, kind, name, data, create_revision, update_time = row
    return Change(
        revision=revision,
        epoch=epoch,
        op=Op(op),
        kind=kind,
        name=name,
        data=None if data is None else bytes(data),
        create_revision=create_revision,
        update_time=update_time,
    )


def validate(mutations: Sequence[Mutation]) -> None:
    """Checks what can be checked without the database, before any lock is taken."""
    seen: set[tuple[str, str]] = set()
    for index, m in enumerate(mutations):
        where = f"mutations[{index}]"
        if not isinstance(m, Create | Update | Put | Delete):
            raise InvalidArgument(f"not a mutation: {m!r}", field=where)
        if not m.kind or not m.name:
            raise InvalidArgument("kind and name must not be empty", field=where)
        if not isinstance(m, Delete) and not isinstance(m.data, bytes):
            raise InvalidArgument("data must be bytes", field=f"{where}.data")
        key = (m.kind, m.name)
        if key in seen:
            # One change per resource per revision keeps etags meaningful: an etag
            # names a revision, and a revision must say one thing about a resource.
            raise InvalidArgument(
                f"{m.kind}/{m.name} is changed twice in one commit",
                reason="DUPLICATE_RESOURCE",
                field=where,
            )
        seen.add(key)


def apply(
    cur: sqlite3.Cursor, mutations: Sequence[Mutation], *, revision: int, epoch: int, now: float
) -> tuple[Change, ...]:
    """Writes the mutations as ``revision``; raises (and the caller rolls back) on the
    first one that cannot apply, so a commit is all or nothing."""
    changes: list[Change] = []
    for seq, m in enumerate(mutations):
        row = cur.execute(
            "SELECT revision, create_revision FROM resources WHERE kind = ? AND name = ?", (m.kind, m.name)
        ).fetchone()
        current: tuple[int, int] | None = row
        _check(m, current)
        create_revision = revision if current is None else current[1]
        if isinstance(m, Delete):
            cur.execute("DELETE FROM resources WHERE kind = ? AND name = ?", (m.kind, m.name))
            change = Change(
                revision=revision,
                epoch=epoch,
                op=Op.DELETE,
                kind=m.kind,
                name=m.name,
                data=None,
                create_revision=create_revision,
                update_time=now,
            )
        else:
            cur.execute(
                f"INSERT INTO resources ({RECORD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (kind, name) DO UPDATE SET data = excluded.data, "
                "revision = excluded.revision, epoch = excluded.epoch, update_time = excluded.update_time",
                (m.kind, m.name, m.data, revision, epoch, create_revision, now),
            )
            change = Change(
                revision=revision,
                epoch=epoch,
                op=Op.PUT,
                kind=m.kind,
                name=m.name,
                data=m.data,
                create_revision=create_revision,
                update_time=now,
            )
        cur.execute(
            f"INSERT INTO changes (seq, {CHANGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                seq,
                change.revision,
                change.epoch,
                change.op.value,
                change.kind,
                change.name,
                change.data,
                change.create_revision,
                change.update_time,
            ),
        )
        changes.append(change)
    return tuple(changes)


def _check(m: Mutation, current: tuple[int, int] | None) -> None:
    meta = {"kind": m.kind, "name": m.name}
    if isinstance(m, Create):
        if current is not None:
            raise AlreadyExists(f"{m.kind}/{m.name} already exists", field="name", metadata=meta)
        return
    if isinstance(m, Put):
        return
    if current is None:
        raise NotFound(f"{m.kind}/{m.name} does not exist", field="name", metadata=meta)
    if m.expected_revision is not None and m.expected_revision != current[0]:
        raise Conflict(
            f"{m.kind}/{m.name} is at revision {current[0]}, not {m.expected_revision}",
            reason="ETAG_MISMATCH",
            field="etag",
            metadata={**meta, "revision": str(current[0])},
        )

"""Value types of the desired-state store: what goes in, what comes out.

Resource payloads are opaque bytes (serialized protobuf messages); the store
never decodes them. A resource is named by ``(kind, name)``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from zsd.errors import InvalidArgument


@dataclass(frozen=True, kw_only=True)
class Record:
    """One resource as stored at some revision."""

    kind: str
    name: str
    data: bytes
    revision: int
    """The revision of the last change to this resource: its etag."""
    epoch: int
    """The epoch of the leader that wrote that change."""
    create_revision: int
    update_time: float
    """Wall-clock seconds (the leader's clock) of the last change."""


class Op(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, kw_only=True)
class Change:
    """One resource's change in one revision, as kept in the change log."""

    revision: int
    epoch: int
    op: Op
    kind: str
    name: str
    data: bytes | None
    """The new payload of a PUT; None for a DELETE."""
    create_revision: int
    update_time: float

    def record(self) -> Record:
        """The resource as this PUT left it."""
        if self.data is None:
            raise InvalidArgument(f"{self.kind}/{self.name}: a delete has no record", reason="NOT_A_PUT")
        return Record(
            kind=self.kind,
            name=self.name,
            data=self.data,
            revision=self.revision,
            epoch=self.epoch,
            create_revision=self.create_revision,
            update_time=self.update_time,
        )


@dataclass(frozen=True, kw_only=True)
class ChangeSet:
    """All changes of one committed transaction. The feed's unit: a follower applies
    a revision whole or not at all, so no reader ever sees half a transaction."""

    revision: int
    epoch: int
    changes: tuple[Change, ...]


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """Every resource at one revision: what a follower resyncs from."""

    revision: int
    records: tuple[Record, ...]


# Mutations. ``expected_revision`` is an etag: when set, the resource must exist
# with exactly that revision, or the whole commit fails with ETAG_MISMATCH.


@dataclass(frozen=True, kw_only=True)
class Create:
    """Add a resource; AlreadyExists if the name is taken."""

    kind: str
    name: str
    data: bytes


@dataclass(frozen=True, kw_only=True)
class Update:
    """Replace an existing resource's payload; NotFound if missing."""

    kind: str
    name: str
    data: bytes
    expected_revision: int | None = None


@dataclass(frozen=True, kw_only=True)
class Put:
    """Create or replace, unconditionally (controllers writing what they own)."""

    kind: str
    name: str
    data: bytes


@dataclass(frozen=True, kw_only=True)
class Delete:
    """Remove an existing resource; NotFound if missing."""

    kind: str
    name: str
    expected_revision: int | None = None


Mutation = Create | Update | Put | Delete

ResponseBuilder = Callable[[ChangeSet], bytes]
"""Builds a commit's response from what it committed (e.g. to embed the new etag).
Runs inside the transaction, in the store's thread: it must be quick and pure."""


@dataclass(frozen=True, kw_only=True)
class CommitResult:
    revision: int
    """The revision holding this commit's changes; for a commit that changed
    nothing, the revision the store was at."""
    response: bytes
    replayed: bool
    """True when the request_id had already been committed: nothing was applied
    now, ``revision`` and ``response`` are the stored ones."""
    changes: ChangeSet | None
    """What this call committed; None when replayed or nothing changed."""


@dataclass(frozen=True, kw_only=True)
class EpochRecord:
    """One leader tenure as seen by the store."""

    epoch: int
    owner: str
    opened_at: float
    first_revision: int | None
    """The first revision written in this epoch; None if it wrote nothing."""

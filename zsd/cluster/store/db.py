"""ClusterDb: the leader's handle on cluster.db, the cluster's desired state.

Only the holder of the sanlock ``leader`` lease opens the file, with the lease
version as its *epoch*. Opening records the epoch in the file; every transaction
(reads included) first checks that no higher epoch has opened the file since, so a
deposed leader that still has it open fails instead of writing: sanlock is the
first line of defence, this check the second.

Every committed transaction that changes resources gets the next revision (no
gaps) and is stamped with the epoch. The change log keeps each revision's changes
for the followers' feed until it is compacted.

Not thread-safe: one caller at a time (:class:`~zsd.cluster.store.service.StoreService`
serializes through one worker thread). Blocking: never call it from the trio thread.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from zsd.cluster.store import _apply, _sqlite, schema
from zsd.cluster.store.errors import Compacted, Fenced, ResyncRequired
from zsd.cluster.store.model import (
    Change,
    ChangeSet,
    CommitResult,
    EpochRecord,
    Mutation,
    Record,
    ResponseBuilder,
    Snapshot,
)
from zsd.errors import AlreadyExists, Conflict, InvalidArgument, NotFound, Unavailable, ZsdError

Guard = Callable[[], None]
"""Called inside every write transaction just before COMMIT (and when opening records
a new epoch); raising aborts it, nothing is written. The leader passes a check that
its lease stays valid long enough for the COMMIT (its fsyncs) to finish, so that no
write can land after another host may have become leader."""


@dataclass(frozen=True, kw_only=True)
class StoreOptions:
    busy_timeout: float = 5.0
    """How long a transaction waits for another process's lock (a deposed leader
    mid-transaction, an operator's sqlite3) before failing with DB_BUSY."""
    request_retention: float = 24 * 3600.0
    """How long a committed request_id is remembered (expired by :meth:`ClusterDb.compact`)."""


@dataclass(frozen=True, kw_only=True)
class _Meta:
    revision: int
    epoch: int
    compacted_revision: int


class ClusterDb:
    """See the module docstring. Build with :meth:`create` or :meth:`open`."""

    def __init__(
        self,
        *,
        conn: sqlite3.Connection,
        path: Path,
        epoch: int,
        owner: str,
        revision: int,
        clock: Callable[[], float],
        guard: Guard | None,
        options: StoreOptions,
    ) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._path = path
        self._epoch = epoch
        self._owner = owner
        self._revision = revision
        self._clock = clock
        self._guard = guard
        self._options = options
        self._failure: ZsdError | None = None

    @classmethod
    def create(
        cls,
        path: Path,
        *,
        epoch: int,
        owner: str,
        clock: Callable[[], float] = time.time,
        guard: Guard | None = None,
        options: StoreOptions | None = None,
    ) -> Self:
        """Creates a new, empty cluster.db (``zsd cluster init``); AlreadyExists if the
        file exists, so a misconfigured path can never start a second history."""
        if path.exists():
            raise AlreadyExists(f"{path} already exists", reason="DB_EXISTS", field="path")
        db = cls._start(
            path,
            create=True,
            epoch=epoch,
            owner=owner,
            clock=clock,
            guard=guard,
            options=options or StoreOptions(),
        )
        # SQLite syncs the directory for its journal, not for the new database file itself.
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return db

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        epoch: int,
        owner: str,
        clock: Callable[[], float] = time.time,
        guard: Guard | None = None,
        options: StoreOptions | None = None,
    ) -> Self:
        """Opens an existing cluster.db as the leader of ``epoch`` (the leader lease
        version) and records the epoch in it, fencing every lower one.

        Raises Fenced if a higher epoch has opened it, or if this epoch was opened by
        another owner (one epoch is one host's). Reopening with one's own current
        epoch is allowed (after a storage error closed the handle). Unavailable
        DB_BUSY while another process is inside a transaction: retry.
        """
        if not path.exists():
            raise NotFound(f"{path} does not exist", reason="DB_MISSING", field="path")
        return cls._start(
            path,
            create=False,
            epoch=epoch,
            owner=owner,
            clock=clock,
            guard=guard,
            options=options or StoreOptions(),
        )

    @classmethod
    def _start(
        cls,
        path: Path,
        *,
        create: bool,
        epoch: int,
        owner: str,
        clock: Callable[[], float],
        guard: Guard | None,
        options: StoreOptions,
    ) -> Self:
        if epoch < 1:
            raise InvalidArgument("epoch must be >= 1", field="epoch")
        if not owner:
            raise InvalidArgument("owner must not be empty", field="owner")
        try:
            conn = _sqlite.connect(path, create=create, busy_timeout=options.busy_timeout)
        except sqlite3.Error as e:
            raise _sqlite.translate(e, path) from e
        try:
            with _sqlite.transaction(conn, write=True) as cur:
                schema.ensure(cur, schema.current(), create=create)
                meta = _read_meta(cur)
                _claim_epoch(cur, meta, path=path, epoch=epoch, owner=owner, now=clock())
                if guard is not None and epoch != meta.epoch:
                    guard()
        except sqlite3.Error as e:
            conn.close()
            raise _sqlite.translate(e, path) from e
        except BaseException:
            conn.close()
            raise
        return cls(
            conn=conn,
            path=path,
            epoch=epoch,
            owner=owner,
            revision=meta.revision,
            clock=clock,
            guard=guard,
            options=options,
        )

    # -- properties and lifetime ------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def revision(self) -> int:
        """The newest revision this handle has seen (exact while it is the only writer)."""
        return self._revision

    @property
    def closed(self) -> bool:
        return self._conn is None

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
        if self._failure is None:
            self._failure = Unavailable(f"{self._path} is closed", reason="STORE_CLOSED")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writes -----------------------------------------------------------------

    def commit(
        self,
        mutations: Sequence[Mutation],
        *,
        request_id: str | None = None,
        fingerprint: bytes = b"",
        response: bytes | ResponseBuilder = b"",
    ) -> CommitResult:
        """Applies ``mutations`` all or nothing as the next revision.

        With a ``request_id``, the id, the request's ``fingerprint`` and the response
        are stored in the same transaction; a later commit with the same id returns
        the stored revision and response (``replayed``) and applies nothing, also
        after a leader change. The same id with another fingerprint is a Conflict
        (REQUEST_ID_REUSED). Failed commits are not remembered: a retry runs again.

        A commit that changes nothing does not consume a revision.
        """
        mutations = tuple(mutations)
        _apply.validate(mutations)
        if request_id is not None and not request_id:
            raise InvalidArgument("request_id must not be empty", field="request_id")
        with self._transaction(write=True) as (cur, meta):
            if request_id is not None:
                stored = cur.execute(
                    "SELECT fingerprint, revision, response FROM requests WHERE request_id = ?", (request_id,)
                ).fetchone()
                if stored is not None:
                    if bytes(stored[0]) != fingerprint:
                        raise Conflict(
                            f"request_id {request_id!r} was used for another request",
                            reason="REQUEST_ID_REUSED",
                            field="request_id",
                        )
                    return CommitResult(
                        revision=stored[1], response=bytes(stored[2]), replayed=True, changes=None
                    )
            now = self._clock()
            if mutations:
                revision = meta.revision + 1
                changes = _apply.apply(cur, mutations, revision=revision, epoch=self._epoch, now=now)
                cur.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (revision,))
                cur.execute(
                    "UPDATE epochs SET first_revision = ? WHERE epoch = ? AND first_revision IS NULL",
                    (revision, self._epoch),
                )
            else:
                revision, changes = meta.revision, ()
            changeset = ChangeSet(revision=revision, epoch=self._epoch, changes=changes)
            body = response(changeset) if callable(response) else response
            if request_id is not None:
                cur.execute(
                    "INSERT INTO requests (request_id, fingerprint, revision, response, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (request_id, fingerprint, revision, body, now),
                )
            self._check_guard()
        self._revision = revision
        return CommitResult(
            revision=revision, response=body, replayed=False, changes=changeset if changes else None
        )

    def replay(self, request_id: str, *, fingerprint: bytes) -> CommitResult | None:
        """The stored result of ``request_id`` (as :meth:`commit` would replay it), or
        None if it was never committed. Lets a caller whose checks would now fail (the
        resource it deleted is gone) answer a retry with the first result. The same id
        with another fingerprint is a Conflict (REQUEST_ID_REUSED)."""
        with self._transaction(write=False) as (cur, _):
            stored = cur.execute(
                "SELECT fingerprint, revision, response FROM requests WHERE request_id = ?", (request_id,)
            ).fetchone()
        if stored is None:
            return None
        if bytes(stored[0]) != fingerprint:
            raise Conflict(
                f"request_id {request_id!r} was used for another request",
                reason="REQUEST_ID_REUSED",
                field="request_id",
            )
        return CommitResult(revision=stored[1], response=bytes(stored[2]), replayed=True, changes=None)

    def compact(self, *, keep: int) -> int:
        """Drops the change log except its newest ``keep`` revisions and forgets
        request ids older than the retention; returns the compacted revision
        (asking for changes after an older one raises Compacted)."""
        if keep < 0:
            raise InvalidArgument("keep must be >= 0", field="keep")
        with self._transaction(write=True) as (cur, meta):
            compacted = max(meta.compacted_revision, meta.revision - keep)
            if compacted > meta.compacted_revision:
                cur.execute("DELETE FROM changes WHERE revision <= ?", (compacted,))
                cur.execute("UPDATE meta SET value = ? WHERE key = 'compacted_revision'", (compacted,))
            expired_before = self._clock() - self._options.request_retention
            cur.execute("DELETE FROM requests WHERE created_at < ?", (expired_before,))
            self._check_guard()
        return compacted

    # -- reads ------------------------------------------------------------------

    def get(self, kind: str, name: str) -> Record | None:
        with self._transaction(write=False) as (cur, _):
            row = cur.execute(
                f"SELECT {_apply.RECORD_COLUMNS} FROM resources WHERE kind = ? AND name = ?", (kind, name)
            ).fetchone()
        return None if row is None else _apply.record_from_row(row)

    def list(self, kind: str) -> tuple[Record, ...]:
        """Every resource of ``kind``, ordered by name."""
        with self._transaction(write=False) as (cur, _):
            rows = cur.execute(
                f"SELECT {_apply.RECORD_COLUMNS} FROM resources WHERE kind = ? ORDER BY name", (kind,)
            ).fetchall()
        return tuple(_apply.record_from_row(row) for row in rows)

    def snapshot(self) -> Snapshot:
        """Every resource at one revision, ordered by (kind, name)."""
        with self._transaction(write=False) as (cur, meta):
            rows = cur.execute(
                f"SELECT {_apply.RECORD_COLUMNS} FROM resources ORDER BY kind, name"
            ).fetchall()
        return Snapshot(revision=meta.revision, records=tuple(_apply.record_from_row(row) for row in rows))

    def changes_since(self, revision: int, *, limit: int = 1000) -> tuple[ChangeSet, ...]:
        """The committed revisions after ``revision``, oldest first, at most ``limit``
        of them, each whole. Empty when ``revision`` is the newest.

        Compacted when the log no longer reaches back to ``revision + 1``;
        ResyncRequired (REVISION_AHEAD) when ``revision`` is newer than the store
        (a follower holding another history): both mean reload a snapshot.
        """
        if limit < 1:
            raise InvalidArgument("limit must be >= 1", field="limit")
        with self._transaction(write=False) as (cur, meta):
            if revision < meta.compacted_revision:
                raise Compacted(
                    f"changes up to revision {meta.compacted_revision} are compacted; "
                    f"revision {revision} needs a full resync",
                    revision=revision,
                    compacted_revision=meta.compacted_revision,
                )
            if revision > meta.revision:
                raise ResyncRequired(
                    f"revision {revision} is ahead of the store's {meta.revision}",
                    reason="REVISION_AHEAD",
                    field="revision",
                )
            rows = cur.execute(
                f"SELECT {_apply.CHANGE_COLUMNS} FROM changes WHERE revision > ? AND revision <= ? "
                "ORDER BY revision, seq",
                (revision, min(meta.revision, revision + limit)),
            ).fetchall()
        return _group(_apply.change_from_row(row) for row in rows)

    def epochs(self) -> tuple[EpochRecord, ...]:
        """Every leader tenure recorded in the store, oldest first."""
        with self._transaction(write=False) as (cur, _):
            rows = cur.execute(
                "SELECT epoch, owner, opened_at, first_revision FROM epochs ORDER BY epoch"
            ).fetchall()
        return tuple(
            EpochRecord(epoch=epoch, owner=owner, opened_at=opened_at, first_revision=first)
            for epoch, owner, opened_at, first in rows
        )

    def compacted_revision(self) -> int:
        with self._transaction(write=False) as (_, meta):
            return meta.compacted_revision

    # -- internals --------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[tuple[sqlite3.Cursor, _Meta]]:
        """A transaction that first checks the epoch: the check and the work see the
        same database state, because both happen under the same lock."""
        if self._failure is not None:
            raise self._failure
        assert self._conn is not None
        try:
            with _sqlite.transaction(self._conn, write=write) as cur:
                meta = _read_meta(cur)
                self._check_epoch(meta)
                self._revision = meta.revision
                yield cur, meta
        except Fenced as e:
            self._fail(e)
            raise
        except sqlite3.Error as e:
            err = _sqlite.translate(e, self._path)
            if err.reason != "DB_BUSY":
                # After a storage error nobody knows what the file holds: make the
                # leader reopen it, which rolls back a hot journal and checks the
                # epoch again. Retries with the same request_id stay exactly-once.
                self._fail(err)
            raise err from e

    def _check_epoch(self, meta: _Meta) -> None:
        if meta.epoch != self._epoch:
            raise Fenced(
                f"{self._path} was opened by epoch {meta.epoch}; epoch {self._epoch} is deposed",
                epoch=self._epoch,
                current_epoch=meta.epoch,
            )

    def _fail(self, err: ZsdError) -> None:
        self._failure = err
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def _check_guard(self) -> None:
        if self._guard is not None:
            self._guard()


def _claim_epoch(cur: sqlite3.Cursor, meta: _Meta, *, path: Path, epoch: int, owner: str, now: float) -> None:
    """Records ``epoch`` as the file's newest, or refuses an epoch that is not ours."""
    if epoch < meta.epoch:
        raise Fenced(
            f"{path} was opened by epoch {meta.epoch}, after {epoch}", epoch=epoch, current_epoch=meta.epoch
        )
    if epoch == meta.epoch:
        holder = cur.execute("SELECT owner FROM epochs WHERE epoch = ?", (epoch,)).fetchone()
        if holder is not None and holder[0] != owner:
            raise Fenced(
                f"epoch {epoch} belongs to {holder[0]}, not {owner}", epoch=epoch, current_epoch=meta.epoch
            )
        return
    cur.execute("INSERT INTO epochs (epoch, owner, opened_at) VALUES (?, ?, ?)", (epoch, owner, now))
    cur.execute("UPDATE meta SET value = ? WHERE key = 'epoch'", (epoch,))


def _read_meta(cur: sqlite3.Cursor) -> _Meta:
    values = dict(cur.execute("SELECT key, value FROM meta").fetchall())
    return _Meta(
        revision=values["revision"], epoch=values["epoch"], compacted_revision=values["compacted_revision"]
    )


def _group(changes: Iterator[Change]) -> tuple[ChangeSet, ...]:
    sets: list[ChangeSet] = []
    batch: list[Change] = []
    for change in changes:
        if batch and change.revision != batch[0].revision:
            sets.append(ChangeSet(revision=batch[0].revision, epoch=batch[0].epoch, changes=tuple(batch)))
            batch = []
        batch.append(change)
    if batch:
        sets.append(ChangeSet(revision=batch[0].revision, epoch=batch[0].epoch, changes=tuple(batch)))
    return tuple(sets)

"""The layout of cluster.db and how older layouts are brought up to date.

The version lives in the ``meta`` table next to the store's counters. A database
newer than this code is refused rather than guessed at: during a rolling upgrade
an old zsd must not become a writer of a layout it does not know.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from zsd.errors import FailedPrecondition

Migration = Callable[[sqlite3.Cursor], None]

_V1 = (
    # Integer counters: schema_version, revision (last committed), epoch (highest
    # opened), compacted_revision (change log entries up to it are gone).
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    # One row per leader tenure; the primary key is what makes an epoch one host's.
    """CREATE TABLE epochs (
        epoch INTEGER PRIMARY KEY,
        owner TEXT NOT NULL,
        opened_at REAL NOT NULL,
        first_revision INTEGER
    )""",
    """CREATE TABLE resources (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        data BLOB NOT NULL,
        revision INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        create_revision INTEGER NOT NULL,
        update_time REAL NOT NULL,
        PRIMARY KEY (kind, name)
    )""",
    """CREATE TABLE changes (
        revision INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        op TEXT NOT NULL CHECK (op IN ('put', 'delete')),
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        data BLOB,
        create_revision INTEGER NOT NULL,
        update_time REAL NOT NULL,
        PRIMARY KEY (revision, seq)
    )""",
    """CREATE TABLE requests (
        request_id TEXT PRIMARY KEY,
        fingerprint BLOB NOT NULL,
        revision INTEGER NOT NULL,
        response BLOB NOT NULL,
        created_at REAL NOT NULL
    )""",
    "CREATE INDEX requests_by_age ON requests (created_at)",
)

META_KEYS = ("schema_version", "revision", "epoch", "compacted_revision")


@dataclass(frozen=True, kw_only=True)
class Schema:
    version: int
    create: tuple[str, ...]
    """Statements creating the newest layout in an empty database."""
    migrations: Mapping[int, Migration] = field(default_factory=dict)
    """``migrations[v]`` turns layout ``v`` into ``v + 1``, inside the opening transaction."""


def current() -> Schema:
    return Schema(version=1, create=_V1)


def ensure(cur: sqlite3.Cursor, schema: Schema, *, create: bool) -> None:
    """Creates (when ``create``) or migrates the layout; runs inside a write transaction,
    so a migration interrupted by a crash leaves the old layout intact."""
    has_meta = cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if has_meta is None:
        tables = cur.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if not create or tables:
            raise FailedPrecondition("not a cluster database", reason="NOT_A_CLUSTER_DB")
        for statement in schema.create:
            cur.execute(statement)
        cur.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [("schema_version", schema.version)] + [(key, 0) for key in META_KEYS[1:]],
        )
        return
    version = cur.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    if version > schema.version:
        raise FailedPrecondition(
            f"cluster database has schema {version}, this zsd knows up to {schema.version}",
            reason="SCHEMA_TOO_NEW",
            metadata={"schema_version": str(version)},
        )
    while version < schema.version:
        step = schema.migrations.get(version)
        if step is None:
            raise FailedPrecondition(
                f"no migration from schema {version}",
                reason="SCHEMA_UNSUPPORTED",
                metadata={"schema_version": str(version)},
            )
        step(cur)
        version += 1
        cur.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))

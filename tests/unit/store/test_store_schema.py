"""The schema version and its migration hook."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from zsd.cluster.store import ClusterDb, Create, schema
from zsd.errors import FailedPrecondition


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_a_new_store_records_the_current_version(db: ClusterDb) -> None:
    conn = _raw(db.path)
    try:
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        assert version == schema.current().version
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        conn.close()


def test_migrations_run_in_order_inside_the_opening_transaction(db: ClusterDb) -> None:
    db.commit([Create(kind="vm", name="a", data=b"")])
    db.close()
    base = schema.current()
    steps: list[int] = []

    def add_labels(cur: sqlite3.Cursor) -> None:
        steps.append(base.version)
        cur.execute("ALTER TABLE resources ADD COLUMN labels TEXT NOT NULL DEFAULT ''")

    def fill_labels(cur: sqlite3.Cursor) -> None:
        steps.append(base.version + 1)
        cur.execute("UPDATE resources SET labels = 'x'")

    newer = schema.Schema(
        version=base.version + 2,
        create=base.create,
        migrations={base.version: add_labels, base.version + 1: fill_labels},
    )
    conn = _raw(db.path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        schema.ensure(conn.cursor(), newer, create=False)
        conn.execute("COMMIT")
        assert steps == [base.version, base.version + 1]
        assert conn.execute("SELECT labels FROM resources").fetchall() == [("x",)]
        assert (
            conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == newer.version
        )
    finally:
        conn.close()
    # This code now meets a layout newer than it knows, and refuses to write it.
    with pytest.raises(FailedPrecondition) as e:
        ClusterDb.open(db.path, epoch=2, owner="h2")
    assert e.value.reason == "SCHEMA_TOO_NEW"


def test_a_missing_migration_is_refused(db: ClusterDb) -> None:
    db.close()
    conn = _raw(db.path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        with pytest.raises(FailedPrecondition) as e:
            schema.ensure(conn.cursor(), schema.Schema(version=9, create=()), create=False)
        conn.execute("ROLLBACK")
    finally:
        conn.close()
    assert e.value.reason == "SCHEMA_UNSUPPORTED"

"""Consistency checks of a cluster.db's history, for fault tests and operators.

Reads the file directly in one read transaction: run it while no leader writes,
e.g. after a test's cluster is stopped, or accept that a commit may wait for it.
Like any opener it first rolls back a transaction a crashed writer left behind
(that needs write access; it changes nothing else). It checks what the store
promises:

- the file is a sound SQLite database of a known schema;
- the change log holds every revision from the compacted one to the newest, with
  no gap and nothing beyond;
- epochs never go backwards along revisions, each writing epoch is recorded
  (one owner per epoch) and its first revision is the first one stamped with it;
- the resources are what replaying the log gives (in full when nothing was
  compacted; for the resources changed since otherwise).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from zsd.cluster.store import _apply, _sqlite, schema
from zsd.cluster.store.model import Change, Op, Record


def verify(path: Path) -> tuple[str, ...]:
    """Returns the problems found, empty when the history is consistent."""
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True, isolation_level=None)
    except sqlite3.Error as e:
        raise _sqlite.translate(e, path) from e
    try:
        conn.execute("PRAGMA query_only=ON")
        conn.execute("BEGIN")
        return tuple(_problems(conn.cursor()))
    except sqlite3.Error as e:
        raise _sqlite.translate(e, path) from e
    finally:
        conn.close()


def _problems(cur: sqlite3.Cursor) -> list[str]:
    integrity = [row[0] for row in cur.execute("PRAGMA integrity_check").fetchall()]
    if integrity != ["ok"]:
        return [f"integrity: {line}" for line in integrity]
    meta = dict(cur.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("schema_version") != schema.current().version:
        return [f"schema_version {meta.get('schema_version')} is not {schema.current().version}"]
    problems: list[str] = []
    revision, compacted, epoch = meta["revision"], meta["compacted_revision"], meta["epoch"]
    changes = [
        _apply.change_from_row(row)
        for row in cur.execute(f"SELECT {_apply.CHANGE_COLUMNS} FROM changes ORDER BY revision, seq")
    ]
    revisions = sorted({c.revision for c in changes})
    if revisions != list(range(compacted + 1, revision + 1)):
        missing = sorted(set(range(compacted + 1, revision + 1)) - set(revisions))
        extra = sorted(set(revisions) - set(range(compacted + 1, revision + 1)))
        problems.append(f"change log revisions: missing {missing[:10]}, unexpected {extra[:10]}")
    problems += _epoch_problems(cur, changes, compacted=compacted, max_epoch=epoch)
    problems += _resource_problems(cur, changes, compacted=compacted, revision=revision)
    stale = cur.execute("SELECT count(*) FROM requests WHERE revision > ?", (revision,)).fetchone()[0]
    if stale:
        problems.append(f"{stale} request ids name revisions after {revision}")
    return problems


def _epoch_problems(
    cur: sqlite3.Cursor, changes: list[Change], *, compacted: int, max_epoch: int
) -> list[str]:
    problems: list[str] = []
    first_seen: dict[int, int] = {}
    last = 0
    for change in changes:
        if change.epoch < last:
            problems.append(f"revision {change.revision}: epoch {change.epoch} after epoch {last}")
        last = max(last, change.epoch)
        first_seen.setdefault(change.epoch, change.revision)
    epochs = {row[0]: row[1] for row in cur.execute("SELECT epoch, first_revision FROM epochs")}
    if epochs and max(epochs) != max_epoch:
        problems.append(f"meta epoch {max_epoch} is not the newest recorded epoch {max(epochs)}")
    for written, first in first_seen.items():
        if written not in epochs:
            problems.append(f"epoch {written} wrote revision {first} but was never opened")
        elif (recorded := epochs[written]) is None or (recorded > compacted and recorded != first):
            problems.append(f"epoch {written}: first revision recorded {recorded}, first in log {first}")
    return problems


def _resource_problems(
    cur: sqlite3.Cursor, changes: list[Change], *, compacted: int, revision: int
) -> list[str]:
    stored = {
        (r.kind, r.name): r
        for r in (
            _apply.record_from_row(row)
            for row in cur.execute(f"SELECT {_apply.RECORD_COLUMNS} FROM resources")
        )
    }
    replayed: dict[tuple[str, str], Record | None] = {}
    for change in changes:
        replayed[(change.kind, change.name)] = change.record() if change.op is Op.PUT else None
    problems: list[str] = []
    for key, record in stored.items():
        if record.revision > revision:
            problems.append(f"{key[0]}/{key[1]}: revision {record.revision} is after the store's {revision}")
        elif record.revision > compacted and replayed.get(key) != record:
            problems.append(f"{key[0]}/{key[1]}: differs from its last change in the log")
    for key, expected in replayed.items():
        if expected is not None and key not in stored:
            problems.append(f"{key[0]}/{key[1]}: put in the log but missing")
        if expected is None and key in stored:
            problems.append(f"{key[0]}/{key[1]}: deleted in the log but present")
    if compacted == 0 and set(stored) != {k for k, v in replayed.items() if v is not None}:
        problems.append("resources differ from a replay of the whole log")
    return problems

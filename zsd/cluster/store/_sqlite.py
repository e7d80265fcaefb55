"""The store's SQLite plumbing: connection settings, transactions, error translation.

Settings, and why:

- ``journal_mode=DELETE`` (rollback journal): WAL needs shared memory between the
  processes using the file, which network and cluster filesystems do not give.
- ``synchronous=EXTRA``: FULL plus an fsync of the directory after the journal is
  unlinked. In DELETE mode that unlink *is* the commit; without the directory sync
  a power loss right after an acknowledged commit can bring the journal back and
  roll the commit back.
- ``locking_mode=NORMAL``: locks are held only inside a transaction, so every
  transaction re-reads the database header and sees what another writer did. That
  is what lets the epoch check inside each transaction fence a deposed leader that
  still has the file open, and it means a stopped (SIGSTOP, hung) deposed leader
  that is idle does not lock its successor out. EXCLUSIVE mode would keep the lock
  and the page cache for the life of the connection: the successor could not open
  the file at all, and if file locking were ever ineffective the deposed leader
  would write from its stale cache over the successor's pages.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from zsd.errors import Internal, Unavailable, ZsdError

_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_CORRUPT = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
_STORAGE = {
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_PROTOCOL,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_PERM,
}


def connect(path: Path, *, create: bool, busy_timeout: float) -> sqlite3.Connection:
    """One connection for one thread at a time (the caller serializes), in autocommit
    mode so that transactions are exactly the ones :func:`transaction` opens."""
    uri = f"{path.absolute().as_uri()}?mode={'rwc' if create else 'rw'}"
    conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    try:
        _configure(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(conn: sqlite3.Connection, path: Path) -> None:
    mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
    if mode != "delete":
        raise Internal(f"{path}: cannot use a rollback journal (mode {mode})", reason="DB_JOURNAL_MODE")
    conn.execute("PRAGMA synchronous=EXTRA")
    conn.execute("PRAGMA locking_mode=NORMAL")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, *, write: bool) -> Iterator[sqlite3.Cursor]:
    """A transaction committed when the block ends normally, rolled back otherwise.

    Writes start with BEGIN IMMEDIATE: the write lock is taken before anything is
    read, so the checks made inside the block (epoch, etags) still hold at COMMIT.
    """
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield conn.cursor()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            # A failed rollback (storage gone) leaves a hot journal that the next
            # opener rolls back; the original error is the one worth reporting.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def translate(err: sqlite3.Error, path: Path) -> ZsdError:
    code = getattr(err, "sqlite_errorcode", None)
    primary = code & 0xFF if code is not None else None
    name = getattr(err, "sqlite_errorname", None) or type(err).__name__
    meta = {"path": str(path), "sqlite_error": name}
    if primary in _BUSY:
        return Unavailable(f"{path}: database is locked by another process", reason="DB_BUSY", metadata=meta)
    if primary in _CORRUPT:
        return Internal(f"{path}: database is corrupt: {err}", reason="DB_CORRUPT", metadata=meta)
    if primary in _STORAGE:
        return Unavailable(f"{path}: storage error: {err}", reason="STORAGE_ERROR", metadata=meta)
    return Internal(f"{path}: database error: {err}", reason="DB_ERROR", metadata=meta)

"""Epoch fencing: a deposed leader that still has cluster.db open can never write.

Sanlock guarantees one leader at a time; these tests exercise the second line of
defence: the epoch recorded in the file and checked inside every transaction.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.unit.store.conftest import WallClock
from tests.unit.store.procs import start_writer
from zsd.cluster.store import ClusterDb, Create, Fenced, StoreOptions, verify
from zsd.errors import FailedPrecondition, Unavailable


def test_a_higher_epoch_fences_a_leader_that_still_has_the_file_open(db: ClusterDb, wall: WallClock) -> None:
    db.commit([Create(kind="vm", name="a", data=b"1")])
    with ClusterDb.open(db.path, epoch=2, owner="h2", clock=wall) as successor:
        with pytest.raises(Fenced) as e:
            db.commit([Create(kind="vm", name="b", data=b"")], request_id="r")
        assert isinstance(e.value, FailedPrecondition)
        assert (e.value.reason, e.value.epoch, e.value.current_epoch) == ("FENCED", 1, 2)
        # Final: the deposed handle has let go of the file and refuses everything.
        assert db.closed
        with pytest.raises(Fenced):
            db.get("vm", "a")
        assert successor.get("vm", "b") is None
        assert successor.commit([Create(kind="vm", name="b", data=b"")], request_id="r").revision == 2
        epochs = successor.epochs()
    assert [(e.epoch, e.owner, e.first_revision) for e in epochs] == [(1, "h1", 1), (2, "h2", 2)]
    assert verify(db.path) == ()


def test_reads_are_fenced_too(db: ClusterDb) -> None:
    with ClusterDb.open(db.path, epoch=2, owner="h2"), pytest.raises(Fenced):
        db.changes_since(0)


def test_open_refuses_a_lower_epoch_and_another_owners_epoch(db: ClusterDb) -> None:
    with ClusterDb.open(db.path, epoch=3, owner="h2"):
        pass
    with pytest.raises(Fenced):
        ClusterDb.open(db.path, epoch=2, owner="h1")
    with pytest.raises(Fenced):
        ClusterDb.open(db.path, epoch=3, owner="h1")
    # The owner of the newest epoch may reopen it (after a storage error closed it).
    with ClusterDb.open(db.path, epoch=3, owner="h2") as again:
        assert again.commit([Create(kind="vm", name="a", data=b"")]).revision == 1
    with ClusterDb.open(db.path, epoch=4, owner="h1") as newest:
        assert [e.epoch for e in newest.epochs()] == [1, 3, 4]


def test_open_waits_for_a_transaction_in_progress_then_reports_busy(path: Path) -> None:
    ClusterDb.create(path, epoch=1, owner="h1").close()
    # A deposed leader frozen in the middle of a commit holds the write lock.
    frozen = sqlite3.connect(path, isolation_level=None)
    frozen.execute("BEGIN IMMEDIATE")
    frozen.execute("UPDATE meta SET value = value WHERE key = 'revision'")
    try:
        with pytest.raises(Unavailable) as e:
            ClusterDb.open(path, epoch=2, owner="h2", options=StoreOptions(busy_timeout=0.05))
        assert e.value.reason == "DB_BUSY"
    finally:
        frozen.execute("ROLLBACK")
        frozen.close()
    with ClusterDb.open(path, epoch=2, owner="h2") as db:
        assert db.epoch == 2


def test_a_deposed_leader_in_another_process_cannot_write(path: Path) -> None:
    ClusterDb.create(path, epoch=1, owner="h1").close()
    with start_writer("hold", path, 1, "h1") as old:
        assert old.stdout is not None
        try:
            assert old.stdout.readline().strip() == "open"
            with ClusterDb.open(path, epoch=2, owner="h2") as successor:
                successor.commit([Create(kind="vm", name="h2", data=b"")])
                out, err = old.communicate("go\n", timeout=10)
                assert out.split() == ["error", "FENCED"], err
                assert successor.get("vm", "h1") is None
                assert successor.revision == 1
        finally:
            old.kill()
    assert verify(path) == ()

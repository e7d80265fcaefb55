"""request_id: a retried or re-forwarded mutation is applied once, across leaders."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.store.conftest import WallClock
from zsd.cluster.store import ClusterDb, Create, Put, StoreOptions, Update
from zsd.errors import AlreadyExists, Conflict, InvalidArgument


def test_a_retry_returns_the_stored_result_and_applies_nothing(db: ClusterDb) -> None:
    first = db.commit(
        [Create(kind="vm", name="a", data=b"1")], request_id="r1", fingerprint=b"f", response=b"ok"
    )
    assert first.revision == 1
    db.commit([Update(kind="vm", name="a", data=b"2")])
    # The mutation would now fail (AlreadyExists): a retry must not even look at it.
    retry = db.commit(
        [Create(kind="vm", name="a", data=b"1")], request_id="r1", fingerprint=b"f", response=b"new"
    )
    assert (retry.revision, retry.response, retry.replayed, retry.changes) == (1, b"ok", True, None)
    assert db.revision == 2
    assert len(db.changes_since(0)) == 2


def test_the_same_id_for_another_request_is_a_conflict(db: ClusterDb) -> None:
    db.commit([Create(kind="vm", name="a", data=b"")], request_id="r1", fingerprint=b"f1")
    with pytest.raises(Conflict) as e:
        db.commit([Create(kind="vm", name="b", data=b"")], request_id="r1", fingerprint=b"f2")
    assert (e.value.reason, e.value.field) == ("REQUEST_ID_REUSED", "request_id")
    assert db.get("vm", "b") is None


def test_dedupe_survives_a_leader_change(db: ClusterDb, wall: WallClock) -> None:
    db.commit([Put(kind="vm", name="a", data=b"")], request_id="r1", fingerprint=b"f", response=b"done")
    db.close()
    with ClusterDb.open(db.path, epoch=2, owner="h2", clock=wall) as successor:
        retry = successor.commit([Put(kind="vm", name="a", data=b"")], request_id="r1", fingerprint=b"f")
        assert (retry.revision, retry.response, retry.replayed) == (1, b"done", True)
        assert successor.revision == 1


def test_a_failed_commit_is_not_remembered(db: ClusterDb) -> None:
    db.commit([Create(kind="vm", name="a", data=b"")])
    with pytest.raises(AlreadyExists):
        db.commit([Create(kind="vm", name="a", data=b"")], request_id="r1", fingerprint=b"f")
    result = db.commit([Create(kind="vm", name="b", data=b"")], request_id="r1", fingerprint=b"f")
    assert not result.replayed and result.revision == 2


def test_a_commit_that_changes_nothing_is_remembered_at_the_current_revision(db: ClusterDb) -> None:
    db.commit([Create(kind="vm", name="a", data=b"")])
    assert db.commit([], request_id="noop", response=b"r").revision == 1
    db.commit([Create(kind="vm", name="b", data=b"")])
    retry = db.commit([], request_id="noop")
    assert (retry.revision, retry.response, retry.replayed) == (1, b"r", True)


def test_request_ids_expire_after_the_retention_at_compaction(db: ClusterDb, wall: WallClock) -> None:
    db.commit([Put(kind="vm", name="a", data=b"")], request_id="old")
    wall.advance(24 * 3600 - 1)
    db.commit([Put(kind="vm", name="b", data=b"")], request_id="young")
    wall.advance(2)
    db.compact(keep=100)
    assert db.commit([Put(kind="vm", name="b", data=b"")], request_id="young").replayed
    # Forgotten: the same id now runs again.
    assert not db.commit([Put(kind="vm", name="a", data=b"")], request_id="old").replayed


def test_retention_is_configurable(wall: WallClock, tmp_path: Path) -> None:
    options = StoreOptions(request_retention=10)
    with ClusterDb.create(tmp_path / "c.db", epoch=1, owner="h1", clock=wall, options=options) as db:
        db.commit([Put(kind="vm", name="a", data=b"")], request_id="r")
        wall.advance(11)
        db.compact(keep=0)
        assert not db.commit([Put(kind="vm", name="a", data=b"")], request_id="r").replayed


def test_an_empty_request_id_is_invalid(db: ClusterDb) -> None:
    with pytest.raises(InvalidArgument) as e:
        db.commit([Put(kind="vm", name="a", data=b"")], request_id="")
    assert e.value.field == "request_id"


def test_replay_looks_up_without_storing(db: ClusterDb) -> None:
    assert db.replay("r1", fingerprint=b"f") is None
    assert db.replay("r1", fingerprint=b"f") is None  # looking did not claim the id
    db.commit([Create(kind="vm", name="a", data=b"")], request_id="r1", fingerprint=b"f", response=b"ok")
    found = db.replay("r1", fingerprint=b"f")
    assert found is not None and (found.revision, found.response, found.replayed) == (1, b"ok", True)
    with pytest.raises(Conflict) as e:
        db.replay("r1", fingerprint=b"other")
    assert e.value.reason == "REQUEST_ID_REUSED"

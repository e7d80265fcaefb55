"""ClusterDb: revisions, records, conditional writes, all-or-nothing commits."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.unit.store.conftest import WallClock
from zsd.cluster.store import (
    ChangeSet,
    ClusterDb,
    Create,
    Delete,
    Op,
    Put,
    Update,
    verify,
)
from zsd.errors import (
    AlreadyExists,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    ZsdError,
)


def test_new_store_is_empty_at_revision_zero(db: ClusterDb) -> None:
    assert db.revision == 0
    snap = db.snapshot()
    assert snap.revision == 0
    assert snap.records == ()
    assert db.changes_since(0) == ()
    assert [(e.epoch, e.owner, e.first_revision) for e in db.epochs()] == [(1, "h1", None)]


def test_create_refuses_an_existing_file_and_open_a_missing_one(db: ClusterDb, tmp_path: Path) -> None:
    with pytest.raises(AlreadyExists):
        ClusterDb.create(db.path, epoch=2, owner="h2")
    with pytest.raises(NotFound):
        ClusterDb.open(tmp_path / "nowhere.db", epoch=2, owner="h2")


def test_open_refuses_a_file_that_is_not_a_cluster_db(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(FailedPrecondition) as e:
        ClusterDb.open(other, epoch=1, owner="h1")
    assert e.value.reason == "NOT_A_CLUSTER_DB"


def test_every_commit_gets_the_next_revision_stamped_with_the_epoch(db: ClusterDb, wall: WallClock) -> None:
    first = db.commit([Create(kind="vm", name="a", data=b"1")])
    wall.advance(5)
    second = db.commit([Create(kind="vm", name="b", data=b"2"), Create(kind="net", name="n", data=b"3")])
    assert (first.revision, second.revision) == (1, 2)
    assert not first.replayed
    a = db.get("vm", "a")
    b = db.get("vm", "b")
    assert a is not None and b is not None
    assert (a.revision, a.create_revision, a.epoch, a.update_time) == (1, 1, 1, wall.now - 5)
    assert (b.revision, b.create_revision, b.epoch, b.update_time) == (2, 2, 1, wall.now)
    assert second.changes is not None
    assert [(c.kind, c.name, c.op) for c in second.changes.changes] == [
        ("vm", "b", Op.PUT),
        ("net", "n", Op.PUT),
    ]


def test_update_keeps_create_revision_and_delete_is_logged(db: ClusterDb) -> None:
    db.commit([Create(kind="vm", name="a", data=b"1")])
    db.commit([Update(kind="vm", name="a", data=b"2")])
    record = db.get("vm", "a")
    assert record is not None
    assert (record.data, record.revision, record.create_revision) == (b"2", 2, 1)
    db.commit([Delete(kind="vm", name="a")])
    assert db.get("vm", "a") is None
    log = db.changes_since(0)
    assert [(s.revision, s.changes[0].op, s.changes[0].data) for s in log] == [
        (1, Op.PUT, b"1"),
        (2, Op.PUT, b"2"),
        (3, Op.DELETE, None),
    ]
    assert log[2].changes[0].create_revision == 1


def test_put_creates_or_replaces(db: ClusterDb) -> None:
    db.commit([Put(kind="vm", name="a", data=b"1")])
    db.commit([Put(kind="vm", name="a", data=b"2")])
    record = db.get("vm", "a")
    assert record is not None
    assert (record.data, record.revision, record.create_revision) == (b"2", 2, 1)


def test_a_commit_that_changes_nothing_takes_no_revision(db: ClusterDb) -> None:
    db.commit([Create(kind="vm", name="a", data=b"1")])
    result = db.commit([])
    assert (result.revision, result.changes) == (1, None)
    assert db.commit([Create(kind="vm", name="b", data=b"")]).revision == 2
    assert [s.revision for s in db.changes_since(0)] == [1, 2]


def test_etag_mismatch_is_a_conflict(db: ClusterDb) -> None:
    db.commit([Create(kind="vm", name="a", data=b"1")])
    db.commit([Update(kind="vm", name="a", data=b"2", expected_revision=1)])
    with pytest.raises(Conflict) as e:
        db.commit([Update(kind="vm", name="a", data=b"3", expected_revision=1)])
    assert (e.value.reason, e.value.field, e.value.metadata["revision"]) == ("ETAG_MISMATCH", "etag", "2")
    with pytest.raises(Conflict):
        db.commit([Delete(kind="vm", name="a", expected_revision=1)])
    db.commit([Delete(kind="vm", name="a", expected_revision=2)])
    assert db.get("vm", "a") is None


@pytest.mark.parametrize(
    ("mutation", "error"),
    [
        (Create(kind="vm", name="a", data=b"x"), AlreadyExists),
        (Update(kind="vm", name="missing", data=b"x"), NotFound),
        (Delete(kind="vm", name="missing"), NotFound),
        (Update(kind="vm", name="a", data=b"x", expected_revision=7), Conflict),
    ],
)
def test_a_failing_mutation_fails_the_whole_commit(
    db: ClusterDb, mutation: Create | Update | Delete, error: type[ZsdError]
) -> None:
    db.commit([Create(kind="vm", name="a", data=b"1"), Create(kind="vm", name="b", data=b"1")])
    with pytest.raises(error) as e:
        db.commit([Put(kind="vm", name="z", data=b"first"), Update(kind="vm", name="b", data=b"2"), mutation])
    if error is not Conflict:
        assert e.value.field == "name"
        assert e.value.metadata == {"kind": "vm", "name": mutation.name}
    assert db.get("vm", "z") is None
    assert [r.data for r in db.list("vm")] == [b"1", b"1"]
    assert db.revision == 1
    assert db.commit([Put(kind="vm", name="z", data=b"")]).revision == 2
    assert verify(db.path) == ()


def test_invalid_mutations_are_refused_before_the_database_is_touched(db: ClusterDb) -> None:
    with pytest.raises(InvalidArgument) as e:
        db.commit([Put(kind="vm", name="a", data=b""), Delete(kind="vm", name="a")])
    assert (e.value.reason, e.value.field) == ("DUPLICATE_RESOURCE", "mutations[1]")
    with pytest.raises(InvalidArgument):
        db.commit([Put(kind="", name="a", data=b"")])
    with pytest.raises(InvalidArgument):
        db.commit([Put(kind="vm", name="a", data="text")])  # type: ignore[arg-type]
    assert db.revision == 0


def test_response_builder_sees_the_committed_changes(db: ClusterDb) -> None:
    seen: list[ChangeSet] = []

    def build(changes: ChangeSet) -> bytes:
        seen.append(changes)
        return f"etag={changes.changes[0].revision}".encode()

    result = db.commit([Create(kind="vm", name="a", data=b"")], request_id="r1", response=build)
    assert result.response == b"etag=1"
    assert seen == [result.changes]


def test_guard_failure_aborts_the_commit(path: Path) -> None:
    allowed = [True]

    def guard() -> None:
        if not allowed[0]:
            raise Unavailable("lease expiring", reason="LEASE_EXPIRING")

    with ClusterDb.create(path, epoch=1, owner="h1", guard=guard) as db:
        db.commit([Create(kind="vm", name="a", data=b"")])
        allowed[0] = False
        with pytest.raises(Unavailable):
            db.commit([Create(kind="vm", name="b", data=b"")], request_id="r")
        allowed[0] = True
        assert db.get("vm", "b") is None
        assert db.commit([Create(kind="vm", name="b", data=b"")], request_id="r").revision == 2


def test_reads_list_by_kind_in_name_order(db: ClusterDb) -> None:
    db.commit(
        [Put(kind="vm", name=n, data=n.encode()) for n in ("c", "a", "b")]
        + [Put(kind="net", name="x", data=b"")]
    )
    assert [r.name for r in db.list("vm")] == ["a", "b", "c"]
    assert db.list("disk") == ()
    snap = db.snapshot()
    assert snap.revision == 1
    assert [(r.kind, r.name) for r in snap.records] == [("net", "x"), ("vm", "a"), ("vm", "b"), ("vm", "c")]


def test_state_survives_reopen(path: Path, wall: WallClock) -> None:
    with ClusterDb.create(path, epoch=1, owner="h1", clock=wall) as db:
        db.commit([Create(kind="vm", name="a", data=b"1")])
    with ClusterDb.open(path, epoch=2, owner="h2", clock=wall) as db:
        assert db.revision == 1
        record = db.get("vm", "a")
        assert record is not None and record.epoch == 1
        assert db.commit([Update(kind="vm", name="a", data=b"2")]).revision == 2
    assert not (path.parent / "cluster.db-journal").exists()
    assert verify(path) == ()


def test_a_closed_store_refuses_calls(db: ClusterDb) -> None:
    db.close()
    assert db.closed
    with pytest.raises(Unavailable) as e:
        db.get("vm", "a")
    assert e.value.reason == "STORE_CLOSED"
    db.close()

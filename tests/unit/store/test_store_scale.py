"""10 000 resources: the store and a cache fed from it stay exact (behaviour only)."""

from __future__ import annotations

from zsd.cluster.store import ClusterDb, Put, StateCache, Update, verify


def test_ten_thousand_records(db: ClusterDb) -> None:
    payload = bytes(range(200))
    for batch in range(100):
        db.commit(
            [Put(kind="vm", name=f"vm-{batch:03d}-{i:03d}", data=payload) for i in range(100)],
            request_id=f"fill-{batch}",
        )
    for i in range(0, 10_000, 50):
        name = f"vm-{i // 100:03d}-{i % 100:03d}"
        db.commit([Update(kind="vm", name=name, data=b"new", expected_revision=i // 100 + 1)])
    snap = db.snapshot()
    assert (snap.revision, len(snap.records)) == (300, 10_000)
    assert sum(r.data == b"new" for r in snap.records) == 200

    cache = StateCache()
    while changes := db.changes_since(cache.revision, limit=7):
        for changeset in changes:
            cache.apply(changeset)
    assert cache.list("vm") == snap.records

    assert db.compact(keep=50) == 250
    assert len(db.changes_since(250)) == 50
    assert verify(db.path) == ()

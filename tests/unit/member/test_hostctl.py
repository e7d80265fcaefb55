"""Leader-side host changes against a real cluster.db: label masks, etags, races,
request-id replays, removal rules, self-reports."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from zsd.cluster import hostctl
from zsd.cluster.records import KIND_HOST, KIND_HOST_ID, KIND_HOST_STATUS, HostEntry
from zsd.cluster.store import ClusterDb, Create, StoreService
from zsd.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StoreService]:
    service = StoreService(ClusterDb.create(tmp_path / "cluster.db", epoch=1, owner="h1"))
    await service.commit(
        [
            Create(kind=KIND_HOST, name="h1", data=HostEntry(name="h1", host_id=1).encode()),
            Create(kind=KIND_HOST_ID, name="1", data=b"{}"),
            Create(kind=KIND_HOST, name="h2", data=HostEntry(name="h2", host_id=2).encode()),
            Create(kind=KIND_HOST_ID, name="2", data=b"{}"),
        ]
    )
    yield service
    await service.aclose()


async def labels(store: StoreService, host: str) -> dict[str, str]:
    record = await store.get(KIND_HOST, host)
    assert record is not None
    return HostEntry.decode(record.data).label_dict()


def test_label_mask_semantics() -> None:
    current = {"a": "1", "b": "2"}
    assert hostctl.apply_label_mask(current, {"c": "3"}, ["labels.c"]) == {"a": "1", "b": "2", "c": "3"}
    assert hostctl.apply_label_mask(current, {}, ["labels.a"]) == {"b": "2"}
    assert hostctl.apply_label_mask(current, {"z": "9"}, ["labels"]) == {"z": "9"}
    with pytest.raises(InvalidArgument) as e:
        hostctl.apply_label_mask(current, {}, [])
    assert e.value.field == "update_mask"
    with pytest.raises(InvalidArgument) as e:
        hostctl.apply_label_mask(current, {}, ["address"])
    assert e.value.field == "update_mask" and "labels.{key}" in e.value.message


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"Rack": "x"}, "host.labels.Rack"),
        ({"rack": "X Y"}, "host.labels.rack"),
        ({"1a": ""}, "host.labels.1a"),
    ],
)
def test_bad_labels_name_the_key(given: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        hostctl.validate_labels(given)
    assert e.value.field == field


async def test_update_sets_and_removes_keys(store: StoreService) -> None:
    await hostctl.update_labels(
        store, host="h1", labels={"rack": "r1", "zone": "z"}, paths=["labels"], etag=None, request_id=None
    )
    await hostctl.update_labels(
        store, host="h1", labels={}, paths=["labels.zone"], etag=None, request_id=None
    )
    assert await labels(store, "h1") == {"rack": "r1"}
    assert await labels(store, "h2") == {}


async def test_etag_mismatch_is_aborted_not_retried(store: StoreService) -> None:
    record = await store.get(KIND_HOST, "h1")
    assert record is not None
    await hostctl.update_labels(
        store, host="h1", labels={"a": "1"}, paths=["labels.a"], etag=record.revision, request_id=None
    )
    with pytest.raises(Conflict) as e:
        await hostctl.update_labels(
            store, host="h1", labels={"b": "1"}, paths=["labels.b"], etag=record.revision, request_id=None
        )
    assert e.value.reason == "ETAG_MISMATCH"
    assert await labels(store, "h1") == {"a": "1"}


async def test_concurrent_writers_of_different_keys_all_land(store: StoreService) -> None:
    lock = trio.Lock()  # the leader's, as ClusterControl passes it
    async with trio.open_nursery() as nursery:
        for i in range(30):
            nursery.start_soon(
                lambda i=i: hostctl.update_labels(
                    store,
                    host="h1",
                    labels={f"k{i}": str(i)},
                    paths=[f"labels.k{i}"],
                    etag=None,
                    request_id=f"r{i}",
                    lock=lock,
                )
            )
    assert await labels(store, "h1") == {f"k{i}": str(i) for i in range(30)}


async def test_request_id_replays_once(store: StoreService) -> None:
    first = await hostctl.update_labels(
        store, host="h1", labels={"a": "1"}, paths=["labels.a"], etag=None, request_id="x1"
    )
    # Someone removes the key; the retry of x1 must not put it back.
    await hostctl.update_labels(store, host="h1", labels={}, paths=["labels.a"], etag=None, request_id="x2")
    again = await hostctl.update_labels(
        store, host="h1", labels={"a": "1"}, paths=["labels.a"], etag=None, request_id="x1"
    )
    assert again.replayed and again.revision == first.revision
    assert await labels(store, "h1") == {}
    with pytest.raises(Conflict) as e:
        await hostctl.update_labels(
            store, host="h1", labels={"a": "2"}, paths=["labels.a"], etag=None, request_id="x1"
        )
    assert e.value.reason == "REQUEST_ID_REUSED"


async def test_update_of_unknown_host(store: StoreService) -> None:
    with pytest.raises(NotFound) as e:
        await hostctl.update_labels(
            store, host="nope", labels={}, paths=["labels"], etag=None, request_id=None
        )
    assert e.value.field == "host.name"


async def test_removal_deletes_entry_id_and_status_in_one_revision(store: StoreService) -> None:
    await hostctl.report_status(store, host="h2", status=b"status")
    mutations = await hostctl.removal(store, host="h2", force=False)
    result = await store.commit(mutations)
    assert result.changes is not None and len(result.changes.changes) == 3
    for kind, name in ((KIND_HOST, "h2"), (KIND_HOST_ID, "2"), (KIND_HOST_STATUS, "h2")):
        assert await store.get(kind, name) is None
    with pytest.raises(NotFound):
        await hostctl.check_removal(store, host="h2", force=False)


async def test_removal_refuses_a_host_with_vms_unless_forced(store: StoreService) -> None:
    await store.commit([Create(kind=hostctl.KIND_VM, name="vm1", data=json.dumps({"host": "h2"}).encode())])
    with pytest.raises(FailedPrecondition) as e:
        await hostctl.check_removal(store, host="h2", force=False)
    assert e.value.reason == "HOST_NOT_EMPTY" and "vm1" in e.value.message
    await store.commit(await hostctl.removal(store, host="h2", force=True))
    assert await store.get(KIND_HOST, "h2") is None
    assert await store.get(hostctl.KIND_VM, "vm1") is not None  # VMs are HA's, never deleted here


async def test_reports_only_from_members_and_only_when_changed(store: StoreService) -> None:
    first = await hostctl.report_status(store, host="h1", status=b"v1")
    same = await hostctl.report_status(store, host="h1", status=b"v1")
    assert same.replayed and store.revision == first.revision
    await hostctl.report_status(store, host="h1", status=b"v2")
    assert store.revision == first.revision + 1
    with pytest.raises(NotFound):
        await hostctl.report_status(store, host="stranger", status=b"x")


async def test_the_last_member_cannot_be_removed(store: StoreService) -> None:
    await store.commit(await hostctl.removal(store, host="h2", force=False))
    with pytest.raises(FailedPrecondition) as e:
        await hostctl.check_removal(store, host="h1", force=False)
    assert e.value.reason == "LAST_MEMBER"

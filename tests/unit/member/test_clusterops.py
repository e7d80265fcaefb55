"""Cluster operations in cluster.db: started once per request_id, resumed by the next
term when a leader stops mid-job, applied exactly once, failures recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import trio

from zsd.cluster.clusterops import KIND_OPERATION, ClusterOp, ClusterOps
from zsd.cluster.operations import OpState
from zsd.cluster.store import ClusterDb, Create, Mutation, Put, StoreService
from zsd.errors import FailedPrecondition, Unavailable


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StoreService]:
    service = StoreService(ClusterDb.create(tmp_path / "cluster.db", epoch=1, owner="h1"))
    yield service
    await service.aclose()


class Jobs:
    """A job that waits for permission, then writes a marker; counts its runs."""

    def __init__(self) -> None:
        self.runs = 0
        self.go = trio.Event()
        self.fail: Exception | None = None

    async def mark(self, store: StoreService, op: ClusterOp) -> Sequence[Mutation]:
        self.runs += 1
        await self.go.wait()
        if self.fail is not None:
            raise self.fail
        return [Create(kind="marker", name=op.target, data=b"done")]


async def op_state(store: StoreService, uid: str) -> ClusterOp:
    record = await store.get(KIND_OPERATION, uid)
    assert record is not None
    return ClusterOp.decode(record.data)


async def wait_done(store: StoreService, uid: str) -> ClusterOp:
    with trio.fail_after(5):
        while not (op := await op_state(store, uid)).done:
            await trio.sleep(0.01)
    return op


async def test_an_operation_left_running_is_resumed_by_the_next_term(store: StoreService) -> None:
    jobs = Jobs()
    first = ClusterOps(jobs={"Mark": jobs.mark}, leader="h1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(first.run_term, store)
        await trio.sleep(0.01)
        op, _ = await first.start(verb="Mark", target="t1", request_id="r1", params={}, fingerprint=b"f")
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()  # the leader loses its term mid-job
    assert (await op_state(store, op.uid)).state == OpState.RUNNING.value
    assert await store.get("marker", "t1") is None

    second = ClusterOps(jobs={"Mark": jobs.mark}, leader="h2")
    jobs.go.set()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(second.run_term, store)
        done = await wait_done(store, op.uid)
        nursery.cancel_scope.cancel()
    assert done.state == OpState.SUCCEEDED.value and done.ended is not None
    assert await store.get("marker", "t1") is not None
    assert jobs.runs == 2 and second.completed == 1


async def test_a_retry_returns_the_first_operation(store: StoreService) -> None:
    jobs = Jobs()
    jobs.go.set()
    ops = ClusterOps(jobs={"Mark": jobs.mark}, leader="h1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ops.run_term, store)
        await trio.sleep(0.01)
        first, _ = await ops.start(verb="Mark", target="t2", request_id="r2", params={}, fingerprint=b"f")
        await wait_done(store, first.uid)
        again, _ = await ops.start(verb="Mark", target="t2", request_id="r2", params={}, fingerprint=b"f")
        nursery.cancel_scope.cancel()
    assert again.uid == first.uid and again.done
    assert jobs.runs == 1 and len(await store.list(KIND_OPERATION)) == 1


async def test_a_failing_job_records_the_error_and_changes_nothing(store: StoreService) -> None:
    jobs = Jobs()
    jobs.fail = FailedPrecondition("not now", reason="BUSY", field="target")
    jobs.go.set()
    ops = ClusterOps(jobs={"Mark": jobs.mark}, leader="h1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ops.run_term, store)
        await trio.sleep(0.01)
        op, _ = await ops.start(verb="Mark", target="t3", request_id="r3", params={}, fingerprint=b"f")
        done = await wait_done(store, op.uid)
        nursery.cancel_scope.cancel()
    assert done.state == OpState.FAILED.value
    error = done.error()
    assert isinstance(error, FailedPrecondition) and (error.reason, error.field) == ("BUSY", "target")
    assert await store.get("marker", "t3") is None
    view = done.view(seq=0)
    assert view.error is not None and view.done and view.host == "hosts/h1"


async def test_an_effect_that_no_longer_applies_fails_the_operation(store: StoreService) -> None:
    jobs = Jobs()
    ops = ClusterOps(jobs={"Mark": jobs.mark}, leader="h1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ops.run_term, store)
        await trio.sleep(0.01)
        op, _ = await ops.start(verb="Mark", target="t4", request_id="r4", params={}, fingerprint=b"f")
        await store.commit([Put(kind="marker", name="t4", data=b"someone else")])
        jobs.go.set()  # its Create now conflicts
        done = await wait_done(store, op.uid)
        nursery.cancel_scope.cancel()
    assert done.state == OpState.FAILED.value
    record = await store.get("marker", "t4")
    assert record is not None and record.data == b"someone else"


async def test_no_term_no_start(store: StoreService) -> None:
    ops = ClusterOps(jobs={}, leader="h1")
    with pytest.raises(Unavailable) as e:
        await ops.start(verb="Mark", target="t", request_id="r", params={}, fingerprint=b"")
    assert e.value.reason == "NOT_LEADER"


async def test_the_leader_compacts_the_change_log_periodically(store: StoreService) -> None:
    from zsd.cluster.control import compact_periodically
    from zsd.cluster.store import Compacted

    for i in range(20):
        await store.commit([Put(kind="k", name=str(i), data=b"")])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: compact_periodically(store, interval=0.01, keep=5))
        with trio.fail_after(5):
            while True:
                try:
                    await store.changes_since(0)
                except Compacted:
                    break
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert len(await store.changes_since(15)) == 5
    with pytest.raises(Compacted):
        await store.changes_since(14)

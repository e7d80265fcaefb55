"""OperationRegistry: lifecycle, progress, wait, cancel, request_id, retention."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from zsd.cluster.operations import OperationRegistry, OpState, Progress
from zsd.errors import Cancelled, Conflict, FailedPrecondition, Internal, NotFound, ResourceExhausted


@pytest.fixture
async def registry(nursery: trio.Nursery) -> AsyncIterator[OperationRegistry]:
    counter = iter(range(1, 10_000))
    reg = OperationRegistry(
        host="hosts/h1", clock=trio.current_time, max_finished=3, new_id=lambda: f"op{next(counter)}"
    )
    await nursery.start(reg.run)
    yield reg


async def test_job_runs_reports_progress_and_succeeds(registry: OperationRegistry) -> None:
    gate = trio.Event()

    async def job(progress: Progress) -> str:
        progress(40, "half way")
        await gate.wait()
        return "result"

    view = registry.start(verb="RefreshHost", target="hosts/h1", request_id="", job=job)
    assert view.name == "operations/op1"
    assert view.state is OpState.PENDING
    await trio.testing.wait_all_tasks_blocked()
    running = registry.get(view.name)
    assert (running.state, running.progress_percent, running.status_message) == (
        OpState.RUNNING,
        40,
        "half way",
    )
    gate.set()
    done = await registry.wait(view.name, timeout=5)
    assert done.state is OpState.SUCCEEDED
    assert done.result == "result"
    assert done.progress_percent == 100
    assert done.end_time is not None


async def test_wait_times_out_without_error(registry: OperationRegistry) -> None:
    view = registry.start(verb="V", target="t", request_id="", job=lambda p: trio.sleep_forever())
    with trio.fail_after(2):
        waited = await registry.wait(view.name, timeout=0.05)
    assert not waited.done


async def test_zsd_error_and_unexpected_error(registry: OperationRegistry) -> None:
    async def fails(_: Progress) -> None:
        raise ResourceExhausted("no room", field="size")

    async def crashes(_: Progress) -> None:
        raise KeyError("x")

    a = registry.start(verb="V", target="t", request_id="", job=fails)
    b = registry.start(verb="V", target="t", request_id="", job=crashes)
    va, vb = await registry.wait(a.name, 5), await registry.wait(b.name, 5)
    assert va.state is OpState.FAILED and isinstance(va.error, ResourceExhausted)
    assert va.error.field == "size"
    assert vb.state is OpState.FAILED and isinstance(vb.error, Internal)


async def test_cancel_stops_the_job(registry: OperationRegistry) -> None:
    cleaned = []

    async def job(_: Progress) -> None:
        try:
            await trio.sleep_forever()
        finally:
            cleaned.append(True)

    view = registry.start(verb="V", target="t", request_id="", job=job)
    await trio.testing.wait_all_tasks_blocked()
    assert registry.cancel(view.name).cancel_requested
    done = await registry.wait(view.name, 5)
    assert done.state is OpState.CANCELLED
    assert isinstance(done.error, Cancelled)
    assert cleaned == [True]
    with pytest.raises(FailedPrecondition):
        registry.cancel(view.name)


async def test_request_id_returns_first_operation(registry: OperationRegistry) -> None:
    runs = []

    async def job(_: Progress) -> int:
        runs.append(1)
        return len(runs)

    first = registry.start(verb="V", target="t", request_id="r-1", job=job)
    await registry.wait(first.name, 5)
    again = registry.start(verb="V", target="t", request_id="r-1", job=job)
    assert again.name == first.name
    assert again.result == 1
    assert runs == [1]
    with pytest.raises(Conflict) as info:
        registry.start(verb="Other", target="t", request_id="r-1", job=job)
    assert info.value.field == "request_id"


async def test_list_filters_and_retention(registry: OperationRegistry) -> None:
    names = []
    for i in range(5):
        v = registry.start(verb="V", target=f"t{i % 2}", request_id="", job=lambda p: trio.sleep(0))
        await registry.wait(v.name, 5)
        names.append(v.name)
    blocked = registry.start(verb="V", target="t0", request_id="", job=lambda p: trio.sleep_forever())
    await trio.testing.wait_all_tasks_blocked()
    listed = [v.name for v in registry.list()]
    assert listed == [blocked.name, *reversed(names[-3:])]  # newest first, only 3 finished kept
    assert [v.name for v in registry.list(state=OpState.RUNNING)] == [blocked.name]
    assert all(v.target == "t1" for v in registry.list(target="t1"))
    with pytest.raises(NotFound):
        registry.get(names[0])


async def test_progress_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        Progress(lambda p, m: None)(101)

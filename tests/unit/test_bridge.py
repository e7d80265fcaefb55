"""The trio <-> asyncio bridge: results, errors, deadlines, cancellation, streams."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator

import pytest
import trio

from zsd.errors import DeadlineExceeded, NotFound
from zsd.util.apithread import Bridge, open_api_thread


async def on_asyncio(bridge: Bridge, coro_fn):  # type: ignore[no-untyped-def]
    return await bridge.to_asyncio.run(coro_fn())


async def test_result_and_thread_identity() -> None:
    async with open_api_thread() as bridge:
        main = threading.get_ident()

        async def trio_side() -> int:
            assert threading.get_ident() == main
            await trio.sleep(0)
            return 42

        async def aio_side() -> tuple[int, int]:
            return await bridge.to_trio.run(trio_side), threading.get_ident()

        value, aio_thread = await on_asyncio(bridge, aio_side)
        assert value == 42
        assert aio_thread != main


async def test_error_crosses_with_type() -> None:
    async with open_api_thread() as bridge:

        async def trio_side() -> None:
            raise NotFound("no such host", field="name")

        async def aio_side() -> None:
            await bridge.to_trio.run(trio_side)

        with pytest.raises(NotFound) as info:
            await on_asyncio(bridge, aio_side)
        assert info.value.field == "name"


async def test_deadline_becomes_deadline_exceeded() -> None:
    async with open_api_thread() as bridge:
        reached_end = []

        async def trio_side() -> None:
            await trio.sleep(5)
            reached_end.append(True)

        async def aio_side() -> None:
            await bridge.to_trio.run(trio_side, timeout=0.05)

        with trio.fail_after(2), pytest.raises(DeadlineExceeded):
            await on_asyncio(bridge, aio_side)
        assert reached_end == []


async def test_asyncio_cancellation_cancels_trio_scope() -> None:
    async with open_api_thread() as bridge:
        started = trio.Event()
        cancelled = trio.Event()

        async def trio_side() -> None:
            started.set()
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                cancelled.set()
                raise

        async def aio_side() -> str:
            task = asyncio.ensure_future(bridge.to_trio.run(trio_side))
            await asyncio.sleep(0.05)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return "cancelled"
            return "finished"

        with trio.fail_after(2):
            assert await on_asyncio(bridge, aio_side) == "cancelled"
            await cancelled.wait()
        assert started.is_set()


async def test_many_concurrent_calls_use_no_extra_threads() -> None:
    async with open_api_thread() as bridge:
        before = threading.active_count()
        peak = []

        async def trio_side(i: int) -> int:
            await trio.sleep(0.01)
            peak.append(threading.active_count())
            return i

        async def aio_side() -> list[int]:
            return list(
                await asyncio.gather(*(bridge.to_trio.run(lambda i=i: trio_side(i)) for i in range(200)))
            )

        assert await on_asyncio(bridge, aio_side) == list(range(200))
        assert max(peak) <= before  # idle worker threads of earlier tests may exit meanwhile


async def test_stream_items_then_error() -> None:
    async with open_api_thread() as bridge:

        async def gen() -> AsyncGenerator[int, None]:
            for i in range(5):
                yield i
            raise NotFound("gone")

        async def aio_side() -> tuple[list[int], str]:
            got: list[int] = []
            try:
                async for item in bridge.to_trio.stream(gen, buffer=2):
                    got.append(item)
            except NotFound as e:
                return got, e.message
            return got, "no error"

        assert await on_asyncio(bridge, aio_side) == ([0, 1, 2, 3, 4], "gone")


async def test_stream_consumer_leaving_early_stops_producer() -> None:
    async with open_api_thread() as bridge:
        produced: list[int] = []
        finished = trio.Event()

        async def gen() -> AsyncGenerator[int, None]:
            try:
                for i in range(1000):
                    produced.append(i)
                    yield i
            finally:
                finished.set()

        async def aio_side() -> list[int]:
            got: list[int] = []
            agen = bridge.to_trio.stream(gen, buffer=1)
            async for item in agen:
                got.append(item)
                if len(got) == 3:
                    break
            await agen.aclose()
            return got

        assert await on_asyncio(bridge, aio_side) == [0, 1, 2]
        with trio.fail_after(2):
            await finished.wait()
        assert len(produced) < 10


async def test_sync_call_runs_on_trio_thread_and_carries_errors() -> None:
    async with open_api_thread() as bridge:
        main = threading.get_ident()

        def ok() -> int:
            assert threading.get_ident() == main
            return 7

        def fails() -> int:
            raise NotFound("nope", field="name")

        async def aio_side() -> tuple[int, str]:
            value = await bridge.to_trio.call(ok)
            try:
                await bridge.to_trio.call(fails)
            except NotFound as e:
                return value, e.field or ""
            return value, "no error"

        assert await on_asyncio(bridge, aio_side) == (7, "name")

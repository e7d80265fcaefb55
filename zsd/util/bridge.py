"""The two-way bridge between trio (main thread, all business logic) and the
asyncio loop of the API thread (grpc.aio).

No thread is spent per call or per stream: asyncio -> trio goes through the
trio token (``run_sync_soon`` spawns a task in a bridge-owned nursery, the
result comes back with ``call_soon_threadsafe``); trio -> asyncio goes through
``run_coroutine_threadsafe`` and a ``trio.Event`` set through the token.
Deadlines become trio cancel scopes; an RPC cancelled on the asyncio side
cancels its trio scope.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from contextlib import aclosing, suppress
from typing import Any, TypeVar

import outcome
import trio

from zsd.errors import Cancelled, DeadlineExceeded, Unavailable

T = TypeVar("T")


class _Call:
    """Cancellation state of one bridged call; touched only on the trio thread."""

    __slots__ = ("cancelled", "scope")

    def __init__(self) -> None:
        self.cancelled = False
        self.scope: trio.CancelScope | None = None

    def cancel(self) -> None:
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()


class TrioPortal:
    """Lets asyncio code run trio coroutine functions. Create it inside trio with
    ``open_trio_portal``; use ``run`` from the asyncio thread."""

    def __init__(self, token: trio.lowlevel.TrioToken, nursery: trio.Nursery) -> None:
        self._token = token
        self._nursery = nursery

    async def run(self, fn: Callable[[], Awaitable[T]], *, timeout: float | None = None) -> T:
        """Runs ``fn()`` in trio and returns its result (or raises its exception).

        ``timeout`` (seconds) becomes a trio deadline -> ``DeadlineExceeded``.
        Cancelling the awaiting asyncio task cancels the trio side.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[outcome.Outcome[T]] = loop.create_future()
        call = _Call()

        def deliver(result: outcome.Outcome[T]) -> None:
            if not fut.done():
                fut.set_result(result)

        async def runner() -> None:
            result: outcome.Outcome[T] | None = None
            with trio.CancelScope() as scope:
                call.scope = scope
                if call.cancelled:
                    scope.cancel()
                try:
                    with trio.fail_after(timeout if timeout is not None else math.inf):
                        result = outcome.Value(await fn())
                except trio.TooSlowError:
                    result = outcome.Error(DeadlineExceeded(f"deadline of {timeout:.3g} s exceeded"))
                except Exception as e:  # delivered to the caller, which owns error handling
                    result = outcome.Error(e)
            if result is None:
                result = outcome.Error(Cancelled("the call was cancelled"))
            # RuntimeError: the API loop is gone (shutdown), nobody waits for this result.
            with suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver, result)

        try:
            self._token.run_sync_soon(self._nursery.start_soon, runner)
        except trio.RunFinishedError:
            raise Unavailable("zsd is shutting down") from None
        try:
            res = await fut
        except asyncio.CancelledError:
            with suppress(trio.RunFinishedError):
                self._token.run_sync_soon(call.cancel)
            raise
        return res.unwrap()

    async def call(self, fn: Callable[[], T]) -> T:
        """Runs a synchronous, non-blocking ``fn()`` on the trio thread and returns its result.

        The fast path for reads of trio-owned state: no task, cancel scope or deadline,
        since ``fn`` cannot wait (measured at ~1/5 of ``run``'s cost per call)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[outcome.Outcome[T]] = loop.create_future()

        def deliver(result: outcome.Outcome[T]) -> None:
            if not fut.done():
                fut.set_result(result)

        def on_trio() -> None:
            result = outcome.capture(fn)
            # RuntimeError: the API loop is gone (shutdown), nobody waits for this result.
            with suppress(RuntimeError):
                loop.call_soon_threadsafe(deliver, result)

        try:
            self._token.run_sync_soon(on_trio)
        except trio.RunFinishedError:
            raise Unavailable("zsd is shutting down") from None
        return (await fut).unwrap()

    async def stream(
        self, fn: Callable[[], AsyncGenerator[T, None]], *, buffer: int = 16
    ) -> AsyncGenerator[T, None]:
        """Iterates a trio async generator from asyncio, with back-pressure of ``buffer`` items.
        An exception raised by the generator is re-raised here, after the items before it."""
        send, receive = trio.open_memory_channel[outcome.Outcome[T]](buffer)

        async def pump() -> None:
            # Runs in the bridge nursery, so it must never raise: errors travel as items.
            async with send:
                try:
                    async with aclosing(fn()) as items:
                        async for item in items:
                            await send.send(outcome.Value(item))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # the asyncio side stopped listening
                except Exception as e:
                    with trio.move_on_after(1):
                        await send.send(outcome.Error(e))

        async def next_item() -> outcome.Outcome[T] | None:
            try:
                return await receive.receive()
            except trio.EndOfChannel:
                return None

        async def start() -> None:
            self._nursery.start_soon(pump)

        await self.run(start)
        try:
            while (item := await self.run(next_item)) is not None:
                yield item.unwrap()
        finally:
            with suppress(trio.RunFinishedError):
                self._token.run_sync_soon(receive.close)


class AsyncioPortal:
    """Lets trio code run coroutines on the API thread's asyncio loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken) -> None:
        self.loop = loop
        self._token = token

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        cf: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        done = trio.Event()

        def wake(_: object) -> None:
            with suppress(trio.RunFinishedError):
                self._token.run_sync_soon(done.set)

        cf.add_done_callback(wake)
        try:
            await done.wait()
        except trio.Cancelled:
            cf.cancel()
            raise
        return cf.result()

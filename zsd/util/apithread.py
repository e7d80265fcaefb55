"""The API thread: one asyncio loop in its own thread, bridged to trio both ways."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from zsd.util.bridge import AsyncioPortal, TrioPortal


@dataclass(frozen=True, kw_only=True)
class Bridge:
    to_trio: TrioPortal
    to_asyncio: AsyncioPortal


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        # Stopped: give whatever is still pending a chance to see its cancellation.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


@asynccontextmanager
async def open_api_thread(name: str = "zsd-api") -> AsyncIterator[Bridge]:
    """Starts the asyncio thread; on exit stops its loop and joins it."""
    token = trio.lowlevel.current_trio_token()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=_run_loop, args=(loop,), name=name, daemon=True)
    thread.start()
    try:
        async with trio.open_nursery() as nursery:
            yield Bridge(to_trio=TrioPortal(token, nursery), to_asyncio=AsyncioPortal(loop, token))
            nursery.cancel_scope.cancel()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        await trio.to_thread.run_sync(thread.join)

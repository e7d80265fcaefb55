"""A servicer served for real in tests: grpc.aio on the API thread (as zsd runs it),
on a Unix socket, with a blocking channel for the test to call through."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc

from zsd.util.apithread import Bridge


@asynccontextmanager
async def api_server(
    bridge: Bridge, socket: Path, register: Callable[[grpc.aio.Server], None]
) -> AsyncIterator[grpc.Channel]:
    """``register`` adds the servicers; the channel is closed and the server stopped on exit."""

    async def start() -> grpc.aio.Server:
        server = grpc.aio.server()
        register(server)
        server.add_insecure_port(f"unix:{socket}")
        await server.start()
        return server

    server = await bridge.to_asyncio.run(start())
    channel = grpc.insecure_channel(f"unix:{socket}")
    try:
        yield channel
    finally:
        channel.close()
        await bridge.to_asyncio.run(server.stop(0))

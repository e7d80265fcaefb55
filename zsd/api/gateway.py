"""What every servicer method shares: crossing into trio with the call's deadline,
and turning errors into gRPC statuses (with details) in one place."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import NoReturn, TypeVar

import grpc
from grpc_status import rpc_status

from zsd.api.status import to_rpc_status
from zsd.errors import Internal, ZsdError
from zsd.util.bridge import TrioPortal

log = logging.getLogger(__name__)
T = TypeVar("T")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


class Gateway:
    def __init__(self, portal: TrioPortal) -> None:
        self._portal = portal

    async def trio(
        self, context: grpc.aio.ServicerContext[object, object], fn: Callable[[], Awaitable[T]]
    ) -> T:
        """Runs ``fn`` on the trio side under the RPC's deadline."""
        return await self._portal.run(fn, timeout=context.time_remaining())

    async def trio_sync(self, fn: Callable[[], T]) -> T:
        """Runs a synchronous, non-blocking core function on the trio side (reads, starting operations)."""
        return await self._portal.call(fn)

    def stream(self, fn: Callable[[], AsyncGenerator[T, None]]) -> AsyncGenerator[T, None]:
        """Iterates a trio async generator from the API thread (with back-pressure)."""
        return self._portal.stream(fn)

    async def handle(
        self,
        context: grpc.aio.ServicerContext[object, object],
        method: Callable[[Req], Awaitable[Resp]],
        request: Req,
    ) -> Resp:
        try:
            return await method(request)
        except ZsdError as e:
            await abort(context, e)
        except Exception as e:
            incident = uuid.uuid4().hex[:8]
            log.exception("internal error %s in %s", incident, getattr(method, "__name__", method))
            await abort(context, Internal(f"internal error {incident} ({type(e).__name__}); see the zsd log"))


async def abort(context: grpc.aio.ServicerContext[object, object], error: ZsdError) -> NoReturn:
    status = rpc_status.to_status(to_rpc_status(error))
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("abort returned")  # pragma: no cover - grpc always raises

"""Sending each call where it must run: mutations (and consistent reads) to the
leader, whoever that is right now.

On the leader the call runs here. On a follower it is forwarded, as the same
gRPC method with the same request, over the peer channel; the leader's answer
(or error) is returned as is, after this host's copy of the state has caught up
with the revision the leader committed, so the caller reads its own write from
whichever host it asks next. When the leader is unknown, unreachable or has just
stepped down, the call waits for the next leader and is sent again until the
call's deadline: safe because every mutation carries a request_id (servicers
assign one when the client did not), which the store deduplicates across leader
changes. A forwarded call is never forwarded again: a host that is no longer
leader answers UNAVAILABLE NOT_LEADER and the forwarding host retries. A leader
that finds itself fenced by a newer epoch (it has not noticed losing its lease
yet) wrote nothing, so that is NOT_LEADER too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import grpc

from zsd.api.status import from_rpc_error
from zsd.cluster.peerclient import PeerTarget
from zsd.cluster.store.errors import Fenced
from zsd.errors import DeadlineExceeded, Unavailable, ZsdError

log = logging.getLogger(__name__)

FORWARDED = "zsd-forwarded"
REVISION = "zsd-revision"
DEFAULT_DEADLINE = 30.0
_CATCH_UP = 2.0


def has_metadata(context: Ctx, key: str) -> bool:
    return any(k == key for k, _ in context.invocation_metadata() or ())


def forwarded(context: Ctx) -> bool:
    """Whether another member sent this call here (so it runs here, never further)."""
    return has_metadata(context, FORWARDED)


class Message(Protocol):
    def SerializeToString(self, *, deterministic: bool = ...) -> bytes: ...


Resp = TypeVar("Resp", bound=Message)
Ctx = grpc.aio.ServicerContext[object, object]


@dataclass(frozen=True, kw_only=True)
class LeaderView:
    """Who leads, as this host last saw it; replaced wholesale (read from any thread)."""

    leading: bool
    target: PeerTarget | None
    epoch: int


class Router:
    """Used on the API thread's event loop."""

    def __init__(
        self,
        *,
        leader: Callable[[], LeaderView],
        channel: Callable[[PeerTarget], grpc.aio.Channel],
        wait_revision: Callable[[int, float], Awaitable[None]],
        retry_interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._leader = leader
        self._channel = channel
        self._wait_revision = wait_revision
        self._retry = retry_interval
        self._clock = clock

    async def call(
        self,
        context: Ctx,
        *,
        method: str,
        request: Message,
        response_type: Callable[[bytes], Resp],
        local: Callable[[], Awaitable[tuple[Resp, int]]],
    ) -> Resp:
        """``local`` runs the call here (on the leader) and returns (response, revision)."""
        was_forwarded = forwarded(context)
        remaining = context.time_remaining()
        deadline = self._clock() + (remaining if remaining is not None else DEFAULT_DEADLINE)
        attempt = 0
        while True:
            view = self._leader()
            try:
                if view.leading:
                    response, revision = await _run_local(local)
                else:
                    target = _forward_target(view, forwarded=was_forwarded)
                    response, revision = await self._forward(
                        target, method, request, response_type, deadline - self._clock()
                    )
                    if revision:
                        await self._wait_revision(revision, min(_CATCH_UP, max(deadline - self._clock(), 0)))
                context.set_trailing_metadata(((REVISION, str(revision)),))
                return response
            except Unavailable as e:
                attempt += 1
                if was_forwarded or self._clock() + self._retry >= deadline:
                    if attempt > 1:
                        raise DeadlineExceeded(
                            f"no leader accepted the call before its deadline "
                            f"({attempt} attempts; last: {e})",
                            reason="NO_LEADER",
                        ) from e
                    raise
                log.debug("%s: %s; retrying (attempt %d)", method, e, attempt)
                await asyncio.sleep(self._retry)

    async def _forward(
        self,
        target: PeerTarget,
        method: str,
        request: Message,
        response_type: Callable[[bytes], Resp],
        timeout: float,
    ) -> tuple[Resp, int]:
        if timeout <= 0:
            raise Unavailable("the call's deadline passed before a leader answered", reason="NO_LEADER")
        stub = self._channel(target).unary_unary(
            method, request_serializer=_serialize, response_deserializer=response_type
        )
        call = stub(request, timeout=timeout, metadata=((FORWARDED, "1"),))
        try:
            response: Resp = await call
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as e:
            code = e.code()
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded(f"the leader did not answer in time: {e.details()}") from e
            err = from_rpc_error(code, e.details() or "", e.trailing_metadata() or ())
            raise _not_leader_if_fenced(err) from e
        revision = next((int(v) for k, v in trailing or () if k == REVISION and str(v).isdigit()), 0)
        return response, revision


async def _run_local(local: Callable[[], Awaitable[tuple[Resp, int]]]) -> tuple[Resp, int]:
    try:
        return await local()
    except Fenced as e:
        raise _not_leader_if_fenced(e) from e


def _not_leader_if_fenced(err: ZsdError) -> ZsdError:
    # The store checks the epoch before writing anything, so a fenced call had no
    # effect and may run again on the new leader.
    if err.reason == Fenced.default_reason:
        return Unavailable(f"this host was deposed as leader: {err.message}", reason="NOT_LEADER")
    return err


def _forward_target(view: LeaderView, *, forwarded: bool) -> PeerTarget:
    if forwarded:
        raise Unavailable("this host is not the leader (any more)", reason="NOT_LEADER")
    if view.target is None:
        raise Unavailable("no leader is known yet", reason="NO_LEADER")
    return view.target


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()

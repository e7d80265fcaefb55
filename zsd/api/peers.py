"""Calls to other members' APIs, as the same gRPC method with the same request
(marked FORWARDED so the receiving host runs it rather than forwarding again):
to one named host, or to each of the others until one has the answer."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from zsd.api.gateway import Gateway
from zsd.api.router import FORWARDED
from zsd.api.status import from_rpc_error
from zsd.cluster.control import ClusterControl
from zsd.cluster.peerclient import PeerTarget
from zsd.cluster.records import KIND_HOST, HostEntry
from zsd.errors import DeadlineExceeded, NotFound, Unavailable, ZsdError

log = logging.getLogger(__name__)

Ctx = grpc.aio.ServicerContext[object, object]
Resp = TypeVar("Resp", bound=Message)
DEFAULT_TIMEOUT = 30.0


class Peers:
    """Used on the API thread."""

    def __init__(
        self,
        *,
        gateway: Gateway,
        control: ClusterControl,
        channel: Callable[[PeerTarget], grpc.aio.Channel],
        host: str,
        port: str,
    ) -> None:
        self._gw = gateway
        self._control = control
        self.channel = channel
        self.host = host
        self._port = port

    def _targets(self) -> dict[str, PeerTarget]:
        """(trio side) Every member's API address, from the state copy."""
        out = {}
        for record in self._control.replica.cache.list(KIND_HOST):
            entry = HostEntry.decode(record.data)
            if entry.address:
                address = f"[{entry.address}]" if ":" in entry.address else entry.address
                out[entry.name] = PeerTarget(endpoint=f"{address}:{self._port}", host_name=entry.name)
        return out

    async def targets(self) -> dict[str, PeerTarget]:
        return await self._gw.trio_sync(self._targets)

    async def target(self, host: str) -> PeerTarget:
        targets = await self.targets()
        if host not in targets:
            raise Unavailable(f"host {host!r} has no known address", reason="HOST_UNREACHABLE")
        return targets[host]

    async def call(
        self,
        host: str,
        method: str,
        request: Message,
        response_type: Callable[[bytes], Resp],
        *,
        timeout: float | None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Resp:
        """``method``: the full name, "/zsd.v1.Service/Method"."""
        target = await self.target(host)
        stub = self.channel(target).unary_unary(
            method, request_serializer=_serialize, response_deserializer=response_type
        )
        try:
            response: Resp = await stub(
                request,
                timeout=timeout if timeout is not None else DEFAULT_TIMEOUT,
                metadata=((FORWARDED, "1"), *extra),
            )
        except grpc.aio.AioRpcError as e:
            raise translate(e, host) from e
        return response

    async def stream(
        self, host: str, method: str, request: Message, response_type: Callable[[bytes], Resp]
    ) -> AsyncIterator[Resp]:
        """A server-streaming call on ``host``, item by item, until it ends or the caller stops."""
        target = await self.target(host)
        stub = self.channel(target).unary_stream(
            method, request_serializer=_serialize, response_deserializer=response_type
        )
        call = stub(request, metadata=((FORWARDED, "1"),))
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as e:
            raise translate(e, host) from e
        finally:
            call.cancel()

    async def first(
        self, method: str, request: Message, response_type: Callable[[bytes], Resp], *, timeout: float | None
    ) -> Resp | None:
        """The first answer from the other members that is not NOT_FOUND; None when
        none has it (or none answered)."""
        for host in sorted(await self.targets()):
            if host == self.host:
                continue
            try:
                return await self.call(host, method, request, response_type, timeout=timeout)
            except NotFound:
                continue
            except ZsdError as e:
                if e.reason in ("HOST_UNREACHABLE", "DEADLINE_EXCEEDED"):
                    log.debug("%s: %s did not answer: %s", method, host, e)
                    continue
                raise
        return None


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def translate(error: grpc.aio.AioRpcError, host: str) -> ZsdError:
    code = error.code()
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"host {host} did not answer in time: {error.details()}")
    if code is grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"host {host} is unreachable: {error.details()}", reason="HOST_UNREACHABLE")
    return from_rpc_error(code, error.details() or "", error.trailing_metadata() or ())

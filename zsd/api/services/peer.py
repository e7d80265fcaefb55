"""PeerService: the calls hosts of one cluster make to each other.

Callers are checked by their certificate: hosts of the cluster for Watch and
ReportHost; a join certificate for Join (and nothing else).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

from zsd.api.gateway import Gateway, abort
from zsd.api.router import Router
from zsd.cluster import feedcodec
from zsd.cluster.control import ClusterControl
from zsd.cluster.store import Snapshot
from zsd.errors import InvalidArgument, ZsdError
from zsd.peer.v1 import peer_pb2, peer_pb2_grpc

log = logging.getLogger(__name__)

Ctx = grpc.aio.ServicerContext[object, object]
Authorize = Callable[[Ctx, tuple[str, ...]], str]
"""Checks the caller's certificate is of one of the kinds; returns the caller's name."""
Admit = Callable[[peer_pb2.JoinRequest], Awaitable[tuple[peer_pb2.JoinResponse, int]]]
"""Runs a join on the leader (trio side): the response and the revision it committed."""

_METHOD = "/zsd.peer.v1.PeerService/"


class PeerService(peer_pb2_grpc.PeerServiceServicer):
    def __init__(
        self, *, gateway: Gateway, control: ClusterControl, router: Router, authorize: Authorize, admit: Admit
    ) -> None:
        self._gw = gateway
        self._control = control
        self._router = router
        self._authorize = authorize
        self._admit = admit

    async def Watch(self, request: peer_pb2.WatchRequest, context: Ctx) -> AsyncIterator[peer_pb2.WatchEvent]:
        try:
            self._authorize(context, ("host",))
            control = self._control
            epoch = await self._gw.trio_sync(lambda: control.store().epoch)  # NOT_LEADER on a follower
            feed = self._gw.stream(lambda: control.feed(request.from_revision, request.snapshot))
            async for item in feed:
                if isinstance(item, Snapshot):
                    yield peer_pb2.WatchEvent(snapshot=feedcodec.snapshot_to_pb(item), leader_epoch=epoch)
                else:
                    yield peer_pb2.WatchEvent(changes=feedcodec.changeset_to_pb(item), leader_epoch=epoch)
        except ZsdError as e:
            await abort(context, e)

    async def ReportHost(
        self, request: peer_pb2.ReportHostRequest, context: Ctx
    ) -> peer_pb2.ReportHostResponse:
        async def report(req: peer_pb2.ReportHostRequest) -> peer_pb2.ReportHostResponse:
            caller = self._authorize(context, ("host",))
            if req.host.name != f"hosts/{caller}":
                raise InvalidArgument(
                    f"a host reports only itself: the caller is hosts/{caller}, not {req.host.name!r}",
                    field="host.name",
                )
            status = req.host.SerializeToString(deterministic=True)
            control = self._control

            async def on_leader() -> tuple[peer_pb2.ReportHostResponse, int]:
                revision = await self._gw.trio(
                    context, lambda: control.report_status(host=caller, status=status)
                )
                return peer_pb2.ReportHostResponse(revision=revision), revision

            return await self._router.call(
                context,
                method=_METHOD + "ReportHost",
                request=req,
                response_type=peer_pb2.ReportHostResponse.FromString,
                local=on_leader,
            )

        return await self._gw.handle(context, report, request)

    async def Join(self, request: peer_pb2.JoinRequest, context: Ctx) -> peer_pb2.JoinResponse:
        async def join(req: peer_pb2.JoinRequest) -> peer_pb2.JoinResponse:
            self._authorize(context, ("join", "host"))

            async def on_leader() -> tuple[peer_pb2.JoinResponse, int]:
                return await self._gw.trio(context, lambda: self._admit(req))

            return await self._router.call(
                context,
                method=_METHOD + "Join",
                request=req,
                response_type=peer_pb2.JoinResponse.FromString,
                local=on_leader,
            )

        return await self._gw.handle(context, join, request)

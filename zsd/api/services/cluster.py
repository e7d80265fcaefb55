"""ClusterService."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, replace

import grpc

from zsd.api import convert, hostviews, names
from zsd.api.gateway import Gateway, abort
from zsd.cluster.control import ClusterControl, HostView
from zsd.cluster.local import ClusterRecord, LeaderRecord, LocalCluster, MemberRecord, MemberState
from zsd.cluster.records import KIND_HOST, KIND_HOST_STATUS
from zsd.errors import InvalidArgument, Unsupported, ZsdError
from zsd.v1 import cluster_pb2, cluster_pb2_grpc, host_pb2

Ctx = grpc.aio.ServicerContext[object, object]

COLLECTIONS = ("hosts",)
_MEMBER_STATES = {s.value: s for s in MemberState}


@dataclass(frozen=True, kw_only=True)
class _HostChange:
    name: str
    view: HostView | None
    """None: the host was removed."""


@dataclass(frozen=True, kw_only=True)
class _Revision:
    revision: int
    changes: tuple[_HostChange, ...]


class ClusterService(cluster_pb2_grpc.ClusterServiceServicer):
    def __init__(
        self, *, gateway: Gateway, cluster: LocalCluster, control: ClusterControl | None = None
    ) -> None:
        self._gw = gateway
        self._cluster = cluster
        self._control = control

    async def GetCluster(self, request: cluster_pb2.GetClusterRequest, context: Ctx) -> cluster_pb2.Cluster:
        async def get_cluster(req: cluster_pb2.GetClusterRequest) -> cluster_pb2.Cluster:
            names.cluster(req.name)
            record = self._cluster.cluster()  # thread-safe read (see LocalCluster)
            if self._control is None:
                return convert.cluster(record)
            control = self._control
            views, revision = await self._gw.trio_sync(lambda: (control.host_views(), control.revision))
            msg = convert.cluster(_with_members(record, views, self._cluster.host_name))
            msg.revision = revision
            return msg

        return await self._gw.handle(context, get_cluster, request)

    async def Watch(
        self, request: cluster_pb2.WatchRequest, context: Ctx
    ) -> AsyncIterator[cluster_pb2.WatchResponse]:
        try:
            control = self._control
            if control is None:
                raise Unsupported(
                    "the embedded cluster of one keeps no cluster state to watch", reason="NOT_A_MEMBER"
                )
            for c in request.collections:
                if c not in COLLECTIONS:
                    raise InvalidArgument(
                        f"unknown collection {c!r}; watchable: {', '.join(COLLECTIONS)}", field="collections"
                    )
            me = self._cluster.host_name
            async for rev in self._gw.stream(lambda: _host_revisions(control, request.from_revision)):
                yield cluster_pb2.WatchResponse(
                    revision=rev.revision, changes=[self._resource_change(c, me) for c in rev.changes]
                )
        except ZsdError as e:
            await abort(context, e)

    def _resource_change(self, change: _HostChange, me: str) -> cluster_pb2.ResourceChange:
        name = f"hosts/{change.name}"
        if change.view is None:
            return cluster_pb2.ResourceChange(type=cluster_pb2.ResourceChange.DELETE, name=name)
        # Other hosts as they reported themselves; this one as its report too, so the
        # stream says what the cluster state says, not what this host sees live.
        host: host_pb2.Host = hostviews.member_host(change.view, own=None)
        if change.name == me:
            host.gossip_state = host_pb2.MEMBER_ALIVE
        return cluster_pb2.ResourceChange(type=cluster_pb2.ResourceChange.PUT, name=name, host=host)


async def _host_revisions(control: ClusterControl, from_revision: int) -> AsyncGenerator[_Revision, None]:
    """Host changes per revision (trio side). From 0: every host as of now, first."""
    position = from_revision
    if position == 0:
        position = control.revision
        yield _Revision(
            revision=position,
            changes=tuple(_HostChange(name=v.entry.name, view=v) for v in control.host_views()),
        )
    async with contextlib.aclosing(control.replica.changes(position)) as changesets:
        async for changeset in changesets:
            touched: dict[str, bool] = {}
            for change in changeset.changes:
                if change.kind == KIND_HOST:
                    touched[change.name] = True
                elif change.kind == KIND_HOST_STATUS:
                    touched.setdefault(change.name, True)
            if not touched:
                continue
            views = {v.entry.name: v for v in control.host_views()}
            yield _Revision(
                revision=changeset.revision,
                changes=tuple(_HostChange(name=name, view=views.get(name)) for name in sorted(touched)),
            )


def _with_members(record: ClusterRecord, views: tuple[HostView, ...], me: str) -> ClusterRecord:
    members = tuple(
        MemberRecord(
            host=v.entry.name,
            host_id=v.entry.host_id,
            address=v.entry.address,
            state=MemberState.ALIVE
            if v.entry.name == me
            else _MEMBER_STATES.get(v.gossip or "", MemberState.ALIVE),
        )
        for v in sorted(views, key=lambda v: v.entry.name)
    )
    leader = record.leader
    if leader.host.startswith("host-id-"):
        leader_id = int(leader.host.removeprefix("host-id-"))
        name = next((v.entry.name for v in views if v.entry.host_id == leader_id), leader.host)
        leader = LeaderRecord(host=name, epoch=leader.epoch, since=leader.since)
    return replace(record, members=members, leader=leader)

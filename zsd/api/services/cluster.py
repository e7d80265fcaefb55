"""ClusterService."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from zsd.api import convert, names
from zsd.api.gateway import Gateway
from zsd.cluster.local import LocalCluster
from zsd.v1 import cluster_pb2, cluster_pb2_grpc

Ctx = grpc.aio.ServicerContext[object, object]


class ClusterService(cluster_pb2_grpc.ClusterServiceServicer):
    def __init__(self, *, gateway: Gateway, cluster: LocalCluster) -> None:
        self._gw = gateway
        self._cluster = cluster

    async def GetCluster(self, request: cluster_pb2.GetClusterRequest, context: Ctx) -> cluster_pb2.Cluster:
        async def get_cluster(req: cluster_pb2.GetClusterRequest) -> cluster_pb2.Cluster:
            names.cluster(req.name)

            return convert.cluster(self._cluster.cluster())  # thread-safe read (see LocalCluster)

        return await self._gw.handle(context, get_cluster, request)

    async def Watch(
        self, request: cluster_pb2.WatchRequest, context: Ctx
    ) -> AsyncIterator[cluster_pb2.WatchResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Watch is being built")
        yield cluster_pb2.WatchResponse()

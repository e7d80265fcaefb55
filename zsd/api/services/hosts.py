"""HostService."""

from __future__ import annotations

import grpc

from zsd.api import convert, masks, names, paging
from zsd.api.gateway import Gateway
from zsd.cluster.local import HostRecord, LocalCluster
from zsd.cluster.operations import OperationRegistry, OperationView, Progress
from zsd.host.inventory import Inventory
from zsd.v1 import host_pb2, host_pb2_grpc, operation_pb2

Ctx = grpc.aio.ServicerContext[object, object]


class HostService(host_pb2_grpc.HostServiceServicer):
    def __init__(
        self, *, gateway: Gateway, cluster: LocalCluster, inventory: Inventory, operations: OperationRegistry
    ) -> None:
        self._gw = gateway
        self._cluster = cluster
        self._inventory = inventory
        self._ops = operations

    async def ListHosts(self, request: host_pb2.ListHostsRequest, context: Ctx) -> host_pb2.ListHostsResponse:
        async def list_hosts(req: host_pb2.ListHostsRequest) -> host_pb2.ListHostsResponse:
            masks.validate(req.read_mask, host_pb2.Host, field="read_mask")

            async def core() -> list[HostRecord]:
                return sorted(self._cluster.hosts(), key=lambda h: h.name)

            records = await self._gw.trio(context, core)
            page = paging.paginate(
                records, key=lambda h: h.name, page_size=req.page_size, page_token=req.page_token
            )
            return host_pb2.ListHostsResponse(
                hosts=[masks.apply(req.read_mask, convert.host(h)) for h in page.items],
                next_page_token=page.next_page_token,
            )

        return await self._gw.handle(context, list_hosts, request)

    async def GetHost(self, request: host_pb2.GetHostRequest, context: Ctx) -> host_pb2.Host:
        async def get_host(req: host_pb2.GetHostRequest) -> host_pb2.Host:
            host = names.host_id(req.name)
            masks.validate(req.read_mask, host_pb2.Host, field="read_mask")

            async def core() -> HostRecord:
                return self._cluster.host(host)

            return masks.apply(req.read_mask, convert.host(await self._gw.trio(context, core)))

        return await self._gw.handle(context, get_host, request)

    async def RefreshHost(
        self, request: host_pb2.RefreshHostRequest, context: Ctx
    ) -> operation_pb2.Operation:
        async def refresh_host(req: host_pb2.RefreshHostRequest) -> operation_pb2.Operation:
            host = names.host_id(req.name)
            request_id = names.request_id(req.request_id)

            async def core() -> OperationView:
                target = f"hosts/{self._cluster.host(host).name}"  # NotFound before anything starts

                async def job(progress: Progress) -> HostRecord:
                    progress(10, "collecting inventory and probing KVM")
                    await self._inventory.refresh()
                    progress(90, "inventory collected")
                    return self._cluster.host(host)

                return self._ops.start(verb="RefreshHost", target=target, request_id=request_id, job=job)

            view = await self._gw.trio(context, core)
            return convert.operation(view, convert.operation_result(view.result))

        return await self._gw.handle(context, refresh_host, request)

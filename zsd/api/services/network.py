"""NetworkService: distributed switches and port groups. Writes go to the leader (the
Router), which checks them against the cluster state (``NetworkCatalog``); reads answer
from this host's copy of cluster.db. Every member realises the result in its kernel
(``zsd.network.reconciler``)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from zsd.api import networkconv, paging
from zsd.api.gateway import Gateway
from zsd.api.names import request_id as check_request_id
from zsd.api.router import Router
from zsd.errors import FailedPrecondition
from zsd.network.catalog import NetworkCatalog
from zsd.v1 import network_pb2, network_pb2_grpc

Ctx = grpc.aio.ServicerContext[object, object]
_METHOD = "/zsd.v1.NetworkService/"
R = TypeVar("R", bound=Message)


class NetworkService(network_pb2_grpc.NetworkServiceServicer):
    def __init__(self, *, gateway: Gateway, catalog: NetworkCatalog | None, router: Router | None) -> None:
        """``catalog``, ``router``: None when this zsd is no cluster member (then every
        call is refused: switches live in cluster.db)."""
        self._gw = gateway
        self._catalog = catalog
        self._router = router

    def _parts(self) -> tuple[NetworkCatalog, Router]:
        if self._catalog is None or self._router is None:
            raise FailedPrecondition(
                "switches live in the cluster state; this zsd runs without a cluster", reason="NOT_A_MEMBER"
            )
        return self._catalog, self._router

    async def _on_leader(
        self,
        context: Ctx,
        method: str,
        request: Message,
        response_type: Callable[[bytes], R],
        write: Callable[[], Awaitable[tuple[R, int]]],
    ) -> R:
        _, router = self._parts()

        async def local() -> tuple[R, int]:
            return await self._gw.trio(context, write)

        return await router.call(
            context, method=_METHOD + method, request=request, response_type=response_type, local=local
        )

    # -- switches ------------------------------------------------------------------

    def _switch_message(self, catalog: NetworkCatalog, name: str) -> network_pb2.Switch:
        """(trio side)"""
        return networkconv.switch_message(catalog.switch(name), catalog.port_groups(name))

    async def ListSwitches(
        self, request: network_pb2.ListSwitchesRequest, context: Ctx
    ) -> network_pb2.ListSwitchesResponse:
        async def run(req: network_pb2.ListSwitchesRequest) -> network_pb2.ListSwitchesResponse:
            catalog, _ = self._parts()

            def read() -> list[network_pb2.Switch]:
                groups = catalog.port_groups()
                return [networkconv.switch_message(s, groups) for s in catalog.switches()]

            items = await self._gw.trio_sync(read)
            page = paging.paginate(
                items, key=lambda s: s.name, page_size=req.page_size, page_token=req.page_token
            )
            return network_pb2.ListSwitchesResponse(switches=page.items, next_page_token=page.next_page_token)

        return await self._gw.handle(context, run, request)

    async def GetSwitch(self, request: network_pb2.GetSwitchRequest, context: Ctx) -> network_pb2.Switch:
        async def run(req: network_pb2.GetSwitchRequest) -> network_pb2.Switch:
            name = networkconv.switch_id(req.name)
            catalog, _ = self._parts()
            return await self._gw.trio_sync(lambda: self._switch_message(catalog, name))

        return await self._gw.handle(context, run, request)

    async def CreateSwitch(
        self, request: network_pb2.CreateSwitchRequest, context: Ctx
    ) -> network_pb2.Switch:
        async def run(req: network_pb2.CreateSwitchRequest) -> network_pb2.Switch:
            switch = networkconv.switch_model(req.switch_id, req.switch)
            req.request_id = check_request_id(req.request_id) or str(uuid.uuid4())
            catalog, _ = self._parts()
            rid = req.request_id

            async def write() -> tuple[network_pb2.Switch, int]:
                stored, revision = await catalog.create_switch(switch, request_id=rid)
                return networkconv.switch_message(stored, []), revision

            return await self._on_leader(context, "CreateSwitch", req, network_pb2.Switch.FromString, write)

        return await self._gw.handle(context, run, request)

    async def DeleteSwitch(self, request: network_pb2.DeleteSwitchRequest, context: Ctx) -> empty_pb2.Empty:
        async def run(req: network_pb2.DeleteSwitchRequest) -> empty_pb2.Empty:
            name = networkconv.switch_id(req.name)
            req.request_id = check_request_id(req.request_id) or str(uuid.uuid4())
            catalog, _ = self._parts()
            rid = req.request_id

            async def write() -> tuple[empty_pb2.Empty, int]:
                return empty_pb2.Empty(), await catalog.delete_switch(name, request_id=rid)

            return await self._on_leader(context, "DeleteSwitch", req, empty_pb2.Empty.FromString, write)

        return await self._gw.handle(context, run, request)

    # -- port groups -----------------------------------------------------------------

    async def ListPortGroups(
        self, request: network_pb2.ListPortGroupsRequest, context: Ctx
    ) -> network_pb2.ListPortGroupsResponse:
        async def run(req: network_pb2.ListPortGroupsRequest) -> network_pb2.ListPortGroupsResponse:
            switch = networkconv.switch_id(req.parent, field="parent")
            catalog, _ = self._parts()

            def read() -> list[network_pb2.PortGroup]:
                if switch != "-":
                    catalog.switch(switch)  # NotFound for an unknown parent
                groups = catalog.port_groups(None if switch == "-" else switch)
                return [networkconv.port_group_message(g) for g in groups]

            items = await self._gw.trio_sync(read)
            page = paging.paginate(
                items, key=lambda g: g.name, page_size=req.page_size, page_token=req.page_token
            )
            return network_pb2.ListPortGroupsResponse(
                port_groups=page.items, next_page_token=page.next_page_token
            )

        return await self._gw.handle(context, run, request)

    async def GetPortGroup(
        self, request: network_pb2.GetPortGroupRequest, context: Ctx
    ) -> network_pb2.PortGroup:
        async def run(req: network_pb2.GetPortGroupRequest) -> network_pb2.PortGroup:
            switch, name = networkconv.port_group_ids(req.name)
            catalog, _ = self._parts()
            return await self._gw.trio_sync(
                lambda: networkconv.port_group_message(catalog.port_group(switch, name))
            )

        return await self._gw.handle(context, run, request)

    async def CreatePortGroup(
        self, request: network_pb2.CreatePortGroupRequest, context: Ctx
    ) -> network_pb2.PortGroup:
        async def run(req: network_pb2.CreatePortGroupRequest) -> network_pb2.PortGroup:
            switch = networkconv.switch_id(req.parent, field="parent")
            pg = networkconv.port_group_model(switch, req.port_group_id, req.port_group)
            req.request_id = check_request_id(req.request_id) or str(uuid.uuid4())
            catalog, _ = self._parts()
            rid = req.request_id

            async def write() -> tuple[network_pb2.PortGroup, int]:
                stored, revision = await catalog.create_port_group(pg, request_id=rid)
                return networkconv.port_group_message(stored), revision

            return await self._on_leader(
                context, "CreatePortGroup", req, network_pb2.PortGroup.FromString, write
            )

        return await self._gw.handle(context, run, request)

    async def DeletePortGroup(
        self, request: network_pb2.DeletePortGroupRequest, context: Ctx
    ) -> empty_pb2.Empty:
        async def run(req: network_pb2.DeletePortGroupRequest) -> empty_pb2.Empty:
            switch, name = networkconv.port_group_ids(req.name)
            req.request_id = check_request_id(req.request_id) or str(uuid.uuid4())
            catalog, _ = self._parts()
            rid = req.request_id

            async def write() -> tuple[empty_pb2.Empty, int]:
                return empty_pb2.Empty(), await catalog.delete_port_group(switch, name, request_id=rid)

            return await self._on_leader(context, "DeletePortGroup", req, empty_pb2.Empty.FromString, write)

        return await self._gw.handle(context, run, request)

    # -- NICs --------------------------------------------------------------------------

    async def ListNics(
        self, request: network_pb2.ListNicsRequest, context: Ctx
    ) -> network_pb2.ListNicsResponse:
        async def run(req: network_pb2.ListNicsRequest) -> network_pb2.ListNicsResponse:
            catalog, _ = self._parts()

            def read() -> list[network_pb2.VirtualNic]:
                users = catalog.nic_users()
                return [networkconv.nic_message(n, users.get(n.name)) for n in catalog.nics()]

            items = await self._gw.trio_sync(read)
            page = paging.paginate(
                items, key=lambda n: n.name, page_size=req.page_size, page_token=req.page_token
            )
            return network_pb2.ListNicsResponse(nics=page.items, next_page_token=page.next_page_token)

        return await self._gw.handle(context, run, request)

    async def GetNic(self, request: network_pb2.GetNicRequest, context: Ctx) -> network_pb2.VirtualNic:
        async def run(req: network_pb2.GetNicRequest) -> network_pb2.VirtualNic:
            name = networkconv.nic_id(req.name)
            catalog, _ = self._parts()
            return await self._gw.trio_sync(
                lambda: networkconv.nic_message(catalog.nic(name), catalog.nic_users().get(name))
            )

        return await self._gw.handle(context, run, request)

    async def CreateNic(self, request: network_pb2.CreateNicRequest, context: Ctx) -> network_pb2.VirtualNic:
        async def run(req: network_pb2.CreateNicRequest) -> network_pb2.VirtualNic:
            record = networkconv.nic_record(req.nic_id, req.nic)
            asked = list(req.nic.ip_addresses)
            req.request_id = check_request_id(req.request_id) or str(uuid.uuid4())
            catalog, _ = self._parts()
            rid = req.request_id

            async def write() -> tuple[network_pb2.VirtualNic, int]:
                stored, revision = await catalog.create_nic(record, ip_addresses=asked, request_id=rid)
                return networkconv.nic_message(stored, None), revision

            return await self._on_leader(context, "CreateNic", req, network_pb2.VirtualNic.FromString, write)

        return await self._gw.handle(context, run, request)

    async def DeleteNic(self, request: network_pb2.DeleteNicRequest, context: Ctx) -> empty_pb2.Empty:
        async def run(req: network_pb2.DeleteNicRequest) -> empty_pb2.Empty:
            name = networkconv.nic_id(req.name)
            req.request_id = check_request_id(req.request_id) or str(uuid.uuid4())
            catalog, _ = self._parts()
            rid = req.request_id

            async def write() -> tuple[empty_pb2.Empty, int]:
                return empty_pb2.Empty(), await catalog.delete_nic(name, request_id=rid)

            return await self._on_leader(context, "DeleteNic", req, empty_pb2.Empty.FromString, write)

        return await self._gw.handle(context, run, request)

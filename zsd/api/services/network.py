"""NetworkService: distributed switches and port groups. Writes go to the leader (the
Router), which checks them against the cluster state (``NetworkCatalog``); reads answer
from this host's copy of cluster.db. Every member realises the result in its kernel
(``zsd.network.reconciler``). Security-group hit counters are each host's own: the
serving host gathers them from the hosts that count them (``zsd.api.grouphits``)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Protocol, TypeVar

import grpc
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from zsd.api import grouphits, networkconv, paging
from zsd.api.gateway import Gateway
from zsd.api.grouphits import Hit
from zsd.api.names import host_id
from zsd.api.names import request_id as check_request_id
from zsd.api.router import Router, forwarded
from zsd.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from zsd.network.catalog import NetworkCatalog
from zsd.network.secgroups.group import SecurityGroup
from zsd.network.secgroups.hostmodel import HitCount
from zsd.network.secgroups.transfer import export_rules, import_rules
from zsd.v1 import network_pb2, network_pb2_grpc

Ctx = grpc.aio.ServicerContext[object, object]
_METHOD = "/zsd.v1.NetworkService/"
R = TypeVar("R", bound=Message)


class PeerCalls(Protocol):
    """What the service needs of ``zsd.api.peers.Peers``: a call on a named member."""

    async def call(
        self,
        host: str,
        method: str,
        request: Message,
        response_type: Callable[[bytes], R],
        *,
        timeout: float | None,
    ) -> R: ...


class NetworkService(network_pb2_grpc.NetworkServiceServicer):
    def __init__(
        self,
        *,
        gateway: Gateway,
        catalog: NetworkCatalog | None,
        router: Router | None,
        host: str = "",
        hits: Callable[[], Awaitable[tuple[HitCount, ...]]] | None = None,
        peers: PeerCalls | None = None,
        members: Callable[[], Mapping[str, str]] | None = None,
        host_deadline: float = grouphits.HOST_DEADLINE,
    ) -> None:
        """``catalog``, ``router``: None when this zsd is no cluster member (then every
        call is refused: switches live in cluster.db). ``hits``: this host's firewall
        counters (``host`` names it in answers). ``peers``, ``members`` (trio side:
        every member -> its gossip state here, "" when unknown): how the other hosts'
        counters are asked for; without them, only this host's are counted.
        ``host_deadline``: seconds each host has to answer."""
        self._host = host
        self._hits = hits
        self._peers = peers
        self._members = members
        self._host_deadline = host_deadline
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

    # -- security groups -----------------------------------------------------------------

    def _group_message(self, catalog: NetworkCatalog, name: str) -> network_pb2.SecurityGroup:
        """(trio side)"""
        return networkconv.security_group_message(catalog.security_group(name), catalog.nics())

    async def ListSecurityGroups(
        self, request: network_pb2.ListSecurityGroupsRequest, context: Ctx
    ) -> network_pb2.ListSecurityGroupsResponse:
        async def run(req: network_pb2.ListSecurityGroupsRequest) -> network_pb2.ListSecurityGroupsResponse:
            catalog, _ = self._parts()

            def read() -> list[network_pb2.SecurityGroup]:
                nics = catalog.nics()
                return [networkconv.security_group_message(g, nics) for g in catalog.security_groups()]

            items = await self._gw.trio_sync(read)
            page = paging.paginate(
                items, key=lambda g: g.name, page_size=req.page_size, page_token=req.page_token
            )
            return network_pb2.ListSecurityGroupsResponse(
                security_groups=page.items, next_page_token=page.next_page_token
            )

        return await self._gw.handle(context, run, request)

    async def GetSecurityGroup(
        self, request: network_pb2.GetSecurityGroupRequest, context: Ctx
    ) -> network_pb2.SecurityGroup:
        async def run(req: network_pb2.GetSecurityGroupRequest) -> network_pb2.SecurityGroup:
            name = networkconv.security_group_id(req.name)
            catalog, _ = self._parts()
            return await self._gw.trio_sync(lambda: self._group_message(catalog, name))

        return await self._gw.handle(context, run, request)

    async def _group_write(
        self,
        context: Ctx,
        method: str,
        request: Message,
        write: Callable[[NetworkCatalog], Awaitable[str]],
    ) -> network_pb2.SecurityGroup:
        """``write`` changes a group on the leader and returns its name."""
        catalog, _ = self._parts()

        async def on_leader() -> tuple[network_pb2.SecurityGroup, int]:
            name = await write(catalog)
            return self._group_message(catalog, name), catalog.revision

        return await self._on_leader(
            context, method, request, network_pb2.SecurityGroup.FromString, on_leader
        )

    async def CreateSecurityGroup(
        self, request: network_pb2.CreateSecurityGroupRequest, context: Ctx
    ) -> network_pb2.SecurityGroup:
        async def run(req: network_pb2.CreateSecurityGroupRequest) -> network_pb2.SecurityGroup:
            req.request_id = check_request_id(req.request_id) or str(uuid.uuid4())
            msg, name, rid = req.security_group, req.security_group_id, req.request_id
            if len(msg.description) > 1024:
                raise InvalidArgument("at most 1024 characters", field="security_group.description")

            async def write(catalog: NetworkCatalog) -> str:
                specs = networkconv.rule_specs(
                    msg.rules, known_groups={r.group.name for r in catalog.security_groups()} | {name},
                    field="security_group.rules",
                )  # fmt: skip
                await catalog.create_security_group(
                    name, specs, allow_members=not msg.allow_members_disabled, description=msg.description,
                    request_id=rid,
                )  # fmt: skip
                return name

            return await self._group_write(context, "CreateSecurityGroup", req, write)

        return await self._gw.handle(context, run, request)

    async def UpdateSecurityGroup(
        self, request: network_pb2.UpdateSecurityGroupRequest, context: Ctx
    ) -> network_pb2.SecurityGroup:
        async def run(req: network_pb2.UpdateSecurityGroupRequest) -> network_pb2.SecurityGroup:
            name = networkconv.security_group_id(req.security_group.name, field="security_group.name")
            paths = set(req.update_mask.paths)
            if not paths or paths - {"description", "allow_members"}:
                raise InvalidArgument("updatable: description, allow_members", field="update_mask.paths")
            req.request_id = check_request_id(req.request_id) or str(uuid.uuid4())
            msg, rid = req.security_group, req.request_id

            def change(group: SecurityGroup, _known: set[str]) -> SecurityGroup:
                if "allow_members" in paths:
                    group = group.with_allow_members(msg.allow_members)
                if "description" in paths:
                    group = replace(group, description=msg.description)
                return group

            async def write(catalog: NetworkCatalog) -> str:
                await catalog.change_security_group(name, change, what="UpdateSecurityGroup", request_id=rid)
                return name

            return await self._group_write(context, "UpdateSecurityGroup", req, write)

        return await self._gw.handle(context, run, request)

    async def DeleteSecurityGroup(
        self, request: network_pb2.DeleteSecurityGroupRequest, context: Ctx
    ) -> empty_pb2.Empty:
        async def run(req: network_pb2.DeleteSecurityGroupRequest) -> empty_pb2.Empty:
            name = networkconv.security_group_id(req.name)
            req.request_id = check_request_id(req.request_id) or str(uuid.uuid4())
            catalog, _ = self._parts()
            rid = req.request_id

            async def write() -> tuple[empty_pb2.Empty, int]:
                return empty_pb2.Empty(), await catalog.delete_security_group(name, request_id=rid)

            return await self._on_leader(
                context, "DeleteSecurityGroup", req, empty_pb2.Empty.FromString, write
            )

        return await self._gw.handle(context, run, request)

    async def AddSecurityGroupRule(
        self, request: network_pb2.AddSecurityGroupRuleRequest, context: Ctx
    ) -> network_pb2.SecurityGroup:
        async def run(req: network_pb2.AddSecurityGroupRuleRequest) -> network_pb2.SecurityGroup:
            name = networkconv.security_group_id(req.name)
            req.request_id = check_request_id(req.request_id) or str(uuid.uuid4())
            rule, rid = req.rule, req.request_id
            at = req.priority if req.HasField("priority") else None

            def change(group: SecurityGroup, known: set[str]) -> SecurityGroup:
                (spec,) = networkconv.rule_specs([rule], known_groups=known, field="rule")
                if at is None:
                    return group.add_rule(spec, known_groups=known)
                return group.insert_rule(at, spec, known_groups=known)

            async def write(catalog: NetworkCatalog) -> str:
                await catalog.change_security_group(name, change, what="AddSecurityGroupRule", request_id=rid)
                return name

            return await self._group_write(context, "AddSecurityGroupRule", req, write)

        return await self._gw.handle(context, run, request)

    async def DeleteSecurityGroupRule(
        self, request: network_pb2.DeleteSecurityGroupRuleRequest, context: Ctx
    ) -> network_pb2.SecurityGroup:
        async def run(req: network_pb2.DeleteSecurityGroupRuleRequest) -> network_pb2.SecurityGroup:
            name = networkconv.security_group_id(req.name)
            req.request_id = check_request_id(req.request_id) or str(uuid.uuid4())
            priority, rid = req.priority, req.request_id

            async def write(catalog: NetworkCatalog) -> str:
                await catalog.change_security_group(
                    name,
                    lambda g, _k: g.delete_rule(priority),
                    what="DeleteSecurityGroupRule",
                    request_id=rid,
                )
                return name

            return await self._group_write(context, "DeleteSecurityGroupRule", req, write)

        return await self._gw.handle(context, run, request)

    async def ExportSecurityGroupRules(
        self, request: network_pb2.ExportSecurityGroupRulesRequest, context: Ctx
    ) -> network_pb2.SecurityGroupRulesDocument:
        async def run(
            req: network_pb2.ExportSecurityGroupRulesRequest,
        ) -> network_pb2.SecurityGroupRulesDocument:
            name = networkconv.security_group_id(req.name)
            catalog, _ = self._parts()
            group = await self._gw.trio_sync(lambda: catalog.security_group(name).group)
            return network_pb2.SecurityGroupRulesDocument(json=export_rules(group))

        return await self._gw.handle(context, run, request)

    async def ImportSecurityGroupRules(
        self, request: network_pb2.ImportSecurityGroupRulesRequest, context: Ctx
    ) -> network_pb2.SecurityGroup:
        async def run(req: network_pb2.ImportSecurityGroupRulesRequest) -> network_pb2.SecurityGroup:
            name = networkconv.security_group_id(req.name)
            req.request_id = check_request_id(req.request_id) or str(uuid.uuid4())
            text, rid = req.json, req.request_id

            async def write(catalog: NetworkCatalog) -> str:
                await catalog.change_security_group(
                    name,
                    lambda g, known: import_rules(g, text, known_groups=known),
                    what="ImportSecurityGroupRules",
                    request_id=rid,
                )
                return name

            return await self._group_write(context, "ImportSecurityGroupRules", req, write)

        return await self._gw.handle(context, run, request)

    async def ListSecurityGroupHits(
        self, request: network_pb2.ListSecurityGroupHitsRequest, context: Ctx
    ) -> network_pb2.ListSecurityGroupHitsResponse:
        async def run(
            req: network_pb2.ListSecurityGroupHitsRequest,
        ) -> network_pb2.ListSecurityGroupHitsResponse:
            name = networkconv.security_group_id(req.name)
            host = host_id(req.host, field="host") if req.host else ""
            catalog, _ = self._parts()
            # A host asked by another answers with its own counters, never asks further.
            mine = forwarded(context) or host in ("-", self._host)
            hosts, gossip = await self._gw.trio_sync(
                lambda: self._counting_hosts(catalog, name, self._host if mine else host)
            )

            async def ask(target: str, timeout: float) -> tuple[Hit, ...]:
                return await self._host_hits(context, name, target, timeout)

            timeout = grouphits.per_host_timeout(context.time_remaining(), limit=self._host_deadline)
            result = await grouphits.collect(hosts, ask, timeout=timeout, gossip=gossip)
            return networkconv.hits_response(result, by_host=req.by_host)

        return await self._gw.handle(context, run, request)

    def _counting_hosts(
        self, catalog: NetworkCatalog, group: str, host: str
    ) -> tuple[tuple[str, ...], dict[str, str]]:
        """(trio side) The hosts to ask for ``group``'s counters (``host`` alone if
        given), and the gossip state of those that are gone."""
        catalog.security_group(group)
        members = dict(self._members()) if self._members is not None else {self._host: ""}
        if host and host not in members:
            raise NotFound(
                f"host 'hosts/{host}' is not a member of this cluster", field="host", reason="HOST_NOT_FOUND"
            )
        hosts = (host,) if host else grouphits.counting_hosts(catalog.nics(), catalog.nic_users(), group)
        # This host answers for itself whatever gossip says of it.
        gone = {
            h: members.get(h, "") for h in hosts if h != self._host and members.get(h, "") in grouphits.GONE
        }
        return hosts, gone

    async def _host_hits(self, context: Ctx, group: str, host: str, timeout: float) -> tuple[Hit, ...]:
        """``group``'s counters as ``host`` counted them (ZsdError when it cannot tell)."""
        if host == self._host:
            if self._hits is None:
                raise FailedPrecondition("this host enforces no security groups", reason="NO_FIREWALL")
            counts = await self._gw.trio(context, self._hits)
            return grouphits.group_hits(counts, group)
        if self._peers is None:
            raise Unavailable(f"this host cannot ask host {host}", reason="HOST_UNREACHABLE")
        answer = await self._peers.call(
            host,
            _METHOD + "ListSecurityGroupHits",
            network_pb2.ListSecurityGroupHitsRequest(name=f"securityGroups/{group}", host=f"hosts/{host}"),
            network_pb2.ListSecurityGroupHitsResponse.FromString,
            timeout=timeout,
        )
        return networkconv.host_hits(answer, host)

    # -- NIC updates ---------------------------------------------------------------------

    async def UpdateNic(self, request: network_pb2.UpdateNicRequest, context: Ctx) -> network_pb2.VirtualNic:
        async def run(req: network_pb2.UpdateNicRequest) -> network_pb2.VirtualNic:
            name = networkconv.nic_id(req.nic.name, field="nic.name")
            allowed = {"security_groups", "ingress_default", "egress_default", "description"}
            paths = set(req.update_mask.paths)
            if not paths or paths - allowed:
                raise InvalidArgument(f"updatable: {', '.join(sorted(allowed))}", field="update_mask.paths")
            groups = None
            if "security_groups" in paths:
                groups = [
                    networkconv.security_group_id(g, field=f"nic.security_groups[{i}]")
                    for i, g in enumerate(req.nic.security_groups)
                ]
            req.request_id = check_request_id(req.request_id) or str(uuid.uuid4())
            catalog, _ = self._parts()
            msg, rid = req.nic, req.request_id

            async def write() -> tuple[network_pb2.VirtualNic, int]:
                record = await catalog.update_nic(
                    name,
                    security_groups=groups,
                    ingress_default=msg.ingress_default if "ingress_default" in paths else None,
                    egress_default=msg.egress_default if "egress_default" in paths else None,
                    description=msg.description if "description" in paths else None,
                    request_id=rid,
                )
                return networkconv.nic_message(record, catalog.nic_users().get(name)), catalog.revision

            return await self._on_leader(context, "UpdateNic", req, network_pb2.VirtualNic.FromString, write)

        return await self._gw.handle(context, run, request)

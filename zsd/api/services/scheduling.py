"""SchedulingService: VM scheduling policies. Writes go to the leader (the Router),
which checks each new policy against the others and where its group's VMs run under
the placement lock (``Scheduler``); reads answer from this host's copy of cluster.db."""

from __future__ import annotations

import uuid

import grpc
from google.protobuf import empty_pb2

from zsd.api import paging, schedulingconv
from zsd.api.gateway import Gateway
from zsd.api.names import request_id as check_request_id
from zsd.api.router import Router
from zsd.cluster.control import ClusterControl
from zsd.compute.policyrecords import KIND_POLICY, PolicyRecord, decode_all
from zsd.compute.records import KIND_VM, VmRecord
from zsd.compute.scheduler import Scheduler
from zsd.errors import FailedPrecondition, NotFound
from zsd.v1 import scheduling_pb2, scheduling_pb2_grpc

Ctx = grpc.aio.ServicerContext[object, object]
_METHOD = "/zsd.v1.SchedulingService/"


class SchedulingService(scheduling_pb2_grpc.SchedulingServiceServicer):
    def __init__(
        self,
        *,
        gateway: Gateway,
        control: ClusterControl | None,
        router: Router | None,
        scheduler: Scheduler | None,
    ) -> None:
        """``control``, ``router``, ``scheduler``: None when this zsd is no cluster
        member (then every call is refused: policies live in cluster.db)."""
        self._gw = gateway
        self._control = control
        self._router = router
        self._scheduler = scheduler

    def _parts(self) -> tuple[ClusterControl, Router, Scheduler]:
        if self._control is None or self._router is None or self._scheduler is None:
            raise FailedPrecondition(
                "scheduling policies live in the cluster state; this zsd runs without a cluster",
                reason="NOT_A_MEMBER",
            )
        return self._control, self._router, self._scheduler

    def _message(self, control: ClusterControl, record: PolicyRecord) -> scheduling_pb2.SchedulingPolicy:
        """(trio side)"""
        vms = [VmRecord.decode(r.data) for r in control.replica.cache.list(KIND_VM)]
        return schedulingconv.policy_message(record, vms)

    def _get(self, control: ClusterControl, name: str) -> scheduling_pb2.SchedulingPolicy:
        """(trio side)"""
        stored = control.replica.cache.get(KIND_POLICY, name)
        if stored is None:
            raise NotFound(
                f"scheduling policy '{schedulingconv.PREFIX}{name}' does not exist",
                field="name",
                reason="POLICY_NOT_FOUND",
            )
        return self._message(control, PolicyRecord.decode(stored.data))

    async def ListSchedulingPolicies(
        self, request: scheduling_pb2.ListSchedulingPoliciesRequest, context: Ctx
    ) -> scheduling_pb2.ListSchedulingPoliciesResponse:
        async def run(
            req: scheduling_pb2.ListSchedulingPoliciesRequest,
        ) -> scheduling_pb2.ListSchedulingPoliciesResponse:
            control, _, _ = self._parts()

            def read() -> list[scheduling_pb2.SchedulingPolicy]:
                records = decode_all(control.replica.cache.list(KIND_POLICY))
                return [self._message(control, r) for r in records]

            policies = await self._gw.trio_sync(read)
            page = paging.paginate(
                policies, key=lambda p: p.name, page_size=req.page_size, page_token=req.page_token
            )
            return scheduling_pb2.ListSchedulingPoliciesResponse(
                policies=page.items, next_page_token=page.next_page_token
            )

        return await self._gw.handle(context, run, request)

    async def GetSchedulingPolicy(
        self, request: scheduling_pb2.GetSchedulingPolicyRequest, context: Ctx
    ) -> scheduling_pb2.SchedulingPolicy:
        async def run(req: scheduling_pb2.GetSchedulingPolicyRequest) -> scheduling_pb2.SchedulingPolicy:
            name = schedulingconv.policy_id(req.name)
            control, _, _ = self._parts()
            return await self._gw.trio_sync(lambda: self._get(control, name))

        return await self._gw.handle(context, run, request)

    async def CreateSchedulingPolicy(
        self, request: scheduling_pb2.CreateSchedulingPolicyRequest, context: Ctx
    ) -> scheduling_pb2.SchedulingPolicy:
        async def run(req: scheduling_pb2.CreateSchedulingPolicyRequest) -> scheduling_pb2.SchedulingPolicy:
            record = schedulingconv.policy_record(req.policy_id, req.policy)
            req.request_id = check_request_id(req.request_id) or str(uuid.uuid4())
            control, router, scheduler = self._parts()
            rid = req.request_id

            async def on_leader() -> tuple[scheduling_pb2.SchedulingPolicy, int]:
                async def create() -> tuple[scheduling_pb2.SchedulingPolicy, int]:
                    stored, revision = await scheduler.create_policy(record, request_id=rid)
                    return self._message(control, stored), revision

                return await self._gw.trio(context, create)

            return await router.call(
                context,
                method=_METHOD + "CreateSchedulingPolicy",
                request=req,
                response_type=scheduling_pb2.SchedulingPolicy.FromString,
                local=on_leader,
            )

        return await self._gw.handle(context, run, request)

    async def DeleteSchedulingPolicy(
        self, request: scheduling_pb2.DeleteSchedulingPolicyRequest, context: Ctx
    ) -> empty_pb2.Empty:
        async def run(req: scheduling_pb2.DeleteSchedulingPolicyRequest) -> empty_pb2.Empty:
            name = schedulingconv.policy_id(req.name)
            req.request_id = check_request_id(req.request_id) or str(uuid.uuid4())
            _, router, scheduler = self._parts()
            rid = req.request_id

            async def on_leader() -> tuple[empty_pb2.Empty, int]:
                revision = await self._gw.trio(context, lambda: scheduler.delete_policy(name, request_id=rid))
                return empty_pb2.Empty(), revision

            return await router.call(
                context,
                method=_METHOD + "DeleteSchedulingPolicy",
                request=req,
                response_type=empty_pb2.Empty.FromString,
                local=on_leader,
            )

        return await self._gw.handle(context, run, request)

"""OperationService."""

from __future__ import annotations

import math
import time

import grpc
import trio
from google.protobuf.message import Message

from zsd.api import convert, names, paging
from zsd.api.gateway import Gateway
from zsd.api.peers import Peers
from zsd.api.router import forwarded
from zsd.cluster.control import ClusterControl
from zsd.cluster.operations import OperationRegistry, OperationView, OpState
from zsd.errors import FailedPrecondition, InvalidArgument, NotFound
from zsd.v1 import operation_pb2, operation_pb2_grpc

Ctx = grpc.aio.ServicerContext[object, object]
# WaitOperation answers this much before the call's deadline, so the client gets
# the operation's state instead of DEADLINE_EXCEEDED.
_WAIT_MARGIN = 0.2
_MAX_SEQ = 10**15
_MAX_TIME_US = 10**19  # microseconds, beyond the year 300000


def _order(view: OperationView) -> str:
    """Newest first (creation time, then the registry's sequence, then the name)."""
    return f"{_MAX_TIME_US - int(view.create_time * 1e6):020d}{_MAX_SEQ - view.seq:016d}{view.name}"


def _encode(view: OperationView) -> operation_pb2.Operation:
    return convert.operation(view, now=time.time())


class OperationService(operation_pb2_grpc.OperationServiceServicer):
    """Operations of this host (in memory) and, on a cluster member, the cluster's
    operations (run by the leader, kept in the cluster state)."""

    def __init__(
        self,
        *,
        gateway: Gateway,
        operations: OperationRegistry,
        control: ClusterControl | None = None,
        peers: Peers | None = None,
    ) -> None:
        """``peers``: on a cluster member, an operation no one here knows is looked
        for on the other members (a VM's operations run on its host)."""
        self._gw = gateway
        self._ops = operations
        self._control = control
        self._peers = peers

    async def _elsewhere(
        self, context: Ctx, method: str, request: Message, error: NotFound, timeout: float | None = None
    ) -> operation_pb2.Operation:
        """The answer of the member that runs the operation; ``error`` if none does."""
        if self._peers is None or forwarded(context):
            raise error
        found = await self._peers.first(
            "/zsd.v1.OperationService/" + method,
            request,
            operation_pb2.Operation.FromString,
            timeout=timeout if timeout is not None else context.time_remaining(),
        )
        if found is None:
            raise error
        return found

    def _find(self, name: str) -> OperationView:
        """On the trio thread: this host's operation, else the cluster's."""
        try:
            return self._ops.get(name)
        except NotFound:
            op = self._control.operation(name.removeprefix("operations/")) if self._control else None
            if op is None:
                raise
            return op.view(seq=0)

    def _is_local(self, name: str) -> bool:
        try:
            self._ops.get(name)
        except NotFound:
            return False
        return True

    def _all(self, state: OpState | None, target: str | None) -> list[OperationView]:
        views = self._ops.list(state=state, target=target)
        if self._control is not None:
            views += [
                v
                for v in (op.view(seq=0) for op in self._control.operations())
                if (state is None or v.state is state) and (not target or v.target == target)
            ]
        return views

    async def GetOperation(
        self, request: operation_pb2.GetOperationRequest, context: Ctx
    ) -> operation_pb2.Operation:
        async def get(req: operation_pb2.GetOperationRequest) -> operation_pb2.Operation:
            name = names.operation(req.name)
            try:
                return _encode(await self._gw.trio_sync(lambda: self._find(name)))
            except NotFound as e:
                return await self._elsewhere(context, "GetOperation", req, e)

        return await self._gw.handle(context, get, request)

    async def ListOperations(
        self, request: operation_pb2.ListOperationsRequest, context: Ctx
    ) -> operation_pb2.ListOperationsResponse:
        async def list_ops(req: operation_pb2.ListOperationsRequest) -> operation_pb2.ListOperationsResponse:
            if req.state not in convert.OP_STATE_FROM_PROTO and req.state != 0:
                raise InvalidArgument(f"state {req.state} is not a known operation state", field="state")
            state = convert.OP_STATE_FROM_PROTO.get(req.state)

            views = await self._gw.trio_sync(lambda: self._all(state, req.target or None))
            # Newest first; the key sorts the same way, so tokens survive inserts.
            views.sort(key=_order)
            page = paging.paginate(
                views,
                key=_order,
                page_size=req.page_size,
                page_token=req.page_token,
                query=f"{req.state}|{req.target}",
            )
            return operation_pb2.ListOperationsResponse(
                operations=[_encode(v) for v in page.items], next_page_token=page.next_page_token
            )

        return await self._gw.handle(context, list_ops, request)

    async def WaitOperation(
        self, request: operation_pb2.WaitOperationRequest, context: Ctx
    ) -> operation_pb2.Operation:
        async def wait(req: operation_pb2.WaitOperationRequest) -> operation_pb2.Operation:
            name = names.operation(req.name)
            limits = []
            if req.HasField("timeout"):
                wanted = req.timeout.ToNanoseconds() / 1e9
                if wanted < 0:
                    raise InvalidArgument("timeout must not be negative", field="timeout")
                limits.append(wanted)
            remaining = context.time_remaining()
            if remaining is not None:
                limits.append(max(remaining - _WAIT_MARGIN, 0.0))
            timeout = min(limits) if limits else None

            async def core() -> OperationView:
                if self._is_local(name):
                    return await self._ops.wait(name, timeout)
                view = self._find(name)
                # A cluster operation: its record changes in this host's state copy.
                assert self._control is not None
                with trio.move_on_after(timeout if timeout is not None else math.inf):
                    while not view.done:
                        await self._control.replica.wait_changed()
                        view = self._find(name)
                return view

            try:
                return _encode(await self._gw.trio(context, core))
            except NotFound as e:
                return await self._elsewhere(context, "WaitOperation", req, e, timeout=remaining)

        return await self._gw.handle(context, wait, request)

    async def CancelOperation(
        self, request: operation_pb2.CancelOperationRequest, context: Ctx
    ) -> operation_pb2.Operation:
        async def cancel(req: operation_pb2.CancelOperationRequest) -> operation_pb2.Operation:
            name = names.operation(req.name)

            def cancel_op() -> OperationView:
                if self._is_local(name):
                    return self._ops.cancel(name)
                view = self._find(name)
                if view.done:
                    raise FailedPrecondition(
                        f"{name} already ended ({view.state.value}); nothing to cancel",
                        reason="OPERATION_DONE",
                        field="name",
                    )
                raise FailedPrecondition(
                    f"{name} is a cluster operation run by the leader; it cannot be cancelled",
                    reason="NOT_CANCELLABLE",
                    field="name",
                )

            try:
                return _encode(await self._gw.trio_sync(cancel_op))
            except NotFound as e:
                return await self._elsewhere(context, "CancelOperation", req, e)

        return await self._gw.handle(context, cancel, request)

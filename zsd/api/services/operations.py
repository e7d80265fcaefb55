"""OperationService."""

from __future__ import annotations

import time

import grpc

from zsd.api import convert, names, paging
from zsd.api.gateway import Gateway
from zsd.cluster.operations import OperationRegistry, OperationView
from zsd.errors import InvalidArgument
from zsd.v1 import operation_pb2, operation_pb2_grpc

Ctx = grpc.aio.ServicerContext[object, object]
# WaitOperation answers this much before the call's deadline, so the client gets
# the operation's state instead of DEADLINE_EXCEEDED.
_WAIT_MARGIN = 0.2
_MAX_SEQ = 10**15


def _encode(view: OperationView) -> operation_pb2.Operation:
    return convert.operation(view, now=time.time())


class OperationService(operation_pb2_grpc.OperationServiceServicer):
    def __init__(self, *, gateway: Gateway, operations: OperationRegistry) -> None:
        self._gw = gateway
        self._ops = operations

    async def GetOperation(
        self, request: operation_pb2.GetOperationRequest, context: Ctx
    ) -> operation_pb2.Operation:
        async def get(req: operation_pb2.GetOperationRequest) -> operation_pb2.Operation:
            name = names.operation(req.name)

            return _encode(await self._gw.trio_sync(lambda: self._ops.get(name)))

        return await self._gw.handle(context, get, request)

    async def ListOperations(
        self, request: operation_pb2.ListOperationsRequest, context: Ctx
    ) -> operation_pb2.ListOperationsResponse:
        async def list_ops(req: operation_pb2.ListOperationsRequest) -> operation_pb2.ListOperationsResponse:
            if req.state not in convert.OP_STATE_FROM_PROTO and req.state != 0:
                raise InvalidArgument(f"state {req.state} is not a known operation state", field="state")
            state = convert.OP_STATE_FROM_PROTO.get(req.state)

            views = await self._gw.trio_sync(lambda: self._ops.list(state=state, target=req.target or None))
            # Newest first; the key sorts the same way, so tokens survive inserts.
            page = paging.paginate(
                views,
                key=lambda v: f"{_MAX_SEQ - v.seq:016d}",
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
                return await self._ops.wait(name, timeout)

            return _encode(await self._gw.trio(context, core))

        return await self._gw.handle(context, wait, request)

    async def CancelOperation(
        self, request: operation_pb2.CancelOperationRequest, context: Ctx
    ) -> operation_pb2.Operation:
        async def cancel(req: operation_pb2.CancelOperationRequest) -> operation_pb2.Operation:
            name = names.operation(req.name)

            return _encode(await self._gw.trio_sync(lambda: self._ops.cancel(name)))

        return await self._gw.handle(context, cancel, request)

"""Starting a host-local Operation from a servicer (AIP-151): the request id makes a
retry return the operation it started."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from zsd.api.convert import operation as operation_message
from zsd.api.gateway import Gateway
from zsd.api.names import request_id as check_request_id
from zsd.cluster.operations import OperationRegistry, OperationView, Progress
from zsd.v1 import operation_pb2


async def start_operation(
    gateway: Gateway,
    operations: OperationRegistry,
    *,
    verb: str,
    target: str,
    request_id: str,
    job: Callable[[Progress], Awaitable[object]],
    now: float,
) -> operation_pb2.Operation:
    rid = check_request_id(request_id) or str(uuid.uuid4())

    def start() -> OperationView:
        return operations.start(verb=verb, target=target, request_id=rid, job=job)

    view = await gateway.trio_sync(start)
    return operation_message(view, now=now)

"""Pool definitions on a cluster member: prepared on the host serving the call,
committed by the leader (cluster.db), applied by every host (``clusterpools.follow``).

The serving host does what only it can: prepare the storage it sees (directory
and marker), or check that a pool it has active is empty before deletion. It then
sends the whole definition to the leader as the same gRPC method (the Router);
the leader, seeing a forwarded call, only commits. The serving host answers once
its own copy has applied the change, so the caller reads its write here.
"""

from __future__ import annotations

import uuid

import grpc
from google.protobuf import empty_pb2

from zsd.api import storageconv
from zsd.api.gateway import Gateway
from zsd.api.router import Router, forwarded
from zsd.cluster.control import ClusterControl
from zsd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from zsd.storage import clusterpools
from zsd.storage.host import StorageHost
from zsd.storage.model import PoolKind
from zsd.v1 import storage_pb2

Ctx = grpc.aio.ServicerContext[object, object]
_METHOD = "/zsd.v1.StorageService/"
_REFUSALS = (AlreadyExists, InvalidArgument, FailedPrecondition, NotFound)
"""Answers after which the leader certainly committed nothing."""


class ClusterPools:
    def __init__(
        self, *, gateway: Gateway, storage: StorageHost, control: ClusterControl, router: Router
    ) -> None:
        self._gw = gateway
        self._storage = storage
        self._control = control
        self._router = router

    async def create(
        self, context: Ctx, req: storage_pb2.CreatePoolRequest, kind: PoolKind
    ) -> storage_pb2.Pool | None:
        """None when the caller should answer with its own view of the new pool."""
        if forwarded(context):
            spec, fresh = storageconv.pool_spec(req.pool_id, req.pool), False
        else:
            spec, fresh = await self._gw.trio(
                context,
                lambda: self._storage.prepare_pool(
                    name=req.pool_id,
                    kind=kind,
                    path=req.pool.path,
                    vg_name=req.pool.vg_name,
                    wwids=tuple(req.pool.wwids),
                    max_overcommit=req.pool.max_overcommit or None,
                    description=req.pool.description,
                ),
            )
            req.pool.CopyFrom(storageconv.pool_definition(spec))
            req.request_id = req.request_id or str(uuid.uuid4())
        rid = req.request_id

        async def on_leader() -> tuple[storage_pb2.Pool, int]:
            store = self._control.store()
            revision = await self._gw.trio(
                context, lambda: clusterpools.commit_create(store, spec, request_id=rid)
            )
            return storageconv.pool_definition(spec), revision

        try:
            answer = await self._router.call(
                context,
                method=_METHOD + "CreatePool",
                request=req,
                response_type=storage_pb2.Pool.FromString,
                local=on_leader,
            )
        except _REFUSALS:
            await self._gw.trio_sync(lambda: self._storage.undo_prepare(spec, fresh))
            raise
        if forwarded(context):
            return answer
        await self._gw.trio(context, lambda: self._storage.wait_synced(spec.name, spec))
        return None

    async def update(
        self, context: Ctx, req: storage_pb2.UpdatePoolRequest, name: str, paths: set[str]
    ) -> storage_pb2.Pool | None:
        if forwarded(context):
            spec = storageconv.pool_spec(name, req.pool)
        else:
            spec = await self._gw.trio_sync(
                lambda: self._storage.updated_spec(
                    name,
                    max_overcommit=req.pool.max_overcommit if "max_overcommit" in paths else None,
                    description=req.pool.description if "description" in paths else None,
                )
            )
            req.pool.CopyFrom(storageconv.pool_definition(spec))

        async def on_leader() -> tuple[storage_pb2.Pool, int]:
            store = self._control.store()
            revision = await self._gw.trio(context, lambda: clusterpools.commit_update(store, spec))
            return storageconv.pool_definition(spec), revision

        answer = await self._router.call(
            context,
            method=_METHOD + "UpdatePool",
            request=req,
            response_type=storage_pb2.Pool.FromString,
            local=on_leader,
        )
        if forwarded(context):
            return answer
        await self._gw.trio(context, lambda: self._storage.wait_synced(name, spec))
        return None

    async def delete(self, context: Ctx, req: storage_pb2.DeletePoolRequest, name: str) -> None:
        spec = (
            None
            if forwarded(context)
            else await self._gw.trio_sync(lambda: self._storage.check_deletable(name))
        )

        async def on_leader() -> tuple[empty_pb2.Empty, int]:
            store = self._control.store()
            revision = await self._gw.trio(context, lambda: clusterpools.commit_delete(store, name))
            return empty_pb2.Empty(), revision

        try:
            await self._router.call(
                context,
                method=_METHOD + "DeletePool",
                request=req,
                response_type=empty_pb2.Empty.FromString,
                local=on_leader,
            )
        except NotFound:
            if spec is None:
                raise
            # A retry after the leader committed (and then changed): already gone.
        if spec is not None:
            await self._gw.trio(context, lambda: self._storage.wait_synced(name, None))
            await self._gw.trio_sync(lambda: self._storage.release_storage(spec))

"""AttachNic and DetachNic of a network NIC (``nics/{nic}``) on a cluster member.

The NIC's user is the cluster's to record, so these go to the leader (the Router),
which claims the NIC (``zsd.compute.nicclaims``) and then hands the call to the VM's
host, marked NIC_CLAIMED so that host plugs it rather than asking the leader again;
detach the other way round: unplug on the VM's host, then release. A NIC on a bridge
needs no leader and never comes here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
from google.protobuf.message import Message

from zsd.api.gateway import Gateway
from zsd.api.vmcluster import METHOD, ClusterVms
from zsd.compute.nicclaims import NicClaims, plug_claimed, unplug_released
from zsd.errors import FailedPrecondition, Unavailable
from zsd.v1 import compute_pb2

Ctx = grpc.aio.ServicerContext[object, object]
Here = Callable[[], Awaitable[compute_pb2.Vm]]
OnLeader = Callable[[], Awaitable[tuple[compute_pb2.Vm, int]]]
"""The call as the leader runs it: the answer and the revision it wrote."""

NIC_CLAIMED = "zsd-nic-claimed"
"""Metadata on the AttachNic/DetachNic the leader hands to the VM's host."""


class NetworkNics:
    """Used on the API thread. ``attach_here``/``detach_here``/``vm_here``: the same
    call run on this host (when it is the VM's)."""

    def __init__(
        self,
        *,
        gateway: Gateway,
        cluster: ClusterVms,
        claims: NicClaims,
        attach_here: Callable[[Ctx, compute_pb2.AttachNicRequest], Awaitable[compute_pb2.Vm]],
        detach_here: Callable[[Ctx, compute_pb2.DetachNicRequest], Awaitable[compute_pb2.Vm]],
        vm_here: Callable[[Ctx, str], Awaitable[compute_pb2.Vm]],
    ) -> None:
        self._gw = gateway
        self._cluster = cluster
        self._claims = claims
        self._attach_here = attach_here
        self._detach_here = detach_here
        self._vm_here = vm_here

    async def held(self, vm: str, mac: str) -> str:
        """The network NIC of VM ``vm`` with MAC ``mac`` in this host's copy ("" if none)."""
        return await self._gw.trio_sync(lambda: self._claims.holding(vm, mac))

    async def attach(
        self, context: Ctx, req: compute_pb2.AttachNicRequest, vm: str, nic: str
    ) -> compute_pb2.Vm:
        claims = self._claims

        async def on_leader() -> tuple[compute_pb2.Vm, int]:
            answer, claimed = await plug_claimed(
                claim=lambda: self._gw.trio(context, lambda: claims.claim(vm, nic)),
                plug=lambda c: self._on_vm_host(
                    context, c.vm.host, "AttachNic", req, lambda: self._attach_here(context, req)
                ),
                release=lambda: self._gw.trio(context, lambda: claims.release(vm, nic)),
            )
            return answer, claimed.revision

        return await self._to_leader(context, "AttachNic", req, on_leader)

    async def detach(self, context: Ctx, req: compute_pb2.DetachNicRequest, vm: str) -> compute_pb2.Vm:
        claims = self._claims

        async def on_leader() -> tuple[compute_pb2.Vm, int]:
            host = await self._cluster.owner(vm)

            def here() -> Awaitable[compute_pb2.Vm]:
                return self._detach_here(context, req)

            def unplug() -> Awaitable[compute_pb2.Vm]:
                return self._on_vm_host(context, host, "DetachNic", req, here)

            nic = await self.held(vm, req.mac)
            if not nic:  # released meanwhile (another detach): what is left is the unplug
                return await unplug(), 0
            return await unplug_released(
                unplug=unplug,
                current=lambda: self._on_vm_host(
                    context,
                    host,
                    "GetVm",
                    compute_pb2.GetVmRequest(name=f"vms/{vm}"),
                    lambda: self._vm_here(context, vm),
                ),
                release=lambda: self._gw.trio(context, lambda: claims.release(vm, nic)),
            )

        return await self._to_leader(context, "DetachNic", req, on_leader)

    async def _to_leader(
        self,
        context: Ctx,
        method: str,
        req: Message,
        on_leader: Callable[[], Awaitable[tuple[compute_pb2.Vm, int]]],
    ) -> compute_pb2.Vm:
        return await self._cluster.router.call(
            context,
            method=METHOD + method,
            request=req,
            response_type=compute_pb2.Vm.FromString,
            local=on_leader,
        )

    async def _on_vm_host(
        self, context: Ctx, host: str, method: str, req: Message, here: Here
    ) -> compute_pb2.Vm:
        try:
            if host == self._cluster.host:
                return await here()
            return await self._cluster.forward(
                context, host, method, req, compute_pb2.Vm.FromString, extra=((NIC_CLAIMED, "1"),)
            )
        except Unavailable as e:
            # The Router takes Unavailable for a leader change and would run the whole
            # call again until its deadline; the VM's host (or its libvirtd) is not the
            # leader, and its refusal is the answer.
            raise FailedPrecondition(e.message, reason=e.reason, field=e.field) from e

"""A real grpc.aio server with small fake zsd servicers, for driving ``zsctl.main``.

pytest runs in trio mode, so the asyncio server lives in a thread with its own
event loop; tests call zsctl's synchronous ``main`` against its Unix socket
(fixtures in conftest.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import re
import threading
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2, duration_pb2, empty_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from zsd.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    host_pb2,
    host_pb2_grpc,
    operation_pb2,
    operation_pb2_grpc,
)

if TYPE_CHECKING:
    Context = grpc.aio.ServicerContext[Any, Any]

NOW = datetime.datetime(2026, 11, 23, 12, 0, 0, tzinfo=datetime.UTC)
HOST_NAME_RE = re.compile(r"^hosts/([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?|-)$")
LABEL_KEY_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
# The cluster-state revision the fake starts at. Changes up to COMPACTED are gone from
# its log, so a watch must start from COMPACTED or later (or from 0).
REVISION = 7
COMPACTED = 3
State = operation_pb2.OperationMetadata.State
# (state, progress_percent, status_message) of one step of a scripted operation.
Step = tuple["operation_pb2.OperationMetadata.State.ValueType", int, str]


def timestamp(ago: datetime.timedelta) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(NOW - ago)
    return ts


def make_host(
    name: str,
    *,
    kvm: bool,
    memory: int,
    labels: dict[str, str] | None = None,
    gossip: host_pb2.MemberState.ValueType = host_pb2.MEMBER_STATE_UNSPECIFIED,
    lease: host_pb2.LeaseState.ValueType = host_pb2.LEASE_STATE_UNSPECIFIED,
    etag: int = 0,
) -> host_pb2.Host:
    return host_pb2.Host(
        name=f"hosts/{name}",
        host_id=1 if name == "node1" else 2,
        uid=f"uid-{name}",
        address=f"192.0.2.{1 if name == 'node1' else 2}:7443",
        state=host_pb2.Host.READY if kvm else host_pb2.Host.DEGRADED,
        state_reasons=[] if kvm else ["/dev/kvm is missing"],
        hypervisor=host_pb2.Hypervisor(
            kind=host_pb2.KVM if kvm else host_pb2.QEMU,
            reason="KVM probe ran a guest instruction" if kvm else "no /dev/kvm",
            libvirt_version="9.0.0",
            qemu_version="7.2.0",
            libvirt_reachable=True,
        ),
        cpu=host_pb2.Cpu(
            model="AMD EPYC",
            vendor="AuthenticAMD",
            arch="x86_64",
            sockets=1,
            cores_per_socket=4,
            threads_per_core=2,
            count=8,
            flags=["sse2", "avx2", "svm"],
        ),
        memory=host_pb2.Memory(total_bytes=memory, available_bytes=memory // 2),
        numa_nodes=[host_pb2.NumaNode(id=0, cpus=[0, 1, 2, 3, 4, 5, 6, 7], memory_bytes=memory)],
        disks=[
            host_pb2.Disk(name="vda", size_bytes=107374182400, rotational=False, model="QEMU HARDDISK"),
            host_pb2.Disk(
                name="sdb", size_bytes=2000398934016, rotational=True, serial="S1", wwid="naa.5000"
            ),
        ],
        nics=[
            host_pb2.Nic(
                name="eth0",
                mac_address="52:54:00:12:34:56",
                mtu=1500,
                up=True,
                speed_mbps=10000,
                addresses=["192.0.2.1/24", "2001:db8::1/64"],
                driver="virtio_net",
            )
        ],
        zsd_version="0.1.0",
        uptime=duration_pb2.Duration(seconds=93784),
        kernel="6.1.0-26-amd64",
        os="Debian GNU/Linux 12 (bookworm)",
        refresh_time=timestamp(datetime.timedelta(minutes=5)),
        labels=labels or {},
        gossip_state=gossip,
        lease_state=lease,
        etag=str(etag) if etag else "",
    )


HOSTS = [
    make_host(
        "node1",
        kvm=True,
        memory=16777216000,
        labels={"zone": "a", "rack": "r1"},
        gossip=host_pb2.MEMBER_ALIVE,
        lease=host_pb2.LEASE_LIVE,
        etag=5,
    ),
    # Gossip suspects node2 and its lease state is not known yet: the "-" in tables.
    make_host("node2", kvm=False, memory=8 * 1024**3, gossip=host_pb2.MEMBER_SUSPECT, etag=REVISION),
]
# The VMs each host runs: removing a host that runs any needs force.
VMS = {"hosts/node2": ["vms/web1"]}

CLUSTER = cluster_pb2.Cluster(
    name="cluster",
    display_name="lab",
    uid="c-uid",
    members=[
        cluster_pb2.ClusterMember(
            host="hosts/node1", host_id=1, address="192.0.2.1:7443", state=cluster_pb2.ClusterMember.ALIVE
        ),
        cluster_pb2.ClusterMember(
            host="hosts/node2", host_id=2, address="192.0.2.2:7443", state=cluster_pb2.ClusterMember.SUSPECT
        ),
    ],
    leader=cluster_pb2.Leader(host="hosts/node1", epoch=3),
)


def invalid_name_status(name: str) -> grpc.Status:
    """What zsd sends for a malformed name: ErrorInfo with the field, plus BadRequest."""
    message = f'name {name!r} is not a host name; use "hosts/{{host}}" with an RFC 1123 label'
    info = error_details_pb2.ErrorInfo(reason="INVALID_NAME", domain="zsd.dev", metadata={"field": "name"})
    bad = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field="name", description=message)]
    )
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message)
    for detail in (info, bad):
        status.details.add().Pack(detail)
    return rpc_status.to_status(status)


def not_found_status(name: str) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason="NOT_FOUND", domain="zsd.dev")
    status = status_pb2.Status(code=code_pb2.NOT_FOUND, message=f"{name} does not exist")
    status.details.add().Pack(info)
    return rpc_status.to_status(status)


def error_status(code: int, message: str, *, reason: str, field: str = "") -> grpc.Status:
    """Any zsd error: ErrorInfo with the reason and, when given, the offending field."""
    info = error_details_pb2.ErrorInfo(
        reason=reason, domain="zsd.dev", metadata={"field": field} if field else {}
    )
    status = status_pb2.Status(code=code, message=message)
    status.details.add().Pack(info)
    return rpc_status.to_status(status)


async def abort(context: Context, status: grpc.Status) -> None:
    await context.abort(status.code, status.details, status.trailing_metadata)


@dataclasses.dataclass(kw_only=True)
class Script:
    """An operation that moves one step per WaitOperation call (as if each wait timed out)."""

    operation: operation_pb2.Operation
    steps: list[Step]
    result: host_pb2.Host | empty_pb2.Empty | status_pb2.Status

    def advance(self) -> None:
        meta = self.operation.metadata
        if self.operation.done:
            return
        if self.steps:
            meta.state, meta.progress_percent, meta.status_message = self.steps.pop(0)
            return
        self.operation.done = True
        meta.end_time.CopyFrom(timestamp(datetime.timedelta()))
        meta.status_message = ""
        if isinstance(self.result, status_pb2.Status):
            meta.state = State.FAILED
            self.operation.error.CopyFrom(self.result)
        else:
            meta.state = State.SUCCEEDED
            meta.progress_percent = 100
            packed = any_pb2.Any()
            packed.Pack(self.result)
            self.operation.response.CopyFrom(packed)


KVM_FAILED = status_pb2.Status(
    code=code_pb2.FAILED_PRECONDITION, message="KVM probe failed: /dev/kvm is missing"
)
KVM_FAILED.details.add().Pack(error_details_pb2.ErrorInfo(reason="KVM_UNUSABLE", domain="zsd.dev"))


class FakeZsd(
    host_pb2_grpc.HostServiceServicer,
    cluster_pb2_grpc.ClusterServiceServicer,
    operation_pb2_grpc.OperationServiceServicer,
):
    """Canned hosts and cluster; operations that progress and finish. Pages hold one item.

    Label updates and removals change the hosts and append to a change log that Watch
    replays (whole revisions, like zsd); the requests are recorded for tests to check.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.request_ids: list[str] = []
        self.page_tokens: list[str] = []
        self.hosts = [host_pb2.Host.FromString(h.SerializeToString()) for h in HOSTS]
        self.revision = REVISION
        self.log = [
            cluster_pb2.WatchResponse(revision=int(h.etag), changes=[self._put(h)])
            for h in sorted(self.hosts, key=lambda h: int(h.etag))
        ]
        self.reads: list[host_pb2.ListHostsRequest | host_pb2.GetHostRequest] = []
        self.updates: list[host_pb2.UpdateHostRequest] = []
        self.deletes: list[host_pb2.DeleteHostRequest] = []
        self.watches: list[cluster_pb2.WatchRequest] = []
        # The deadline (seconds left when the call arrived; None: no deadline) per method.
        self.deadlines: dict[str, list[float | None]] = {}
        # Whether Watch follows (waits for more) after replaying the log, or ends there
        # as zsd does when the serving host loses its feed.
        self.watch_follows = False
        self._add("operations/old-ok", "hosts/node1", [], HOSTS[0], age=datetime.timedelta(hours=2))
        self.scripts["operations/old-ok"].advance()
        self._add(
            "operations/running",
            "hosts/node2",
            [(State.RUNNING, 40, "probing KVM")] * 100,
            HOSTS[1],
            age=datetime.timedelta(seconds=30),
        )
        self.scripts["operations/running"].advance()

    def _add(
        self,
        name: str,
        target: str,
        steps: Sequence[Step],
        result: host_pb2.Host | empty_pb2.Empty | status_pb2.Status,
        *,
        age: datetime.timedelta = datetime.timedelta(),
        request_id: str = "",
        verb: str = "RefreshHost",
    ) -> operation_pb2.Operation:
        operation = operation_pb2.Operation(
            name=name,
            metadata=operation_pb2.OperationMetadata(
                verb=verb,
                target=target,
                state=State.PENDING,
                progress_percent=0,
                create_time=timestamp(age),
                host="hosts/node1",
                request_id=request_id,
            ),
        )
        self.scripts[name] = Script(operation=operation, steps=list(steps), result=result)
        return operation

    def _arrived(self, method: str, context: Context) -> None:
        self.deadlines.setdefault(method, []).append(context.time_remaining())

    @staticmethod
    def _put(host: host_pb2.Host) -> cluster_pb2.ResourceChange:
        return cluster_pb2.ResourceChange(type=cluster_pb2.ResourceChange.PUT, name=host.name, host=host)

    def _commit(self, host: host_pb2.Host, *, delete: bool = False) -> None:
        """A new revision: ``host`` changed (its etag becomes the revision) or went."""
        self.revision += 1
        if delete:
            change = cluster_pb2.ResourceChange(type=cluster_pb2.ResourceChange.DELETE, name=host.name)
        else:
            host.etag = str(self.revision)
            change = self._put(host)
        self.log.append(cluster_pb2.WatchResponse(revision=self.revision, changes=[change]))

    # HostService

    async def ListHosts(
        self, request: host_pb2.ListHostsRequest, context: Context
    ) -> host_pb2.ListHostsResponse:
        self._arrived("ListHosts", context)
        self.reads.append(request)
        self.page_tokens.append(request.page_token)
        start = int(request.page_token or 0)
        end = start + 1
        return host_pb2.ListHostsResponse(
            hosts=self.hosts[start:end],
            next_page_token=str(end) if end < len(self.hosts) else "",
            revision=self.revision,
        )

    async def GetHost(self, request: host_pb2.GetHostRequest, context: Context) -> host_pb2.Host:
        self.reads.append(request)
        return await self._host(request.name, context)

    async def _host(self, name: str, context: Context) -> host_pb2.Host:
        if not HOST_NAME_RE.match(name):
            await abort(context, invalid_name_status(name))
        for host in self.hosts:
            if host.name == name or (name == "hosts/-" and host.name == HOSTS[0].name):
                return host
        await abort(context, not_found_status(name))
        raise AssertionError("unreachable")

    async def RefreshHost(
        self, request: host_pb2.RefreshHostRequest, context: Context
    ) -> operation_pb2.Operation:
        host = await self._host(request.name, context)
        self.request_ids.append(request.request_id)
        steps = [(State.RUNNING, 30, "probing KVM"), (State.RUNNING, 70, "reading /sys")]
        result: host_pb2.Host | status_pb2.Status = host if host.name == HOSTS[0].name else KVM_FAILED
        name = f"operations/refresh-{len(self.request_ids)}"
        return self._add(name, host.name, steps, result, request_id=request.request_id)

    async def UpdateHost(self, request: host_pb2.UpdateHostRequest, context: Context) -> host_pb2.Host:
        """zsd's label semantics: "labels" replaces all, "labels.{key}" sets or removes one."""
        self.updates.append(request)
        host = await self._host(request.host.name, context)
        paths = list(request.update_mask.paths)
        if not paths or any(p != "labels" and not p.startswith("labels.") for p in paths):
            await abort(
                context,
                error_status(
                    code_pb2.INVALID_ARGUMENT,
                    f'update_mask {paths} is not updatable: only "labels" and "labels.{{key}}"',
                    reason="INVALID_ARGUMENT",
                    field="update_mask",
                ),
            )
        for key in request.host.labels:
            if not LABEL_KEY_RE.match(key):
                await abort(
                    context,
                    error_status(
                        code_pb2.INVALID_ARGUMENT,
                        f"label key {key!r} is not allowed: 1-63 of a-z 0-9 _ . - starting with a letter",
                        reason="INVALID_ARGUMENT",
                        field=f"host.labels.{key}",
                    ),
                )
        if request.host.etag and request.host.etag != host.etag:
            await abort(
                context,
                error_status(
                    code_pb2.ABORTED,
                    f"{host.name} is at revision {host.etag}, not {request.host.etag}",
                    reason="ETAG_MISMATCH",
                    field="etag",
                ),
            )
        labels = dict(host.labels)
        for path in paths:
            if path == "labels":
                labels = dict(request.host.labels)
                continue
            key = path.removeprefix("labels.")
            if key in request.host.labels:
                labels[key] = request.host.labels[key]
            else:
                labels.pop(key, None)
        host.labels.clear()
        host.labels.update(labels)
        self._commit(host)
        return host

    async def DeleteHost(
        self, request: host_pb2.DeleteHostRequest, context: Context
    ) -> operation_pb2.Operation:
        """Done at once for an empty host; with force over VMs, an operation that hands
        them to HA first. Refused without force while the host runs VMs."""
        self.deletes.append(request)
        host = await self._host(request.name, context)
        vms = VMS.get(host.name, [])
        if vms and not request.force:
            await abort(
                context,
                error_status(
                    code_pb2.FAILED_PRECONDITION,
                    f"{host.name} still runs {len(vms)} VM(s) ({', '.join(vms)}); migrate them away "
                    "first, or remove with force (they are then left to HA)",
                    reason="HOST_NOT_EMPTY",
                    field="force",
                ),
            )
        self.hosts.remove(host)
        self._commit(host, delete=True)
        steps = [(State.RUNNING, 50, f"leaving {len(vms)} VM(s) to HA")] if vms else []
        name = f"operations/remove-{len(self.deletes)}"
        operation = self._add(
            name, host.name, steps, empty_pb2.Empty(), request_id=request.request_id, verb="DeleteHost"
        )
        if not vms:
            self.scripts[name].advance()
        return operation

    # ClusterService

    async def GetCluster(
        self, request: cluster_pb2.GetClusterRequest, context: Context
    ) -> cluster_pb2.Cluster:
        return CLUSTER

    async def Watch(
        self, request: cluster_pb2.WatchRequest, context: Context
    ) -> AsyncIterator[cluster_pb2.WatchResponse]:
        """zsd's Watch over the fake's change log: from 0 the current hosts first."""
        self._arrived("Watch", context)
        self.watches.append(request)
        unknown = [c for c in request.collections if c != "hosts"]
        if unknown:
            await abort(
                context,
                error_status(
                    code_pb2.INVALID_ARGUMENT,
                    f"unknown collection {unknown[0]!r}; watchable: hosts",
                    reason="INVALID_ARGUMENT",
                    field="collections",
                ),
            )
        if 0 < request.from_revision < COMPACTED:
            await abort(
                context,
                error_status(
                    code_pb2.FAILED_PRECONDITION,
                    f"revision {request.from_revision} is compacted; list again and watch from its revision",
                    reason="REVISION_COMPACTED",
                    field="from_revision",
                ),
            )
        position = request.from_revision
        if position == 0:
            position = self.revision
            yield cluster_pb2.WatchResponse(revision=position, changes=[self._put(h) for h in self.hosts])
        while True:
            for response in [r for r in self.log if r.revision > position]:
                yield response
                position = response.revision
            if not self.watch_follows:
                return
            await asyncio.sleep(0.01)  # poll the log until the client goes (deadline, cancel)

    # OperationService

    async def _script(self, name: str, context: Context) -> Script:
        if name not in self.scripts:
            status = not_found_status(name)
            await context.abort(status.code, status.details, status.trailing_metadata)
        return self.scripts[name]

    async def GetOperation(
        self, request: operation_pb2.GetOperationRequest, context: Context
    ) -> operation_pb2.Operation:
        return (await self._script(request.name, context)).operation

    async def ListOperations(
        self, request: operation_pb2.ListOperationsRequest, context: Context
    ) -> operation_pb2.ListOperationsResponse:
        matching = [
            s.operation
            for s in self.scripts.values()
            if (not request.state or s.operation.metadata.state == request.state)
            and (not request.target or s.operation.metadata.target == request.target)
        ]
        start = int(request.page_token or 0)
        end = start + 1
        return operation_pb2.ListOperationsResponse(
            operations=matching[start:end], next_page_token=str(end) if end < len(matching) else ""
        )

    async def WaitOperation(
        self, request: operation_pb2.WaitOperationRequest, context: Context
    ) -> operation_pb2.Operation:
        script = await self._script(request.name, context)
        script.advance()
        return script.operation

    async def CancelOperation(
        self, request: operation_pb2.CancelOperationRequest, context: Context
    ) -> operation_pb2.Operation:
        script = await self._script(request.name, context)
        script.operation.metadata.cancel_requested = True
        return script.operation


class ServerThread:
    """A grpc.aio server on ``address``, served from its own thread and event loop."""

    def __init__(self, fake: FakeZsd, address: str) -> None:
        self.fake = fake
        self.address = address
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fake-zsd", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        server = grpc.aio.server()
        host_pb2_grpc.add_HostServiceServicer_to_server(self.fake, server)
        cluster_pb2_grpc.add_ClusterServiceServicer_to_server(self.fake, server)
        operation_pb2_grpc.add_OperationServiceServicer_to_server(self.fake, server)
        server.add_insecure_port(self.address)
        await server.start()
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await server.stop(None)

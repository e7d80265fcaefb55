"""The daemon in-process (real gRPC over a Unix socket, fake host inventory):
every service, error details, read masks, paging, request_id, operations."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
import trio
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.fakes import RecordingNotifier, StaticCollector, sample_facts
from zsd.config import load
from zsd.daemon import DaemonDeps, serve
from zsd.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    host_pb2,
    host_pb2_grpc,
    operation_pb2,
    operation_pb2_grpc,
    scheduling_pb2,
    scheduling_pb2_grpc,
)

T = TypeVar("T")


@dataclass
class Running:
    socket: Path
    notifier: RecordingNotifier
    collector: StaticCollector
    channel: grpc.Channel
    hosts: host_pb2_grpc.HostServiceStub
    cluster: cluster_pb2_grpc.ClusterServiceStub
    ops: operation_pb2_grpc.OperationServiceStub

    async def call(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn)


@pytest.fixture
async def daemon(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Running]:
    config = load(root=tmp_path, env={}, hostname="node1")
    notifier = RecordingNotifier()
    collector = StaticCollector(sample_facts(), delay=0.3)
    deps = DaemonDeps(
        config=config, notifier=notifier, collector=collector, reload=lambda: config, environ={}
    )
    done = trio.Event()

    async def run() -> None:
        try:
            await serve(deps)
        finally:
            done.set()

    nursery.start_soon(run)
    with trio.fail_after(10):
        while not any(s == "READY=1" for s in notifier.states()):
            await trio.sleep(0.01)
    channel = grpc.insecure_channel(f"unix:{config.api.socket}")
    try:
        yield Running(
            socket=config.api.socket,
            notifier=notifier,
            collector=collector,
            channel=channel,
            hosts=host_pb2_grpc.HostServiceStub(channel),
            cluster=cluster_pb2_grpc.ClusterServiceStub(channel),
            ops=operation_pb2_grpc.OperationServiceStub(channel),
        )
    finally:
        channel.close()
        os.kill(os.getpid(), signal.SIGTERM)
        with trio.fail_after(5):
            await done.wait()


def details(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return error.code(), info.reason, info.metadata.get("field", "")  # type: ignore[attr-defined]


async def test_get_and_list_host(daemon: Running) -> None:
    host = await daemon.call(lambda: daemon.hosts.GetHost(host_pb2.GetHostRequest(name="hosts/-")))
    assert host.name == "hosts/node1"
    assert host.state == host_pb2.Host.READY
    assert host.hypervisor.kind == host_pb2.QEMU
    assert host.cpu.count == 2 and host.memory.total_bytes == 8 << 30
    assert host.nics[0].addresses == ["192.0.2.10/24"]
    assert host.address == "192.0.2.10"
    assert host.zsd_version
    same = await daemon.call(lambda: daemon.hosts.GetHost(host_pb2.GetHostRequest(name="hosts/node1")))
    assert same.uid == host.uid
    listed = await daemon.call(lambda: daemon.hosts.ListHosts(host_pb2.ListHostsRequest()))
    assert [h.name for h in listed.hosts] == ["hosts/node1"]
    assert listed.next_page_token == ""


async def test_socket_is_root_only(daemon: Running) -> None:
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.socket.parent.stat().st_mode) == 0o700


async def test_read_mask(daemon: Running) -> None:
    mask = field_mask_pb2.FieldMask(paths=["name", "hypervisor.kind"])
    host = await daemon.call(
        lambda: daemon.hosts.GetHost(host_pb2.GetHostRequest(name="hosts/-", read_mask=mask))
    )
    assert host.name == "hosts/node1"
    assert host.hypervisor.kind == host_pb2.QEMU
    assert not host.HasField("cpu") and host.uid == ""


async def test_bad_input_names_the_field(daemon: Running) -> None:
    cases: list[tuple[Callable[[], object], grpc.StatusCode, str, str]] = [
        (
            lambda: daemon.hosts.GetHost(host_pb2.GetHostRequest(name="hosts/../etc")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_NAME",
            "name",
        ),
        (
            lambda: daemon.hosts.GetHost(host_pb2.GetHostRequest(name="hosts/other")),
            grpc.StatusCode.NOT_FOUND,
            "NOT_FOUND",
            "name",
        ),
        (
            lambda: daemon.hosts.GetHost(
                host_pb2.GetHostRequest(name="hosts/-", read_mask=field_mask_pb2.FieldMask(paths=["nope"]))
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD_MASK",
            "read_mask.paths",
        ),
        (
            lambda: daemon.hosts.ListHosts(host_pb2.ListHostsRequest(page_size=-1)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "page_size",
        ),
        (
            lambda: daemon.hosts.ListHosts(host_pb2.ListHostsRequest(page_token="garbage!")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "page_token",
        ),
        (
            lambda: daemon.hosts.RefreshHost(
                host_pb2.RefreshHostRequest(name="hosts/-", request_id="bad id")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_REQUEST_ID",
            "request_id",
        ),
        (
            lambda: daemon.ops.GetOperation(operation_pb2.GetOperationRequest(name="operations/x")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_NAME",
            "name",
        ),
        (
            lambda: daemon.ops.GetOperation(
                operation_pb2.GetOperationRequest(name="operations/00000000-0000-0000-0000-000000000000")
            ),
            grpc.StatusCode.NOT_FOUND,
            "NOT_FOUND",
            "name",
        ),
        (
            lambda: daemon.cluster.GetCluster(cluster_pb2.GetClusterRequest(name="clusters/x")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_NAME",
            "name",
        ),
    ]
    for fn, code, reason, field in cases:
        with pytest.raises(grpc.RpcError) as info:
            await daemon.call(fn)
        assert details(info.value) == (code, reason, field)
        assert field in str(info.value.details())  # type: ignore[attr-defined]


async def test_cluster_of_one(daemon: Running) -> None:
    c = await daemon.call(lambda: daemon.cluster.GetCluster(cluster_pb2.GetClusterRequest(name="cluster")))
    assert c.name == "cluster" and c.display_name == "zsd" and c.uid
    assert [m.host for m in c.members] == ["hosts/node1"]
    assert c.members[0].state == cluster_pb2.ClusterMember.ALIVE
    assert c.leader.host == "hosts/node1" and c.leader.epoch == 1


async def test_scheduling_policies_need_cluster_membership(daemon: Running) -> None:
    # Policies live in cluster.db; this zsd runs without membership (no sanlock here).
    stub = scheduling_pb2_grpc.SchedulingServiceStub(daemon.channel)
    with pytest.raises(grpc.RpcError) as info:
        await daemon.call(lambda: stub.ListSchedulingPolicies(scheduling_pb2.ListSchedulingPoliciesRequest()))
    assert details(info.value)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "NOT_A_MEMBER")
    # A malformed request is refused for what it is first, naming the field.
    bad = scheduling_pb2.CreateSchedulingPolicyRequest(
        policy_id="x", policy=scheduling_pb2.SchedulingPolicy()
    )
    with pytest.raises(grpc.RpcError) as info:
        await daemon.call(lambda: stub.CreateSchedulingPolicy(bad))
    assert details(info.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "policy.kind")


async def test_refresh_operation_with_request_id(daemon: Running) -> None:
    calls_before = daemon.collector.calls
    req = host_pb2.RefreshHostRequest(name="hosts/-", request_id="4b3a2f5e-1111-4222-8333-944445555666")
    op = await daemon.call(lambda: daemon.hosts.RefreshHost(req))
    assert op.name.startswith("operations/") and not op.done
    assert op.metadata.verb == "RefreshHost" and op.metadata.target == "hosts/node1"
    done = await daemon.call(
        lambda: daemon.ops.WaitOperation(operation_pb2.WaitOperationRequest(name=op.name))
    )
    assert done.done and done.metadata.state == operation_pb2.OperationMetadata.SUCCEEDED
    host = host_pb2.Host()
    assert done.response.Unpack(host) and host.name == "hosts/node1"
    again = await daemon.call(lambda: daemon.hosts.RefreshHost(req))
    assert again.name == op.name and again.done
    assert daemon.collector.calls == calls_before + 1
    listed = await daemon.call(
        lambda: daemon.ops.ListOperations(
            operation_pb2.ListOperationsRequest(state=operation_pb2.OperationMetadata.SUCCEEDED)
        )
    )
    assert op.name in [o.name for o in listed.operations]


async def test_wait_timeout_and_cancel(daemon: Running) -> None:
    daemon.collector.delay = 30
    op = await daemon.call(lambda: daemon.hosts.RefreshHost(host_pb2.RefreshHostRequest(name="hosts/-")))
    from google.protobuf import duration_pb2

    waited = await daemon.call(
        lambda: daemon.ops.WaitOperation(
            operation_pb2.WaitOperationRequest(name=op.name, timeout=duration_pb2.Duration(nanos=100_000_000))
        )
    )
    assert not waited.done
    cancelled = await daemon.call(
        lambda: daemon.ops.CancelOperation(operation_pb2.CancelOperationRequest(name=op.name))
    )
    assert cancelled.metadata.cancel_requested
    final = await daemon.call(
        lambda: daemon.ops.WaitOperation(operation_pb2.WaitOperationRequest(name=op.name))
    )
    assert final.metadata.state == operation_pb2.OperationMetadata.CANCELLED
    assert final.error.code == grpc.StatusCode.CANCELLED.value[0]
    with pytest.raises(grpc.RpcError) as info:
        await daemon.call(
            lambda: daemon.ops.CancelOperation(operation_pb2.CancelOperationRequest(name=op.name))
        )
    assert details(info.value)[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "OPERATION_DONE")


async def test_deadline_crosses_the_bridge(daemon: Running) -> None:
    daemon.collector.delay = 30
    op = await daemon.call(lambda: daemon.hosts.RefreshHost(host_pb2.RefreshHostRequest(name="hosts/-")))
    # A call deadline shorter than the wait: the server answers with the operation's state in time.
    waited = await daemon.call(
        lambda: daemon.ops.WaitOperation(operation_pb2.WaitOperationRequest(name=op.name), timeout=0.5)
    )
    assert not waited.done


async def test_paging_over_operations(daemon: Running) -> None:
    names = []
    for _ in range(5):
        op = await daemon.call(lambda: daemon.hosts.RefreshHost(host_pb2.RefreshHostRequest(name="hosts/-")))
        names.append(op.name)
    seen: list[str] = []
    token = ""
    while True:
        resp = await daemon.call(
            lambda t=token: daemon.ops.ListOperations(  # type: ignore[misc]
                operation_pb2.ListOperationsRequest(page_size=2, page_token=t)
            )
        )
        seen += [o.name for o in resp.operations]
        token = resp.next_page_token
        if not token:
            break
    assert seen[:5] == list(reversed(names))
    assert len(seen) == len(set(seen))


async def test_sigterm_drains_in_flight_calls(tmp_path: Path) -> None:
    config = load(root=tmp_path, env={}, hostname="node1", overrides=["api.shutdown_grace=2"])
    notifier = RecordingNotifier()
    collector = StaticCollector(sample_facts(), delay=0.5)
    deps = DaemonDeps(
        config=config, notifier=notifier, collector=collector, reload=lambda: config, environ={}
    )
    channel = grpc.insecure_channel(f"unix:{config.api.socket}")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, deps)
            with trio.fail_after(10):
                while "READY=1" not in notifier.states():
                    await trio.sleep(0.01)
            hosts = host_pb2_grpc.HostServiceStub(channel)
            ops = operation_pb2_grpc.OperationServiceStub(channel)
            op = await trio.to_thread.run_sync(
                lambda: hosts.RefreshHost(host_pb2.RefreshHostRequest(name="hosts/-"))
            )
            result: list[operation_pb2.Operation] = []

            def wait_call() -> None:
                result.append(ops.WaitOperation(operation_pb2.WaitOperationRequest(name=op.name), timeout=10))

            nursery.start_soon(trio.to_thread.run_sync, wait_call)
            await trio.sleep(0.1)  # the call is now waiting inside the daemon
            stopping_at = trio.current_time()
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        channel.close()
    # The in-flight wait finished normally (drained), then the daemon stopped, all within 5 s.
    assert result and result[0].done
    assert result[0].metadata.state == operation_pb2.OperationMetadata.SUCCEEDED
    assert trio.current_time() - stopping_at < 5
    assert "STOPPING=1" in notifier.states()


async def test_sigterm_during_startup_stops_at_once(tmp_path: Path) -> None:
    config = load(root=tmp_path, env={}, hostname="node1")
    notifier = RecordingNotifier()
    collector = StaticCollector(sample_facts(), delay=60)  # an inventory that takes a minute
    deps = DaemonDeps(
        config=config, notifier=notifier, collector=collector, reload=lambda: config, environ={}
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, deps)
        with trio.fail_after(5):
            while "STATUS=collecting host inventory" not in notifier.states():
                await trio.sleep(0.01)
        started = trio.current_time()
        os.kill(os.getpid(), signal.SIGTERM)
    assert trio.current_time() - started < 2
    assert "READY=1" not in notifier.states()
    assert "STOPPING=1" in notifier.states()
    assert not config.api.socket.exists()

"""Core records -> zsd.v1 messages. Pure functions; run on the API thread."""

from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2, timestamp_pb2
from google.protobuf.message import Message

from zsd.api.status import to_rpc_status
from zsd.cluster.local import ClusterRecord, HostRecord, HostState, MemberState
from zsd.cluster.operations import OperationView, OpState
from zsd.host.model import HypervisorKind
from zsd.v1 import cluster_pb2, host_pb2, operation_pb2


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


_HOST_STATE = {
    HostState.READY: host_pb2.Host.READY,
    HostState.DEGRADED: host_pb2.Host.DEGRADED,
    HostState.UNREACHABLE: host_pb2.Host.UNREACHABLE,
}
_HV_KIND = {HypervisorKind.KVM: host_pb2.KVM, HypervisorKind.QEMU: host_pb2.QEMU}
_MEMBER_STATE = {
    MemberState.ALIVE: cluster_pb2.ClusterMember.ALIVE,
    MemberState.SUSPECT: cluster_pb2.ClusterMember.SUSPECT,
    MemberState.DEAD: cluster_pb2.ClusterMember.DEAD,
    MemberState.LEFT: cluster_pb2.ClusterMember.LEFT,
}
_OP_STATE = {
    OpState.PENDING: operation_pb2.OperationMetadata.PENDING,
    OpState.RUNNING: operation_pb2.OperationMetadata.RUNNING,
    OpState.SUCCEEDED: operation_pb2.OperationMetadata.SUCCEEDED,
    OpState.FAILED: operation_pb2.OperationMetadata.FAILED,
    OpState.CANCELLED: operation_pb2.OperationMetadata.CANCELLED,
}
OP_STATE_FROM_PROTO = {v: k for k, v in _OP_STATE.items()}


def host(rec: HostRecord, *, now: float) -> host_pb2.Host:
    msg = host_without_uptime(rec)
    msg.uptime.CopyFrom(duration(max(now - rec.started_at, 0.0)))
    return msg


def host_without_uptime(rec: HostRecord) -> host_pb2.Host:
    """Everything but the one field that changes every second (see HostMessageCache)."""
    f = rec.facts
    return host_pb2.Host(
        name=f"hosts/{rec.name}",
        host_id=rec.host_id,
        uid=rec.uid,
        address=rec.address,
        state=_HOST_STATE[rec.state],
        state_reasons=rec.state_reasons,
        hypervisor=host_pb2.Hypervisor(
            kind=_HV_KIND[f.hypervisor.kind],
            reason=f.hypervisor.reason,
            libvirt_version=f.hypervisor.libvirt_version,
            qemu_version=f.hypervisor.qemu_version,
            libvirt_reachable=f.hypervisor.libvirt_reachable,
            cpu_model=f.hypervisor.cpu_model,
            domain_types=f.hypervisor.domain_types,
        ),
        cpu=host_pb2.Cpu(
            model=f.cpu.model,
            vendor=f.cpu.vendor,
            arch=f.cpu.arch,
            sockets=f.cpu.sockets,
            cores_per_socket=f.cpu.cores_per_socket,
            threads_per_core=f.cpu.threads_per_core,
            count=f.cpu.count,
            flags=f.cpu.flags,
        ),
        memory=host_pb2.Memory(total_bytes=f.memory.total_bytes, available_bytes=f.memory.available_bytes),
        numa_nodes=[
            host_pb2.NumaNode(id=n.id, cpus=n.cpus, memory_bytes=n.memory_bytes) for n in f.numa_nodes
        ],
        disks=[
            host_pb2.Disk(
                name=d.name,
                size_bytes=d.size_bytes,
                rotational=d.rotational,
                model=d.model,
                serial=d.serial,
                wwid=d.wwid,
            )
            for d in f.disks
        ],
        nics=[
            host_pb2.Nic(
                name=n.name,
                mac_address=n.mac_address,
                mtu=n.mtu,
                up=n.up,
                speed_mbps=n.speed_mbps,
                addresses=n.addresses,
                driver=n.driver,
            )
            for n in f.nics
        ],
        pci_devices=[
            host_pb2.PciDevice(
                address=d.address,
                vendor=d.vendor,
                device=d.device,
                pci_class=d.pci_class,
                driver=d.driver,
                numa_node=d.numa_node,
                iommu_group=-1 if d.iommu_group is None else d.iommu_group,
                total_vfs=d.total_vfs,
                num_vfs=d.num_vfs,
                physfn=d.physfn,
            )
            for d in f.pci_devices
        ],
        zsd_version=rec.zsd_version,
        boot_time=timestamp(f.boot_time),
        kernel=f.kernel,
        os=f.os,
        refresh_time=timestamp(f.collected_at),
    )


def cluster(rec: ClusterRecord) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name="cluster",
        display_name=rec.display_name,
        uid=rec.uid,
        members=[
            cluster_pb2.ClusterMember(
                host=f"hosts/{m.host}", host_id=m.host_id, address=m.address, state=_MEMBER_STATE[m.state]
            )
            for m in rec.members
        ],
        leader=cluster_pb2.Leader(
            host=f"hosts/{rec.leader.host}" if rec.leader.host else "",
            epoch=rec.leader.epoch,
            since=timestamp(rec.leader.since),
        ),
        create_time=timestamp(rec.created),
    )


def operation(view: OperationView, *, now: float) -> operation_pb2.Operation:
    meta = operation_pb2.OperationMetadata(
        verb=view.verb,
        target=view.target,
        state=_OP_STATE[view.state],
        progress_percent=view.progress_percent,
        status_message=view.status_message,
        cancel_requested=view.cancel_requested,
        create_time=timestamp(view.create_time),
        update_time=timestamp(view.update_time),
        host=view.host,
        request_id=view.request_id,
    )
    if view.end_time is not None:
        meta.end_time.CopyFrom(timestamp(view.end_time))
    op = operation_pb2.Operation(name=view.name, metadata=meta, done=view.done)
    result = operation_result(view.result, now=now) if view.done else None
    if view.error is not None:
        op.error.CopyFrom(to_rpc_status(view.error))
    elif result is not None:
        packed = any_pb2.Any()
        packed.Pack(result)
        op.response.CopyFrom(packed)
    return op


def operation_result(value: object, *, now: float) -> Message | None:
    """Encodes what a job returned as the Operation's response."""
    if isinstance(value, HostRecord):
        return host(value, now=now)
    if isinstance(value, Message):
        return value  # jobs that build their own response message
    if value is None:
        return None
    raise TypeError(f"no encoder for operation result of type {type(value).__name__}")

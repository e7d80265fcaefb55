"""StorageService on a real zsd (embedded cluster of one): the default pool, image
import over the API (local file and http), volumes as operations, snapshots,
flatten with progress, and errors that name the field."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.integration.storagekit import MiB, make_image
from tests.integration.zsdproc import ZsdProcess, start_zsd
from zsd.v1 import operation_pb2, operation_pb2_grpc, storage_pb2, storage_pb2_grpc

pytestmark = pytest.mark.integration
ARGS = ("--set", "hypervisor.kind=qemu", "--set", "host.name=st-host")


@pytest.fixture
def zsd(tmp_path: Path) -> Iterator[ZsdProcess]:
    proc = start_zsd(tmp_path / "root", *ARGS)
    try:
        proc.wait_for("READY=1")
        yield proc
    finally:
        proc.stop()


Stubs = tuple[storage_pb2_grpc.StorageServiceStub, operation_pb2_grpc.OperationServiceStub]


@pytest.fixture
def stubs(zsd: ZsdProcess) -> Iterator[Stubs]:
    with grpc.insecure_channel(zsd.endpoint) as channel:
        yield storage_pb2_grpc.StorageServiceStub(channel), operation_pb2_grpc.OperationServiceStub(channel)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real http server on loopback serving ``tmp_path / "www"``."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", www
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def wait(
    ops: operation_pb2_grpc.OperationServiceStub, op: operation_pb2.Operation
) -> operation_pb2.Operation:
    while not op.done:
        op = ops.WaitOperation(
            operation_pb2.WaitOperationRequest(name=op.name, timeout=duration_pb2.Duration(seconds=30)),
            timeout=40,
        )
    return op


def error_info(e: grpc.RpcError) -> tuple[grpc.StatusCode, str, str]:
    """(code, reason, field) from the rich status zsd sends."""
    status = rpc_status.from_call(e)  # type: ignore[arg-type]
    assert status is not None
    reason = field = ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, field = info.reason, info.metadata.get("field", "")
    return e.code(), reason, field


def test_default_pool_volume_lifecycle(stubs: Stubs, tmp_path: Path) -> None:
    storage, ops = stubs
    pools = storage.ListPools(storage_pb2.ListPoolsRequest(), timeout=10).pools
    assert [(p.name, p.kind, p.state) for p in pools] == [
        ("pools/default", storage_pb2.Pool.LOCAL_DIR, storage_pb2.Pool.ACTIVE)
    ]
    assert pools[0].host == "st-host" and pools[0].capacity.size_bytes > 0
    assert [(h.host, h.state) for h in pools[0].hosts] == [("hosts/st-host", storage_pb2.Pool.ACTIVE)]
    src = make_image(tmp_path / "cirros.img", 16 * MiB)
    op = storage.ImportImage(
        storage_pb2.ImportImageRequest(
            parent="pools/default", image_id="cirros", source=storage_pb2.ImageSource(path=str(src))
        ),
        timeout=10,
    )
    op = wait(ops, op)
    assert op.metadata.verb == "ImportImage" and not op.HasField("error")
    image = storage_pb2.Image()
    op.response.Unpack(image)
    assert (image.format, image.virtual_size_bytes) == (storage_pb2.QCOW2, 16 * MiB)

    op = wait(
        ops,
        storage.CreateVolume(
            storage_pb2.CreateVolumeRequest(
                parent="pools/default",
                volume_id="web",
                image="pools/default/images/cirros",
                volume=storage_pb2.Volume(size_bytes=32 * MiB, qos=storage_pb2.VolumeQos(read_iops=100)),
            ),
            timeout=10,
        ),
    )
    vol = storage_pb2.Volume()
    op.response.Unpack(vol)
    assert (vol.name, vol.size_bytes, vol.linked, vol.image) == (
        "pools/default/volumes/web",
        32 * MiB,
        True,
        "pools/default/images/cirros",
    )
    assert vol.qos.read_iops == 100

    snap = storage.CreateSnapshot(
        storage_pb2.CreateSnapshotRequest(parent=vol.name, snapshot_id="before-upgrade"), timeout=10
    )
    assert snap.name == f"{vol.name}/snapshots/before-upgrade" and snap.current
    listed = storage.ListSnapshots(storage_pb2.ListSnapshotsRequest(parent=vol.name), timeout=10).snapshots
    assert [s.name for s in listed] == [snap.name]
    reverted = storage.RevertSnapshot(storage_pb2.RevertSnapshotRequest(name=snap.name), timeout=10)
    assert reverted.current_snapshot == snap.name

    updated = storage.UpdateVolume(
        storage_pb2.UpdateVolumeRequest(
            volume=storage_pb2.Volume(
                name=vol.name, qos=storage_pb2.VolumeQos(total_iops=10, total_iops_max=50)
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["qos"]),
        ),
        timeout=10,
    )
    assert (updated.qos.total_iops, updated.qos.read_iops) == (10, 0)
    grown = storage.ResizeVolume(
        storage_pb2.ResizeVolumeRequest(name=vol.name, size_bytes=64 * MiB), timeout=10
    )
    assert grown.size_bytes == 64 * MiB

    flat = wait(ops, storage.FlattenVolume(storage_pb2.FlattenVolumeRequest(name=vol.name), timeout=10))
    assert flat.metadata.progress_percent == 100 and not flat.HasField("error")
    assert not storage.GetVolume(storage_pb2.GetVolumeRequest(name=vol.name), timeout=10).linked

    done = wait(ops, storage.DeleteSnapshot(storage_pb2.DeleteSnapshotRequest(name=snap.name), timeout=10))
    assert not done.HasField("error")
    storage.DeleteVolume(storage_pb2.DeleteVolumeRequest(name=vol.name), timeout=10)
    storage.DeleteImage(storage_pb2.DeleteImageRequest(name=image.name), timeout=10)
    assert (
        storage.ListVolumes(storage_pb2.ListVolumesRequest(parent="pools/default"), timeout=10).volumes == []
    )


def test_http_import_with_checksum(stubs: Stubs, web: tuple[str, Path]) -> None:
    storage, ops = stubs
    base, www = web
    src = make_image(www / "disk.qcow2", 8 * MiB)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    op = wait(
        ops,
        storage.ImportImage(
            storage_pb2.ImportImageRequest(
                parent="pools/default",
                image_id="from-web",
                source=storage_pb2.ImageSource(url=f"{base}/disk.qcow2", sha256=digest),
                format=storage_pb2.QCOW2,
            ),
            timeout=10,
        ),
    )
    image = storage_pb2.Image()
    op.response.Unpack(image)
    assert (image.sha256, image.source) == (digest, f"{base}/disk.qcow2")
    bad = wait(
        ops,
        storage.ImportImage(
            storage_pb2.ImportImageRequest(
                parent="pools/default",
                image_id="tampered",
                source=storage_pb2.ImageSource(url=f"{base}/disk.qcow2", sha256="1" * 64),
            ),
            timeout=10,
        ),
    )
    assert bad.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "sha256" in bad.error.message
    names = [
        i.name
        for i in storage.ListImages(storage_pb2.ListImagesRequest(parent="pools/default"), timeout=10).images
    ]
    assert names == ["pools/default/images/from-web"]


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        (
            storage_pb2.CreateVolumeRequest(
                parent="pools/default", volume_id="../etc", volume=storage_pb2.Volume(size_bytes=MiB)
            ),
            "INVALID_ARGUMENT",
            "volume_id",
        ),
        (
            storage_pb2.CreateVolumeRequest(
                parent="pools/default", volume_id="v", volume=storage_pb2.Volume(size_bytes=1000)
            ),
            "INVALID_ARGUMENT",
            "volume.size_bytes",
        ),
        (
            storage_pb2.CreateVolumeRequest(
                parent="pools/default", volume_id="v", volume=storage_pb2.Volume(size_bytes=-512)
            ),
            "INVALID_ARGUMENT",
            "volume.size_bytes",
        ),
        (
            storage_pb2.CreateVolumeRequest(
                parent="pools/nope", volume_id="v", volume=storage_pb2.Volume(size_bytes=MiB)
            ),
            "NOT_FOUND",
            "name",
        ),
        (
            storage_pb2.CreateVolumeRequest(
                parent="pools/default", volume_id="v", volume=storage_pb2.Volume(size_bytes=1 << 60)
            ),
            "INVALID_ARGUMENT",
            "volume.size_bytes",
        ),
        (
            storage_pb2.CreateVolumeRequest(
                parent="pools/default", volume_id="v", source_snapshot="pools/other/volumes/x/snapshots/s"
            ),
            "FAILED_PRECONDITION",
            "source_snapshot",
        ),
        (
            storage_pb2.ImportImageRequest(
                parent="pools/default",
                image_id="i",
                source=storage_pb2.ImageSource(url="ftp://example.org/x.img"),
            ),
            "INVALID_ARGUMENT",
            "source.url",
        ),
        (
            storage_pb2.ImportImageRequest(
                parent="pools/default", image_id="i", source=storage_pb2.ImageSource(url="file:///etc/passwd")
            ),
            "INVALID_ARGUMENT",
            "source.url",
        ),
        (
            storage_pb2.CreatePoolRequest(
                pool_id="p", pool=storage_pb2.Pool(kind=storage_pb2.Pool.LOCAL_DIR, path="relative")
            ),
            "INVALID_ARGUMENT",
            "pool.path",
        ),
    ],
)
def test_bad_input_names_the_field_and_leaves_nothing(
    stubs: Stubs, request_: Message, code: str, field: str
) -> None:
    storage, _ = stubs
    with pytest.raises(grpc.RpcError) as e:
        if isinstance(request_, storage_pb2.CreateVolumeRequest):
            storage.CreateVolume(request_, timeout=10)
        elif isinstance(request_, storage_pb2.ImportImageRequest):
            storage.ImportImage(request_, timeout=10)
        elif isinstance(request_, storage_pb2.CreatePoolRequest):
            storage.CreatePool(request_, timeout=10)
    got_code, _, got_field = error_info(e.value)
    assert (got_code.name, got_field) == (code, field)
    assert (
        storage.ListVolumes(storage_pb2.ListVolumesRequest(parent="pools/default"), timeout=10).volumes == []
    )
    assert [p.name for p in storage.ListPools(storage_pb2.ListPoolsRequest(), timeout=10).pools] == [
        "pools/default"
    ]


def test_flatten_can_be_cancelled_and_leaves_the_volume_linked(stubs: Stubs, tmp_path: Path) -> None:
    storage, ops = stubs
    src = make_image(tmp_path / "big.qcow2", 1024 * MiB, length=768 * MiB)
    wait(
        ops,
        storage.ImportImage(
            storage_pb2.ImportImageRequest(
                parent="pools/default", image_id="big", source=storage_pb2.ImageSource(path=str(src))
            ),
            timeout=30,
        ),
    )
    wait(
        ops,
        storage.CreateVolume(
            storage_pb2.CreateVolumeRequest(
                parent="pools/default", volume_id="v", image="pools/default/images/big"
            ),
            timeout=10,
        ),
    )
    op = storage.FlattenVolume(storage_pb2.FlattenVolumeRequest(name="pools/default/volumes/v"), timeout=10)
    ops.CancelOperation(operation_pb2.CancelOperationRequest(name=op.name), timeout=10)
    done = wait(ops, op)
    assert done.metadata.state == operation_pb2.OperationMetadata.CANCELLED, done
    assert done.error.code == grpc.StatusCode.CANCELLED.value[0]
    vol = storage.GetVolume(storage_pb2.GetVolumeRequest(name="pools/default/volumes/v"), timeout=10)
    assert vol.linked and vol.image == "pools/default/images/big"
    # Still a working volume: flattening it again (uncancelled) succeeds.
    again = wait(ops, storage.FlattenVolume(storage_pb2.FlattenVolumeRequest(name=vol.name), timeout=10))
    assert not again.HasField("error")
    assert not storage.GetVolume(storage_pb2.GetVolumeRequest(name=vol.name), timeout=10).linked

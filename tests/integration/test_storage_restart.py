"""kill -9 of zsd in the middle of a long storage operation: the restarted zsd
finds the journal entry and finishes the operation; no data is lost."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from tests.integration.storagekit import MiB, write
from tests.integration.zsdproc import start_zsd
from zsd.v1 import operation_pb2, operation_pb2_grpc, storage_pb2, storage_pb2_grpc

pytestmark = pytest.mark.integration
ARGS = ("--set", "hypervisor.kind=qemu", "--set", "host.name=crash-host")


def test_snapshot_merge_interrupted_by_kill_is_finished_at_restart(tmp_path: Path) -> None:
    root = tmp_path / "root"
    pool_dir = root / "var/lib/zsd/pools/default"
    zsd = start_zsd(root, *ARGS)
    try:
        zsd.wait_for("READY=1")
        with grpc.insecure_channel(zsd.endpoint) as channel:
            storage = storage_pb2_grpc.StorageServiceStub(channel)
            ops = operation_pb2_grpc.OperationServiceStub(channel)
            create = storage.CreateVolume(
                storage_pb2.CreateVolumeRequest(
                    parent="pools/default", volume_id="v", volume=storage_pb2.Volume(size_bytes=4096 * MiB)
                ),
                timeout=10,
            )
            ops.WaitOperation(operation_pb2.WaitOperationRequest(name=create.name), timeout=30)
            record = json.loads((pool_dir / "volumes/v.json").read_text())
            active = pool_dir / "volumes" / record["uid"] / f"{record['active']}.qcow2"
            write(active, 0x10, 0, 4096)
            storage.CreateSnapshot(
                storage_pb2.CreateSnapshotRequest(parent="pools/default/volumes/v", snapshot_id="s"),
                timeout=10,
            )
            record = json.loads((pool_dir / "volumes/v.json").read_text())
            active = pool_dir / "volumes" / record["uid"] / f"{record['active']}.qcow2"
            write(active, 0x20, 64 * MiB, 512 * MiB)  # a big top: the merge pulls the small snapshot up
            expected = tmp_path / "expected.raw"  # the guest view before the merge (sparse)
            subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(active), str(expected)], check=True)
            op = storage.DeleteSnapshot(
                storage_pb2.DeleteSnapshotRequest(name="pools/default/volumes/v/snapshots/s"), timeout=10
            )
            # Kill as soon as the journal says the merge started.
            deadline = time.monotonic() + 10
            while not list((pool_dir / ".zsd/journal").glob("*.json")) and time.monotonic() < deadline:
                time.sleep(0.001)
            zsd.proc.send_signal(signal.SIGKILL)
            zsd.proc.wait(10)
            assert op.name
    finally:
        zsd.stop()
    # The kill landed mid-merge: the journal entry is still there.
    assert len(list((pool_dir / ".zsd/journal").glob("*.json"))) == 1
    restarted = start_zsd(root, *ARGS)
    try:
        restarted.wait_for("READY=1")
        assert "recovered interrupted operation: delete-snapshot v: completed" in restarted.log()
        assert list((pool_dir / ".zsd/journal").glob("*.json")) == []
        record = json.loads((pool_dir / "volumes/v.json").read_text())
        assert record["snapshots"] == [] and len(record["layers"]) == 1
        top = pool_dir / "volumes" / record["uid"] / f"{record['active']}.qcow2"
        same = subprocess.run(
            ["qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2", str(expected), str(top)],
            check=False,
            capture_output=True,
            text=True,
        )
        assert same.returncode == 0, same.stdout + same.stderr
        assert sorted(p.name for p in (pool_dir / "volumes" / record["uid"]).iterdir()) == [top.name]
    finally:
        restarted.stop()

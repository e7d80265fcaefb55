"""A cluster member with a real sanlock daemon: `zsd cluster init`, then `zsd run`
leads it under sanlock's lease version as epoch; a kill -9 of zsd hands the next
start a new epoch; cluster.db's history stays consistent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.zsdproc import start_zsd, zsctl
from zsd.cluster.lease.daemon import SanlockDaemon
from zsd.cluster.store import ClusterDb, verify
from zsd.paths import Paths

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
HOST = ("--set", "host.name=m1", "--set", "host.address=127.0.0.1", "--set", "hypervisor.kind=qemu")


@pytest.fixture
def sanlock(tmp_path: Path) -> Iterator[SanlockDaemon]:
    with SanlockDaemon(run_dir=tmp_path / "sanlock") as daemon:
        yield daemon


def init(root: Path, shared: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(BIN / "zsd"),
            "cluster",
            "init",
            "--root",
            str(root),
            "--shared-dir",
            str(shared),
            "--io-timeout",
            "1",
            *HOST,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
    )


def cluster_doc(endpoint: str) -> dict[str, object]:
    out = zsctl(endpoint, "-o", "json", "cluster", "show")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert isinstance(doc, dict)
    return doc


def leader(endpoint: str, timeout: float = 30.0) -> dict[str, object]:
    """The cluster once this host leads it. READY comes first: right after joining the
    lockspace sanlock needs one renewal before a lease may be taken."""
    deadline = time.monotonic() + timeout
    while True:
        doc = cluster_doc(endpoint)
        lead = doc["leader"]
        if isinstance(lead, dict) and lead.get("host"):
            return doc
        assert time.monotonic() < deadline, f"no leader within {timeout} s: {doc}"
        time.sleep(0.2)


def test_init_then_lead_with_sanlock_epochs(tmp_path: Path, sanlock: SanlockDaemon) -> None:
    root, shared = tmp_path / "root", tmp_path / "shared"
    shared.mkdir()
    first = init(root, shared, sanlock.client_env)
    assert first.returncode == 0, first.stderr
    assert "join token: zsdjoin1." in first.stdout
    for name in ("cluster.json", "cluster.db", "ca.pem", "ca.key", "leases"):
        assert (shared / name).exists(), name
    assert oct((shared / "ca.key").stat().st_mode & 0o777) == "0o600"

    again = init(root, shared, sanlock.client_env)
    assert again.returncode == 1 and "already holds a cluster" in again.stderr

    zsd = start_zsd(root, *HOST, env=sanlock.client_env)
    try:
        zsd.wait_for("READY=1", timeout=60)
        doc = leader(zsd.endpoint)
        lead = doc["leader"]
        assert isinstance(lead, dict)
        assert lead["host"] == "hosts/m1"
        assert int(lead["epoch"]) == 2  # init held epoch 1
        assert doc["display_name"] == "zsd"
        zsd.proc.kill()  # kill -9: sanlock releases the leader lease with the connection
        zsd.proc.wait(10)
    finally:
        zsd.stop()

    restarted = start_zsd(root, *HOST, env=sanlock.client_env)
    try:
        restarted.wait_for("READY=1", timeout=60)
        lead = leader(restarted.endpoint)["leader"]
        assert isinstance(lead, dict) and int(lead["epoch"]) == 3
    finally:
        assert restarted.stop() == 0
    assert verify(shared / "cluster.db") == ()
    check = ClusterDb.open(shared / "cluster.db", epoch=4, owner="checker")
    try:
        assert [(e.epoch, e.owner) for e in check.epochs()] == [
            (1, "host-1"),
            (2, "host-1"),
            (3, "host-1"),
            (4, "checker"),
        ]
    finally:
        check.close()


def test_init_refuses_a_non_empty_directory(tmp_path: Path, sanlock: SanlockDaemon) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "precious.qcow2").write_bytes(b"user data")
    out = init(tmp_path / "root", shared, sanlock.client_env)
    assert out.returncode == 1
    assert "not empty (precious.qcow2)" in out.stderr and "zsd will not delete it" in out.stderr
    assert (shared / "precious.qcow2").read_bytes() == b"user data"


def test_member_state_labels_watch_and_consistent_reads(tmp_path: Path, sanlock: SanlockDaemon) -> None:
    """One member, real sanlock: label writes commit through the leader's store, the
    Watch stream carries them, consistent reads agree, bad input names its field."""
    import grpc
    from google.protobuf import field_mask_pb2

    from tests.integration.clusterload import label_write
    from zsd.v1 import cluster_pb2, cluster_pb2_grpc, host_pb2, host_pb2_grpc, storage_pb2, storage_pb2_grpc

    root, shared = tmp_path / "root", tmp_path / "shared"
    shared.mkdir()
    assert init(root, shared, sanlock.client_env).returncode == 0
    zsd = start_zsd(root, *HOST, env=sanlock.client_env)
    try:
        zsd.wait_for("READY=1", timeout=60)
        leader(zsd.endpoint)
        with grpc.insecure_channel(zsd.endpoint) as channel:
            hosts = host_pb2_grpc.HostServiceStub(channel)
            cluster = cluster_pb2_grpc.ClusterServiceStub(channel)
            start = cluster.GetCluster(cluster_pb2.GetClusterRequest(name="cluster")).revision
            watch = cluster.Watch(cluster_pb2.WatchRequest(from_revision=start), timeout=30)
            updated = label_write(
                zsd.endpoint, host="m1", key="rack", value="r7", request_id="req-1", timeout=20
            )
            assert dict(updated.labels) == {"rack": "r7"}
            again = label_write(
                zsd.endpoint, host="m1", key="rack", value="r7", request_id="req-1", timeout=20
            )
            assert again.etag == updated.etag  # the retry replayed, no new revision

            seen = None
            for response in watch:
                for change in response.changes:
                    if change.name == "hosts/m1" and dict(change.host.labels).get("rack") == "r7":
                        seen = response.revision
                if seen is not None:
                    break
            watch.cancel()
            assert seen == int(updated.etag)

            fresh = hosts.GetHost(host_pb2.GetHostRequest(name="hosts/m1", consistent=True))
            assert dict(fresh.labels) == {"rack": "r7"} and fresh.etag == updated.etag
            listed = hosts.ListHosts(host_pb2.ListHostsRequest())
            assert [h.name for h in listed.hosts] == ["hosts/m1"] and listed.revision >= seen
            assert listed.hosts[0].gossip_state == host_pb2.MEMBER_ALIVE
            deadline = time.monotonic() + 20  # sanlock reports our own lease once it has renewed
            while hosts.GetHost(host_pb2.GetHostRequest(name="hosts/m1")).lease_state != host_pb2.LEASE_LIVE:
                assert time.monotonic() < deadline, "own host lease never seen LIVE"
                time.sleep(0.5)

            with pytest.raises(grpc.RpcError) as bad:
                hosts.UpdateHost(
                    host_pb2.UpdateHostRequest(
                        host=host_pb2.Host(name="hosts/m1", labels={"Bad Key": "x"}),
                        update_mask=field_mask_pb2.FieldMask(paths=["labels.Bad Key"]),
                    )
                )
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "host.labels.Bad Key" in (bad.value.details() or "")

            with pytest.raises(grpc.RpcError) as last:
                hosts.DeleteHost(host_pb2.DeleteHostRequest(name="hosts/m1"))
            assert last.value.code() == grpc.StatusCode.FAILED_PRECONDITION

            # Pool definitions go through the leader's store (here: this host).
            storage = storage_pb2_grpc.StorageServiceStub(channel)
            kind = storage_pb2.Pool.LOCAL_DIR
            created = storage.CreatePool(
                storage_pb2.CreatePoolRequest(
                    pool_id="fast", pool=storage_pb2.Pool(kind=kind, path=str(tmp_path / "fast"))
                ),
                timeout=20,
            )
            assert (created.state, created.host) == (storage_pb2.Pool.ACTIVE, "m1")
            with pytest.raises(grpc.RpcError) as taken:
                storage.CreatePool(
                    storage_pb2.CreatePoolRequest(
                        pool_id="default", pool=storage_pb2.Pool(kind=kind, path=str(tmp_path / "d2"))
                    ),
                    timeout=20,
                )
            assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
            assert not (tmp_path / "d2" / ".zsd-pool").exists()  # nothing left of the refused pool
            storage.DeletePool(storage_pb2.DeletePoolRequest(name="pools/fast"), timeout=20)
            names = [p.name for p in storage.ListPools(storage_pb2.ListPoolsRequest(), timeout=20).pools]
            assert names == ["pools/default"]
    finally:
        assert zsd.stop() == 0
    assert verify(shared / "cluster.db") == ()
    assert (tmp_path / "fast").is_dir() and not (tmp_path / "fast" / ".zsd-pool").exists()


def test_a_host_founds_its_cluster_of_one_on_first_start(tmp_path: Path, sanlock: SanlockDaemon) -> None:
    """cluster.auto_init (what contrib/run sets): no init command, a real cluster of one;
    a restart keeps it; without a sanlock daemon zsd stays the embedded cluster of one."""
    root = tmp_path / "root"
    auto = (*HOST, "--set", "cluster.auto_init=true")
    zsd = start_zsd(root, *auto, env=sanlock.client_env)
    try:
        zsd.wait_for("READY=1", timeout=90)
        first = leader(zsd.endpoint)
        assert first["leader"]["host"] == "hosts/m1"  # type: ignore[index]
        out = zsctl(zsd.endpoint, "-o", "json", "host", "label", "m1", "rack=r1")
        assert out.returncode == 0, out.stderr
    finally:
        assert zsd.stop() == 0
    assert (Paths(root=root).state_dir / "cluster" / "cluster.db").is_file()
    again = start_zsd(root, *auto, env=sanlock.client_env)
    try:
        again.wait_for("READY=1", timeout=90)
        doc = leader(again.endpoint)
        assert doc["uid"] == first["uid"]
        shown = zsctl(again.endpoint, "-o", "json", "host", "show", "m1")
        assert json.loads(shown.stdout)["labels"] == {"rack": "r1"}
    finally:
        assert again.stop() == 0

    lone = start_zsd(tmp_path / "lone", *auto, env={"SANLOCK_RUN_DIR": str(tmp_path / "nowhere")})
    try:
        lone.wait_for("READY=1", timeout=60)
        assert "running as the embedded cluster of one" in lone.log()
    finally:
        assert lone.stop() == 0

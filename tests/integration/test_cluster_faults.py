"""Faults a cluster must survive, with real processes: three hosts (namespaces,
sanlock daemons, zsd) on one shared directory, a client load of label writes
through every host, and, while it runs: kill -9 of the leader, kill -9 of a
follower, SIGSTOP of the leader past sanlock's renewal-fail time, the leader's
link cut and restored, and a restart of every zsd in turn. Afterwards: every
acknowledged write is in the store exactly once, nothing else is, and the
store's history shows one writer per epoch."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tests.integration.clusterload import LoadResult, run_load
from zsd.cluster.records import KIND_HOST, HostEntry
from zsd.cluster.store import verify
from zsd.testing.devcluster import DevCluster
from zsd.v1 import cluster_pb2, cluster_pb2_grpc, host_pb2, host_pb2_grpc

PREFIX = f"zsd-f{os.getpid()}"
LABEL_HOST = "h1"


def _missing() -> str:
    if os.geteuid() != 0:
        return "needs root"
    for tool, package in (("sanlock", "sanlock"), ("ip", "iproute2"), ("cc", "gcc")):
        if shutil.which(tool) is None:
            return f"needs {package}"
    return ""


pytestmark = [pytest.mark.integration, pytest.mark.skipif(bool(_missing()), reason=_missing())]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[DevCluster]:
    dc = DevCluster(state_dir=tmp_path / "dc", prefix=PREFIX)
    try:
        dc.up(3)
        yield dc
    finally:
        dc.down()


def leader_of(dc: DevCluster, *, via: str | None = None, timeout: float = 30.0, not_: str = "") -> str:
    """The leader's host name as a live member reports it (waiting for one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for host in dc.hosts if via is None else [dc.host(via)]:
            try:
                with grpc.insecure_channel(host.endpoint_unix) as channel:
                    c = cluster_pb2_grpc.ClusterServiceStub(channel).GetCluster(
                        cluster_pb2.GetClusterRequest(name="cluster"), timeout=2
                    )
            except grpc.RpcError:
                continue
            name = c.leader.host.removeprefix("hosts/")
            if name and not name.startswith("host-id-") and name != not_:
                return name
        time.sleep(0.2)
    raise AssertionError(f"no leader (other than {not_!r}) within {timeout} s")


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def serving(dc: DevCluster, name: str) -> bool:
    try:
        with grpc.insecure_channel(dc.host(name).endpoint_unix) as channel:
            host_pb2_grpc.HostServiceStub(channel).GetHost(host_pb2.GetHostRequest(name="hosts/-"), timeout=2)
    except grpc.RpcError:
        return False
    return True


def store_labels(db: Path) -> tuple[dict[str, str], int]:
    """The label host's labels and the number of revisions that changed its entry,
    read straight from cluster.db (read-only)."""
    conn = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)
    try:
        data = conn.execute(
            "SELECT data FROM resources WHERE kind = ? AND name = ?", (KIND_HOST, LABEL_HOST)
        ).fetchone()
        writes = conn.execute(
            "SELECT count(*) FROM changes WHERE kind = ? AND name = ?", (KIND_HOST, LABEL_HOST)
        ).fetchone()[0]
        compacted = conn.execute("SELECT value FROM meta WHERE key = 'compacted_revision'").fetchone()[0]
    finally:
        conn.close()
    assert compacted == 0, "the test needs the whole change log"
    return HostEntry.decode(bytes(data[0])).label_dict(), writes


def epoch_writers(db: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)
    try:
        return [(int(e), str(o)) for e, o in conn.execute("SELECT epoch, owner FROM epochs ORDER BY epoch")]
    finally:
        conn.close()


def test_acknowledged_writes_survive_every_fault(cluster: DevCluster) -> None:
    endpoints = [h.endpoint_unix for h in cluster.hosts]
    db = cluster.shared_dir / "cluster.db"
    leader_of(cluster)
    _, writes_before = store_labels(db)

    result = LoadResult()
    done = threading.Event()

    def load() -> None:
        nonlocal result
        try:
            result = run_load(endpoints, host=LABEL_HOST, count=200, threads=4, spacing=1.2, give_up=150)
        finally:
            done.set()

    loader = threading.Thread(target=load)
    loader.start()
    try:
        time.sleep(3)
        # 1. kill -9 of the leader's zsd: another host takes over; the old one comes back as follower.
        old = leader_of(cluster)
        cluster.kill_zsd(old)
        new = leader_of(cluster, not_=old, timeout=30)
        assert new != old
        cluster.restart_zsd(old)
        wait_until(lambda: serving(cluster, old), 60, f"{old} serving again")

        # 2. kill -9 of a follower.
        follower = next(h.name for h in cluster.hosts if h.name != leader_of(cluster))
        cluster.kill_zsd(follower)
        time.sleep(2)
        cluster.restart_zsd(follower)
        wait_until(lambda: serving(cluster, follower), 60, f"{follower} serving again")

        # 3. SIGSTOP of the leader for longer than sanlock's renewal-fail time (8 x io timeout).
        frozen = leader_of(cluster)
        cluster.stop_zsd(frozen)
        time.sleep(12)
        cluster.cont_zsd(frozen)
        wait_until(lambda: serving(cluster, frozen), 30, f"{frozen} serving after SIGCONT")

        # 4. The leader's link cut (partition) and restored.
        cut = leader_of(cluster)
        cluster.cut_link(cut)
        time.sleep(8)
        cluster.restore_link(cut)

        # 5. Every zsd restarted in turn.
        for host in cluster.hosts:
            cluster.restart_zsd(host.name)
            wait_until(lambda h=host.name: serving(cluster, h), 60, f"{host.name} serving after restart")
            leader_of(cluster)
    finally:
        done.wait(300)
        loader.join(5)

    assert len(result.outcomes) == 200
    assert result.failed == [], [(o.key, o.error) for o in result.failed[:5]]
    # Let the last writes settle into every copy, then compare with the store itself.
    labels, writes = store_labels(db)
    assert set(labels) == result.acknowledged
    assert writes - writes_before == 200, "a label write was applied more than once (or lost)"
    assert verify(db) == ()
    writers = epoch_writers(db)
    assert len({e for e, _ in writers}) == len(writers)  # one owner per epoch
    assert len(writers) >= 4  # init, first leader, and at least the failovers above


def test_storage_loss_on_the_leader_hands_over_after_sanlocks_bound(cluster: DevCluster) -> None:
    """Freezing the leader host's sanlock daemon stops its lease I/O exactly as lost
    storage would: it must stop leading, and another host leads once sanlock
    declares it dead (8 x io timeout + 60 s here); writes acknowledged before stay."""
    endpoints = [h.endpoint_unix for h in cluster.hosts]
    db = cluster.shared_dir / "cluster.db"
    before = run_load(endpoints, host=LABEL_HOST, count=10, threads=2, prefix="pre")
    assert before.failed == []
    lost = leader_of(cluster)
    sanlock_pid = cluster.host(lost).sanlock_pid
    assert sanlock_pid is not None
    os.kill(sanlock_pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        others = [h.name for h in cluster.hosts if h.name != lost]
        new = leader_of(cluster, via=others[0], not_=lost, timeout=150)
        took = time.monotonic() - started
        assert new in others
        after = run_load(
            [cluster.host(n).endpoint_unix for n in others],
            host=LABEL_HOST,
            count=10,
            threads=2,
            prefix="post",
        )
        assert after.failed == []
    finally:
        os.kill(sanlock_pid, signal.SIGCONT)
    labels, _ = store_labels(db)
    assert before.acknowledged | after.acknowledged <= set(labels)
    assert verify(db) == ()
    assert took < 150

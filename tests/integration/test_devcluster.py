"""The dev cluster: 3 simulated hosts (namespaces, sanlock, zsd) on this machine that
form one cluster (h1 runs `zsd cluster init`, the others `zsd cluster join`), its
fault primitives, and that `down` leaves nothing behind — library and command line.

Namespace names carry this test process's pid, so concurrent runs never meet.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from zsd.cluster import bootstrap, pki
from zsd.cluster.leaderhint import read_hint
from zsd.paths import Paths
from zsd.testing import netfabric
from zsd.testing.devcluster import DevCluster, DevClusterError, HostInfo, ZsdExtras
from zsd.testing.health import check_health
from zsd.testing.procs import ProcRef

ROOT = Path(__file__).resolve().parents[2]
ZSCTL = str(Path(sys.executable).parent / "zsctl")
PREFIX = f"zsd-t{os.getpid()}"


def _missing() -> str:
    if os.geteuid() != 0:
        return "needs root"
    for tool, package in (("sanlock", "sanlock"), ("ip", "iproute2"), ("cc", "gcc")):
        if shutil.which(tool) is None:
            return f"needs {package}"
    return ""


pytestmark = [pytest.mark.integration, pytest.mark.skipif(bool(_missing()), reason=_missing())]


def our_namespaces(prefix: str) -> list[str]:
    return [ns for ns in netfabric.names() if ns.startswith(f"{prefix}-")]


class RecordingHook:
    """The per-host extension point: called before every zsd start, in host order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, dc: DevCluster, host: HostInfo) -> ZsdExtras:
        assert dc.host(host).sanlock is not None  # sanlock is up before zsd starts
        self.calls.append(host.name)
        return ZsdExtras(args=("--set", "log.level=debug"), env={"DEVCLUSTER_TEST_HOST": host.name})


@pytest.fixture
def hook() -> RecordingHook:
    return RecordingHook()


@pytest.fixture
def cluster(tmp_path: Path, hook: RecordingHook) -> Iterator[DevCluster]:
    dc = DevCluster(state_dir=tmp_path / "dc", prefix=PREFIX, hook=hook)
    try:
        dc.up(3)
        yield dc
    finally:
        dc.down()


def zsctl_from(dc: DevCluster, src: str, dst: str, *, timeout: float) -> subprocess.CompletedProcess[str]:
    argv = [ZSCTL, "--endpoint", dc.host(dst).endpoint_tcp, *dc.client_tls_args()]
    argv += ["--timeout", str(timeout), "-o", "json", "host", "list"]
    return dc.run_in(src, argv, timeout=timeout + 20)


def zsctl_json(dc: DevCluster, src: str, dst: str, *args: str) -> object:
    argv = [ZSCTL, "--endpoint", dc.host(dst).endpoint_tcp, *dc.client_tls_args(), "-o", "json", *args]
    done = dc.run_in(src, argv, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def pool_states(dc: DevCluster, src: str, dst: str) -> dict[str, list[tuple[str, str]]]:
    """Each host's report of its pools, as ``dst`` lists the hosts."""
    hosts = zsctl_json(dc, src, dst, "host", "list")
    assert isinstance(hosts, list)
    return {h["name"]: [(p["pool"], p["state"]) for p in h.get("pools", [])] for h in hosts}


def hosts_seen(dc: DevCluster, src: str, dst: str) -> list[str]:
    """The host names ``dst`` lists (from its copy of the cluster state), asked from ``src``."""
    out = zsctl_from(dc, src, dst, timeout=5)
    return [h["name"] for h in json.loads(out.stdout)] if out.returncode == 0 else []


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_three_hosts_faults_and_clean_down(cluster: DevCluster, hook: RecordingHook) -> None:
    doc = json.loads((cluster.state_dir / "devcluster.json").read_text())
    assert doc == cluster.describe() and doc["phase"] == "up"
    assert [h["address"] for h in doc["hosts"]] == ["198.51.100.11", "198.51.100.12", "198.51.100.13"]
    assert sorted(our_namespaces(PREFIX)) == sorted(
        [f"{PREFIX}-fabric", *(f"{PREFIX}-h{i}" for i in (1, 2, 3))]
    )
    assert all(check_health(h.endpoint_unix) == "SERVING" for h in cluster.hosts)
    assert all(s.ok for s in cluster.status()), cluster.status()
    assert Path(doc["shared_dir"]).is_dir()
    assert hook.calls == ["h1", "h2", "h3"]
    h1_pid = cluster.host("h1").zsd_pid
    assert "log.level=debug" in Path(f"/proc/{h1_pid}/cmdline").read_text()
    assert "DEVCLUSTER_TEST_HOST=h1" in Path(f"/proc/{h1_pid}/environ").read_text()

    # One cluster: h1 founded it (host id 1) and leads it, h2 and h3 joined (2, 3).
    ca = cluster.ca.read_bytes()
    for index, host in enumerate(cluster.hosts, start=1):
        paths = Paths(root=host.root)
        membership = bootstrap.load_membership(paths)
        assert membership is not None and membership.host_id == index
        assert membership.shared_dir == str(cluster.shared_dir)
        cert, _, _ = bootstrap.tls_paths(paths)
        assert pki.verify_host_cert(ca, cert.read_bytes()) == (host.name, index)
    assert read_hint(cluster.shared_dir).host_name == "h1"
    identity = pki.cert_identity(cluster.client_cert.read_bytes())
    assert identity.kind is pki.CertKind.CLIENT

    # h1 reaches h2 over TCP with mutual TLS (the operator's client certificate),
    # through the bridge; h2 lists every member from its copy of the cluster state.
    ok = zsctl_from(cluster, "h1", "h2", timeout=10)
    assert ok.returncode == 0, ok.stderr
    members = ["hosts/h1", "hosts/h2", "hosts/h3"]
    assert wait_until(lambda: hosts_seen(cluster, "h1", "h2") == members, 10), hosts_seen(cluster, "h1", "h2")

    # Pools are defined for the whole cluster: a shared-fs pool created through h1 is
    # activated by every host (each checks the marker), and every member sees each
    # host's state of it (here: h3's copy of the host reports).
    share = cluster.shared_dir / "images-share"
    share.mkdir()
    created = zsctl_json(
        cluster, "h1", "h1", "pool", "create", "shared", "--kind", "shared-fs", "--path", str(share)
    )
    assert isinstance(created, dict) and created["state"] == "ACTIVE"
    expected = {f"hosts/h{i}": [("pools/default", "ACTIVE"), ("pools/shared", "ACTIVE")] for i in (1, 2, 3)}
    assert wait_until(lambda: pool_states(cluster, "h3", "h3") == expected, 15), pool_states(
        cluster, "h3", "h3"
    )
    shown = zsctl_json(cluster, "h2", "h2", "pool", "show", "shared")
    assert isinstance(shown, dict) and shown["uid"] == created["uid"]
    assert [(h["host"], h["state"], "seen_time" in h) for h in shown["hosts"]] == [
        (f"hosts/h{i}", "ACTIVE", True) for i in (1, 2, 3)
    ]
    # A local-dir pool is one host's: the others know it and say where it is.
    fast = cluster.host("h2").root / "fast"
    zsctl_json(cluster, "h2", "h2", "pool", "create", "fast", "--kind", "local-dir", "--path", str(fast))
    assert wait_until(
        lambda: ("pools/fast", "ACTIVE") in pool_states(cluster, "h1", "h1").get("hosts/h2", []), 15
    )
    elsewhere = zsctl_json(cluster, "h1", "h1", "pool", "show", "fast")
    assert isinstance(elsewhere, dict) and (elsewhere["state"], elsewhere["host"]) == ("INACTIVE", "h2")
    argv = [ZSCTL, "--endpoint", cluster.host("h1").endpoint_tcp, *cluster.client_tls_args()]
    refused = cluster.run_in("h1", [*argv, "volume", "create", "fast/v", "--size", "1M"], timeout=30)
    assert refused.returncode == 1 and "POOL_NOT_ACTIVE" in refused.stderr and "h2" in refused.stderr
    # Deleted through h3 (it has the shared pool active and sees it empty): gone everywhere.
    gone = cluster.run_in(
        "h3",
        [
            ZSCTL,
            "--endpoint",
            cluster.host("h3").endpoint_tcp,
            *cluster.client_tls_args(),
            "pool",
            "delete",
            "shared",
        ],
        timeout=30,
    )
    assert gone.returncode == 0, gone.stderr
    assert wait_until(
        lambda: all(("pools/shared", "ACTIVE") not in v for v in pool_states(cluster, "h1", "h1").values()),
        15,
    )
    assert not (share / ".zsd-pool").exists()

    # Partition h2: the call fails within its deadline; h2 itself keeps serving locally.
    cluster.cut_link("h2")
    started = time.monotonic()
    cut = zsctl_from(cluster, "h1", "h2", timeout=3)
    assert cut.returncode != 0 and time.monotonic() - started < 8, cut
    h2_status = {s.name: s for s in cluster.status()}["h2"]
    assert h2_status.link_up is False and h2_status.health == "SERVING"
    cluster.restore_link("h2")
    assert wait_until(lambda: zsctl_from(cluster, "h1", "h2", timeout=3).returncode == 0, 10)

    # A killed zsd shows in status; restart brings it back with a new pid.
    old = cluster.host("h3")
    cluster.kill_zsd("h3")
    by_name = {s.name: s for s in cluster.status()}
    assert not by_name["h3"].zsd_alive and by_name["h3"].health == "NOT_RUNNING"
    assert by_name["h3"].sanlock_alive and by_name["h1"].ok and by_name["h2"].ok
    new = cluster.restart_zsd("h3")
    assert new.zsd_pid != old.zsd_pid and check_health(new.endpoint_unix) == "SERVING"
    assert hook.calls[-1] == "h3"

    # SIGSTOP: alive but frozen, so the health check times out.
    cluster.stop_zsd("h1")
    h1_status = {s.name: s for s in cluster.status()}["h1"]
    assert h1_status.zsd_alive and h1_status.zsd_stopped and h1_status.health == "DEADLINE_EXCEEDED"
    cluster.cont_zsd("h1")
    assert check_health(cluster.host("h1").endpoint_unix) == "SERVING"

    # A whole host lost, then back.
    lost = cluster.host("h2")
    cluster.kill_host("h2")
    h2_status = {s.name: s for s in cluster.status()}["h2"]
    assert not h2_status.zsd_alive and not h2_status.sanlock_alive and h2_status.link_up is False
    back = cluster.restart_host("h2")
    assert hook.calls[-1] == "h2"
    assert back.sanlock_pid != lost.sanlock_pid
    assert all(s.ok for s in cluster.status())
    assert wait_until(lambda: zsctl_from(cluster, "h3", "h2", timeout=3).returncode == 0, 10)

    # down: no namespace with our prefix, none of our processes, idempotent.
    refs = [r for h in cluster.hosts for r in (h.zsd, h.sanlock) if r is not None]
    refs += [r for h in (old, lost) for r in (h.zsd, h.sanlock) if r is not None]
    cluster.stop_zsd("h1")  # a frozen zsd too: down continues it so SIGTERM can act
    started = time.monotonic()
    cluster.down()
    assert time.monotonic() - started < 8
    assert our_namespaces(PREFIX) == []
    assert not [r for r in refs if r.alive()]
    assert not cluster.hosts[0].sanlock_run_dir.joinpath("sanlock.sock").exists()
    cluster.down()
    assert cluster.phase == "down"


def devcluster(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "contrib/devcluster"), *args], capture_output=True, text=True, timeout=90, check=False
    )


def test_command_line_up_status_down(tmp_path: Path) -> None:
    prefix = f"{PREFIX}c"
    state = tmp_path / "dc"
    common = ("--state-dir", str(state))
    try:
        assert devcluster("up", "33", *common, "--prefix", prefix).returncode == 1
        up = devcluster("up", "1", *common, "--prefix", prefix)
        assert up.returncode == 0, up.stderr
        printed = json.loads(up.stdout)
        assert printed == json.loads((state / "devcluster.json").read_text())
        host = printed["hosts"][0]
        assert host["netns"] == f"{prefix}-h1" and host["endpoint_tcp"] == "198.51.100.11:7443"
        again = devcluster("up", "1", *common, "--prefix", prefix)
        assert again.returncode == 1 and "down" in again.stderr
        status = devcluster("status", *common)
        assert status.returncode == 0, status.stdout + status.stderr
        assert json.loads(status.stdout)["hosts"][0]["health"] == "SERVING"
        # The launching process has exited: down works by pid and namespace name alone.
        pids = [ProcRef(pid=host[f"{k}_pid"], started_at=host[f"{k}_started_at"]) for k in ("zsd", "sanlock")]
        assert devcluster("down", *common).returncode == 0
        assert not [r for r in pids if r.alive()] and our_namespaces(prefix) == []
        assert devcluster("down", *common).returncode == 0
        assert devcluster("status", *common).returncode == 1
    finally:
        devcluster("down", *common)


def test_failed_up_cleans_up(tmp_path: Path) -> None:
    prefix = f"{PREFIX}f"
    dc = DevCluster(state_dir=tmp_path / "dc", prefix=prefix, zsd_set=["api.shutdown_grace=99"])
    try:
        # The founder's zsd is the first to start (after `zsd cluster init`); it fails, so
        # no other host joins or starts.
        with pytest.raises(DevClusterError, match=r"(?s)h1: zsd exited with status 1.*shutdown_grace"):
            dc.up(2)
        assert dc.host("h2").zsd is None
        assert our_namespaces(prefix) == [] and dc.phase == "down"
        assert not [h for h in dc.hosts if (h.zsd and h.zsd.alive()) or (h.sanlock and h.sanlock.alive())]
    finally:
        dc.down()

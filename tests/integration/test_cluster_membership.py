"""Membership of a real 3-host cluster: every host lists every host with its gossip
and sanlock state side by side; the operator's certificate reaches any host but no
peer call; a stopped zsd shows as unreachable (not dead: sanlock still renews);
`zsctl host remove` takes a member out and its zsd leaves."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from zsd.paths import Paths
from zsd.testing.devcluster import DevCluster
from zsd.v1 import host_pb2, host_pb2_grpc

PREFIX = f"zsd-m{os.getpid()}"
ZSCTL = str(Path(sys.executable).parent / "zsctl")


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


def hosts_seen_by(dc: DevCluster, via: str) -> dict[str, host_pb2.Host]:
    with grpc.insecure_channel(dc.host(via).endpoint_unix) as channel:
        listed = host_pb2_grpc.HostServiceStub(channel).ListHosts(host_pb2.ListHostsRequest(), timeout=5)
    return {h.name.removeprefix("hosts/"): h for h in listed.hosts}


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except grpc.RpcError:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def zsctl_tcp(dc: DevCluster, src: str, dst: str, *args: str, timeout: float = 30) -> tuple[int, str, str]:
    argv = [ZSCTL, "--endpoint", dc.host(dst).endpoint_tcp, *dc.client_tls_args(), *args]
    out = dc.run_in(src, argv, timeout=timeout)
    return out.returncode, out.stdout, out.stderr


PEER_PROBE = """
import sys, grpc
from zsd.peer.v1 import peer_pb2, peer_pb2_grpc
endpoint, ca, cert, key = sys.argv[1:]
creds = grpc.ssl_channel_credentials(open(ca, "rb").read(), open(key, "rb").read(), open(cert, "rb").read())
with grpc.secure_channel(endpoint, creds) as channel:
    try:
        next(peer_pb2_grpc.PeerServiceStub(channel).Watch(peer_pb2.WatchRequest(), timeout=10))
        print("ALLOWED")
    except grpc.RpcError as e:
        print(e.code().name)
"""


def test_members_gossip_lease_unreachable_and_remove(cluster: DevCluster) -> None:
    names = {"h1", "h2", "h3"}

    def all_alive_and_live() -> bool:
        seen = hosts_seen_by(cluster, "h2")
        return set(seen) == names and all(
            h.gossip_state == host_pb2.MEMBER_ALIVE and h.lease_state == host_pb2.LEASE_LIVE
            for h in seen.values()
        )

    eventually(all_alive_and_live, 40, "every host alive in gossip and live in sanlock, as h2 sees them")
    seen = hosts_seen_by(cluster, "h2")
    assert {h.host_id for h in seen.values()} == {1, 2, 3}
    assert seen["h1"].hypervisor.kind == host_pb2.QEMU  # h1's own report of itself, read on h2

    # The operator's client certificate: the API on any host, over the fabric...
    code, out, err = zsctl_tcp(cluster, "h1", "h3", "-o", "json", "host", "list")
    assert code == 0, err
    assert sorted(h["name"] for h in json.loads(out)) == ["hosts/h1", "hosts/h2", "hosts/h3"]
    # ...and ClusterService.Watch, but no peer call: the leader's change feed is for hosts only.
    code, _, err = zsctl_tcp(cluster, "h1", "h1", "cluster", "watch", "--timeout", "1")
    assert code == 0, err
    probe = cluster.run_in(
        "h1",
        [
            sys.executable,
            "-c",
            PEER_PROBE,
            cluster.host("h1").endpoint_tcp,
            *map(str, (cluster.ca, cluster.client_cert, cluster.client_key)),
        ],
    )
    assert probe.stdout.strip() == "PERMISSION_DENIED", probe.stderr

    # A stopped zsd: gossip loses it, sanlock still renews its lease: unreachable, not dead.
    cluster.stop_zsd("h3")
    try:

        def h3_unreachable() -> bool:
            h3 = hosts_seen_by(cluster, "h1")["h3"]
            return (
                h3.gossip_state in (host_pb2.MEMBER_SUSPECT, host_pb2.MEMBER_DEAD)
                and h3.lease_state == host_pb2.LEASE_LIVE
            )

        eventually(h3_unreachable, 30, "h3 suspect/dead in gossip while its lease is live")
        h3 = hosts_seen_by(cluster, "h1")["h3"]
        assert h3.state == host_pb2.Host.UNREACHABLE
        assert "still renews" in h3.state_reasons[0]
    finally:
        cluster.cont_zsd("h3")
    eventually(all_alive_and_live, 40, "h3 back")

    # Remove h3 through h1 (forwarded to whichever host leads): h3's zsd leaves.
    code, out, err = zsctl_tcp(cluster, "h1", "h1", "host", "remove", "h3")
    assert code == 0, err
    assert "removed hosts/h3" in out
    eventually(lambda: set(hosts_seen_by(cluster, "h1")) == {"h1", "h2"}, 20, "h3 gone from h1's list")
    eventually(lambda: set(hosts_seen_by(cluster, "h2")) == {"h1", "h2"}, 20, "h3 gone from h2's list")
    h3_status = lambda: {s.name: s for s in cluster.status()}["h3"]  # noqa: E731
    eventually(lambda: not h3_status().zsd_alive, 20, "h3's zsd to stop after its removal")
    assert "host id 3 released" in cluster.host("h3").log_path.read_text()
    state_dir = Paths(root=cluster.host("h3").root).state_dir
    assert not (state_dir / "membership.json").exists()
    assert list(state_dir.glob("membership.json.removed-*"))
    # The last two members refuse to shrink to none.
    code, _, err = zsctl_tcp(cluster, "h1", "h2", "host", "remove", "h2")
    assert code == 0, err
    code, _, err = zsctl_tcp(cluster, "h1", "h1", "host", "remove", "h1")
    assert code == 1 and "last member" in err

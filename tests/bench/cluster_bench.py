"""The control plane through full daemons: a dev cluster of three hosts (own
namespace, sanlock daemon and zsd each; one shared directory).

Measures and prints, in one run:
- write latency p50/p99, one writer: a label write sent to the leader vs sent to a
  follower (forwarded to the leader, acknowledged after the follower's own copy
  holds it), and the forwarding cost as a ratio;
- writes/s with 8 concurrent writers, through the leader vs through followers;
- leader failover after kill -9 of the leader's zsd (host alive): from the kill to
  the first write acknowledged through a follower, ``--runs`` times (target <= 3 s);
- with ``--host-loss``: the leader's whole host lost (namespace, sanlock and zsd
  killed), from the loss to the first acknowledged write, next to sanlock's
  host-dead bound (target: within 5 s of it). Takes over a minute.

    .venv/bin/python -m tests.bench.cluster_bench [--writes 200] [--runs 5] [--host-loss]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import grpc
from google.protobuf import field_mask_pb2

from tests.integration.clusterload import label_write, run_load
from zsd.cluster.lease import LeaseConfig
from zsd.testing.devcluster import DevCluster
from zsd.v1 import cluster_pb2, cluster_pb2_grpc, host_pb2, host_pb2_grpc

LABEL_HOST = "h1"


def leader(dc: DevCluster, *, not_: str = "", timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for host in dc.hosts:
            if host.name == not_:
                continue
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
        time.sleep(0.1)
    raise SystemExit(f"no leader within {timeout} s")


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latencies(endpoint: str, count: int, prefix: str) -> list[float]:
    """Each write changes a value (a new revision); 20 keys keep the host's labels few."""
    out = []
    for i in range(count):
        start = time.perf_counter()
        key = f"{prefix}{i % 20}"
        label_write(
            endpoint, host=LABEL_HOST, key=key, value=str(i), request_id=str(uuid.uuid4()), timeout=10
        )
        out.append(time.perf_counter() - start)
    return out


def clear_labels(endpoint: str) -> None:
    """Hosts hold at most 256 labels: each phase starts from none."""
    with grpc.insecure_channel(endpoint) as channel:
        host_pb2_grpc.HostServiceStub(channel).UpdateHost(
            host_pb2.UpdateHostRequest(
                host=host_pb2.Host(name=f"hosts/{LABEL_HOST}"),
                update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
            ),
            timeout=30,
        )


def first_write_after(endpoint: str, started: float, give_up: float) -> float:
    """Seconds from ``started`` until a write through ``endpoint`` is acknowledged
    (retrying the same request at once on every failure)."""
    request_id = str(uuid.uuid4())
    key = f"fo{uuid.uuid4().hex[:8]}"
    while time.monotonic() - started < give_up:
        try:
            label_write(endpoint, host=LABEL_HOST, key=key, value="1", request_id=request_id, timeout=1.0)
            return time.monotonic() - started
        except grpc.RpcError:
            time.sleep(0.02)
    raise SystemExit(f"no write acknowledged within {give_up} s")


def serving(dc: DevCluster, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    endpoint = dc.host(name).endpoint_unix
    while time.monotonic() < deadline:
        try:
            label_write(
                endpoint, host=LABEL_HOST, key="probe", value="1", request_id=str(uuid.uuid4()), timeout=2
            )
            return
        except grpc.RpcError:
            time.sleep(0.2)
    raise SystemExit(f"{name} did not serve writes again within {timeout} s")


def run(ns: argparse.Namespace, state: Path) -> list[str]:
    dc = DevCluster(state_dir=state, prefix=f"zsd-b{os.getpid() % 100000}")
    lines: list[str] = []
    try:
        dc.up(3)
        lead = leader(dc)
        follower = next(h.name for h in dc.hosts if h.name != lead)
        serving(dc, follower)
        # Warm up channels and caches on both paths.
        latencies(dc.host(lead).endpoint_unix, 10, "warm-l")
        latencies(dc.host(follower).endpoint_unix, 10, "warm-f")
        direct: list[float] = []
        forwarded: list[float] = []
        for part in range(4):  # interleaved, so noise hits both alike
            direct += latencies(dc.host(lead).endpoint_unix, ns.writes // 4, f"d{part}-")
            forwarded += latencies(dc.host(follower).endpoint_unix, ns.writes // 4, f"f{part}-")
        lines.append(f"write latency, 1 writer, {len(direct)} writes each (ms)")
        lines.append(f"{'path':<28}{'p50':>8}{'p99':>8}")
        for label, values in (("to the leader", direct), ("to a follower (forwarded)", forwarded)):
            lines.append(f"{label:<28}{pct(values, 0.5) * 1e3:>8.2f}{pct(values, 0.99) * 1e3:>8.2f}")
        p50 = pct(forwarded, 0.5) / pct(direct, 0.5)
        p99 = pct(forwarded, 0.99) / pct(direct, 0.99)
        lines.append(f"{'forwarded / direct':<28}{p50:>7.2f}x{p99:>7.2f}x")
        lines.append("")
        followers = [h.endpoint_unix for h in dc.hosts if h.name != lead]
        throughput = []
        for label, endpoints in (
            ("through the leader", [dc.host(lead).endpoint_unix]),
            ("through followers", followers),
        ):
            clear_labels(dc.host(lead).endpoint_unix)
            started = time.monotonic()
            result = run_load(
                endpoints, host=LABEL_HOST, count=ns.writes, threads=8, prefix=f"t{len(throughput)}-"
            )
            took = time.monotonic() - started
            assert not result.failed, result.failed[:3]
            throughput.append((label, ns.writes / took))
        lines.append("writes/s, 8 concurrent writers")
        lines += [f"{label:<28}{rate:>8.0f}" for label, rate in throughput]
        lines.append(f"{'followers / leader':<28}{throughput[1][1] / throughput[0][1]:>7.2f}x")
        lines.append("")

        clear_labels(dc.host(lead).endpoint_unix)
        info = LeaseConfig(shared_dir=dc.shared_dir, lockspace="bench", io_timeout=1).timing
        failovers = []
        for _ in range(ns.runs):
            lead = leader(dc)
            other = next(h.name for h in dc.hosts if h.name != lead)
            started = time.monotonic()
            dc.kill_zsd(lead)
            failovers.append(first_write_after(dc.host(other).endpoint_unix, started, 60))
            dc.restart_zsd(lead)
            serving(dc, lead)
        lines.append(f"leader failover after kill -9 of the leader's zsd, {ns.runs} runs (s)")
        lines.append(f"{'p50':>8}{'max':>8}   target <= 3 s; sanlock: lease freed with the process")
        lines.append(f"{statistics.median(failovers):>8.2f}{max(failovers):>8.2f}")
        if ns.host_loss:
            lead = leader(dc)
            other = next(h.name for h in dc.hosts if h.name != lead)
            started = time.monotonic()
            dc.kill_host(lead)
            took = first_write_after(dc.host(other).endpoint_unix, started, 300)
            lines.append("")
            lines.append("leader host lost (namespace, sanlock, zsd killed) (s)")
            lines.append(
                f"{'measured':>10}{'host_dead':>11}{'difference':>12}   target: within 5 s of host_dead"
            )
            lines.append(f"{took:>10.2f}{info.host_dead:>11.0f}{took - info.host_dead:>12.2f}")
        return lines
    finally:
        dc.down()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--host-loss", action="store_true")
    ns = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zsd-cluster-bench-") as tmp:
        print("\n".join(run(ns, Path(tmp) / "dc")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""HA restart time on a real two-host dev cluster (sanlock, libvirt's sanlock lock
manager, TCG guests): an HA guest runs on the host that does not lead; that host
loses power (link cut, zsd, sanlock, libvirtd and QEMU killed); measured from the
kill to (1) the VM's record naming the survivor (the leader's restart decision,
after sanlock's host_dead) and (2) the guest's first console marker there. Printed
next to sanlock's own bounds for the cluster's io timeout. Not a pytest test.

    .venv/bin/python -m tests.bench.ha_bench [--runs 1]

Each run builds a fresh dev cluster (about a minute) and waits sanlock's host_dead
(about 70 s at io timeout 1); everything is removed on every way out.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.integration.compute.clusterkit import (
    booted,
    data,
    eventually,
    ha_guest,
    shared_pool_with_guest,
    two_hosts,
)
from zsd.cluster.bootstrap import SharedLayout, load_cluster_info
from zsd.cluster.lease.authority import LeaseConfig
from zsd.cluster.lease.timing import LeaseTiming

REPO = Path(__file__).resolve().parents[2]


def one_run(work: Path, image: Path) -> tuple[float, float, LeaseTiming]:
    with two_hosts(work, vm_leases=True) as (dc, hook):
        shared_pool_with_guest(dc, work / "share", image)
        guest = ha_guest(dc, "ha1")
        leader, victim = guest.leader, guest.victim
        info = load_cluster_info(SharedLayout(root=dc.shared_dir))
        timing = LeaseConfig(shared_dir=dc.shared_dir, io_timeout=info.io_timeout).timing

        def owner() -> str:
            vm = next(v for v in data(dc, leader, "vm", "list") if v["name"] == "vms/ha1")
            return str(vm["host"])

        killed = time.monotonic()
        hook.power_off(dc, victim)
        eventually(lambda: owner() == f"hosts/{leader}", timeout=timing.host_dead + 60)
        moved = time.monotonic() - killed
        eventually(lambda: booted(dc, leader, "ha1"), timeout=120)
        return moved, time.monotonic() - killed, timing


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    moved, ups = [], []
    timing: LeaseTiming | None = None
    with tempfile.TemporaryDirectory(prefix="zsd-ha-bench-") as tmp:
        image = Path(tmp) / "guest.qcow2"
        subprocess.run([REPO / "contrib/guest-image", image], check=True, capture_output=True)
        for i in range(args.runs):
            m, b, timing = one_run(Path(tmp) / f"run{i}", image)
            moved.append(m)
            ups.append(b)
            print(f"run {i + 1}: record moved {m:.1f} s, guest booted {b:.1f} s", flush=True)
    assert timing is not None
    print()
    print(
        f"HA restart after host power loss (io timeout {timing.io_timeout:.0f} s, {args.runs} run(s), median)"
    )
    print(f"{'measure':<44}{'seconds':>10}")
    rows = [
        ("sanlock renewal_fail (lease holders killed)", timing.renewal_fail),
        ("sanlock host_dead (leases may be taken)", timing.host_dead),
        ("kill -> VM record on the survivor", statistics.median(moved)),
        ("kill -> guest's 'booted' marker on survivor", statistics.median(ups)),
        ("decision after host_dead", statistics.median(moved) - timing.host_dead),
    ]
    for name, value in rows:
        print(f"{name:<44}{value:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

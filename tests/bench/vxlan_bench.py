"""TCP throughput between two "VMs" (namespaces on veth ports) on one port group:
across two hosts over zsd's VXLAN (bridges and VXLAN devices made by
``zsd.network.links`` from ``fabric.plan``, as a host's zsd does) vs the same pair on one
host's bridge, in the same run. Not a pytest test.

    .venv/bin/python -m tests.bench.vxlan_bench [--mib 256] [--runs 3]

Namespaces ``zsdb-vx<pid>-*`` (two hosts joined by a veth underlay, three endpoints),
all removed on every way out. The sender and receiver are small Python programs, so
the numbers say more about the ratio than about the kernel's ceiling.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import subprocess
import sys
import time

from pyroute2 import NetNS  # type: ignore[import-untyped]

from zsd.network.fabric import plan
from zsd.network.links import Links
from zsd.network.model import PortGroup, Switch

PREFIX = f"zsdb-vx{os.getpid() % 10000}"
PG = PortGroup(switch="lab", name="bench", vni=4242)
SWITCH = Switch(name="lab", kind="vxlan", uplink="u1", host_uplinks=(("h2", "u2"),))
UNDERLAY = {"h1": "198.51.100.1", "h2": "198.51.100.2"}
MTU = "1450"  # the VXLAN device's (underlay 1500 - 50): both cases use it
RECEIVER = (
    "import socket,sys\n"
    "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('',5001));s.listen(1)\n"
    "print('up',flush=True)\n"
    "c,_=s.accept();n=0\n"
    "while (b:=c.recv(1<<20)):\n n+=len(b)\n"
    "print(n,flush=True)\n"
)
SENDER = (
    "import socket,sys,time\n"
    "total=int(sys.argv[2]);buf=b'x'*(1<<20);s=socket.create_connection((sys.argv[1],5001))\n"
    "t=time.perf_counter();left=total\n"
    "while left>0:\n s.sendall(buf[:min(left,len(buf))]);left-=len(buf)\n"
    "s.shutdown(socket.SHUT_WR);s.recv(1);print(time.perf_counter()-t)\n"
)


def ns(name: str) -> str:
    return f"{PREFIX}-{name}"


def ip(*args: str, netns: str) -> None:
    subprocess.run(["ip", "-n", netns, *args], check=True)


def build() -> None:
    for name in ("h1", "h2", "e1", "e2", "e3"):
        subprocess.run(["ip", "netns", "add", ns(name)], check=True)
    ip("link", "add", "u1", "type", "veth", "peer", "name", "u2", "netns", ns("h2"), netns=ns("h1"))
    for host, dev in (("h1", "u1"), ("h2", "u2")):
        ip("addr", "add", f"{UNDERLAY[host]}/24", "dev", dev, netns=ns(host))
        ip("link", "set", dev, "up", netns=ns(host))
        fabric = plan(
            host=host, address=UNDERLAY[host], switches=[SWITCH], port_groups=[PG], members=UNDERLAY
        )
        problems = Links(functools.partial(NetNS, ns(host))).apply(fabric)
        assert problems == [], problems
    for endpoint, host, address in (
        ("e1", "h1", "10.9.0.1"),
        ("e2", "h2", "10.9.0.2"),
        ("e3", "h1", "10.9.0.3"),
    ):
        port = f"p{endpoint}"
        ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns(endpoint), netns=ns(host))
        ip("link", "set", port, "master", PG.bridge, "mtu", MTU, "up", netns=ns(host))
        ip("addr", "add", f"{address}/24", "dev", "eth0", netns=ns(endpoint))
        ip("link", "set", "eth0", "mtu", MTU, "up", netns=ns(endpoint))


def teardown() -> None:
    for name in ("e1", "e2", "e3", "h1", "h2"):
        subprocess.run(["ip", "netns", "delete", ns(name)], capture_output=True, check=False)


def transfer(receiver: str, address: str, size: int) -> float:
    """Gbit/s of one ``size``-byte transfer from e1 to ``receiver``."""
    rx = subprocess.Popen(
        ["ip", "netns", "exec", ns(receiver), sys.executable, "-c", RECEIVER],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert rx.stdout is not None and rx.stdout.readline().strip() == "up"
        done = subprocess.run(
            ["ip", "netns", "exec", ns("e1"), sys.executable, "-c", SENDER, address, str(size)],
            capture_output=True, text=True, check=True, timeout=300,
        )  # fmt: skip
        seconds = float(done.stdout.strip())
        assert int(rx.stdout.readline()) == size
    finally:
        rx.kill()
        rx.wait()
    return size * 8 / seconds / 1e9


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    size = args.mib << 20
    cross: list[float] = []
    local: list[float] = []
    try:
        build()
        time.sleep(1)
        for i in range(args.runs):
            for target, out in ((("e2", "10.9.0.2"), cross), (("e3", "10.9.0.3"), local))[
                :: 1 if i % 2 == 0 else -1
            ]:
                out.append(transfer(target[0], target[1], size))
            print(f"run {i + 1}: VXLAN {cross[-1]:.2f} Gbit/s, one bridge {local[-1]:.2f} Gbit/s", flush=True)
    finally:
        teardown()
    print()
    print(f"TCP throughput, {args.mib} MiB per transfer, MTU {MTU}, {args.runs} runs (median)")
    print(f"{'path':<36}{'Gbit/s':>8}")
    print(f"{'across hosts over VXLAN':<36}{statistics.median(cross):>8.2f}")
    print(f"{'same pair on one bridge':<36}{statistics.median(local):>8.2f}")
    print(f"{'ratio VXLAN / one bridge':<36}{statistics.median(cross) / statistics.median(local):>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

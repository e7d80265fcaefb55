"""VM create benchmark: zsd's API (CreateVm from an image, through a real zsd on a
private libvirtd) next to bare libvirt (defineXML + create of the same domain XML),
in the same run, on the same machine; both until the guest's first console marker.

    .venv/bin/python -m tests.bench.vm_create_bench [--repeats 5] [--burst 20]

1. create -> running, ``--repeats`` times per side, alternating (drift of a shared
   machine hits both): from the call to ``ZSD-GUEST: booted`` in the console log.
   zsd's side includes what the API does for the user: the root volume (a linked
   clone of the image), its attach records, the domain XML; the bare side makes a
   qcow2 overlay of the same image with qemu-img, then defines and starts the XML
   zsd generated for the first VM (renamed, its own disk and log). p50, p99, ratio.
2. ``--burst`` VMs at once: as many CreateVm calls in parallel (bare: as many
   define+start in threads) until every guest printed its marker; VMs/s per side.

Guests boot under TCG here (KVM where it works), so boots take seconds; the guest is
contrib/guest-image with 96 MiB. A benchmark, not a test: prints tables, exits 0,
removes everything (domains, libvirtd, zsd, its netns, temp files) on every way out.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import libvirt

from tests.integration.zsdproc import ZsdProcess, start_zsd, zsctl
from zsd.host.kvmprobe import probe_kvm
from zsd.testing import libvirtd
from zsd.v1 import compute_pb2, compute_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
NETNS = "zsdb-create"
MARKER = b"ZSD-GUEST: booted"
MEMORY_MIB = 96


def wait_marker(path_of: Callable[[], list[Path]], count: int, timeout: float = 600.0) -> None:
    """Until ``count`` of the logs ``path_of()`` returns hold the boot marker."""
    deadline = time.monotonic() + timeout
    while True:
        seen = sum(1 for p in path_of() if p.exists() and MARKER in p.read_bytes())
        if seen >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {seen} of {count} guests booted in {timeout} s")
        time.sleep(0.05)


class ZsdSide:
    def __init__(self, zsd: ZsdProcess) -> None:
        self._zsd = zsd
        self.console_dir = zsd.root / "var/log/zsd/console"
        self._channel = grpc.insecure_channel(f"unix:{zsd.socket_path}")
        self._vms = compute_pb2_grpc.VmServiceStub(self._channel)

    def create(self, name: str) -> None:
        request = compute_pb2.CreateVmRequest(
            vm_id=name,
            vm=compute_pb2.Vm(memory_mib=MEMORY_MIB, graphics="none"),
            image="pools/default/images/guest",
            request_id=str(uuid.uuid4()),
        )
        self._vms.CreateVm(request, timeout=60)

    def logs(self, before: set[Path]) -> Callable[[], list[Path]]:
        return lambda: [p for p in self.console_dir.glob("*.log") if p not in before]

    def remove(self, name: str) -> None:
        for args in (("vm", "stop", name, "--force"), ("vm", "delete", name, "--volumes")):
            zsctl(self._zsd.endpoint, *args, timeout=120)

    def close(self) -> None:
        self._channel.close()


class BareSide:
    def __init__(self, uri: str, template: str, image: Path, work: Path) -> None:
        self._uri = uri
        self._template = template
        self._image = image
        self._work = work

    def _xml(self, name: str, disk: Path, log: Path) -> str:
        xml = re.sub(r"<metadata>.*</metadata>", "", self._template, flags=re.S)
        xml = re.sub(r"<uuid>[^<]*</uuid>", "", xml)
        xml = re.sub(r"<name>[^<]*</name>", f"<name>{name}</name>", xml, count=1)
        xml = re.sub(
            r"(<disk type=.file.[^>]*>.*?<source file=)'[^']*'", rf"\1'{disk}'", xml, count=1, flags=re.S
        )
        return re.sub(r"(<log file=)'[^']*'", rf"\1'{log}'", xml)

    def log(self, name: str) -> Path:
        return self._work / f"{name}.log"

    def create(self, name: str) -> None:
        disk = self._work / f"{name}.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(self._image), "-F", "qcow2", str(disk)],
            check=True,
        )
        conn = libvirt.open(self._uri)
        try:
            conn.defineXML(self._xml(name, disk, self.log(name))).create()
        finally:
            conn.close()

    def remove(self, name: str) -> None:
        conn = libvirt.open(self._uri)
        try:
            dom = conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        finally:
            conn.close()
        (self._work / f"{name}.qcow2").unlink(missing_ok=True)
        self.log(name).unlink(missing_ok=True)


def time_zsd(ours: ZsdSide, name: str) -> float:
    before = set(ours.console_dir.glob("*.log"))
    start = time.perf_counter()
    ours.create(name)
    wait_marker(ours.logs(before), 1)
    elapsed = time.perf_counter() - start
    ours.remove(name)
    return elapsed


def time_bare(bare: BareSide, name: str) -> float:
    start = time.perf_counter()
    bare.create(name)
    wait_marker(lambda: [bare.log(name)], 1)
    elapsed = time.perf_counter() - start
    bare.remove(name)
    return elapsed


def burst_times(ours: ZsdSide, bare: BareSide, burst: int) -> tuple[float, float]:
    before = set(ours.console_dir.glob("*.log"))
    names = [f"burst{i}" for i in range(burst)]
    start = time.perf_counter()
    with ThreadPoolExecutor(burst) as pool:
        list(pool.map(ours.create, names))
    wait_marker(ours.logs(before), burst)
    zsd_burst = time.perf_counter() - start
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(ours.remove, names))
    bare_names = [f"bb{i}" for i in range(burst)]
    start = time.perf_counter()
    with ThreadPoolExecutor(burst) as pool:
        list(pool.map(bare.create, bare_names))
    wait_marker(lambda: [bare.log(n) for n in bare_names], burst)
    bare_burst = time.perf_counter() - start
    for n in bare_names:
        bare.remove(n)
    return zsd_burst, bare_burst


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(repeats: int, burst: int, tmp: Path) -> None:
    image = tmp / "guest.qcow2"
    subprocess.run([REPO / "contrib/guest-image", image], check=True, capture_output=True)
    subprocess.run(["ip", "netns", "delete", NETNS], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    lv = libvirtd.start(tmp / "libvirt", mask_kvm=not probe_kvm().usable, netns=NETNS)
    zsd: ZsdProcess | None = None
    try:
        zsd = start_zsd(
            tmp / "zsd",
            "--set", "hypervisor.kind=qemu",
            "--set", f"hypervisor.libvirt_uri={lv.uri}",
            "--set", "host.name=bench-host",
        )  # fmt: skip
        zsd.wait_for("READY=1", timeout=60)
        done = zsctl(zsd.endpoint, "image", "import", "default/guest", "--path", str(image), timeout=120)
        assert done.returncode == 0, done.stderr
        ours = ZsdSide(zsd)
        # The bare side starts the XML zsd generates (one warm-up VM, not measured).
        ours.create("warmup")
        wait_marker(ours.logs(set()), 1)
        conn = libvirt.open(lv.uri)
        template = conn.lookupByName("warmup").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        conn.close()
        ours.remove("warmup")
        bare_dir = tmp / "bare"
        bare_dir.mkdir()
        bare = BareSide(lv.uri, template, image, bare_dir)

        zsd_s, bare_s = [], []
        for i in range(repeats):
            zsd_s.append(time_zsd(ours, f"z{i}"))
            bare_s.append(time_bare(bare, f"b{i}"))
            print(f"run {i + 1}: zsd {zsd_s[-1]:.2f} s, bare libvirt {bare_s[-1]:.2f} s", flush=True)

        print()
        print(f"create -> first console marker ({repeats} runs per side, alternating; seconds)")
        print(f"{'side':<28}{'p50':>8}{'p99':>8}{'min':>8}")
        for label, values in (("zsd API (CreateVm)", zsd_s), ("bare libvirt define+start", bare_s)):
            print(f"{label:<28}{statistics.median(values):>8.2f}{pct(values, 0.99):>8.2f}{min(values):>8.2f}")
        print(f"{'ratio zsd / bare (p50)':<28}{statistics.median(zsd_s) / statistics.median(bare_s):>8.2f}")
        try:
            zsd_burst, bare_burst = burst_times(ours, bare, burst)
        except TimeoutError as e:
            print(f"\n{burst} VMs at once: not measured ({e})")
            return
        finally:
            ours.close()
        print()
        print(f"{burst} VMs created at once, until every guest's first console marker")
        print(f"{'side':<28}{'seconds':>10}{'VMs/s':>8}")
        print(f"{'zsd API (CreateVm)':<28}{zsd_burst:>10.1f}{burst / zsd_burst:>8.2f}")
        print(f"{'bare libvirt define+start':<28}{bare_burst:>10.1f}{burst / bare_burst:>8.2f}")
    finally:
        if zsd is not None:
            zsd.stop()
        libvirtd.stop(lv)
        subprocess.run(["ip", "netns", "delete", NETNS], check=False)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--burst", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zsd-create-bench-") as tmp:
        run(args.repeats, args.burst, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

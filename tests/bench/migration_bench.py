"""Live migration through zsd vs `virsh migrate` of the same guest, in the same run,
on a real two-host dev cluster (private libvirtds with TLS only, TCG guests on a
shared-fs pool). Not a pytest test.

    .venv/bin/python -m tests.bench.migration_bench [--repeats 3]

zsd side: `zsctl vm migrate VM --to H` (the API call, the placement check, libvirt's
peer-to-peer live migration over the cluster's TLS, the record moved, the operation
done). Bare side: a second domain with the same XML (its own overlay on the same
image, no zsd metadata, so zsd leaves it alone) moved by `virsh migrate --live --p2p
--tls --auto-converge` with the same flags zsd uses. Both guests booted and idle;
the two alternate, each direction h1->h2 and back, `--repeats` times; medians and
their ratio. Everything is removed on every way out.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

from tests.integration.compute.clusterkit import (
    PrivateLibvirtds,
    booted,
    data,
    eventually,
    ok,
    shared_pool_with_guest,
    two_hosts,
)
from zsd.cluster.bootstrap import tls_paths
from zsd.cluster.libvirtpki import libvirt_dir
from zsd.paths import Paths
from zsd.testing.devcluster import DevCluster

REPO = Path(__file__).resolve().parents[2]
ZSD_VM = "mig-zsd"
BARE_VM = "mig-bare"


def bare_twin(hook: PrivateLibvirtds, host: str, share: Path, image: Path, log: Path) -> None:
    """Defines and starts BARE_VM on ``host``: zsd's domain XML of ZSD_VM with another
    name, uuid, disk (an overlay of the same image), console log, and no zsd metadata."""
    overlay = share / "bare-root.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image), str(overlay)], check=True
    )
    conn = libvirt.open(hook.by_host[host].uri)
    try:
        root = ET.fromstring(
            conn.lookupByName(ZSD_VM).XMLDesc(
                libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_MIGRATABLE
            )
        )
        root.find("name").text = BARE_VM  # type: ignore[union-attr]
        root.find("uuid").text = str(uuid.uuid4())  # type: ignore[union-attr]
        metadata = root.find("metadata")
        if metadata is not None:
            root.remove(metadata)
        disk = root.find("./devices/disk/source")
        assert disk is not None
        disk.set("file", str(overlay))
        for logfile in root.iter("log"):
            logfile.set("file", str(log))
        conn.defineXML(ET.tostring(root, encoding="unicode")).create()
    finally:
        conn.close()


def host_of(dc: DevCluster) -> str:
    return str(next(v for v in data(dc, "h1", "vm", "list") if v["name"] == f"vms/{ZSD_VM}")["host"])


def migrate_zsd(dc: DevCluster, to: str) -> float:
    started = time.monotonic()
    moved = data(dc, "h1", "vm", "migrate", ZSD_VM, "--to", to)
    took = time.monotonic() - started
    assert moved["host"] == f"hosts/{to}", moved
    return took


def migrate_bare(dc: DevCluster, hook: PrivateLibvirtds, src: str, to: str) -> float:
    dest = dc.host(to).address
    pki = libvirt_dir(tls_paths(Paths(root=dc.host(src).root))[0].parent)
    argv = [
        "virsh", "-c", hook.by_host[src].uri, "migrate", "--live", "--p2p", "--persistent",
        "--undefinesource", "--unsafe", "--tls", "--auto-converge", BARE_VM,
        f"qemu+tls://{dest}/system?pkipath={pki}", f"tcp://{dest}",
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    return took


def run(work: Path, image: Path, repeats: int) -> tuple[list[float], list[float]]:
    zsd_times: list[float] = []
    bare_times: list[float] = []
    with two_hosts(work) as (dc, hook):
        share = work / "share"
        shared_pool_with_guest(dc, share, image)
        ok(dc, "h1", "vm", "create", ZSD_VM, "--image", "shared/guest", "--memory", "96M",
           "--graphics", "none", "--host", "h1")  # fmt: skip
        log = work / "bare-console.log"
        bare_twin(hook, "h1", share, image, log)
        eventually(lambda: booted(dc, "h1", ZSD_VM), timeout=180)
        eventually(lambda: "ZSD-GUEST: ready" in (log.read_text() if log.exists() else ""), timeout=180)
        eventually(lambda: "ZSD-GUEST: ready" in ok(dc, "h1", "vm", "console", ZSD_VM), timeout=120)
        where = "h1"
        for i in range(repeats):
            for _direction in range(2):
                to = "h2" if where == "h1" else "h1"
                # Alternate which goes first: the machine is shared and noisy.
                if i % 2 == 0:
                    zsd_times.append(migrate_zsd(dc, to))
                    bare_times.append(migrate_bare(dc, hook, where, to))
                else:
                    bare_times.append(migrate_bare(dc, hook, where, to))
                    zsd_times.append(migrate_zsd(dc, to))
                print(f"{where}->{to}: zsd {zsd_times[-1]:.2f} s, virsh {bare_times[-1]:.2f} s", flush=True)
                where = to
        assert host_of(dc) == f"hosts/{where}"
        ok(dc, "h1", "vm", "stop", ZSD_VM, "--force")
        ok(dc, "h1", "vm", "delete", ZSD_VM, "--volumes")
        conn = libvirt.open(hook.by_host[where].uri)
        try:
            dom = conn.lookupByName(BARE_VM)
            dom.destroy()
            dom.undefine()
        finally:
            conn.close()
    return zsd_times, bare_times


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="round trips (h1->h2->h1) per side")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zsd-mig-bench-") as tmp:
        image = Path(tmp) / "guest.qcow2"
        subprocess.run([REPO / "contrib/guest-image", image], check=True, capture_output=True)
        zsd_times, bare_times = run(Path(tmp) / "run", image, args.repeats)
    print()
    print(f"Live migration of an idle 96 MiB TCG guest over TLS, {len(zsd_times)} moves per side")
    print(f"{'side':<34}{'p50 s':>8}{'min s':>8}{'max s':>8}")
    for name, times in (
        ("zsd (zsctl vm migrate)", zsd_times),
        ("bare (virsh migrate --p2p --tls)", bare_times),
    ):
        print(f"{name:<34}{statistics.median(times):>8.2f}{min(times):>8.2f}{max(times):>8.2f}")
    print(
        f"{'ratio zsd/bare at p50':<34}{statistics.median(zsd_times) / statistics.median(bare_times):>8.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

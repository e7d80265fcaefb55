"""Helpers for VM tests on a two-host dev cluster: a private libvirtd per host (in
that host's network namespace), zsctl through any host, and console markers."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.zsdproc import zsctl
from zsd.cluster.bootstrap import tls_paths
from zsd.paths import Paths
from zsd.testing import libvirtd
from zsd.testing.devcluster import DevCluster, HostInfo, ZsdExtras
from zsd.testing.libvirtd import Libvirtd

PREFIX = "zsdt-vmc"
MARK = "ZSD-GUEST: "


class PrivateLibvirtds:
    """The dev cluster's per-host hook: one private libvirtd per host, in that host's
    network namespace, started before its zsd (and kept across zsd restarts)."""

    def __init__(self, root: Path, *, vm_leases: bool = False) -> None:
        """``vm_leases``: each libvirtd uses sanlock (its host's daemon) as lock
        manager, and zsd gives HA VMs a lease."""
        self._root = root
        self._vm_leases = vm_leases
        self.by_host: dict[str, Libvirtd] = {}

    def __call__(self, dc: DevCluster, host: HostInfo) -> ZsdExtras:
        if host.name not in self.by_host:
            root = self._root / host.name
            root.mkdir(parents=True, exist_ok=True)
            self.by_host[host.name] = libvirtd.start(
                root,
                mask_kvm=True,
                netns=host.netns,
                listen_address=host.address,
                sanlock_run_dir=host.sanlock_run_dir if self._vm_leases else None,
                # Migrations go over the cluster's TLS, with the certificates zsd
                # exported when the host joined (zsd.cluster.libvirtpki).
                tls_dir=tls_paths(Paths(root=host.root))[0].parent,
            )
        args = ["--set", f"hypervisor.libvirt_uri={self.by_host[host.name].uri}"]
        if self._vm_leases:
            args += ["--set", "hypervisor.vm_leases=true"]
        return ZsdExtras(args=tuple(args))

    def power_off(self, dc: DevCluster, host: str) -> None:
        """The host loses power: link, zsd and sanlock first (dc.kill_host), then its
        libvirtd and every QEMU it ran."""
        dc.kill_host(host)
        instance = self.by_host.pop(host, None)
        if instance is not None:
            libvirtd.stop(instance)

    def stop(self) -> None:
        for instance in self.by_host.values():
            libvirtd.stop(instance)


def ok(dc: DevCluster, host: str, *args: str) -> str:
    done = zsctl(dc.host(host).endpoint_unix, *args, timeout=180)
    assert done.returncode == 0, f"zsctl on {host} {' '.join(args)}: {done.stderr}"
    return done.stdout


def data(dc: DevCluster, host: str, *args: str) -> Any:
    return json.loads(ok(dc, host, "-o", "json", *args))


def eventually(check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.5)


class Console:
    """Markers on a VM's console (through any host), found in order."""

    def __init__(self, dc: DevCluster, host: str, vm: str) -> None:
        self._dc, self._host, self._vm, self._pos = dc, host, vm, 0

    def expect(self, marker: str, timeout: float = 120.0) -> None:
        def seen() -> bool:
            text = ok(self._dc, self._host, "vm", "console", self._vm)
            index = text.find(MARK + marker, self._pos)
            if index < 0:
                return False
            self._pos = index + 1
            return True

        eventually(seen, timeout)


def wait_reported(dc: DevCluster, hosts: tuple[str, ...] = ("h1", "h2")) -> None:
    """Until every host's report (capacity, pools) is in the cluster state: placement
    refuses a host before that. A host shows its own live view, so ask every host."""
    eventually(
        lambda: all(
            h.get("state") in ("READY", "DEGRADED") for via in hosts for h in data(dc, via, "host", "list")
        )
    )


def booted(dc: DevCluster, host: str, vm: str) -> bool:
    """Whether the VM's console (through ``host``) shows the guest's boot marker; False
    while the VM is not there yet (its console cannot be read)."""
    done = zsctl(dc.host(host).endpoint_unix, "vm", "console", vm, timeout=60)
    return done.returncode == 0 and MARK + "booted" in done.stdout


@contextlib.contextmanager
def two_hosts(work: Path, *, vm_leases: bool = False) -> Iterator[tuple[DevCluster, PrivateLibvirtds]]:
    """A two-host dev cluster (h1, h2) under ``work``, each host with its private
    libvirtd (``vm_leases``: with sanlock as lock manager); all removed afterwards."""
    hook = PrivateLibvirtds(work / "libvirt", vm_leases=vm_leases)
    # Migrations use zsd's default: qemu+tls to the host's address, the cluster's certificates.
    dc = DevCluster(state_dir=work / "dc", prefix=PREFIX, hook=hook)
    try:
        dc.up(2)
        yield dc, hook
    finally:
        dc.down()
        hook.stop()


def shared_pool_with_guest(dc: DevCluster, share: Path, image: Path) -> None:
    """Pool ``shared`` (shared-fs on ``share``) active on both hosts, with the guest
    image ``shared/guest``."""
    share.mkdir()
    ok(dc, "h1", "pool", "create", "shared", "--kind", "shared-fs", "--path", str(share))
    wait_reported(dc)
    eventually(
        lambda: (
            [h["state"] for h in data(dc, "h2", "pool", "show", "shared").get("hosts", [])]
            == ["ACTIVE", "ACTIVE"]
        )
    )
    ok(dc, "h1", "image", "import", "shared/guest", "--path", str(image), "--format", "qcow2")


@dataclass(frozen=True, kw_only=True)
class HaGuest:
    leader: str
    victim: str
    """The host running the guest (not the leader, so HA does not wait for an election)."""
    vm: dict[str, Any]


def ha_guest(dc: DevCluster, name: str) -> HaGuest:
    """An HA guest from ``shared/guest`` on the host that does not lead, booted."""
    leader = str(data(dc, "h1", "cluster", "show")["leader"]["host"]).removeprefix("hosts/")
    victim = "h2" if leader == "h1" else "h1"
    made = data(
        dc, leader, "vm", "create", name, "--image", "shared/guest", "--memory", "96M",
        "--graphics", "none", "--ha", "--host", victim,
    )  # fmt: skip
    eventually(lambda: booted(dc, leader, name), timeout=120)
    return HaGuest(leader=leader, victim=victim, vm=made)

"""Fixtures for compute tests: one private libvirtd (in a network namespace of its
own, so guest taps never appear on the machine) and the tiny guest disk from
contrib/guest-image, both once per test session."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.compute.clusterkit import PrivateLibvirtds, two_hosts
from zsd.host.kvmprobe import probe_kvm
from zsd.testing import libvirtd
from zsd.testing.devcluster import DevCluster

REPO = Path(__file__).resolve().parents[3]
NETNS = "zsdt-compute"


@pytest.fixture(scope="session")
def guest_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("guest") / "guest.qcow2"
    subprocess.run([REPO / "contrib/guest-image", out], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def private_libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[libvirtd.Libvirtd]:
    subprocess.run(["ip", "netns", "delete", NETNS], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    root = tmp_path_factory.mktemp("libvirtd")
    instance = libvirtd.start(root, mask_kvm=not probe_kvm().usable, netns=NETNS)
    try:
        yield instance
    finally:
        libvirtd.stop(instance)
        subprocess.run(["ip", "netns", "delete", NETNS], check=False)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[DevCluster, PrivateLibvirtds]]:
    """A two-host dev cluster (h1, h2), each host with its private libvirtd."""
    yield from _cluster(tmp_path, vm_leases=False)


@pytest.fixture
def leased_cluster(tmp_path: Path) -> Iterator[tuple[DevCluster, PrivateLibvirtds]]:
    """The same, with libvirt's sanlock lock manager: HA VMs hold VM leases."""
    yield from _cluster(tmp_path, vm_leases=True)


def _cluster(tmp_path: Path, *, vm_leases: bool) -> Iterator[tuple[DevCluster, PrivateLibvirtds]]:
    with two_hosts(tmp_path, vm_leases=vm_leases) as parts:
        yield parts

"""Fixtures for compute tests: one private libvirtd (in a network namespace of its
own, so guest taps never appear on the machine) and the tiny guest disk from
contrib/guest-image, both once per test session."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from zsd.host.kvmprobe import probe_kvm
from zsd.testing import libvirtd

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

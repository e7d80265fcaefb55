"""libvirt facts through the real bindings: the test:/// driver needs no daemon."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from zsd.host.libvirtinfo import LibvirtConnection, LibvirtConnectionSource, LibvirtInfo, format_version


@pytest.mark.parametrize(
    ("number", "text"), [(9_000_000, "9.0.0"), (7_002_002, "7.2.2"), (10_010_001, "10.10.1"), (2, "0.0.2")]
)
def test_format_version(number: int, text: str) -> None:
    assert format_version(number) == text


def test_test_driver_is_reachable() -> None:
    info = LibvirtConnectionSource(uri="test:///default").read()

    assert info == LibvirtInfo(
        reachable=True, libvirt_version=format_version(libvirt.getVersion()), qemu_version="0.0.2"
    )


def test_unreachable_daemon_is_reported_not_raised(tmp_path: Path) -> None:
    uri = f"qemu:///system?socket={tmp_path}/no-such-socket"

    info = LibvirtConnectionSource(uri=uri).read()

    assert not info.reachable
    assert (info.libvirt_version, info.qemu_version) == ("", "")
    assert info.error.startswith(f"libvirt at {uri} not reachable: ")
    assert "no-such-socket" in info.error


def test_failing_connect_is_reported_not_raised() -> None:
    def refuse(uri: str) -> LibvirtConnection:
        # libvirtError takes its text from the thread's last libvirt error, if any.
        libvirt.virResetLastError()
        raise libvirt.libvirtError(f"refusing {uri}")

    info = LibvirtConnectionSource(uri="qemu:///system", open_read_only=refuse).read()

    assert info == LibvirtInfo(
        reachable=False, error="libvirt at qemu:///system not reachable: refusing qemu:///system"
    )

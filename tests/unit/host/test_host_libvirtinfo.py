"""libvirt facts through the real bindings: the test:/// driver needs no daemon."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from zsd.host.libvirtinfo import (
    LibvirtConnection,
    LibvirtConnectionSource,
    LibvirtInfo,
    format_version,
    parse_capabilities,
)


@pytest.mark.parametrize(
    ("number", "text"), [(9_000_000, "9.0.0"), (7_002_002, "7.2.2"), (10_010_001, "10.10.1"), (2, "0.0.2")]
)
def test_format_version(number: int, text: str) -> None:
    assert format_version(number) == text


def test_test_driver_is_reachable() -> None:
    info = LibvirtConnectionSource(uri="test:///default").read()

    assert info == LibvirtInfo(
        reachable=True,
        libvirt_version=format_version(libvirt.getVersion()),
        qemu_version="0.0.2",
        cpu_model="",  # the test driver's capabilities name no CPU model
        domain_types=("test",),
    )


QEMU_CAPABILITIES = """<capabilities>
  <host>
    <cpu><arch>x86_64</arch><model>EPYC-Rome</model><vendor>AMD</vendor></cpu>
  </host>
  <guest>
    <os_type>hvm</os_type>
    <arch name='i686'><domain type='qemu'/></arch>
  </guest>
  <guest>
    <os_type>hvm</os_type>
    <arch name='x86_64'>
      <emulator>/usr/bin/qemu-system-x86_64</emulator>
      <domain type='qemu'/>
      <domain type='kvm'/>
    </arch>
  </guest>
</capabilities>"""


def test_capabilities_give_cpu_model_and_domain_types_of_the_host_arch() -> None:
    assert parse_capabilities(QEMU_CAPABILITIES) == ("EPYC-Rome", ("qemu", "kvm"))


def test_unparsable_capabilities_give_nothing() -> None:
    assert parse_capabilities("<capabilities><host>") == ("", ())


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

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from tests.unit.host.conftest import EXPECTED_DISKS, FakeHost
from zsd.host import devices
from zsd.host.model import NicFacts


def test_disks_skip_virtual_devices_and_read_identity(fake_host: FakeHost) -> None:
    disks = devices.read_disks(sysfs=fake_host.sysfs)

    assert disks == EXPECTED_DISKS


def test_empty_sysfs_means_no_disks_and_no_nics(tmp_path: Path) -> None:
    assert devices.read_disks(sysfs=tmp_path) == ()
    assert devices.read_nics(sysfs=tmp_path, addresses={}) == ()


def test_nics_skip_loopback(fake_host: FakeHost) -> None:
    nics = devices.read_nics(
        sysfs=fake_host.sysfs, addresses={"eno1": ("192.0.2.10/24",), "lo": ("127.0.0.1/8",)}
    )

    assert nics == (
        NicFacts(name="br0", mac_address="52:54:00:aa:bb:cc", mtu=1500, up=False, speed_mbps=0),
        NicFacts(
            name="eno1",
            mac_address="3c:ec:ef:01:02:03",
            mtu=9000,
            up=True,
            speed_mbps=10000,
            addresses=("192.0.2.10/24",),
            driver="ixgbe",
        ),
    )


def test_unreadable_speed_is_zero(fake_host: FakeHost) -> None:
    # sysfs answers EINVAL for the speed of some links; a directory fails the read the same way.
    speed = fake_host.sysfs / "class/net/eno1/speed"
    speed.unlink()
    speed.mkdir()

    (_, eno1) = devices.read_nics(sysfs=fake_host.sysfs, addresses={})

    assert eno1.speed_mbps == 0


@dataclass(frozen=True, kw_only=True)
class Addr:
    family: int
    address: str
    netmask: str | None


def test_cidr_addresses_from_psutil_shape() -> None:
    af_link = 17
    result = devices.cidr_addresses(
        {
            "eno1": [
                Addr(family=socket.AF_INET, address="192.0.2.10", netmask="255.255.255.0"),
                Addr(family=socket.AF_INET6, address="2001:db8::10", netmask="ffff:ffff:ffff:ffff::"),
                Addr(family=socket.AF_INET6, address="fe80::1%eno1", netmask="ffff:ffff:ffff:ffff::"),
                Addr(family=af_link, address="3c:ec:ef:01:02:03", netmask=None),
            ],
            "tun0": [Addr(family=socket.AF_INET, address="10.8.0.1", netmask=None)],
            "odd0": [Addr(family=socket.AF_INET, address="10.9.0.1", netmask="255.0.255.0")],
            "empty": [],
        }
    )

    assert result == {
        "eno1": ("192.0.2.10/24", "2001:db8::10/64", "fe80::1/64"),
        "tun0": ("10.8.0.1/32",),
        "odd0": (),
        "empty": (),
    }

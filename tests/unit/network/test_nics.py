"""MAC and address allocation: unique, locally administered MACs; the lowest free
address of each subnet, or the ones asked for, checked."""

from __future__ import annotations

from itertools import count

import pytest

from zsd.errors import AlreadyExists, InvalidArgument, ResourceExhausted
from zsd.network.model import PortGroup, Subnet
from zsd.network.nics import NicRecord, allocate_addresses, allocate_mac, random_mac

V6_RANGE = ("2001:db8::100", "2001:db8::1ff")
PG = PortGroup(
    switch="lab",
    name="web",
    vni=100,
    subnets=(
        Subnet(cidr="10.0.0.0/29", gateway="10.0.0.1"),
        Subnet(
            cidr="2001:db8::/64",
            gateway="2001:db8::1",
            allocation_ranges=(("2001:db8::100", "2001:db8::1ff"),),
        ),
    ),
)


def test_macs_are_locally_administered_unicast_and_unique() -> None:
    mac = random_mac()
    first = int(mac[:2], 16)
    assert first & 0b10 and not first & 0b01 and len(mac) == 17
    # A generator that repeats itself: the taken one is skipped.
    seq = count()
    repeating = lambda n: bytes([next(seq) // 2] * n)  # noqa: E731
    taken = {allocate_mac("", set(), token=repeating)}
    assert allocate_mac("", taken, token=repeating) not in taken
    assert allocate_mac("02:AA:BB:CC:DD:EE", taken) == "02:aa:bb:cc:dd:ee"


@pytest.mark.parametrize(
    ("asked", "error", "says"),
    [
        ("02:aa:bb:cc:dd", InvalidArgument, "not a MAC address"),
        ("03:aa:bb:cc:dd:ee", InvalidArgument, "multicast"),
        ("02:00:00:00:00:01", AlreadyExists, "taken"),
    ],
)
def test_bad_or_taken_macs(asked: str, error: type[Exception], says: str) -> None:
    with pytest.raises(error) as e:
        allocate_mac(asked, {"02:00:00:00:00:01"})
    assert says in str(e.value) and getattr(e.value, "field", "") == "nic.mac"


def test_lowest_free_address_per_subnet_skipping_reserved_and_taken() -> None:
    assert allocate_addresses(PG, [], {}) == ("10.0.0.2", "2001:db8::100")
    taken = {"10.0.0.2": "nics/a", "2001:db8::100": "nics/a"}
    assert allocate_addresses(PG, [], taken) == ("10.0.0.3", "2001:db8::101")
    # Asked for in one subnet; the other still gets one.
    assert allocate_addresses(PG, ["10.0.0.5"], taken) == ("10.0.0.5", "2001:db8::101")


def test_a_full_subnet_is_reported() -> None:
    taken = {f"10.0.0.{i}": f"nics/n{i}" for i in range(2, 7)}
    with pytest.raises(ResourceExhausted) as e:
        allocate_addresses(PG, [], taken)
    assert e.value.reason == "SUBNET_EXHAUSTED" and "10.0.0.0/29" in e.value.message


@pytest.mark.parametrize(
    ("asked", "error", "says"),
    [
        (["10.0.0.300"], InvalidArgument, "not an IPv4 or IPv6 address"),
        (["10.9.0.5"], InvalidArgument, "in no subnet"),
        (["10.0.0.1"], InvalidArgument, "gateway"),
        (["10.0.0.7"], InvalidArgument, "broadcast"),
        (["10.0.0.4"], AlreadyExists, "taken by nics/other"),
        (["10.0.0.3", "10.0.0.5"], InvalidArgument, "two addresses in subnet"),
        (["10.0.0.6"], InvalidArgument, "DHCP service"),
    ],
)
def test_addresses_asked_for_are_checked(asked: list[str], error: type[Exception], says: str) -> None:
    with pytest.raises(error) as e:
        allocate_addresses(PG, asked, {"10.0.0.4": "nics/other"})
    assert says in str(e.value)
    assert getattr(e.value, "field", "").startswith("nic.ip_addresses[")


def test_records_round_trip() -> None:
    record = NicRecord(name="web1", port_group="lab/web", mac="02:00:00:00:00:01", addresses=("10.0.0.2",))
    assert NicRecord.decode(record.encode()) == record

"""The advertised address: the configured one, else a real IPv4 address of this host."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace

import pytest

from zsd.util import netaddr


def test_configured_address_wins() -> None:
    assert netaddr.advertised("198.51.100.7") == "198.51.100.7"


def test_skips_loopback_link_local_and_down_interfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def addr(ip: str) -> SimpleNamespace:
        return SimpleNamespace(family=socket.AF_INET, address=ip)

    monkeypatch.setattr(
        netaddr.psutil,
        "net_if_addrs",
        lambda: {
            "lo": [addr("127.0.0.1")],
            "eth0": [addr("169.254.1.1")],
            "eth1": [addr("10.1.2.3")],
            "eth2": [addr("10.9.9.9")],
        },
    )
    monkeypatch.setattr(
        netaddr.psutil,
        "net_if_stats",
        lambda: {
            "lo": SimpleNamespace(isup=True),
            "eth0": SimpleNamespace(isup=True),
            "eth1": SimpleNamespace(isup=False),
            "eth2": SimpleNamespace(isup=True),
        },
    )
    assert netaddr.first_global_ipv4() == "10.9.9.9"
    monkeypatch.setattr(netaddr.psutil, "net_if_addrs", lambda: {"lo": [addr("127.0.0.1")]})
    assert netaddr.advertised("") == ""


def test_this_host() -> None:
    found = netaddr.first_global_ipv4()
    assert found == "" or not ipaddress.ip_address(found).is_loopback

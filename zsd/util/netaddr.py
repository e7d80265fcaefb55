"""This host's address when none is configured: the first global IPv4 address of an
interface that is up (what peers and clients should dial)."""

from __future__ import annotations

import ipaddress
import socket

import psutil


def first_global_ipv4() -> str:
    """ "" when the host has none (then only the Unix socket is useful)."""
    stats = psutil.net_if_stats()
    for name, addrs in sorted(psutil.net_if_addrs().items()):
        if name in stats and not stats[name].isup:
            continue
        for addr in addrs:
            if addr.family != socket.AF_INET:
                continue
            ip = ipaddress.ip_address(addr.address)
            if ip.is_global or (ip.is_private and not ip.is_loopback and not ip.is_link_local):
                return str(ip)
    return ""


def advertised(configured: str) -> str:
    """The configured host.address, else :func:`first_global_ipv4`."""
    return configured or first_global_ipv4()

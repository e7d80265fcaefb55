"""A minimal DHCPv6 client and router-advertisement listener, for tests (busybox has
no DHCPv6 client). Run inside a VM's namespace:

    python -m zsd.network.dhcp.testing.dhcp6probe --iface eth0 --mac 52:54:00:00:00:01

It sends a router solicitation and waits for an advertisement, then does the
four-message exchange (Solicit, Advertise, Request, Reply) with a DUID-LL of the MAC,
and prints one JSON object: ``{"ra": {...} | null, "lease": {...} | null}``.
The packet code is pure and unit-tested; only ``main`` touches the network.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import select
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field

SOLICIT, ADVERTISE, REQUEST, REPLY = 1, 2, 3, 7
OPT_CLIENTID, OPT_SERVERID, OPT_IA_NA, OPT_IAADDR, OPT_ORO = 1, 2, 3, 5, 6
OPT_ELAPSED_TIME, OPT_STATUS_CODE, OPT_DNS_SERVERS, OPT_DOMAIN_LIST = 8, 13, 23, 24
ICMP6_RS, ICMP6_RA = 133, 134
ND_OPT_PREFIX, ND_OPT_MTU, ND_OPT_RDNSS = 3, 5, 25
IAID = 1
ALL_DHCP_AGENTS = "ff02::1:2"
ALL_ROUTERS = "ff02::2"


def duid_ll(mac: str) -> bytes:
    return struct.pack("!HH", 3, 1) + bytes.fromhex(mac.replace(":", ""))


def _option(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


def _message(msg_type: int, xid: bytes, *options: bytes) -> bytes:
    return bytes([msg_type]) + xid + b"".join(options)


def solicit(xid: bytes, mac: str) -> bytes:
    return _message(
        SOLICIT,
        xid,
        _option(OPT_CLIENTID, duid_ll(mac)),
        _option(OPT_IA_NA, struct.pack("!III", IAID, 0, 0)),
        _option(OPT_ELAPSED_TIME, b"\0\0"),
        _option(OPT_ORO, struct.pack("!HH", OPT_DNS_SERVERS, OPT_DOMAIN_LIST)),
    )


def request(xid: bytes, mac: str, advertise: Message) -> bytes:
    return _message(
        REQUEST,
        xid,
        _option(OPT_CLIENTID, duid_ll(mac)),
        _option(OPT_SERVERID, advertise.options[OPT_SERVERID][0]),
        _option(OPT_IA_NA, advertise.options[OPT_IA_NA][0]),
        _option(OPT_ELAPSED_TIME, b"\0\0"),
        _option(OPT_ORO, struct.pack("!HH", OPT_DNS_SERVERS, OPT_DOMAIN_LIST)),
    )


@dataclass(frozen=True)
class Message:
    msg_type: int
    xid: bytes
    options: dict[int, list[bytes]]


def parse_options(data: bytes) -> dict[int, list[bytes]]:
    options: dict[int, list[bytes]] = {}
    at = 0
    while at + 4 <= len(data):
        code, length = struct.unpack_from("!HH", data, at)
        options.setdefault(code, []).append(data[at + 4 : at + 4 + length])
        at += 4 + length
    return options


def parse(packet: bytes) -> Message:
    return Message(msg_type=packet[0], xid=packet[1:4], options=parse_options(packet[4:]))


def domains(data: bytes) -> list[str]:
    """RFC 1035 names, one after another (no compression in DHCPv6)."""
    names: list[str] = []
    labels: list[str] = []
    at = 0
    while at < len(data):
        length = data[at]
        at += 1
        if length == 0:
            names.append(".".join(labels))
            labels = []
            continue
        labels.append(data[at : at + length].decode())
        at += length
    return names


@dataclass
class Lease6:
    address: str = ""
    preferred: int = 0
    valid: int = 0
    status: int = 0
    """0: success; 2: NoAddrsAvail."""
    dns: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    server_id: str = ""


def lease_of(message: Message) -> Lease6:
    lease = Lease6(server_id=message.options.get(OPT_SERVERID, [b""])[0].hex())
    for ia in message.options.get(OPT_IA_NA, []):
        inner = parse_options(ia[12:])
        for addr in inner.get(OPT_IAADDR, []):
            lease.address = str(ipaddress.IPv6Address(addr[:16]))
            lease.preferred, lease.valid = struct.unpack_from("!II", addr, 16)
        for status in inner.get(OPT_STATUS_CODE, []):
            lease.status = struct.unpack_from("!H", status)[0]
    for status in message.options.get(OPT_STATUS_CODE, []):
        lease.status = lease.status or struct.unpack_from("!H", status)[0]
    for dns in message.options.get(OPT_DNS_SERVERS, []):
        lease.dns += [str(ipaddress.IPv6Address(dns[i : i + 16])) for i in range(0, len(dns), 16)]
    for data in message.options.get(OPT_DOMAIN_LIST, []):
        lease.domains += domains(data)
    return lease


@dataclass
class RouterAdvert:
    managed: bool
    other: bool
    router_lifetime: int
    prefixes: list[dict[str, object]]
    mtu: int = 0
    rdnss: list[str] = field(default_factory=list)


def router_solicitation() -> bytes:
    return struct.pack("!BBHI", ICMP6_RS, 0, 0, 0)  # the kernel fills in the checksum


def parse_ra(packet: bytes) -> RouterAdvert | None:
    if len(packet) < 16 or packet[0] != ICMP6_RA:
        return None
    flags = packet[5]
    ra = RouterAdvert(
        managed=bool(flags & 0x80),
        other=bool(flags & 0x40),
        router_lifetime=struct.unpack_from("!H", packet, 6)[0],
        prefixes=[],
    )
    at = 16
    while at + 2 <= len(packet):
        kind, length = packet[at], packet[at + 1] * 8
        if length == 0:
            break
        body = packet[at : at + length]
        if kind == ND_OPT_PREFIX:
            prefix = ipaddress.IPv6Address(body[16:32])
            ra.prefixes.append(
                {
                    "prefix": f"{prefix}/{body[2]}",
                    "on_link": bool(body[3] & 0x80),
                    "autonomous": bool(body[3] & 0x40),
                }
            )
        elif kind == ND_OPT_MTU:
            ra.mtu = struct.unpack_from("!I", body, 4)[0]
        elif kind == ND_OPT_RDNSS:
            ra.rdnss += [str(ipaddress.IPv6Address(body[i : i + 16])) for i in range(8, length, 16)]
        at += length
    return ra


def _receive(sock: socket.socket, deadline: float) -> bytes | None:
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not select.select([sock], [], [], remaining)[0]:
        return None
    return sock.recv(65535)


def await_ra(iface: str, timeout: float) -> RouterAdvert | None:
    index = socket.if_nametoindex(iface)
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        deadline = time.monotonic() + timeout
        sock.sendto(router_solicitation(), (ALL_ROUTERS, 0, 0, index))
        while (packet := _receive(sock, deadline)) is not None:
            ra = parse_ra(packet)
            if ra is not None:
                return ra
    return None


def exchange(iface: str, mac: str, timeout: float) -> Lease6 | None:
    index = socket.if_nametoindex(iface)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
        sock.bind(("::", 546))
        deadline = time.monotonic() + timeout
        xid = os.urandom(3)
        advertise = _ask(sock, solicit(xid, mac), want=ADVERTISE, xid=xid, index=index, deadline=deadline)
        if advertise is None:
            return None
        if OPT_IA_NA not in advertise.options or lease_of(advertise).status:
            return lease_of(advertise)  # answered, but with no address
        xid = os.urandom(3)
        reply = _ask(sock, request(xid, mac, advertise), want=REPLY, xid=xid, index=index, deadline=deadline)
        return lease_of(reply) if reply is not None else None


def _ask(
    sock: socket.socket, packet: bytes, *, want: int, xid: bytes, index: int, deadline: float
) -> Message | None:
    while time.monotonic() < deadline:
        sock.sendto(packet, (ALL_DHCP_AGENTS, 547, 0, index))
        resend = min(deadline, time.monotonic() + 1.0)
        while (data := _receive(sock, resend)) is not None:
            message = parse(data)
            if message.msg_type == want and message.xid == xid:
                return message
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iface", default="eth0")
    parser.add_argument("--mac", required=True)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    ra = await_ra(args.iface, args.timeout)
    lease = exchange(args.iface, args.mac, args.timeout)
    print(json.dumps({"ra": asdict(ra) if ra else None, "lease": asdict(lease) if lease else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

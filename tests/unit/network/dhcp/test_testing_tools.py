"""The lab's own tools: the DHCPv6 probe's packets, and the parsers of udhcpc's and
nslookup's output."""

from __future__ import annotations

import ipaddress
import struct

from zsd.network.dhcp.testing import dhcp6probe as d6
from zsd.network.dhcp.testing.lab import Lease, parse_lease, parse_nslookup

MAC = "52:54:00:00:00:01"


def _opt(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


def test_solicit_carries_duid_ll_and_ia_na() -> None:
    message = d6.parse(d6.solicit(b"\x01\x02\x03", MAC))
    assert (message.msg_type, message.xid) == (d6.SOLICIT, b"\x01\x02\x03")
    assert message.options[d6.OPT_CLIENTID] == [bytes.fromhex("00030001525400000001")]
    assert message.options[d6.OPT_IA_NA] == [struct.pack("!III", d6.IAID, 0, 0)]
    assert message.options[d6.OPT_ORO] == [struct.pack("!HH", 23, 24)]


def _advertise(status: int | None = None) -> bytes:
    iaaddr = _opt(d6.OPT_IAADDR, ipaddress.IPv6Address("fd00:9::5").packed + struct.pack("!II", 600, 900))
    ia_body = struct.pack("!III", d6.IAID, 300, 480) + iaaddr
    if status is not None:
        ia_body = struct.pack("!III", d6.IAID, 0, 0) + _opt(
            d6.OPT_STATUS_CODE, struct.pack("!H", status) + b"no"
        )
    return (
        bytes([d6.ADVERTISE])
        + b"\xaa\xbb\xcc"
        + _opt(d6.OPT_SERVERID, b"\x00\x01srv")
        + _opt(d6.OPT_IA_NA, ia_body)
        + _opt(d6.OPT_DNS_SERVERS, ipaddress.IPv6Address("fd00:9::53").packed)
        + _opt(d6.OPT_DOMAIN_LIST, b"\x03lab\x04test\x00\x01x\x00")
    )


def test_advertise_to_lease_and_request() -> None:
    advertise = d6.parse(_advertise())
    lease = d6.lease_of(advertise)
    assert (lease.address, lease.preferred, lease.valid, lease.status) == ("fd00:9::5", 600, 900, 0)
    assert lease.dns == ["fd00:9::53"] and lease.domains == ["lab.test", "x"]
    assert lease.server_id == b"\x00\x01srv".hex()
    request = d6.parse(d6.request(b"\x00\x00\x01", MAC, advertise))
    assert request.msg_type == d6.REQUEST
    assert request.options[d6.OPT_SERVERID] == advertise.options[d6.OPT_SERVERID]
    assert request.options[d6.OPT_IA_NA] == advertise.options[d6.OPT_IA_NA]


def test_no_address_status() -> None:
    lease = d6.lease_of(d6.parse(_advertise(status=2)))
    assert lease.status == 2 and lease.address == ""


def test_router_advertisement() -> None:
    header = struct.pack("!BBHBBHII", d6.ICMP6_RA, 0, 0, 64, 0xC0, 0, 0, 0)
    prefix = struct.pack("!BBBBIII", d6.ND_OPT_PREFIX, 4, 64, 0x80, 3600, 3600, 0)
    prefix += ipaddress.IPv6Address("fd00:9::").packed
    mtu = struct.pack("!BBHI", d6.ND_OPT_MTU, 1, 0, 1450)
    rdnss = struct.pack("!BBHI", d6.ND_OPT_RDNSS, 3, 0, 600) + ipaddress.IPv6Address("fd00:9::53").packed
    ra = d6.parse_ra(header + prefix + mtu + rdnss)
    assert ra is not None
    assert (ra.managed, ra.other, ra.router_lifetime, ra.mtu) == (True, True, 0, 1450)
    assert ra.prefixes == [{"prefix": "fd00:9::/64", "on_link": True, "autonomous": False}]
    assert ra.rdnss == ["fd00:9::53"]
    assert d6.parse_ra(d6.router_solicitation()) is None


def test_udhcpc_output() -> None:
    out = (
        "udhcpc: started\nip=10.9.0.5\nsubnet=255.255.255.0\nrouter=10.9.0.1\n"
        "dns=10.9.0.254 192.0.2.53\ndomain=lab.test\nhostname=web1\nserverid=10.9.0.254\n"
        "lease=3600\nmtu=1450\nstaticroutes=10.20.0.0/16 10.9.0.2 0.0.0.0/0 10.9.0.1\n"
    )
    assert parse_lease(out) == Lease(
        ip="10.9.0.5",
        subnet="255.255.255.0",
        router="10.9.0.1",
        dns=("10.9.0.254", "192.0.2.53"),
        domain="lab.test",
        hostname="web1",
        serverid="10.9.0.254",
        lease=3600,
        mtu=1450,
        staticroutes="10.20.0.0/16 10.9.0.2 0.0.0.0/0 10.9.0.1",
    )
    assert parse_lease("udhcpc: no lease, failing\n") is None


def test_nslookup_output() -> None:
    out = (
        "Server:\t\t10.9.0.254\nAddress:\t10.9.0.254:53\n\n"
        "Name:\tweb1.lab.test\nAddress: 10.9.0.5\n\nName:\tweb1.lab.test\nAddress: fd00:9::5\n\n"
    )
    assert parse_nslookup(out) == ["10.9.0.5", "fd00:9::5"]

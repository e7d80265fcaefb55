"""dnsmasq's config and hosts files: golden texts, stable output, and (when dnsmasq is
installed) dnsmasq's own syntax check."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from tests.unit.network.dhcp.samples import DB, WEB, full_scope, small_scope
from zsd.network.dhcp.dnsmasqconf import (
    LeaseEntry,
    ScopeFiles,
    parse_leases,
    render_config,
    render_dhcp_hosts,
    render_dns_hosts,
    stale_leases,
)
from zsd.network.dhcp.spec import DhcpNic, DnsRecord

FILES = ScopeFiles(Path("/run/zsd-dhcp/lab+web"))

FULL_CONFIG = """\
# zsd: DHCP and DNS of port group lab/web. Generated: do not edit.
# A new config means a new dnsmasq; the hosts files change with a SIGHUP.
interface=dhcp0
bind-interfaces
pid-file=/run/zsd-dhcp/lab+web/dnsmasq.pid
dhcp-leasefile=/run/zsd-dhcp/lab+web/dnsmasq.leases
no-resolv
no-hosts
addn-hosts=/run/zsd-dhcp/lab+web/hosts.dns
domain=web.lab.test
local=/web.lab.test/
server=192.0.2.53
server=2001:db8::53
dhcp-hostsfile=/run/zsd-dhcp/lab+web/hosts.dhcp
dhcp-range=set:ipv4,10.9.0.0,static,255.255.255.0,600
dhcp-vendorclass=set:zsd-release,zsd-dhcp-release
dhcp-ignore=tag:!known,tag:!zsd-release
dhcp-ignore-names
dhcp-authoritative
dhcp-option=option:router,10.9.0.1
dhcp-option=option:dns-server,10.9.0.254,192.0.2.53
dhcp-option=option:domain-name,web.lab.test
dhcp-option=option:classless-static-route,10.20.0.0/16,10.9.0.2,0.0.0.0/0,10.9.0.1
dhcp-option=option:mtu,1450
enable-ra
dhcp-range=set:ipv6,fd00:9::,static,64,600
ra-param=dhcp0,mtu:1450,60,0
dhcp-option=option6:dns-server,[2001:db8::53]
dhcp-option=option6:domain-search,web.lab.test
"""

SMALL_CONFIG_TAIL = """\
addn-hosts=/run/zsd-dhcp/lab+web/hosts.dns
dhcp-hostsfile=/run/zsd-dhcp/lab+web/hosts.dhcp
dhcp-range=set:ipv4,10.8.0.0,static,255.255.255.0,3600
dhcp-vendorclass=set:zsd-release,zsd-dhcp-release
dhcp-ignore=tag:!known,tag:!zsd-release
dhcp-ignore-names
dhcp-authoritative
dhcp-option=option:router
dhcp-option=option:dns-server,10.8.0.254
"""


def test_full_config() -> None:
    assert render_config(full_scope(), FILES) == FULL_CONFIG


def test_small_config_sends_no_router_and_names_itself_as_dns() -> None:
    # Without a value dnsmasq would announce itself as the router.
    assert render_config(small_scope(), FILES).endswith(SMALL_CONFIG_TAIL)


def test_without_dhcp_only_dns_is_served() -> None:
    text = render_config(replace(full_scope(), dhcp=False), FILES)
    assert "dhcp-range" not in text and "enable-ra" not in text and "dhcp-option" not in text
    assert "domain=web.lab.test" in text and "server=192.0.2.53" in text


def test_the_service_address_is_never_its_own_forwarder() -> None:
    text = render_config(
        replace(full_scope(), dns_servers=("10.9.0.254", "fd00:9::ffff:ffff:ffff:ffff")), FILES
    )
    assert "server=" not in text


def test_routes_without_gateway_add_no_default_route() -> None:
    scope = full_scope()
    text = render_config(replace(scope, ipv4=replace(scope.ipv4, gateway="")), FILES)
    assert "dhcp-option=option:classless-static-route,10.20.0.0/16,10.9.0.2\n" in text
    assert "dhcp-option=option:router\n" in text


def test_dns_servers_by_family_fall_back_to_the_service_address() -> None:
    text = render_config(replace(full_scope(), dns_servers=("2001:db8::53",)), FILES)
    assert "dhcp-option=option:dns-server,10.9.0.254\n" in text
    assert "dhcp-option=option6:dns-server,[2001:db8::53]\n" in text
    text = render_config(replace(full_scope(), dns_servers=()), FILES)
    assert "dhcp-option=option6:dns-server,[fd00:9::ffff:ffff:ffff:ffff]\n" in text


def test_hosts_files() -> None:
    assert render_dhcp_hosts(full_scope()) == (
        "# zsd: the NICs of port group lab/web on this host.\n"
        "52:54:00:00:00:01,10.9.0.10,[fd00:9::10],web1\n"
        "52:54:00:00:00:02,10.9.0.11,db1\n"
    )
    assert render_dns_hosts(full_scope()) == (
        "# zsd: the names of port group lab/web.\n"
        "10.9.0.30 app1.web.lab.test app1\n"
        "10.9.0.11 db1.web.lab.test db1\n"
        "10.9.0.10 web1.web.lab.test web1\n"
        "fd00:9::10 web1.web.lab.test web1\n"
    )


def test_hosts_files_do_not_depend_on_order_or_spelling() -> None:
    scope = full_scope()
    shuffled = replace(
        scope,
        nics=(DB, replace(WEB, ipv6="FD00:9:0:0::10")),
        dns_records=tuple(reversed(scope.dns_records)),
    )
    assert render_dhcp_hosts(shuffled) == render_dhcp_hosts(scope)
    assert render_dns_hosts(shuffled) == render_dns_hosts(scope)


def test_nameless_and_addressless_nics() -> None:
    scope = small_scope(
        nics=(
            DhcpNic(mac="52:54:00:00:00:0a", ipv4="10.8.0.5"),
            DhcpNic(mac="52:54:00:00:00:0b", hostname="nothing"),
        ),
        dns_records=(DnsRecord(hostname="far", ipv4="198.51.100.7"),),
    )
    # No address: not listed, so unknown and ignored; no name: no DNS entry.
    assert render_dhcp_hosts(scope).splitlines()[1:] == ["52:54:00:00:00:0a,10.8.0.5"]
    assert render_dns_hosts(scope).splitlines()[1:] == ["198.51.100.7 far"]


@pytest.mark.skipif(shutil.which("dnsmasq") is None, reason="needs dnsmasq (dnsmasq-base)")
@pytest.mark.parametrize("scope", [full_scope(), small_scope(), replace(full_scope(), dhcp=False)])
def test_dnsmasq_accepts_the_config(tmp_path: Path, scope: object) -> None:
    config = tmp_path / "dnsmasq.conf"
    config.write_text(render_config(scope, ScopeFiles(tmp_path)))  # type: ignore[arg-type]
    done = subprocess.run(
        ["dnsmasq", "--test", f"--conf-file={config}"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


LEASES = """\
1796366328 52:54:00:00:00:01 10.9.0.10 web1 01:52:54:00:00:00:01
1796366329 52:54:00:00:00:02 10.9.0.11 * *
1796366330 52:54:00:00:00:09 10.9.0.99 old *
duid 00:01:00:01:32:a5:0d:83:02:2a:7a:25:fe:55
1796366328 1 fd00:9::10 web1 00:03:00:01:52:54:00:00:00:01
"""


def test_lease_file() -> None:
    assert parse_leases(LEASES) == [
        LeaseEntry(mac="52:54:00:00:00:01", ip="10.9.0.10", client_id="01:52:54:00:00:00:01"),
        LeaseEntry(mac="52:54:00:00:00:02", ip="10.9.0.11"),
        LeaseEntry(mac="52:54:00:00:00:09", ip="10.9.0.99"),
    ]
    assert parse_leases("") == []


def test_stale_leases_are_those_no_nic_holds() -> None:
    scope = full_scope()
    moved = replace(scope, nics=(replace(WEB, ipv4="10.9.0.12"), DB))
    leases = parse_leases(LEASES)
    assert [lease.ip for lease in stale_leases(scope, leases)] == ["10.9.0.99"]
    # A NIC with a new address: its old lease goes.
    assert [lease.ip for lease in stale_leases(moved, leases)] == ["10.9.0.10", "10.9.0.99"]
    # The address now belongs to another MAC: the old holder's lease goes.
    swapped = replace(scope, nics=(replace(DB, ipv4="10.9.0.10"), replace(WEB, ipv4="10.9.0.11")))
    assert [lease.ip for lease in stale_leases(swapped, leases)] == ["10.9.0.10", "10.9.0.11", "10.9.0.99"]

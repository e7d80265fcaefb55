"""The real process and nft drivers, on what needs no root: command lines, process
identity, error translation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from zsd.errors import FailedPrecondition, Internal
from zsd.network.dhcp.dnsmasqconf import LeaseEntry
from zsd.network.dhcp.dnsmasqproc import DnsmasqProcesses, dhcp_release_packet
from zsd.network.dhcp.nft import NftDriver


def test_launch_in_the_namespace() -> None:
    procs = DnsmasqProcesses(systemd_scope=False)
    argv = procs.launch_argv(netns="zsd-dhcp-pg", config=Path("/run/zsd-dhcp/pg/dnsmasq-ab.conf"))
    assert argv == [
        "ip",
        "netns",
        "exec",
        "zsd-dhcp-pg",
        "dnsmasq",
        "--conf-file=/run/zsd-dhcp/pg/dnsmasq-ab.conf",
    ]


def test_launch_under_systemd_gets_a_scope_of_its_own() -> None:
    argv = DnsmasqProcesses(systemd_scope=True).launch_argv(netns="ns", config=Path("/c.conf"))
    assert argv[:4] == ["systemd-run", "--scope", "--quiet", "--collect"]
    assert argv[-6:] == ["ip", "netns", "exec", "ns", "dnsmasq", "--conf-file=/c.conf"]


def test_inspect_and_identity() -> None:
    procs = DnsmasqProcesses(systemd_scope=False)
    me = procs.inspect(os.getpid(), netns="zsdt-dhcp-no-such-netns")
    assert me is not None and me.name.startswith("python") and not me.in_netns
    assert procs.alive(me)
    assert not procs.alive(replace(me, started_at=me.started_at - 10))  # a reused pid
    assert not procs.signal(replace(me, started_at=me.started_at - 10), signal.SIGHUP)
    assert procs.in_netns("zsdt-dhcp-no-such-netns") == []


def test_stop_a_process() -> None:
    procs = DnsmasqProcesses(systemd_scope=False)
    child = subprocess.Popen(["sleep", "30"])
    try:
        info = procs.inspect(child.pid, netns="none")
        assert info is not None and info.name == "sleep"
        procs.stop(info, timeout=5)
        assert child.wait(timeout=5) == -signal.SIGTERM
        assert not procs.alive(info)
    finally:
        child.kill()
        child.wait()


def test_dnsmasq_not_installed(tmp_path: Path) -> None:
    procs = DnsmasqProcesses(dnsmasq="zsd-no-such-dnsmasq", systemd_scope=False)
    with pytest.raises(FailedPrecondition, match="dnsmasq-base") as caught:
        procs.start(netns="ns", config=tmp_path / "c.conf", pidfile=tmp_path / "pid")
    assert caught.value.reason == "DNSMASQ_NOT_INSTALLED"


def _fake_nft(tmp_path: Path, *, stdout: str, rc: int = 0) -> str:
    script = tmp_path / "nft"
    script.write_text(
        f'#!/bin/sh\ncat > {tmp_path}/stdin\necho "$@" > {tmp_path}/args\n'
        f"cat <<'EOF'\n{stdout}\nEOF\n"
        f"[ {rc} = 0 ] || echo 'Error: Could not process rule' >&2\nexit {rc}\n"
    )
    script.chmod(0o755)
    return str(script)


def test_nft_tables_and_commit(tmp_path: Path) -> None:
    listing = {
        "nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "bridge", "name": "zsd-dhcp-br0", "handle": 1}},
            {"table": {"family": "bridge", "name": "other", "handle": 2}},
        ]
    }
    nft = NftDriver(nft=_fake_nft(tmp_path, stdout=json.dumps(listing)))
    assert nft.tables() == {"zsd-dhcp-br0", "other"}
    assert (tmp_path / "args").read_text().split() == ["-j", "list", "tables", "bridge"]
    nft.commit([{"add": {"table": {"family": "bridge", "name": "t"}}}])
    assert json.loads((tmp_path / "stdin").read_text()) == {
        "nftables": [{"add": {"table": {"family": "bridge", "name": "t"}}}]
    }
    (tmp_path / "args").unlink()
    nft.commit([])  # nothing to do: nft is not run
    assert not (tmp_path / "args").exists()


def test_nft_errors(tmp_path: Path) -> None:
    with pytest.raises(Internal, match="Could not process rule") as caught:
        NftDriver(nft=_fake_nft(tmp_path, stdout="", rc=1)).commit([{"add": {"table": {}}}])
    assert caught.value.reason == "NFT_FAILED"
    with pytest.raises(FailedPrecondition, match="nftables") as missing:
        NftDriver(nft=str(tmp_path / "missing-nft")).tables()
    assert missing.value.reason == "NFT_NOT_INSTALLED"


def test_dhcp_release_packet() -> None:
    lease = LeaseEntry(mac="52:54:00:00:00:01", ip="10.9.0.10", client_id="01:52:54:00:00:00:01")
    packet = dhcp_release_packet(lease, server="10.9.0.254")
    assert len(packet) == 300 and packet[:3] == bytes([1, 1, 6])
    assert packet[12:16] == bytes([10, 9, 0, 10])  # ciaddr
    assert packet[28:34] == bytes.fromhex("525400000001")  # chaddr
    assert packet[236:240] == bytes.fromhex("63825363")
    assert packet[240:249] == bytes([53, 1, 7, 54, 4, 10, 9, 0, 254])  # RELEASE to the server
    assert packet[249:267] == bytes([60, 16]) + b"zsd-dhcp-release"  # heard for a gone NIC
    assert packet[267:276] == bytes([61, 7]) + bytes.fromhex("01525400000001") and packet[276] == 255
    plain = dhcp_release_packet(LeaseEntry(mac=lease.mac, ip=lease.ip), server="10.9.0.254")
    assert plain[267] == 255  # no client id option


def test_a_socket_in_a_missing_namespace_fails_cleanly() -> None:
    with pytest.raises(Internal, match="zsdt-dhcp-no-such-netns") as caught:
        DnsmasqProcesses(systemd_scope=False).release(
            netns="zsdt-dhcp-no-such-netns",
            iface="dhcp0",
            server="10.0.0.1",
            leases=[LeaseEntry(mac="52:54:00:00:00:01", ip="10.0.0.5")],
        )
    assert caught.value.reason == "DHCP_RELEASE_FAILED"

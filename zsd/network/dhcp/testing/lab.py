"""Real packets for the DHCP service's tests and benchmarks, in throwaway namespaces.

A ``Lab`` owns every network namespace whose name starts with its prefix: simulated
hosts (a namespace with a bridge ``br0``), VMs (a namespace whose ``eth0`` is a veth
with a given MAC, its other end a port of a host's bridge) and the namespaces the DHCP
managers under test make (give them a prefix that starts with the lab's). ``close``
kills what runs in them and removes them all; ``sweep`` does the same for a run that
died. Nothing is connected to the machine's own namespace.

Clients run inside the VM namespaces: ``busybox udhcpc`` (DHCPv4), ``busybox
nslookup`` (DNS) and ``dhcp6probe`` (DHCPv6 and router advertisements).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zsd.testing import netfabric

BRIDGE = "br0"
VM_IF = "eth0"
_UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc runs this on each event; on a lease, print what it got.
case "$1" in
  bound|renew) env | grep -E '^(ip|subnet|router|dns|domain|hostname|serverid|lease|mtu|staticroutes)=' ;;
esac
exit 0
"""


@dataclass(frozen=True, kw_only=True)
class Lease:
    """What a DHCPv4 client got."""

    ip: str
    subnet: str = ""
    router: str = ""
    dns: tuple[str, ...] = ()
    domain: str = ""
    hostname: str = ""
    serverid: str = ""
    lease: int = 0
    mtu: int = 0
    staticroutes: str = ""


@dataclass(frozen=True, kw_only=True)
class Vm:
    netns: str
    mac: str
    tap: str
    """Its port on the host's bridge (in the host's namespace)."""
    host: str


def _run(*argv: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


def tools_missing() -> str:
    """What the lab needs and this machine lacks ("" = nothing)."""
    if os.geteuid() != 0:
        return "needs root"
    for tool, package in (
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("dnsmasq", "dnsmasq-base"),
        ("busybox", "busybox"),
    ):
        if shutil.which(tool) is None:
            return f"needs {package}"
    return ""


def sweep(prefix: str) -> None:
    """Kills everything in the namespaces named ``prefix*`` and removes them."""
    for name in netfabric.names():
        if not name.startswith(prefix):
            continue
        for pid in netfabric.pids_in(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while netfabric.pids_in(name) and time.monotonic() < deadline:
            time.sleep(0.02)
        netfabric.remove(name)


class Lab:
    def __init__(self, prefix: str) -> None:
        """``prefix``: every namespace of the lab starts with it (and nothing else's may)."""
        self.prefix = prefix
        # On tmpfs, as /run is on a real host; dnsmasq re-reads its files as nobody, so
        # the lab's directory must be traversable.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.dir = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=shm))
        self.dir.chmod(0o755)
        self._script = self.dir / "udhcpc.sh"
        self._script.write_text(_UDHCPC_SCRIPT)
        self._script.chmod(0o755)
        self._vms = 0

    def close(self) -> None:
        sweep(self.prefix)
        shutil.rmtree(self.dir, ignore_errors=True)

    def state_dir(self, host: str) -> Path:
        """A DHCP manager's directory for ``host``."""
        path = self.dir / "state" / host
        path.parent.mkdir(exist_ok=True)
        path.parent.chmod(0o755)
        return path

    def dns_prefix(self, host: str) -> str:
        """The namespace prefix for ``host``'s DHCP manager: inside the lab's."""
        return f"{self.prefix}{host}-dns-"

    def host(self, name: str, *, mtu: int = 0) -> str:
        """A simulated host: namespace ``<prefix><name>`` with bridge ``br0``, up."""
        netns = self.prefix + name
        _run("ip", "netns", "add", netns)
        _run("ip", "-n", netns, "link", "set", "lo", "up")
        _run("ip", "-n", netns, "link", "add", BRIDGE, "type", "bridge")
        if mtu:
            _run("ip", "-n", netns, "link", "set", BRIDGE, "mtu", str(mtu))
        _run("ip", "-n", netns, "link", "set", BRIDGE, "up")
        return netns

    def vm(self, name: str, *, host: str, mac: str) -> Vm:
        """A VM with one NIC (``eth0``, ``mac``) on ``host``'s bridge; IPv6 addresses
        usable at once (no duplicate address detection)."""
        netns = self.prefix + name
        self._vms += 1
        tap = f"tap{self._vms}"
        _run("ip", "netns", "add", netns)
        _run("ip", "netns", "exec", netns, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0")
        _run("ip", "-n", host, "link", "add", tap, "type", "veth", "peer", "name", VM_IF, "netns", netns)
        _run("ip", "-n", netns, "link", "set", VM_IF, "address", mac)
        _run("ip", "-n", host, "link", "set", tap, "master", BRIDGE, "up")
        _run("ip", "-n", netns, "link", "set", "lo", "up")
        _run("ip", "-n", netns, "link", "set", VM_IF, "up")
        return Vm(netns=netns, mac=mac, tap=tap, host=host)

    def link_hosts(self, a: str, b: str, *, port: str = "up0") -> None:
        """A cable between two hosts' bridges: ``port`` on each side (their uplink)."""
        _run("ip", "-n", a, "link", "add", port, "type", "veth", "peer", "name", port, "netns", b)
        for netns in (a, b):
            _run("ip", "-n", netns, "link", "set", port, "master", BRIDGE, "up")

    def udhcpc(self, vm: Vm, *, tries: int = 3) -> Lease | None:
        """A DHCPv4 exchange; None when no server answered (``tries`` discovers, a
        second apart)."""
        done = _run(*self.udhcpc_argv(vm, tries=tries), check=False, timeout=tries + 30)
        return parse_lease(done.stdout) if done.returncode == 0 else None

    def udhcpc_argv(self, vm: Vm, *, tries: int = 3) -> list[str]:
        """``busybox udhcpc`` in the VM: asks for routes and MTU too, quits once leased
        (exit 0, the lease on stdout) or after ``tries`` unanswered discovers (exit 1)."""
        return [
            "ip", "netns", "exec", vm.netns,
            "busybox", "udhcpc", "-i", VM_IF, "-f", "-q", "-n", "-t", str(tries), "-T", "1", "-A", "1",
            "-O", "staticroutes", "-O", "mtu", "-s", str(self._script),
        ]  # fmt: skip

    def configure(self, vm: Vm, lease: Lease) -> None:
        """Gives the VM the address it leased (udhcpc's script only reports it)."""
        prefixlen = sum(bin(int(octet)).count("1") for octet in lease.subnet.split("."))
        _run("ip", "-n", vm.netns, "addr", "replace", f"{lease.ip}/{prefixlen}", "dev", VM_IF)

    def nslookup(self, vm: Vm, name: str, server: str) -> list[str]:
        """The addresses ``server`` gives for ``name`` ([] when it has none)."""
        done = _run(
            "ip", "netns", "exec", vm.netns, "busybox", "nslookup", name, server, check=False, timeout=30
        )
        return parse_nslookup(done.stdout) if done.returncode == 0 else []

    def dhcp6(self, vm: Vm, *, timeout: float = 5.0) -> dict[str, Any]:
        """``dhcp6probe`` in the VM: ``{"ra": ..., "lease": ...}``."""
        done = _run(
            "ip", "netns", "exec", vm.netns,
            sys.executable, "-m", "zsd.network.dhcp.testing.dhcp6probe",
            "--iface", VM_IF, "--mac", vm.mac, "--timeout", str(timeout),
            timeout=4 * timeout + 30,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def nft_counters(self, host: str, table: str) -> int:
        """Packets dropped so far by a guard table's rules."""
        done = _run("ip", "netns", "exec", host, "nft", "-j", "list", "table", "bridge", table)
        total = 0
        for item in json.loads(done.stdout)["nftables"]:
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    total += int(expr["counter"]["packets"])
        return total


def parse_lease(stdout: str) -> Lease | None:
    """The ``key=value`` lines our udhcpc script prints."""
    values = dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)
    if "ip" not in values:
        return None
    return Lease(
        ip=values["ip"],
        subnet=values.get("subnet", ""),
        router=values.get("router", ""),
        dns=tuple(values.get("dns", "").split()),
        domain=values.get("domain", ""),
        hostname=values.get("hostname", ""),
        serverid=values.get("serverid", ""),
        lease=int(values.get("lease", "0") or 0),
        mtu=int(values.get("mtu", "0") or 0),
        staticroutes=values.get("staticroutes", ""),
    )


def parse_nslookup(stdout: str) -> list[str]:
    """busybox nslookup: the ``Address:`` lines after the server's block."""
    _server, _, answers = stdout.partition("\n\n")
    found = []
    for line in answers.splitlines():
        if line.startswith("Address:"):
            address = line.split(":", 1)[1].strip()
            if address not in found:
                found.append(address)
    return found

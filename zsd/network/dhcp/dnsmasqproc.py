"""``ProcessDriver`` on the real system: dnsmasq daemons in their namespaces.

dnsmasq daemonizes itself (``ip netns exec`` puts it in the namespace) and its start
command returns only once it serves or has failed, with the reason on stderr. It is
no child of zsd and outlives it. Under systemd, zsd's unit would kill everything in
its cgroup when it stops; so on a systemd host the start goes through
``systemd-run --scope``, which gives each dnsmasq a cgroup of its own.

Processes are identified by pid and start time together (a pid alone may have been
reused); nothing here looks processes up by name.

A stale lease is released the way dnsmasq's ``dhcp_release`` does it: a DHCPRELEASE
from a socket in the namespace, bound to dnsmasq's interface, to dnsmasq's address.
The socket is made by a thread that enters the namespace and ends: no thread that runs
anything else ever changes namespace.
"""

from __future__ import annotations

import os
import shutil
import signal as signals
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
from pyroute2 import netns as named_netns  # type: ignore[import-untyped]

from zsd.errors import FailedPrecondition, Internal
from zsd.network.dhcp.dnsmasqconf import RELEASE_VENDOR_CLASS, LeaseEntry, read_pid
from zsd.network.dhcp.drivers import ProcessInfo, expected_args

NETNS_DIR = Path("/run/netns")
# psutil derives start times from boot time + clock ticks; the same process always
# reads the same value, a recycled pid almost never does.
_START_TIME_SLACK = 0.05


def systemd_booted() -> bool:
    """sd_booted(3)."""
    return Path("/run/systemd/system").is_dir()


class DnsmasqProcesses:
    def __init__(
        self,
        *,
        dnsmasq: str = "dnsmasq",
        systemd_scope: bool | None = None,
        proc: Path = Path("/proc"),
        start_timeout: float = 30.0,
    ) -> None:
        """``systemd_scope``: start each dnsmasq in a transient scope unit (None: when
        the host runs systemd)."""
        self._dnsmasq = dnsmasq
        self._systemd_scope = systemd_booted() if systemd_scope is None else systemd_scope
        self._proc = proc
        self._start_timeout = start_timeout

    def launch_argv(self, *, netns: str, config: Path) -> list[str]:
        argv = ["ip", "netns", "exec", netns, self._dnsmasq, *expected_args(config)]
        if self._systemd_scope:
            argv = [
                "systemd-run",
                "--scope",
                "--quiet",
                "--collect",
                f"--description=zsd DHCP/DNS {netns}",
                *argv,
            ]
        return argv

    def start(self, *, netns: str, config: Path, pidfile: Path) -> ProcessInfo:
        if shutil.which(self._dnsmasq) is None:
            raise FailedPrecondition(
                f"{self._dnsmasq} is not installed (package dnsmasq-base)", reason="DNSMASQ_NOT_INSTALLED"
            )
        pidfile.unlink(missing_ok=True)  # never mistake an old pid for the new one
        try:
            done = subprocess.run(
                self.launch_argv(netns=netns, config=config),
                capture_output=True,
                text=True,
                timeout=self._start_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise Internal(
                f"dnsmasq in {netns} did not start within {self._start_timeout} s", reason="DNSMASQ_FAILED"
            ) from None
        if done.returncode != 0:
            raise FailedPrecondition(
                f"dnsmasq in {netns} did not start: {done.stderr.strip()}", reason="DNSMASQ_FAILED"
            )
        pid = read_pid(pidfile)
        info = self.inspect(pid, netns=netns) if pid is not None else None
        if info is None:
            raise Internal(
                f"dnsmasq in {netns} started but is gone (pidfile {pidfile})", reason="DNSMASQ_FAILED"
            )
        self._wait_catches_sighup(info.pid)
        return info

    def _wait_catches_sighup(self, pid: int, timeout: float = 3.0) -> None:
        """Until dnsmasq handles SIGHUP: one sent before (the next NIC change, a moment
        after the start) would end it (SIGHUP's default action), and its NICs would go
        unanswered until the next round noticed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status = (self._proc / str(pid) / "status").read_text()
            except OSError:
                return  # gone: the caller's next look finds it so
            caught = next(
                (line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0"
            )
            if int(caught, 16) & (1 << (signals.SIGHUP - 1)):
                return
            time.sleep(0.01)

    def inspect(self, pid: int, *, netns: str) -> ProcessInfo | None:
        try:
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            started_at = process.create_time()
            argv = tuple(process.cmdline())
            exe = os.readlink(self._proc / str(pid) / "exe")
            in_netns = _same_file(self._proc / str(pid) / "ns" / "net", NETNS_DIR / netns)
        except (psutil.Error, OSError):
            return None
        return ProcessInfo(
            pid=pid, started_at=started_at, name=os.path.basename(exe), argv=argv, in_netns=in_netns
        )

    def in_netns(self, netns: str) -> list[ProcessInfo]:
        try:
            target = os.stat(NETNS_DIR / netns)
        except FileNotFoundError:
            return []
        found = []
        for entry in os.listdir(self._proc):
            if not entry.isdigit():
                continue
            try:
                st = os.stat(self._proc / entry / "ns" / "net")
            except OSError:
                continue  # exited meanwhile, or a kernel thread
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                info = self.inspect(int(entry), netns=netns)
                if info is not None:
                    found.append(info)
        return found

    def alive(self, process: ProcessInfo) -> bool:
        return self._live(process) is not None

    def signal(self, process: ProcessInfo, signum: int) -> bool:
        live = self._live(process)
        if live is None:
            return False
        try:
            live.send_signal(signum)  # psutil re-checks the start time itself
        except psutil.Error:
            return False
        return True

    def stop(self, process: ProcessInfo, *, timeout: float) -> None:
        if not self.signal(process, signals.SIGTERM):
            return
        if self._wait_gone(process, timeout):
            return
        self.signal(process, signals.SIGKILL)
        if not self._wait_gone(process, 5.0):
            raise Internal(f"pid {process.pid} ({process.name}) survived SIGKILL", reason="PROCESS_STUCK")

    def release(self, *, netns: str, iface: str, server: str, leases: Sequence[LeaseEntry]) -> None:
        try:
            with udp_socket_in(netns) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
                for lease in leases:
                    sock.sendto(dhcp_release_packet(lease, server=server), (server, 67))
        except OSError as e:
            raise Internal(f"releasing leases in {netns}: {e}", reason="DHCP_RELEASE_FAILED") from None

    def _live(self, process: ProcessInfo) -> psutil.Process | None:
        try:
            live = psutil.Process(process.pid)
            if abs(live.create_time() - process.started_at) > _START_TIME_SLACK:
                return None
            if live.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.Error:
            return None
        return live

    def _wait_gone(self, process: ProcessInfo, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.alive(process):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True


def dhcp_release_packet(lease: LeaseEntry, *, server: str) -> bytes:
    """A BOOTREQUEST with DHCP message type RELEASE for ``lease``, to ``server``."""
    chaddr = bytes.fromhex(lease.mac.replace(":", ""))
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128sI",
        1,  # BOOTREQUEST
        1,  # Ethernet
        len(chaddr),
        0,
        int.from_bytes(os.urandom(4), "big"),
        0,
        0,
        socket.inet_aton(lease.ip),  # ciaddr: the address given back
        bytes(4),
        bytes(4),
        bytes(4),
        chaddr,
        b"",
        b"",
        0x63825363,  # the DHCP magic cookie
    )
    vendor = RELEASE_VENDOR_CLASS.encode()
    # RELEASE, server identifier, vendor class (so dnsmasq hears it for a gone NIC).
    options = bytes([53, 1, 7, 54, 4]) + socket.inet_aton(server) + bytes([60, len(vendor)]) + vendor
    if lease.client_id:
        client_id = bytes.fromhex(lease.client_id.replace(":", ""))
        options += bytes([61, len(client_id)]) + client_id
    return (header + options + bytes([255])).ljust(300, b"\0")


def udp_socket_in(netns: str, family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    """A UDP socket in the named namespace, made by a thread of its own."""
    made: list[socket.socket] = []
    failed: list[OSError] = []

    def enter() -> None:
        try:
            named_netns.setns(netns, flags=0)  # this thread only, and it ends here
            made.append(socket.socket(family, socket.SOCK_DGRAM))
        except OSError as e:
            failed.append(e)

    thread = threading.Thread(target=enter, name=f"netns {netns}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


def _same_file(a: Path, b: Path) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)

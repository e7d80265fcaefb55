"""A cluster of N simulated hosts on one machine, for development and cluster tests.

Each host ``h<i>`` gets its own network namespace (``<prefix>-h<i>``, address
198.51.100.<10+i>/24 on a bridge in ``<prefix>-fabric``), its own sanlock daemon
(own run dir, started inside the namespace) and its own ``zsd run`` (own root
``<state>/h<i>``, API on its unix socket and on ``<address>:7443`` with mutual
TLS). ``<state>/shared`` stands for shared storage.

The hosts form one real cluster, made the way an operator makes one: h1 runs
``zsd cluster init`` on the shared directory and its zsd starts (and leads);
then every other host runs ``zsd cluster join`` with the token init printed and
its zsd starts. Certificates are the cluster's own: each zsd uses the host
certificate its init/join wrote, and the operator's client certificate
(``<state>/client.pem``, for zsctl) comes from ``zsd cluster client-cert``.

Command line (``contrib/devcluster``, implemented in zsd.testing.devcli)::

    devcluster up N [--state-dir DIR] [--prefix P] [--set KEY=VALUE ...]
    devcluster status [--state-dir DIR]
    devcluster down [--state-dir DIR] [--prefix P]

Library: :class:`DevCluster` (``up``/``down``/``status``, and fault primitives:
kill/stop/continue/restart a zsd, cut/restore a host's link, lose a whole host,
run a command inside a host's namespace). Processes are addressed by pid plus
start time, namespaces by name; nothing is looked up globally.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from zsd.cluster.bootstrap import SharedLayout, load_cluster_info
from zsd.cluster.lease import LeaseConfig
from zsd.cluster.lease.daemon import SanlockDaemon
from zsd.cluster.lease.timing import LeaseTiming
from zsd.testing import netfabric
from zsd.testing.devhosts import (
    DHCP_BASE,
    MAX_HOSTS,
    PREFIX_RE,
    STATE_FILE,
    SUBNET,
    ClusterState,
    HostInfo,
    HostStatus,
    ZsdExtras,
    plan_host,
)
from zsd.testing.health import check_health
from zsd.testing.procs import NotifySocket, ProcRef, terminate, wait_gone

__all__ = ["DevCluster", "DevClusterError", "HostHook", "HostInfo", "HostStatus", "ZsdExtras"]

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("/var/lib/zsd-devcluster")
DEFAULT_PREFIX = "zsd-dc"
MARKER = ".zsd-devcluster"
ZSD_STOP_GRACE = 10.0
SANLOCK_STOP_GRACE = 2.0
IO_TIMEOUT = 1
"""sanlock io timeout of the dev cluster's lockspace: hosts join in seconds, and a lost
host is declared dead after 8 x 1 + 60 s (sanlock's bounds) rather than 140 s."""
_TOKEN_LINE = "join token: "
# What `up` owns in the state dir and may replace; anything else there is left alone.
_OWNED_FILES = {"shared", "ca.pem", "ca.key", "client.pem", "client.key", STATE_FILE}
_HOST_DIR_RE = re.compile(r"^h\d+$")

HostRef = str | HostInfo
HostHook = Callable[["DevCluster", HostInfo], ZsdExtras]
"""Called before every start of a host's zsd (also restarts), after its sanlock is up,
one host at a time in host order; may run commands in the host (``run_in``)."""


class DevClusterError(Exception):
    """The dev cluster could not do what was asked; the message says why."""


class DevCluster:
    def __init__(
        self,
        *,
        state_dir: Path = DEFAULT_STATE_DIR,
        prefix: str = DEFAULT_PREFIX,
        zsd_bin: Path | None = None,
        hook: HostHook | None = None,
        zsd_set: Sequence[str] = (),
        ready_timeout: float = 30.0,
        io_timeout: int = IO_TIMEOUT,
    ) -> None:
        if not PREFIX_RE.match(prefix):
            raise DevClusterError(
                f"prefix {prefix!r}: use a-z, 0-9 and '-', starting with a letter, ≤ 40 chars"
            )
        self._state = ClusterState(state_dir=state_dir.absolute(), prefix=prefix, phase="none", hosts=())
        # The venv's zsd next to the interpreter running us (contrib/devcluster uses .venv).
        self._zsd_bin = zsd_bin if zsd_bin is not None else Path(sys.executable).parent / "zsd"
        self._hook = hook
        self._zsd_set = tuple(zsd_set)
        self._ready_timeout = ready_timeout
        self._io_timeout = io_timeout
        # Only for processes this object started: Popen objects to reap, and the
        # launchers of sanlock daemons. A DevCluster attached to an existing state
        # file has neither and works by pid alone.
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._sanlocks: dict[str, SanlockDaemon] = {}

    @classmethod
    def attach(
        cls, state_dir: Path = DEFAULT_STATE_DIR, *, zsd_bin: Path | None = None, hook: HostHook | None = None
    ) -> DevCluster:
        """The cluster recorded in ``state_dir`` (e.g. started by another process)."""
        state = ClusterState.load(state_dir.absolute())
        if state is None:
            raise DevClusterError(f"no dev cluster in {state_dir} (no {STATE_FILE})")
        cluster = cls(state_dir=state_dir, prefix=state.prefix, zsd_bin=zsd_bin, hook=hook)
        cluster._state = dataclasses.replace(state, state_dir=state_dir.absolute())
        return cluster

    # --- description

    @property
    def state_dir(self) -> Path:
        return self._state.state_dir

    @property
    def prefix(self) -> str:
        return self._state.prefix

    @property
    def phase(self) -> str:
        return self._state.phase

    @property
    def hosts(self) -> tuple[HostInfo, ...]:
        return self._state.hosts

    @property
    def shared_dir(self) -> Path:
        return self._state.shared_dir

    @property
    def ca(self) -> Path:
        return self._state.ca

    @property
    def client_cert(self) -> Path:
        return self._state.client_cert

    @property
    def client_key(self) -> Path:
        return self._state.client_key

    @property
    def fabric_netns(self) -> str:
        return self._state.fabric_netns

    def client_tls_args(self) -> list[str]:
        """``zsctl`` flags for mutual TLS to any host's TCP endpoint."""
        return ["--ca", str(self.ca), "--cert", str(self.client_cert), "--key", str(self.client_key)]

    def describe(self) -> dict[str, Any]:
        """What ``up`` prints and writes to ``devcluster.json``."""
        return self._state.to_json()

    def host(self, host: HostRef) -> HostInfo:
        """The current description (pids change on restarts) of a host, by name or by an
        older description."""
        name = host if isinstance(host, str) else host.name
        for h in self._state.hosts:
            if h.name == name:
                return h
        raise DevClusterError(f"no host {name!r}; hosts: {', '.join(h.name for h in self.hosts) or 'none'}")

    def _update(self, name: str, **changes: Any) -> HostInfo:
        hosts = tuple(dataclasses.replace(h, **changes) if h.name == name else h for h in self.hosts)
        self._state = dataclasses.replace(self._state, hosts=hosts)
        self._state.save()
        return self.host(name)

    def _set_phase(self, phase: str) -> None:
        self._state = dataclasses.replace(self._state, phase=phase)
        self._state.save()

    # --- up

    def up(self, n: int) -> dict[str, Any]:
        """Starts ``n`` hosts as one cluster and waits until every zsd reported READY=1:
        h1 founds it (``zsd cluster init``) and starts, then the others join and start.
        On any failure everything started so far is stopped and removed, then
        DevClusterError is raised."""
        if not 1 <= n <= MAX_HOSTS:
            raise DevClusterError(f"the number of hosts must be between 1 and {MAX_HOSTS}, not {n}")
        if shutil.which("ip") is None:
            raise DevClusterError("the `ip` command is missing (package iproute2)")
        if not self._zsd_bin.exists():
            raise DevClusterError(f"{self._zsd_bin} does not exist: run contrib/setup.sh")
        hosts = tuple(
            plan_host(prefix=self.prefix, state_dir=self.state_dir, index=i) for i in range(1, n + 1)
        )
        self._check_state_dir()
        taken = [ns for ns in (self.fabric_netns, *(h.netns for h in hosts)) if netfabric.exists(ns)]
        if taken:
            # Not ours to remove from here: `down` with the same prefix cleans them.
            raise DevClusterError(
                f"network namespace(s) {', '.join(taken)} already exist (an earlier dev cluster?); "
                f"run `devcluster down --state-dir {self.state_dir} --prefix {self.prefix}`"
            )
        self._clear_state_dir()
        started = time.monotonic()
        self._state = dataclasses.replace(self._state, phase="starting", hosts=hosts)
        self._state.save()  # before creating anything: a `down` after a killed `up` finds every name
        try:
            self._build()
            founder, *others = self.hosts
            token = self._found(founder)
            self._start_zsds([founder])
            # The leader admits one join at a time anyway; each takes well under a second
            # once the founder announced itself (joins wait for that).
            for host in others:
                self._join(host, token)
            if others:
                self._start_zsds(others)
        except BaseException as e:
            log.warning("up failed (%s); removing what it started", type(e).__name__)
            try:
                self.down()
            except Exception as cleanup:
                log.warning("cleanup after the failed up was incomplete: %s", cleanup)
            if isinstance(e, DevClusterError):
                raise
            if isinstance(e, Exception):
                raise DevClusterError(f"up failed: {type(e).__name__}: {e}") from e
            raise
        self._set_phase("up")
        log.info("%d host(s) ready in %.1f s", n, time.monotonic() - started)
        return self.describe()

    def _check_state_dir(self) -> None:
        """Refuses a directory that is not ours, or that holds a cluster still up."""
        sd = self.state_dir
        sd.mkdir(parents=True, exist_ok=True)
        marker = sd / MARKER
        if not marker.exists():
            if any(sd.iterdir()):
                raise DevClusterError(
                    f"{sd} is not empty and holds no dev cluster ({MARKER} is missing); "
                    "choose another --state-dir"
                )
            marker.write_text("state of contrib/devcluster: `devcluster up` replaces what it made here\n")
        previous = ClusterState.load(sd)
        if previous is not None and previous.phase != "down":
            raise DevClusterError(
                f"{sd} holds a dev cluster that is {previous.phase}; "
                f"run `devcluster down --state-dir {sd}` first"
            )

    def _clear_state_dir(self) -> None:
        sd = self.state_dir
        # A cluster that was taken down: start afresh (its logs go with it).
        for child in sd.iterdir():
            if child.name in _OWNED_FILES or (_HOST_DIR_RE.match(child.name) and child.is_dir()):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()

    def _build(self) -> None:
        """Shared dir, network, sanlock daemons (the cluster and zsd come after)."""
        self._state.shared_dir.mkdir(mode=0o755)
        DHCP_BASE.mkdir(exist_ok=True)
        DHCP_BASE.chmod(0o755)
        netfabric.create_fabric(self.fabric_netns)
        for host in self.hosts:
            shutil.rmtree(host.dhcp_dir, ignore_errors=True)  # a killed run's
            netfabric.add_host(
                fabric=self.fabric_netns,
                host_ns=host.netns,
                port=host.port,
                address=host.address,
                prefixlen=SUBNET.prefixlen,
            )
            self._start_sanlock(host)
            pid = self.host(host).sanlock_pid
            log.info("%s: namespace %s, %s, sanlock pid %s", host.name, host.netns, host.address, pid)

    def _found(self, host: HostInfo) -> str:
        """``zsd cluster init`` on ``host``, and the operator's client certificate;
        returns the join token."""
        shared = self._state.shared_dir
        init = self._zsd_admin(
            host, ["cluster", "init", "--shared-dir", str(shared), "--io-timeout", str(self._io_timeout)]
        )
        tokens = [
            line.removeprefix(_TOKEN_LINE) for line in init.splitlines() if line.startswith(_TOKEN_LINE)
        ]
        if len(tokens) != 1:
            raise DevClusterError(f"{host.name}: `zsd cluster init` printed no join token:\n{init}")
        # Outside any namespace: it only reads the CA on shared storage.
        argv = [str(self._zsd_bin), "cluster", "client-cert", "--shared-dir", str(shared)]
        argv += ["--name", f"{self.prefix}-client", "--out", str(self.state_dir)]
        client = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if client.returncode != 0:
            raise DevClusterError(f"`zsd cluster client-cert` failed:\n{client.stderr}")
        log.info("%s: founded the cluster in %s", host.name, shared)
        return tokens[0]

    def _join(self, host: HostInfo, token: str) -> None:
        args = ["cluster", "join", "--shared-dir", str(self._state.shared_dir), "--token", token]
        args += ["--timeout", f"{self._ready_timeout:g}"]
        out = self._zsd_admin(host, args, timeout=self._ready_timeout + 30)
        log.info("%s: %s", host.name, out.splitlines()[0] if out else "joined")

    def _zsd_admin(self, host: HostInfo, args: list[str], *, timeout: float = 120.0) -> str:
        """Runs ``zsd <args>`` inside the host (its namespace, root, name, address and
        sanlock daemon) as an operator would; its output also goes to the host's log.
        Returns stdout; DevClusterError when it fails."""
        argv = ["ip", "netns", "exec", host.netns, str(self._zsd_bin), *args, "--root", str(host.root)]
        argv += ["--set", f"host.name={host.name}", "--set", f"host.address={host.address}"]
        host.root.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(
                argv,
                env=self._host_env(host),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise DevClusterError(f"{host.name}: `zsd {' '.join(args[:2])}` took over {timeout:g} s") from e
        with host.log_path.open("a") as log_file:
            log_file.write(f"--- devcluster: zsd {' '.join(args[:2])} at {time.ctime()} ---\n")
            log_file.write(done.stderr + done.stdout)
        if done.returncode != 0:
            raise DevClusterError(
                f"{host.name}: `zsd {' '.join(args[:2])}` exited with status {done.returncode}:\n"
                f"{done.stderr.strip()}"
            )
        return done.stdout

    def _start_sanlock(self, host: HostInfo) -> None:
        # Run sanlock inside the host's namespace (realism; it does not need the network):
        # SanlockDaemon runs `executable`, and `ip netns exec` execs, so the pid it
        # reports is sanlock's own.
        wrapper = host.root / "bin/sanlock-in-netns"
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        ip, sanlock = shutil.which("ip"), shutil.which("sanlock")
        if sanlock is None:
            raise DevClusterError("sanlock is not installed (package sanlock); run contrib/setup.sh")
        wrapper.write_text(f'#!/bin/sh\nexec {ip} netns exec {host.netns} {sanlock} "$@"\n')
        wrapper.chmod(0o755)
        daemon = SanlockDaemon(
            run_dir=host.sanlock_run_dir, shim_cache=self.state_dir / ".cache", executable=str(wrapper)
        )
        daemon.start()
        assert daemon.pid is not None
        self._sanlocks[host.name] = daemon
        self._update(host.name, sanlock=ProcRef.of(daemon.pid))

    def _zsd_argv(self, host: HostInfo, extras: ZsdExtras) -> list[str]:
        # No api.* settings: a member's zsd serves mutual TLS on <address>:7443
        # (host.endpoint_tcp) with the certificate its init/join wrote and the cluster
        # CA for clients. (Setting api.tcp_listen alone is refused without api.tls_*.)
        sets = [
            f"host.name={host.name}",
            f"host.address={host.address}",
            "hypervisor.kind=qemu",
            # Its DHCP services' namespaces are the cluster's: `down` removes them.
            f"network.dhcp_netns_prefix={self.prefix}-{host.name}-dhcp-",
            f"network.dhcp_state_dir={host.dhcp_dir}",
            *self._zsd_set,  # later --set wins: the caller's overrides
        ]
        argv = ["ip", "netns", "exec", host.netns, str(self._zsd_bin), "run", "--root", str(host.root)]
        for s in sets:
            argv += ["--set", s]
        return argv + list(extras.args)

    def _host_env(self, host: HostInfo) -> dict[str, str]:
        # Our own environment minus anything that would configure zsd or point it at
        # another supervisor or sanlock daemon; plus the host's sanlock daemon.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ZSD_", "NOTIFY_", "WATCHDOG_", "SANLOCK_", "LISTEN_"))
        }
        env.update(SanlockDaemon(run_dir=host.sanlock_run_dir).client_env)
        return env

    def _zsd_env(self, host: HostInfo, notify: Path, extras: ZsdExtras) -> dict[str, str]:
        env = self._host_env(host)
        env["NOTIFY_SOCKET"] = str(notify)
        env.update(extras.env)
        return env

    def _start_zsds(self, hosts: list[HostInfo], *, extra_wait: float = 0.0) -> None:
        """Starts zsd on ``hosts`` at once, then waits for READY=1 from each (up to the
        ready timeout plus ``extra_wait``)."""
        waiting: list[tuple[HostInfo, NotifySocket, subprocess.Popen[bytes]]] = []
        try:
            for host in hosts:
                extras = self._hook(self, host) if self._hook is not None else ZsdExtras()
                notify = NotifySocket(host.notify_path)
                host.root.mkdir(parents=True, exist_ok=True)
                with host.log_path.open("ab") as out:
                    out.write(f"--- devcluster: starting zsd at {time.ctime()} ---\n".encode())
                    out.flush()
                    proc = subprocess.Popen(
                        self._zsd_argv(host, extras),
                        env=self._zsd_env(host, notify.path, extras),
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        # Its own session: a Ctrl-C at the terminal is ours to handle, and
                        # zsd outlives a `devcluster up` that has exited.
                        start_new_session=True,
                    )
                self._children[proc.pid] = proc
                waiting.append((host, notify, proc))
                self._update(host.name, zsd=_ref_of(proc.pid))
            timeout = self._ready_timeout + extra_wait
            deadline = time.monotonic() + timeout
            failures = []
            for host, notify, proc in waiting:
                if not notify.wait_for("READY=1", deadline=deadline, alive=functools.partial(_running, proc)):
                    why = (
                        f"zsd exited with status {proc.returncode}"
                        if proc.poll() is not None
                        else f"no READY=1 within {timeout:g} s"
                    )
                    failures.append(
                        f"{host.name}: {why}; last lines of {host.log_path}:\n{_tail(host.log_path)}"
                    )
            if failures:
                raise DevClusterError("zsd did not become ready:\n" + "\n".join(failures))
        finally:
            for _, notify, _ in waiting:
                notify.close()

    # --- down

    def down(self) -> None:
        """Stops every zsd and sanlock daemon and removes the namespaces. Idempotent: it
        also cleans what a failed or killed ``up`` left, and is a no-op the second time."""
        if self.phase == "none":
            # Never up through this object: act on what the state dir records (the
            # same state dir and prefix mean the same cluster).
            recorded = ClusterState.load(self.state_dir)
            if recorded is not None:
                self._state = dataclasses.replace(recorded, state_dir=self.state_dir)
        errors: list[str] = []
        hosts = list(self.hosts)
        # zsd first: as sanlock's client it should release its leases before sanlock goes.
        terminate([h.zsd for h in hosts if h.zsd is not None], grace=ZSD_STOP_GRACE, reap=self._reap)
        # In parallel: each sanlock takes ~1 s to act on SIGTERM (it checks once a second).
        with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
            for host, error in zip(hosts, pool.map(self._stop_sanlock, hosts), strict=True):
                if error:
                    errors.append(f"{host.name}: stopping sanlock: {error}")
        namespaces = self._our_namespaces()
        # Whatever still runs inside our namespaces is ours too: processes a killed `up`
        # never recorded, or a shell someone opened with `ip netns exec`.
        stray = [ref for ns in namespaces for pid in netfabric.pids_in(ns) if (ref := _ref_of(pid))]
        # And what the hosts started in namespaces of their own (DHCP's dnsmasq): zsd
        # runs in a mount namespace of `ip netns exec`, so those namespaces are not
        # visible from here; their processes name the host's DHCP dir on their command line.
        stray += [ref for pid in host_processes(h.dhcp_dir for h in hosts) if (ref := _ref_of(pid))]
        terminate(stray, grace=SANLOCK_STOP_GRACE, reap=self._reap)
        for h in hosts:
            shutil.rmtree(h.dhcp_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            DHCP_BASE.rmdir()  # when no other dev cluster still uses it
        for ns in namespaces:
            try:
                netfabric.remove(ns)
            except OSError as e:
                errors.append(f"removing network namespace {ns}: {e}")
        if (self.state_dir / MARKER).exists():
            self._set_phase("down")
        if errors:
            raise DevClusterError("down was incomplete:\n" + "\n".join(errors))

    def _stop_sanlock(self, host: HostInfo) -> str:
        try:
            daemon = self._sanlocks.pop(host.name, None)
            if daemon is not None:
                daemon.stop(grace=SANLOCK_STOP_GRACE)
            elif host.sanlock is not None:
                # Started by another process: the launcher's stop, by pid.
                terminate([host.sanlock], grace=SANLOCK_STOP_GRACE)
                for leftover in (host.sanlock_run_dir / "sanlock.sock", host.sanlock_run_dir / "sanlock.pid"):
                    leftover.unlink(missing_ok=True)
        except Exception as e:
            return str(e) or type(e).__name__
        return ""

    def _our_namespaces(self) -> list[str]:
        """Host namespaces first, the fabric last; recorded names plus any name with our
        prefix (a host beyond the recorded N, from an earlier run)."""
        pattern = re.compile(rf"^{re.escape(self.prefix)}-h\d+$")
        hosts = {h.netns for h in self.hosts} | {ns for ns in netfabric.names() if pattern.match(ns)}
        # Namespaces the hosts made (their DHCP services) or tests added under the prefix.
        made = (
            {ns for ns in netfabric.names() if ns.startswith(f"{self.prefix}-")} - hosts - {self.fabric_netns}
        )
        return (
            sorted(made)
            + sorted(ns for ns in hosts if netfabric.exists(ns))
            + [ns for ns in (self.fabric_netns,) if netfabric.exists(ns)]
        )

    def _reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]

    # --- status

    def status(self) -> list[HostStatus]:
        self._reap()
        existing = set(netfabric.names())
        ports = netfabric.port_states(self.fabric_netns) if self.fabric_netns in existing else {}
        hosts = list(self.hosts)
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(hosts)))) as pool:
            health = list(pool.map(self._health, hosts))
        return [
            HostStatus(
                name=h.name,
                netns_exists=h.netns in existing,
                zsd_alive=h.zsd is not None and h.zsd.alive(),
                zsd_stopped=h.zsd is not None and h.zsd.stopped(),
                sanlock_alive=h.sanlock is not None and h.sanlock.alive(),
                link_up=ports.get(h.port) if ports else None,
                health=state,
            )
            for h, state in zip(hosts, health, strict=True)
        ]

    def _health(self, host: HostInfo) -> str:
        if host.zsd is None or not host.zsd.alive():
            return "NOT_RUNNING"
        return check_health(host.endpoint_unix)

    # --- fault primitives

    def kill_zsd(self, host: HostRef, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig`` to the host's zsd; after SIGKILL, returns once it is gone."""
        h = self.host(host)
        if h.zsd is None or not h.zsd.signal(sig):
            raise DevClusterError(f"{h.name}: zsd is not running")
        if sig == signal.SIGKILL:
            wait_gone([h.zsd], 5.0, reap=self._reap)

    def stop_zsd(self, host: HostRef) -> None:
        """SIGSTOP; returns once the process is really stopped (delivery is asynchronous)."""
        h = self.host(host)
        self.kill_zsd(h, signal.SIGSTOP)
        deadline = time.monotonic() + 2.0
        while h.zsd is not None and not h.zsd.stopped() and time.monotonic() < deadline:
            time.sleep(0.01)

    def cont_zsd(self, host: HostRef) -> None:
        self.kill_zsd(host, signal.SIGCONT)

    def restart_zsd(self, host: HostRef) -> HostInfo:
        """Stops the host's zsd (SIGTERM, SIGKILL after 10 s; also when stopped or dead)
        and starts it again; returns once it is ready, with the new pid."""
        return self._restart_zsd(self.host(host), extra_wait=0.0)

    def _restart_zsd(self, h: HostInfo, *, extra_wait: float) -> HostInfo:
        if h.zsd is not None:
            terminate([h.zsd], grace=ZSD_STOP_GRACE, reap=self._reap)
        self._start_zsds([h], extra_wait=extra_wait)
        return self.host(h)

    def cut_link(self, host: HostRef) -> None:
        """Partitions the host: its cable is pulled at the switch (see netfabric.set_port)."""
        netfabric.set_port(fabric=self.fabric_netns, port=self.host(host).port, up=False)

    def restore_link(self, host: HostRef) -> None:
        netfabric.set_port(fabric=self.fabric_netns, port=self.host(host).port, up=True)

    def kill_host(self, host: HostRef) -> None:
        """The whole host is lost: link cut first, so the kernel's FIN/RST for the dying
        processes' connections never reach a peer (a powered-off host sends nothing);
        then zsd and sanlock get SIGKILL."""
        h = self.host(host)
        self.cut_link(h)
        refs = [r for r in (h.zsd, h.sanlock) if r is not None]
        for ref in refs:
            ref.signal(signal.SIGKILL)
        wait_gone(refs, 5.0, reap=self._reap_all)

    def restart_host(self, host: HostRef) -> HostInfo:
        """Brings a host back after ``kill_host`` (or any fault): link up, sanlock
        started if it is not running, zsd restarted. After a lost sanlock this takes
        sanlock's host-dead time (see below)."""
        h = self.host(host)
        self.restore_link(h)
        if h.sanlock is None or not h.sanlock.alive():
            self._stop_sanlock(h)  # forget the dead one, remove its socket
            self._start_sanlock(h)
            # The lost host never released its host-id lease: sanlock lets the new
            # daemon take it only once it has expired (host_dead, ~70 s at io timeout
            # 1), and zsd is ready only after joining the lockspace.
            timing = self._lease_timing()
            return self._restart_zsd(self.host(h), extra_wait=timing.host_dead + timing.join_max)
        return self.restart_zsd(h)

    def _lease_timing(self) -> LeaseTiming:
        # From the cluster itself: a DevCluster attached from another process was not
        # told the io timeout.
        info = load_cluster_info(SharedLayout(root=self.shared_dir))
        return LeaseConfig(shared_dir=self.shared_dir, io_timeout=info.io_timeout).timing

    def _reap_all(self) -> None:
        self._reap()
        for daemon in self._sanlocks.values():
            daemon.running()  # polls, and so reaps, the launcher's child

    def run_in(
        self,
        host: HostRef,
        argv: Sequence[str],
        *,
        timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Runs ``argv`` inside the host's network namespace; never raises on a non-zero exit."""
        h = self.host(host)
        return subprocess.run(
            ["ip", "netns", "exec", h.netns, *argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **env} if env is not None else None,
            check=False,
        )

    # --- context manager: `with DevCluster(...) as c: c.up(3)` always ends with down()

    def __enter__(self) -> DevCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()


def host_processes(dhcp_dirs: Iterable[Path]) -> list[int]:
    """Pids of the dnsmasq processes (DHCP services) whose command line names one of
    the hosts' DHCP directories (``HostInfo.dhcp_dir``)."""
    needles = [str(d) + "/" for d in dhcp_dirs]
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "name"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if proc.info["name"] == "dnsmasq" and any(n in cmdline for n in needles):
            found.append(int(proc.info["pid"]))
    return found


def _ref_of(pid: int) -> ProcRef | None:
    try:
        return ProcRef.of(pid)
    except psutil.Error:
        return None


def _running(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


if __name__ == "__main__":
    # The command line lives in devcli (which imports this module under its real name).
    from zsd.testing.devcli import run

    run()

"""What a dev cluster is made of: frozen descriptions of its hosts, their status, and
the JSON form kept in ``<state>/devcluster.json`` (and printed by ``devcluster up``).

Everything a later process (``devcluster down``/``status``, a test) needs to find
the cluster's pieces is in that file: namespace names, pids with their start
times, paths. Nothing is looked up by process name or global scan.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zsd.testing.procs import ProcRef

API_PORT = 7443
# TEST-NET-2 (RFC 5737): never routed anywhere, so a leak could not reach a real machine.
SUBNET = ipaddress.ip_network("198.51.100.0/24")
FIRST_HOST_OFFSET = 10  # h1 is .11
MAX_HOSTS = 32
PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
STATE_FILE = "devcluster.json"

# Phases of the state file: "starting" while `up` runs (so a `down` after a killed
# `up` still knows every name), "up" once every host is ready, "down" afterwards.
PHASES = ("starting", "up", "down")


DHCP_BASE = Path("/run/zsd-devcluster")
"""Where the hosts' DHCP files live (world-enterable, volatile like the namespaces)."""


@dataclass(frozen=True, kw_only=True)
class HostInfo:
    name: str
    index: int
    netns: str
    address: str
    root: Path
    zsd: ProcRef | None = None
    sanlock: ProcRef | None = None

    @property
    def port(self) -> str:
        """The bridge-side veth in the fabric namespace (the host's "switch port")."""
        return self.name

    @property
    def socket_path(self) -> Path:
        return self.root / "run/zsd/zsd.sock"

    @property
    def endpoint_unix(self) -> str:
        return f"unix:{self.socket_path}"

    @property
    def endpoint_tcp(self) -> str:
        return f"{self.address}:{API_PORT}"

    @property
    def sanlock_run_dir(self) -> Path:
        return self.root / "run/sanlock"

    @property
    def dhcp_dir(self) -> Path:
        """The host's DHCP services' files. Not under the state dir: dnsmasq re-reads
        them as nobody, and a state dir under /root or pytest's temp dir (0700) would
        keep it out. Named by the host's namespace, unique per dev cluster."""
        return DHCP_BASE / self.netns

    @property
    def log_path(self) -> Path:
        return self.root / "zsd.log"

    @property
    def notify_path(self) -> Path:
        return self.root / "notify.sock"

    @property
    def zsd_pid(self) -> int | None:
        return self.zsd.pid if self.zsd is not None else None

    @property
    def sanlock_pid(self) -> int | None:
        return self.sanlock.pid if self.sanlock is not None else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "netns": self.netns,
            "address": self.address,
            "endpoint_unix": self.endpoint_unix,
            "endpoint_tcp": self.endpoint_tcp,
            "zsd_pid": self.zsd_pid,
            "sanlock_pid": self.sanlock_pid,
            "sanlock_run_dir": str(self.sanlock_run_dir),
            "root": str(self.root),
            "log": str(self.log_path),
            "zsd_started_at": self.zsd.started_at if self.zsd is not None else None,
            "sanlock_started_at": self.sanlock.started_at if self.sanlock is not None else None,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> HostInfo:
        def ref(kind: str) -> ProcRef | None:
            pid, started = doc.get(f"{kind}_pid"), doc.get(f"{kind}_started_at")
            return ProcRef(pid=int(pid), started_at=float(started)) if pid and started is not None else None

        name = str(doc["name"])
        return cls(
            name=name,
            index=int(name.removeprefix("h")),
            netns=str(doc["netns"]),
            address=str(doc["address"]),
            root=Path(doc["root"]),
            zsd=ref("zsd"),
            sanlock=ref("sanlock"),
        )


def host_netns(prefix: str, index: int) -> str:
    return f"{prefix}-h{index}"


def fabric_netns(prefix: str) -> str:
    return f"{prefix}-fabric"


def plan_host(*, prefix: str, state_dir: Path, index: int) -> HostInfo:
    name = f"h{index}"
    return HostInfo(
        name=name,
        index=index,
        netns=host_netns(prefix, index),
        address=str(SUBNET[FIRST_HOST_OFFSET + index]),
        root=state_dir / name,
    )


@dataclass(frozen=True, kw_only=True)
class HostStatus:
    name: str
    netns_exists: bool
    zsd_alive: bool
    zsd_stopped: bool  # held by SIGSTOP
    sanlock_alive: bool
    link_up: bool | None  # None: the fabric namespace is gone
    health: str  # SERVING, NOT_SERVING, NOT_RUNNING, or the gRPC error code

    @property
    def ok(self) -> bool:
        return (
            self.netns_exists
            and self.zsd_alive
            and not self.zsd_stopped
            and self.sanlock_alive
            and bool(self.link_up)
            and self.health == "SERVING"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "netns_exists": self.netns_exists,
            "zsd_alive": self.zsd_alive,
            "zsd_stopped": self.zsd_stopped,
            "sanlock_alive": self.sanlock_alive,
            "link_up": self.link_up,
            "health": self.health,
        }


@dataclass(frozen=True, kw_only=True)
class ZsdExtras:
    """What a per-host hook adds to one ``zsd run`` (the extension point for
    libvirtd per host, extra settings, ...)."""

    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ClusterState:
    state_dir: Path
    prefix: str
    phase: str
    hosts: tuple[HostInfo, ...]

    @property
    def shared_dir(self) -> Path:
        return self.state_dir / "shared"

    @property
    def ca(self) -> Path:
        return self.state_dir / "ca.pem"

    @property
    def client_cert(self) -> Path:
        return self.state_dir / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.state_dir / "client.key"

    @property
    def fabric_netns(self) -> str:
        return fabric_netns(self.prefix)

    def to_json(self) -> dict[str, Any]:
        return {
            "hosts": [h.to_json() for h in self.hosts],
            "shared_dir": str(self.shared_dir),
            "ca": str(self.ca),
            "client_cert": str(self.client_cert),
            "client_key": str(self.client_key),
            "state_dir": str(self.state_dir),
            "prefix": self.prefix,
            "fabric_netns": self.fabric_netns,
            "phase": self.phase,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ClusterState:
        return cls(
            state_dir=Path(doc["state_dir"]),
            prefix=str(doc["prefix"]),
            phase=str(doc["phase"]),
            hosts=tuple(HostInfo.from_json(h) for h in doc["hosts"]),
        )

    def save(self) -> None:
        """Atomically: a reader (or a `down` after a crash) sees the old or the new file."""
        path = self.state_dir / STATE_FILE
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path) -> ClusterState | None:
        try:
            text = (state_dir / STATE_FILE).read_text()
        except FileNotFoundError:
            return None
        return cls.from_json(json.loads(text))

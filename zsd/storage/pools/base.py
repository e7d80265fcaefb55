"""The pool driver interface: what every kind of pool must answer, and the spec
an operator gives when defining a pool."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from zsd.storage.model import Capabilities, PoolKind

DEFAULT_MAX_OVERCOMMIT = 20.0
"""Provisioned virtual size may reach this multiple of the physical size (Cinder's default)."""


@dataclass(frozen=True, kw_only=True)
class PoolSpec:
    name: str
    uid: str
    kind: PoolKind
    path: str = ""
    """local-dir and shared-fs: the directory (every host mounts a shared one at the same path)."""
    host: str = ""
    """local-dir: the host whose directory it is."""
    vg_name: str = ""
    """shared-block: the LVM volume group."""
    wwids: tuple[str, ...] = ()
    """shared-block: the LUNs, matched on every host by WWID (device names differ between hosts)."""
    max_overcommit: float = DEFAULT_MAX_OVERCOMMIT
    create_time: float = 0.0
    description: str = ""

    def encode(self) -> bytes:
        data = asdict(self)
        data["kind"] = self.kind.value
        data["wwids"] = list(self.wwids)
        return json.dumps(data, sort_keys=True, indent=1).encode()

    @staticmethod
    def decode(data: bytes) -> PoolSpec:
        raw = json.loads(data)
        raw["kind"] = PoolKind(raw["kind"])
        raw["wwids"] = tuple(raw["wwids"])
        return PoolSpec(**raw)


class PoolState(enum.Enum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    """Defined for another host (a local-dir pool elsewhere)."""
    ERROR = "error"


@dataclass(frozen=True, kw_only=True)
class PoolStatus:
    state: PoolState
    reason: str = ""
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class Physical:
    size: int
    used: int
    free: int


class PoolDriver(Protocol):
    """One pool as this host reaches it."""

    @property
    def spec(self) -> PoolSpec: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def create(self) -> None:
        """Prepares new storage for the pool (directory and marker, or PV/VG) once,
        when the pool is defined; refuses storage that holds another pool."""

    async def activate(self) -> None:
        """Checks the pool is usable from this host (raises with the reason if not)."""

    async def physical(self) -> Physical: ...

    @property
    def root(self) -> Path:
        """The directory holding the pool's files; raises Unsupported for block pools."""
        ...

"""VM leases: one sanlock resource lease per HA VM, in the cluster's lockspace, on the
shared storage every host reaches (``{shared_dir}/leases/vms/{uid}``).

zsd only writes the lease area (once, when the VM is created) and removes it when
the VM is deleted; libvirt's sanlock lock manager acquires it for QEMU before the
guest starts and sanlock keeps it while QEMU runs. A host whose host lease expires
has its lease holders killed, and a start elsewhere fails while the lease is held:
that is what keeps a VM from running on two hosts.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

import trio

from zsd.cluster.lease._sanlockapi import ALIGN, SanlockError
from zsd.errors import FailedPrecondition, Internal


class ResourceWriter(Protocol):
    def write_resource(self, *, lockspace: str, resource: str, path: str, max_hosts: int) -> None: ...


@dataclass(frozen=True, kw_only=True)
class VmLeases:
    lockspace: str
    directory: Path
    """``{shared_dir}/leases/vms``."""
    writer: ResourceWriter
    max_hosts: int

    def path(self, uid: str) -> Path:
        return self.directory / uid

    async def ensure(self, uid: str) -> Path:
        """The VM's lease area, written when it does not exist yet (an existing one is
        never rewritten: it may be held right now)."""
        path = self.path(uid)
        if path.exists():
            return path
        await trio.to_thread.run_sync(partial(self._write, uid, path))
        return path

    def _write(self, uid: str, path: Path) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial_path = path.with_name(f".{uid}.new")
        try:
            with partial_path.open("wb") as f:
                f.truncate(ALIGN)
            self.writer.write_resource(
                lockspace=self.lockspace, resource=uid, path=str(partial_path), max_hosts=self.max_hosts
            )
            # Renamed only once initialised: a half-written lease is never used.
            os.rename(partial_path, path)
        except SanlockError as e:
            raise FailedPrecondition(f"cannot write the VM lease for {uid}: {e}", reason="VM_LEASE") from e
        except OSError as e:
            raise Internal(f"cannot write the VM lease {path}: {e}") from e
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial_path.unlink()

    async def remove(self, uid: str) -> None:
        """After the VM is deleted (never while it may run anywhere)."""
        with contextlib.suppress(FileNotFoundError):
            await trio.to_thread.run_sync(self.path(uid).unlink)

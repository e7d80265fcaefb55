"""Every filesystem path zsd touches, derived from one root.

Production uses root "/". Tests and the dev cluster give each simulated host its
own root so many hosts share one machine without sharing state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class Paths:
    root: Path = Path("/")
    # The kernel's views are not zsd state: they stay at the real paths unless a
    # test points them at a fake tree.
    sysfs: Path = Path("/sys")
    procfs: Path = Path("/proc")

    def _at(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    @property
    def config_file(self) -> Path:
        return self._at("/etc/zsd/zsd.toml")

    @property
    def state_dir(self) -> Path:
        """Persistent per-host state (host identity, local caches)."""
        return self._at("/var/lib/zsd")

    @property
    def run_dir(self) -> Path:
        """Volatile runtime files; only root may enter it."""
        return self._at("/run/zsd")

    @property
    def api_socket(self) -> Path:
        return self.run_dir / "zsd.sock"

    @property
    def identity_file(self) -> Path:
        return self.state_dir / "host.json"

    @property
    def pool_registry(self) -> Path:
        """The storage pools this host has defined, one JSON file each."""
        return self.state_dir / "storage" / "pools"

    @property
    def default_pool_dir(self) -> Path:
        """The embedded default pool (local-dir) of a host that defines none."""
        return self.state_dir / "pools" / "default"

    @property
    def cluster_file(self) -> Path:
        return self.state_dir / "cluster.json"

    @property
    def console_dir(self) -> Path:
        """Each VM's serial console log (written by virtlogd, read by StreamConsole)."""
        return self._at("/var/log/zsd/console")

    @property
    def nvram_dir(self) -> Path:
        """UEFI variable stores of the VMs this host defined."""
        return self.state_dir / "nvram"

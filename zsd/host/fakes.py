"""Stand-ins for the host collector's blocking dependencies, for tests of code that
collects facts without real KVM or libvirtd. Each only hands back what it was given."""

from __future__ import annotations

from dataclasses import dataclass

from zsd.host.kvmprobe import KvmProbeResult
from zsd.host.libvirtinfo import LibvirtInfo


@dataclass(frozen=True, kw_only=True)
class StaticKvmProber:
    result: KvmProbeResult

    def probe(self) -> KvmProbeResult:
        return self.result


@dataclass(frozen=True, kw_only=True)
class StaticLibvirtInfo:
    info: LibvirtInfo

    def read(self) -> LibvirtInfo:
        return self.info

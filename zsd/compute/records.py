"""The cluster's VM records: one ``vm`` record per VM in cluster.db, written by the
leader, saying which host owns the VM and what placement needs to know about it
(its size, scheduling group, the pools its disks are on and the host PCI devices
it is given).

The VM's full spec lives with its domain on the owning host (in the domain's
<metadata>); the record is the cluster's authority on where the VM is, so two
hosts never both own one VM, every host can route a call for it, and the leader
can count capacity without asking any host.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from zsd.errors import Internal

KIND_VM = "vm"


@dataclass(frozen=True, kw_only=True)
class VmRecord:
    name: str
    uid: str
    host: str
    vcpus: int
    memory_mib: int
    group: str = ""
    pools: tuple[str, ...] = ()
    hostdevs: tuple[str, ...] = ()
    """The host PCI devices the VM is given (placement keeps each one VM's)."""
    nics: tuple[str, ...] = ()
    """The network's NICs (``nics/{nic}`` names without the prefix) the VM plugs into:
    a NIC is in use exactly while a VM record lists it."""
    ha: bool = False
    create_time: float = 0.0
    restart: str = ""
    """Set by the leader's HA restart: the VM's spec (JSON) as its dead host last
    reported it. The host the record now names defines the VM from it when it does
    not have the VM yet (and starts it when ``restart_running``)."""
    restart_running: bool = False
    restarted_from: str = ""
    restart_time: float = 0.0

    def encode(self) -> bytes:
        return json.dumps(
            {
                "name": self.name,
                "uid": self.uid,
                "host": self.host,
                "vcpus": self.vcpus,
                "memory_mib": self.memory_mib,
                "group": self.group,
                "pools": list(self.pools),
                "hostdevs": list(self.hostdevs),
                "nics": list(self.nics),
                "ha": self.ha,
                "create_time": self.create_time,
                "restart": self.restart,
                "restart_running": self.restart_running,
                "restarted_from": self.restarted_from,
                "restart_time": self.restart_time,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> VmRecord:
        try:
            doc = json.loads(data)
            return cls(
                name=str(doc["name"]),
                uid=str(doc["uid"]),
                host=str(doc["host"]),
                vcpus=int(doc["vcpus"]),
                memory_mib=int(doc["memory_mib"]),
                group=str(doc.get("group", "")),
                pools=tuple(str(p) for p in doc.get("pools", ())),
                hostdevs=tuple(str(a) for a in doc.get("hostdevs", ())),
                nics=tuple(str(n) for n in doc.get("nics", ())),
                ha=bool(doc.get("ha", False)),
                create_time=float(doc.get("create_time", 0.0)),
                restart=str(doc.get("restart", "")),
                restart_running=bool(doc.get("restart_running", False)),
                restarted_from=str(doc.get("restarted_from", "")),
                restart_time=float(doc.get("restart_time", 0.0)),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise Internal(f"damaged VM record in the cluster state: {e}") from e

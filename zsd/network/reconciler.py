"""Every member host converges its kernel to the cluster's switches: on each change of
its state copy, and every ``resync`` seconds (links changed behind zsd's back come
back). A zsd restart changes nothing that is already right, so VM taps stay on their
bridges."""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from zsd.cluster.control import ClusterControl
from zsd.cluster.store.cache import StateCache
from zsd.compute.records import KIND_VM, VmRecord
from zsd.network import records
from zsd.network.fabric import HostFabric, plan
from zsd.network.follow import follow_state
from zsd.network.links import Links
from zsd.network.nics import KIND_NIC
from zsd.network.nics import decode_all as decode_nics
from zsd.network.records import KIND_PORT_GROUP, KIND_SWITCH

log = logging.getLogger(__name__)


class FabricReconciler:
    def __init__(
        self,
        *,
        control: ClusterControl,
        host: str,
        address: str,
        links: Links,
        resync: float = 30.0,
        on_problems: Callable[[list[str]], None] = lambda _p: None,
    ) -> None:
        self._control = control
        self._host = host
        self._address = address
        self._links = links
        self._resync = resync
        self._on_problems = on_problems
        self.applied: HostFabric | None = None
        """The fabric of the last round (for the API and tests)."""
        self.problems: list[str] = []
        self._rounds = trio.Event()

    def desired(self) -> HostFabric:
        cache = self._control.replica.cache
        members = {v.entry.name: v.entry.address for v in self._control.host_views()}
        return plan(
            host=self._host,
            address=self._address,
            switches=records.switches(cache.list(KIND_SWITCH)),
            port_groups=records.port_groups(cache.list(KIND_PORT_GROUP)),
            members=members,
            nic_locations=_nic_locations(cache),
        )

    async def round(self) -> list[str]:
        fabric = self.desired()
        problems = await trio.to_thread.run_sync(self._links.apply, fabric)
        if problems != self.problems:
            for problem in problems:
                log.warning("network: %s", problem)
            self._on_problems(problems)
        self.applied, self.problems = fabric, problems
        self._rounds.set()
        self._rounds = trio.Event()
        return problems

    async def wait_round(self) -> None:
        await self._rounds.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await follow_state(self._control.replica, self._converged, resync=self._resync, failed=self._failed)

    async def _converged(self) -> bool:
        # Problems (an uplink not there yet) are retried sooner than a full resync.
        return not await self.round()

    def _failed(self, e: Exception) -> None:
        log.exception("network: converging the host's links failed", exc_info=e)
        self.problems = [f"converging the host's links failed: {e}"]


def _nic_locations(cache: StateCache) -> list[tuple[str, str, str]]:
    """(port group, MAC, host) of every NIC a VM record lists."""
    nics = {n.name: n for n in decode_nics(cache.list(KIND_NIC))}
    out = []
    for raw in cache.list(KIND_VM):
        vm = VmRecord.decode(raw.data)
        for name in vm.nics:
            nic = nics.get(name)
            if nic is not None:
                out.append((nic.port_group, nic.mac, vm.host))
    return out

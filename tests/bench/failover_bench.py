"""Leader failover on real sanlock: two hosts (a private sanlock daemon each, one
lockspace and one cluster.db on a shared directory), each running zsd's
Leadership in its own client process's name.

Measures, from the fault to the new leader's first acknowledged cluster.db write:
- leader *process* kill -9 (host alive: sanlock frees the lease with the connection),
  repeated ``--runs`` times;
- with ``--host-loss``, the leader host's *lease daemon* kill -9 (the host is gone
  for sanlock: the lease is only free after host_dead), once — it takes > 68 s.
Printed next to sanlock's own bounds for the io timeout used. Not a pytest test.

    .venv/bin/python -m tests.bench.failover_bench [--runs 5] [--io-timeout 1] [--host-loss]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import trio

from tests.sanlockd import SanlockHost, start_hosts
from zsd.cluster.leadership import Leadership, LeadershipState
from zsd.cluster.lease import LeaseConfig, SanlockAuthority
from zsd.cluster.store import ClusterDb, Guard, Put


def _open_or_create(path: Path, *, epoch: int, owner: str, guard: Guard) -> ClusterDb:
    if not path.exists():
        ClusterDb.create(path, epoch=epoch, owner=owner).close()
    return ClusterDb.open(path, epoch=epoch, owner=owner, guard=guard)


async def _leading(lead: Leadership, timeout: float) -> LeadershipState:
    with trio.fail_after(timeout):
        while not lead.state.leading:
            await lead.wait_changed()
    return lead.state


class Bench:
    def __init__(self, hosts: list[SanlockHost], config: LeaseConfig) -> None:
        self.hosts = hosts
        self.config = config
        self.db = config.shared_dir / "cluster.db"
        self.auths: list[SanlockAuthority] = []
        self.scopes: dict[int, trio.CancelScope] = {}

    def authority(self, index: int) -> SanlockAuthority:
        a = SanlockAuthority(config=self.config, api=self.hosts[index].proxy)
        self.auths.append(a)
        return a

    def start(self, nursery: trio.Nursery, authority: SanlockAuthority, index: int) -> Leadership:
        """Runs one host's Leadership; cancelling its scope is that zsd process dying."""
        lead = Leadership(
            authority=authority,
            db_path=self.db,
            owner=f"host-{index + 1}",
            open_db=_open_or_create,
            retry_interval=0.5,
        )
        scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                await lead.run()

        nursery.start_soon(run)
        self.scopes[index] = scope
        return lead

    async def failover(self, nursery: trio.Nursery, leads: list[Leadership], *, host_loss: bool) -> float:
        """Kills the current leader (process or lease daemon); returns seconds until the
        other host acknowledged a write."""
        leader = next(i for i, lead in enumerate(leads) if lead.state.leading)
        other = 1 - leader
        started = trio.current_time()
        self.scopes[leader].cancel()  # the leader's zsd process is gone either way
        if host_loss:
            assert self.hosts[leader].daemon.pid is not None
            self.hosts[leader].daemon.stop(grace=0)  # SIGKILL after no grace: the daemon dies
        else:
            self.hosts[leader].restart_process()
        state = await _leading(leads[other], timeout=self.config.timing.host_dead + 30)
        assert state.store is not None
        await state.store.commit([Put(kind="bench", name=f"after-{state.epoch}", data=b"x")])
        elapsed = trio.current_time() - started
        if not host_loss:
            # The killed leader's host is alive: its zsd restarts and campaigns again.
            fresh = self.authority(leader)
            await fresh.join(leader + 1)
            leads[leader] = self.start(nursery, fresh, leader)
        return elapsed


async def _run(ns: argparse.Namespace, base: Path) -> list[str]:
    config = LeaseConfig(shared_dir=base / "shared", io_timeout=ns.io_timeout)
    hosts = start_hosts(base / "hosts", count=2, shim_cache=base / "shim")
    try:
        bench = Bench(hosts, config)
        first = [bench.authority(i) for i in range(2)]
        await first[0].init_storage()
        async with trio.open_nursery() as joins:
            for i, a in enumerate(first):
                joins.start_soon(a.join, i + 1)
        results: list[float] = []
        host_loss: float | None = None
        async with trio.open_nursery() as nursery:
            leads = [bench.start(nursery, first[0], 0)]
            await _leading(leads[0], timeout=30)
            leads.append(bench.start(nursery, first[1], 1))
            for _ in range(ns.runs):
                results.append(await bench.failover(nursery, leads, host_loss=False))
                await trio.sleep(1)
            if ns.host_loss:
                host_loss = await bench.failover(nursery, leads, host_loss=True)
            nursery.cancel_scope.cancel()
        for a in bench.auths:
            await a.aclose()
    finally:
        for h in hosts:
            h.close()
    t = config.timing
    lines = [
        f"leader failover on real sanlock (io_timeout {ns.io_timeout} s); "
        "time from the fault to the new leader's first acknowledged write",
        "",
        f"{'fault':<34}{'runs':>5}{'p50 s':>9}{'max s':>9}   sanlock bound",
        "-" * 78,
        f"{'leader process kill -9':<34}{len(results):>5}{statistics.median(results):>9.2f}"
        f"{max(results):>9.2f}   lease freed at once (target <= 3 s)",
    ]
    if host_loss is not None:
        lines.append(
            f"{'leader host lost (lease daemon -9)':<34}{1:>5}{host_loss:>9.2f}{host_loss:>9.2f}"
            f"   host_dead {t.host_dead:.0f} s (target <= {t.host_dead + 5:.0f} s)"
        )
    lines += [
        "",
        f"sanlock bounds: renewal every {t.renewal_interval:.0f} s, FAIL after {t.renewal_fail:.0f} s, "
        f"DEAD after {t.host_dead:.0f} s (8 x io_timeout + {t.watchdog_fire_timeout:.0f} s watchdog), "
        f"join {t.join_min:.0f}-{t.join_max:.0f} s",
    ]
    return lines


async def _until_signalled(ns: argparse.Namespace, base: Path) -> list[str] | None:
    """Runs the benchmark; SIGTERM or SIGINT cancels it, so every daemon is stopped
    by the cleanup code (a plain SIGTERM would end Python without running it)."""
    result: list[list[str]] = []
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:

            async def cancel_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(cancel_on_signal)
            result.append(await _run(ns, base))
            nursery.cancel_scope.cancel()
    return result[0] if result else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--io-timeout", type=int, default=1)
    parser.add_argument("--host-loss", action="store_true", help="also lose a whole host (> 68 s)")
    ns = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="zsd-failover-") as tmp:
        lines = trio.run(_until_signalled, ns, Path(tmp))
    if lines is None:
        print("interrupted; every sanlock daemon was stopped", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Authority contract and failover on real sanlock daemons (two simulated hosts).

Each host has its own private daemon (own run dir) and its own client process;
the lockspace and leader lease are files in a temp dir. io_timeout 1 s, the
smallest sanlock accepts, keeps joins at ~3 s; failover after a daemon kill still
takes sanlock 3.8.5's host_dead = 8 * io_timeout + 60 s (watchdog constant).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from tests.sanlockd import SanlockHost, start_hosts
from tests.unit.lease.contract import AuthorityContract
from zsd.cluster.lease import LeaseConfig, SanlockAuthority
from zsd.cluster.lease.daemon import SanlockDaemon

IO_TIMEOUT = 1


def _missing() -> str:
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("sanlock") is None:
        return "needs the sanlock package"
    if importlib.util.find_spec("sanlock") is None:
        return "needs python3-sanlock"
    if shutil.which("cc") is None:
        return "needs gcc and libc6-dev (setrlimit shim)"
    return ""


pytestmark = [pytest.mark.integration, pytest.mark.skipif(bool(_missing()), reason=_missing())]


@dataclass
class Pair:
    """Two hosts with lease storage initialised and both joined (by their daemons)."""

    hosts: list[SanlockHost]
    config: LeaseConfig
    reports: list[str] = field(default_factory=list)


async def _init_and_join(pair: Pair) -> None:
    first = [SanlockAuthority(config=pair.config, api=h.proxy) for h in pair.hosts]
    await first[0].init_storage()
    durations: dict[int, float] = {}

    async def join(index: int) -> None:
        started = first[index].now()
        await first[index].join(index + 1)
        durations[index + 1] = first[index].now() - started

    async with trio.open_nursery() as nursery:
        for i in range(len(first)):
            nursery.start_soon(join, i)
    for authority in first:
        await authority.aclose()
    pair.reports.append(
        "join (add_lockspace, io_timeout 1): "
        + ", ".join(f"host {h} {s:.2f} s" for h, s in sorted(durations.items()))
    )


@pytest.fixture(scope="module")
def shim_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("shim")


def _pair(base: Path, shim_cache: Path) -> Iterator[Pair]:
    hosts = start_hosts(base, count=2, shim_cache=shim_cache)
    try:
        pair = Pair(hosts=hosts, config=LeaseConfig(shared_dir=base / "shared", io_timeout=IO_TIMEOUT))
        trio.run(_init_and_join, pair)
        yield pair
        print("\n" + "\n".join(pair.reports))
    finally:
        for host in hosts:
            host.close()
        assert not any(h.daemon.running() for h in hosts)


@pytest.fixture(scope="module")
def shared_pair(tmp_path_factory: pytest.TempPathFactory, shim_cache: Path) -> Iterator[Pair]:
    yield from _pair(tmp_path_factory.mktemp("pair"), shim_cache)


@pytest.fixture
def crash_pair(tmp_path: Path, shim_cache: Path) -> Iterator[Pair]:
    yield from _pair(tmp_path, shim_cache)


class RealCluster:
    def __init__(self, pair: Pair) -> None:
        self._pair = pair
        self.config = pair.config
        self.timing = pair.config.timing
        # sanlock works in whole seconds and sleeps a second between checks; our
        # polls add a quarter second.
        self.slack = 3.0
        self._current = [self.unjoined(i) for i in range(len(pair.hosts))]
        self._all = list(self._current)

    def authority(self, index: int) -> SanlockAuthority:
        return self._current[index]

    def unjoined(self, index: int) -> SanlockAuthority:
        authority = SanlockAuthority(config=self.config, api=self._pair.hosts[index].proxy)
        if hasattr(self, "_all"):
            self._all.append(authority)
        return authority

    async def join_all(self) -> None:
        for i, authority in enumerate(self._current):
            await authority.join(i + 1)

    async def kill_process(self, index: int) -> None:
        self._pair.hosts[index].restart_process()
        fresh = self.unjoined(index)
        await fresh.join(index + 1)
        self._current[index] = fresh

    async def crash_daemon(self, index: int) -> None:
        self._pair.hosts[index].daemon.kill()

    def report(self, line: str) -> None:
        self._pair.reports.append(line)

    async def close(self) -> None:
        for authority in self._all:
            await authority.aclose()


async def _cluster(pair: Pair) -> AsyncIterator[RealCluster]:
    cluster = RealCluster(pair)
    try:
        await cluster.join_all()  # the daemons are joined already: this adopts
        yield cluster
    finally:
        await cluster.close()


@pytest.fixture
async def cluster(shared_pair: Pair) -> AsyncIterator[RealCluster]:
    async for c in _cluster(shared_pair):
        yield c


@pytest.fixture
async def crash_cluster(crash_pair: Pair) -> AsyncIterator[RealCluster]:
    async for c in _cluster(crash_pair):
        yield c


@pytest.fixture
def clock() -> None:
    return None  # real time


class TestSanlockAuthorityContract(AuthorityContract):
    pass


def _group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def _wait_group_gone(pgid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        assert time.monotonic() < deadline, f"left behind: {_group_alive(pgid)}"
        time.sleep(0.05)


def test_daemon_stop_leaves_nothing_behind(tmp_path: Path, shim_cache: Path) -> None:
    daemon = SanlockDaemon(run_dir=tmp_path / "run", shim_cache=shim_cache)
    with daemon:
        pid = daemon.pid
        assert pid is not None and daemon.running()
        assert len(_group_alive(pid)) == 2  # the daemon and its helper
        assert daemon.client_env == {"SANLOCK_RUN_DIR": str(tmp_path / "run")}
    assert not daemon.running()
    _wait_group_gone(pid)
    assert not daemon.socket_path.exists()
    assert "sanlock daemon started" in daemon.log_path.read_text()


def test_killed_daemon_takes_its_helper_along(tmp_path: Path, shim_cache: Path) -> None:
    daemon = SanlockDaemon(run_dir=tmp_path / "run", shim_cache=shim_cache)
    daemon.start()
    try:
        pid = daemon.pid
        assert pid is not None
        daemon.kill()
        assert not daemon.running()
        _wait_group_gone(pid)
        daemon.start()  # restarts over the stale socket
        assert daemon.running()
    finally:
        daemon.stop(grace=0.5)

"""SanlockAuthority's own decisions, on a scripted SanlockApi (no daemon).

The real behaviour is covered by the contract in tests/integration/test_sanlock.py;
these are the branches real daemons reach only rarely.
"""

from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest

from zsd.cluster.lease import Authority, HostStatus, LeaseConfig, SanlockAuthority
from zsd.cluster.lease._sanlockapi import HostRecord, SanlockApi, SanlockError
from zsd.cluster.lease.fake import FakeAuthority
from zsd.errors import FailedPrecondition, Unavailable


def _host(
    host_id: int, *, generation: int = 1, timestamp: int = 0, status: HostStatus = HostStatus.LIVE
) -> HostRecord:
    return HostRecord(
        host_id=host_id, generation=generation, timestamp=timestamp, io_timeout=1, status=status
    )


class ScriptedApi:
    """Just enough of a sanlock daemon, with knobs for failures."""

    def __init__(self) -> None:
        self.joined: int | None = None
        self.down = False
        self.hosts: dict[int, HostRecord] = {}
        self.owners: list[HostRecord] = []
        self.acquire_error: SanlockError | None = None
        self.acquires = 0
        self.version = 0
        self.held: int | None = None

    def _up(self) -> None:
        if self.down:
            raise SanlockError(errno.ECONNREFUSED, "Connection refused")

    def write_lockspace(self, *, lockspace: str, path: str, max_hosts: int, io_timeout: int) -> None: ...
    def read_lockspace(self, *, path: str) -> str:
        return "zsd"

    def write_resource(self, *, lockspace: str, resource: str, path: str, max_hosts: int) -> None: ...
    def read_resource_version(self, *, path: str) -> int:
        return self.version

    def read_resource_owners(self, *, lockspace: str, resource: str, path: str) -> list[HostRecord]:
        return list(self.owners)

    def add_lockspace(self, *, lockspace: str, host_id: int, path: str, io_timeout: int) -> None:
        self._up()
        if self.joined is not None:
            raise SanlockError(errno.EEXIST, "File exists")
        self.joined = host_id

    def inq_lockspace(self, *, lockspace: str, host_id: int, path: str, wait: bool = False) -> bool | None:
        return self.joined == host_id

    def rem_lockspace(self, *, lockspace: str, host_id: int, path: str) -> None:
        self.joined = None

    def get_hosts(self, *, lockspace: str, host_id: int = 0) -> list[HostRecord]:
        self._up()
        return [h for h in self.hosts.values() if host_id in (0, h.host_id)]

    def register(self) -> int:
        return 7

    def unregister(self, *, fd: int) -> None:
        self.held = None

    def acquire(self, *, lockspace: str, resource: str, path: str, fd: int) -> None:
        self._up()
        self.acquires += 1
        if self.acquire_error is not None:
            raise self.acquire_error
        self.version += 1
        self.held = self.version

    def release(self, *, lockspace: str, resource: str, path: str, fd: int) -> None:
        if self.held is None:
            raise SanlockError(errno.EPERM, "Operation not permitted")
        self.held = None

    def held_version(self, *, lockspace: str, resource: str, fd: int) -> int | None:
        self._up()
        return self.held


@pytest.fixture
def api() -> ScriptedApi:
    return ScriptedApi()


@pytest.fixture
async def authority(api: ScriptedApi) -> SanlockAuthority:
    now = int(time.monotonic())
    api.hosts = {1: _host(1, timestamp=now), 2: _host(2, timestamp=now)}
    a = SanlockAuthority(config=LeaseConfig(shared_dir=Path("/unused"), io_timeout=1), api=api)
    await a.join(1)
    return a


async def test_daemon_down_makes_renewal_unhealthy_and_keeps_the_deadline(
    authority: SanlockAuthority, api: ScriptedApi
) -> None:
    before = await authority.renewal()
    assert before.healthy
    api.down = True
    after = await authority.renewal()
    assert (after.healthy, after.reason) == (False, "LEASE_DAEMON_UNAVAILABLE")
    assert after.valid_until == before.valid_until


async def test_a_new_generation_of_our_host_id_is_not_our_renewal(
    authority: SanlockAuthority, api: ScriptedApi
) -> None:
    before = await authority.renewal()
    api.hosts[1] = _host(1, generation=2, timestamp=int(time.monotonic()) + 5)
    after = await authority.renewal()
    assert (after.healthy, after.reason, after.valid_until) == (
        False,
        "HOST_LEASE_REPLACED",
        before.valid_until,
    )


async def test_no_acquire_while_the_owner_is_failing(authority: SanlockAuthority, api: ScriptedApi) -> None:
    api.owners = [_host(2)]
    for status in (HostStatus.LIVE, HostStatus.FAIL, HostStatus.UNKNOWN):
        api.hosts[2] = _host(2, status=status)
        assert await authority.acquire_leader() is None
    assert api.acquires == 0  # sanlock would block until the owner is dead
    api.hosts[2] = _host(2, status=HostStatus.DEAD)
    assert await authority.acquire_leader() == 1


async def test_owner_rejoined_since_means_the_lease_is_stale(
    authority: SanlockAuthority, api: ScriptedApi
) -> None:
    api.owners = [_host(2, generation=1)]
    api.hosts[2] = _host(2, generation=2, status=HostStatus.LIVE)
    assert await authority.acquire_leader() == 1


async def test_acquire_outcomes(authority: SanlockAuthority, api: ScriptedApi) -> None:
    api.acquire_error = SanlockError(243, "Lease is held by another host")
    assert await authority.acquire_leader() is None
    api.acquire_error = SanlockError(221, "leader write failed")
    with pytest.raises(Unavailable) as info:
        await authority.acquire_leader()
    assert info.value.reason == "LEASE_IO_ERROR"
    api.acquire_error = None
    assert await authority.acquire_leader() == 1
    assert await authority.acquire_leader() == 1  # held: no new acquisition
    assert api.acquires == 3


async def test_lease_dropped_by_sanlock_is_noticed(authority: SanlockAuthority, api: ScriptedApi) -> None:
    assert await authority.acquire_leader() == 1
    api.held = None  # e.g. sanlock's recovery took it
    assert await authority.acquire_leader() == 2
    api.held = None
    await authority.release_leader()  # EPERM from sanlock: already not held
    assert await authority.acquire_leader() == 3


async def test_adopting_a_membership_under_another_host_id_is_refused(api: ScriptedApi) -> None:
    api.joined = 2
    a = SanlockAuthority(config=LeaseConfig(shared_dir=Path("/unused"), io_timeout=1), api=api)
    with pytest.raises(FailedPrecondition) as info:
        await a.join(1)
    assert info.value.reason == "LOCKSPACE_JOINED_AS_OTHER_HOST"
    assert a.host_id is None


def _implements_protocols(
    real: SanlockAuthority, fake: FakeAuthority, scripted: ScriptedApi
) -> tuple[list[Authority], SanlockApi]:
    return [real, fake], scripted  # checked by mypy: they satisfy the protocols

"""Leadership on two real sanlock hosts sharing one lockspace and one cluster.db:
the leader's zsd process dies (kill -9), the other host takes over with the next
epoch, the old leader's store writes nothing more, and the history stays whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.sanlockd import SanlockHost, start_hosts
from zsd.cluster.leadership import Leadership, LeadershipState
from zsd.cluster.lease import LeaseConfig, SanlockAuthority
from zsd.cluster.store import ClusterDb, Put, verify
from zsd.errors import ZsdError

pytestmark = pytest.mark.integration


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[list[SanlockHost]]:
    started = start_hosts(tmp_path / "hosts", count=2, shim_cache=tmp_path / "shim")
    try:
        yield started
    finally:
        for host in started:
            host.close()


def open_or_create(path: Path, *, epoch: int, owner: str, guard: object) -> ClusterDb:
    # As after `zsd cluster init`: the first leader creates the database.
    if not path.exists():
        ClusterDb.create(path, epoch=epoch, owner=owner).close()
    return ClusterDb.open(path, epoch=epoch, owner=owner, guard=guard)  # type: ignore[arg-type]


async def wait_leading(lead: Leadership, timeout: float) -> LeadershipState:
    with trio.fail_after(timeout):
        while not lead.state.leading:
            await lead.wait_changed()
    return lead.state


async def test_process_kill_hands_leadership_to_the_other_host(
    hosts: list[SanlockHost], tmp_path: Path
) -> None:
    config = LeaseConfig(shared_dir=tmp_path / "shared", io_timeout=1)
    auths = [SanlockAuthority(config=config, api=h.proxy) for h in hosts]
    await auths[0].init_storage()
    async with trio.open_nursery() as joins:
        for i, a in enumerate(auths):
            joins.start_soon(a.join, i + 1)
    db_path = tmp_path / "shared" / "cluster.db"
    leads = [
        Leadership(
            authority=a, db_path=db_path, owner=f"host-{i + 1}", open_db=open_or_create, retry_interval=0.5
        )
        for i, a in enumerate(auths)
    ]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(leads[0].run)
        first = await wait_leading(leads[0], timeout=30)
        nursery.start_soon(leads[1].run)
        assert first.store is not None
        for i in range(10):
            await first.store.commit([Put(kind="k", name=f"a{i}", data=b"1")])
        await trio.sleep(1)
        assert not leads[1].state.leading and leads[1].state.leader_host_id == 1

        killed_at = trio.current_time()
        hosts[0].restart_process()  # kill -9 of h1's zsd: sanlock drops its leases with the connection
        second = await wait_leading(leads[1], timeout=15)
        takeover = trio.current_time() - killed_at
        assert second.epoch == first.epoch + 1
        assert second.store is not None
        await second.store.commit([Put(kind="k", name="b", data=b"2")])
        with pytest.raises(ZsdError):
            await first.store.commit([Put(kind="k", name="late", data=b"3")])
        nursery.cancel_scope.cancel()
    for a in auths:
        await a.aclose()
    print(f"\nleader process kill -> other host leading: {takeover:.2f} s (io_timeout 1)")
    assert verify(db_path) == ()
    check = ClusterDb.open(db_path, epoch=second.epoch + 1, owner="check")
    try:
        owners = [(e.epoch, e.owner) for e in check.epochs()]
        assert owners == [(first.epoch, "host-1"), (second.epoch, "host-2"), (second.epoch + 1, "check")]
        assert len(check.list("k")) == 11
    finally:
        check.close()

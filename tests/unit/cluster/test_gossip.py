"""The daemon's gossip subsystem on real sockets: three members on 127.0.0.1, real time."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
import trio

from zsd.cluster.gossip import Gossip, GossipView
from zsd.cluster.swim.config import SwimConfig
from zsd.cluster.swim.member import Address, HostMeta, MemberState
from zsd.errors import InvalidArgument, Unavailable

# Fast enough for a unit test, slow enough for a busy 2-core machine. A suspicion
# lasts >= 0.5 s, so every observer sees SUSPECT well before anyone declares DEAD.
FAST = replace(
    SwimConfig.local(),
    probe_interval=0.1,
    probe_timeout=0.05,
    gossip_interval=0.05,
    push_pull_interval=2.0,
    reconnect_interval=0.3,
    suspicion_mult=5,
)
NAMES = ("host1", "host2", "host3")


def _gossip(index: int, seeds: Callable[[], Sequence[Address]], *, leave_timeout: float = 1.0) -> Gossip:
    return Gossip(
        name=f"host{index}",
        bind_host="127.0.0.1",
        port=0,
        meta=HostMeta(host_id=index, version="test"),
        seeds=seeds,
        swim_config=FAST,
        rejoin_interval=0.1,
        leave_timeout=leave_timeout,
        rng=random.Random(index),
    )


async def _until(gossip: Gossip, condition: Callable[[GossipView], bool], timeout: float = 5) -> GossipView:
    view = gossip.view()
    with trio.fail_after(timeout):
        while not condition(view):
            view = await gossip.wait_changed(view)
    return view


def _state(name: str, state: MemberState) -> Callable[[GossipView], bool]:
    def condition(view: GossipView) -> bool:
        member = view.members.get(name)
        return member is not None and member.state == state

    return condition


def _all_alive(view: GossipView) -> bool:
    return set(view.states().items()) == {(name, "alive") for name in NAMES}


async def _run_in(
    scope: trio.CancelScope, gossip: Gossip, done: trio.Event, *, task_status: trio.TaskStatus[None]
) -> None:
    try:
        with scope:
            await gossip.run(task_status=task_status)
    finally:
        done.set()


async def test_members_find_each_other_from_seeds_that_arrive_late(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="zsd.cluster.gossip")
    # What the cluster state names, per member; host1 founded the cluster and has none.
    given: dict[str, list[Address]] = {"host1": [], "host2": [], "host3": []}

    def not_ready() -> Sequence[Address]:
        if not given["host3"]:
            raise Unavailable("cluster state not loaded yet")
        return given["host3"]

    members = [_gossip(1, lambda: given["host1"]), _gossip(2, lambda: given["host2"]), _gossip(3, not_ready)]
    async with trio.open_nursery() as nursery:
        for member in members:
            await nursery.start(member.run)
        bound = [member.address for member in members]
        assert len({a.port for a in bound}) == 3 and all(a.port > 0 for a in bound)
        await trio.sleep(0.4)  # several rejoin rounds with no seeds (or failing ones): still alone
        for member in members:
            assert member.view().states() == {member.name: "alive"}
        failing = [r for r in caplog.records if "no gossip seeds" in r.getMessage()]
        assert len(failing) == 1  # once per streak, not once per round

        # One at a time: a member restarting its node while a peer streams to it
        # resets that connection, which UdpNode does not survive yet.
        given["host2"].extend(bound[:2])  # its own address among them, as in the cluster state
        await _until(members[1], lambda v: v.states().get("host1") == "alive")
        given["host3"].extend(bound)
        for member in members:
            view = await _until(member, _all_alive)
            assert {name: m.meta.host_id for name, m in view.members.items()} == {
                "host1": 1,
                "host2": 2,
                "host3": 3,
            }
            assert view.local == member.name
        # Joining restarted host2's and host3's nodes once each, on the addresses peers know.
        joins = [r.getMessage() for r in caplog.records if "joining" in r.getMessage()]
        assert joins == [
            f"gossip member host2 knows no live member; joining {bound[0]}",
            f"gossip member host3 knows no live member; joining {bound[0]}, {bound[1]}",
        ]
        assert [member.address for member in members] == bound
        assert members[0].view().members["host3"].address == bound[2]

        # New metadata (a believed leader) reaches the others with a higher incarnation.
        before = members[1].view().members["host1"].incarnation
        members[0].update_meta(HostMeta(host_id=1, version="test", leader="host1", leader_epoch=7))
        for observer in members[1:]:
            view = await _until(observer, lambda v: v.members["host1"].meta.leader == "host1")
            assert view.members["host1"].meta.leader_epoch == 7
            assert view.members["host1"].incarnation > before
        nursery.cancel_scope.cancel()


async def _three(
    nursery: trio.Nursery, third_scope: trio.CancelScope, third_done: trio.Event, *, third_leaves: bool
) -> list[Gossip]:
    """Three converged members; the third runs in ``third_scope`` and sets ``third_done`` on return."""
    first = _gossip(1, list)
    await nursery.start(first.run)
    others = [_gossip(2, lambda: [first.address]), _gossip(3, lambda: [first.address], leave_timeout=1.0)]
    if not third_leaves:
        others[1] = _gossip(3, lambda: [first.address], leave_timeout=0)
    await nursery.start(others[0].run)
    await nursery.start(_run_in, third_scope, others[1], third_done)
    members = [first, *others]
    for member in members:
        await _until(member, _all_alive)
    return members


async def test_a_stopped_member_is_seen_left() -> None:
    scope, done = trio.CancelScope(), trio.Event()
    async with trio.open_nursery() as nursery:
        first, second, _third = await _three(nursery, scope, done, third_leaves=True)
        stopped_at = trio.current_time()
        scope.cancel()
        await done.wait()
        # Shielded from the cancellation, but bounded: shutdown is not held up by it.
        assert trio.current_time() - stopped_at < 1.0
        for observer in (first, second):
            await _until(observer, _state("host3", MemberState.LEFT), timeout=3)
        for observer in (first, second):
            assert observer.view().states() == {"host1": "alive", "host2": "alive", "host3": "left"}
        nursery.cancel_scope.cancel()


async def test_a_member_gone_without_leaving_is_suspected_then_dead() -> None:
    seen: dict[str, list[MemberState]] = {"host1": [], "host2": []}

    async def record_until_dead(observer: Gossip) -> None:
        view = observer.view()
        states = seen[observer.name]
        while not states or states[-1] != MemberState.DEAD:
            member = view.members.get("host3")
            if member is not None and (not states or states[-1] != member.state):
                states.append(member.state)
            else:
                view = await observer.wait_changed(view)

    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        first, second, _third = await _three(nursery, scope, trio.Event(), third_leaves=False)
        scope.cancel()  # leave_timeout=0: no goodbye, as after a crash
        with trio.fail_after(5):
            async with trio.open_nursery() as recorders:
                for observer in (first, second):
                    recorders.start_soon(record_until_dead, observer)
        assert seen == {
            "host1": [MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD],
            "host2": [MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD],
        }
        nursery.cancel_scope.cancel()


async def test_view_is_an_immutable_snapshot() -> None:
    async with trio.open_nursery() as nursery:
        member = _gossip(1, list)
        assert member.view().members == {}  # nothing before it runs
        await nursery.start(member.run)
        view = member.view()
        assert view.states() == {"host1": "alive"}
        with pytest.raises(TypeError):
            view.members["host9"] = view.members["host1"]  # type: ignore[index]
        member.update_meta(HostMeta(host_id=1, leader="host1"))
        newer = await _until(member, lambda v: v.members["host1"].meta.leader == "host1", timeout=2)
        assert newer is not view
        assert view.members["host1"].meta.leader == ""  # the old snapshot never changes
        nursery.cancel_scope.cancel()


async def test_a_taken_port_fails_the_start() -> None:
    async with trio.open_nursery() as nursery:
        first = _gossip(1, list)
        await nursery.start(first.run)
        second = Gossip(
            name="host2", bind_host="127.0.0.1", port=first.address.port, meta=HostMeta(), seeds=list
        )
        with pytest.RaisesGroup(pytest.RaisesExc(Unavailable, check=lambda e: e.reason == "SWIM_BIND")):
            await nursery.start(second.run)
        assert first.view().states() == {"host1": "alive"}
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bind_host": "0.0.0.0"}, "bind_host"),
        ({"bind_host": "::"}, "bind_host"),
        ({"bind_host": "host1.example"}, "bind_host"),
        ({"port": 70000}, "port"),
        ({"rejoin_interval": 0}, "rejoin_interval"),
        ({"leave_timeout": 5.0}, "leave_timeout"),
    ],
)
def test_refuses_bad_settings(kwargs: dict[str, object], field: str) -> None:
    settings: dict[str, object] = {
        "name": "host1",
        "bind_host": "127.0.0.1",
        "port": 7946,
        "meta": HostMeta(),
        "seeds": list,
    }
    with pytest.raises(InvalidArgument) as info:
        Gossip(**(settings | kwargs))  # type: ignore[arg-type]
    assert info.value.field == field

"""Three real members on loopback (127.0.0.x): UDP packets, TCP streams, real time."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import trio

from zsd.cluster.swim.config import SwimConfig
from zsd.cluster.swim.member import Address, HostMeta, MemberState
from zsd.cluster.swim.udp import UdpNode

# Fast enough for a unit test, slow enough for a busy 2-core machine.
FAST = replace(
    SwimConfig.local(),
    probe_interval=0.1,
    probe_timeout=0.05,
    gossip_interval=0.05,
    push_pull_interval=2.0,
    reconnect_interval=0.5,
)


def _node(index: int, port: int, seeds: list[Address]) -> UdpNode:
    return UdpNode(
        config=FAST,
        name=f"host{index}",
        meta=HostMeta(host_id=index, version="test"),
        bind=Address(f"127.0.0.{10 + index}", port),
        seeds=seeds,
        rng=random.Random(index),
    )


async def _wait_for(condition: Callable[[], bool], timeout: float) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.02)


def _state(observer: UdpNode, name: str) -> MemberState | None:
    member = observer.node.member(name)
    return None if member is None else member.state


async def test_three_nodes_detect_a_killed_node_and_see_it_rejoin() -> None:
    async with trio.open_nursery() as nursery:
        a = _node(1, 0, [])
        await nursery.start(a.run)
        b = _node(2, 0, [a.address])
        await nursery.start(b.run)
        c_scope = trio.CancelScope()
        c = _node(3, 0, [a.address])

        async def run_c(
            node: UdpNode, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            with c_scope:
                await node.run(task_status=task_status)

        await nursery.start(run_c, c)
        nodes = (a, b, c)
        await _wait_for(lambda: all(n.node.live_count == 3 for n in nodes), timeout=5)
        assert {m.meta.host_id for m in a.members()} == {1, 2, 3}

        c_port = c.address.port
        c_scope.cancel()  # a crash, not a leave: no goodbye is sent
        await _wait_for(lambda: all(_state(n, "host3") == MemberState.DEAD for n in (a, b)), timeout=8)
        dead_incarnation = a.node.member("host3").incarnation  # type: ignore[union-attr]

        # Restart on the same address: it learns it was declared dead and refutes.
        c2 = _node(3, c_port, [a.address])
        await nursery.start(c2.run)
        await _wait_for(lambda: all(_state(n, "host3") == MemberState.ALIVE for n in (a, b)), timeout=8)
        assert a.node.member("host3").incarnation > dead_incarnation  # type: ignore[union-attr]
        await _wait_for(lambda: c2.node.live_count == 3, timeout=5)

        await c2.leave(timeout=2)
        await _wait_for(lambda: all(_state(n, "host3") == MemberState.LEFT for n in (a, b)), timeout=5)
        nursery.cancel_scope.cancel()

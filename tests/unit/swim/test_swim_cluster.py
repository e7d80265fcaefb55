"""Whole clusters on the simulated network, in virtual time."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, replace

from zsd.cluster.swim.config import SwimConfig
from zsd.cluster.swim.member import Address, HostMeta, MemberState
from zsd.cluster.swim.node import SwimNode
from zsd.cluster.swim.sim import LinkConditions, SimNetwork, start_cluster
from zsd.cluster.swim.transport import EventKind, MemberEvent

LAN = SwimConfig.lan()


@dataclass(frozen=True)
class Seen:
    time: float
    observer: Address
    kind: EventKind
    member: str
    incarnation: int


def cluster(
    size: int, *, seed: int = 1, loss: float = 0.0, config: SwimConfig = LAN, warm: bool = False
) -> tuple[SimNetwork, list[SwimNode], list[Seen]]:
    log: list[Seen] = []

    def record(now: float, observer: Address, event: MemberEvent) -> None:
        log.append(Seen(now, observer, event.kind, event.member.name, event.member.incarnation))

    net = SimNetwork(
        rng=random.Random(seed),
        conditions=LinkConditions(loss=loss, delay=0.001, jitter=0.001),
        on_event=record,
    )
    nodes = start_cluster(net, size=size, config=config, seed=seed, warm=warm)
    return net, nodes, log


def states(nodes: Iterable[SwimNode], name: str) -> set[MemberState | None]:
    return {None if (m := n.member(name)) is None else m.state for n in nodes}


def test_ten_members_joining_through_one_seed_converge() -> None:
    net, nodes, _ = cluster(10)
    net.run_for(5.0)
    for node in nodes:
        assert node.live_count == 10
        assert {m.name: m.meta.host_id for m in node.members()} == {f"node{i}": i + 1 for i in range(10)}


def test_a_crashed_member_is_declared_dead_by_everyone_and_no_one_else_is() -> None:
    net, nodes, log = cluster(10, loss=0.05)
    net.run_for(5.0)
    crashed = nodes[4]
    net.crash(crashed.address)
    crash_time = net.now
    net.run_for(10.0)
    survivors = [n for n in nodes if n is not crashed]
    assert states(survivors, "node4") == {MemberState.DEAD}
    failed = [s for s in log if s.kind == EventKind.FAILED]
    assert {s.member for s in failed} == {"node4"}
    assert {s.observer for s in failed} == {n.address for n in survivors}
    assert max(s.time for s in failed) - crash_time < 4.0


def test_a_briefly_partitioned_member_refutes_its_suspicion() -> None:
    # A more patient suspicion (min 8 x 0.2 s) leaves room between "suspected" and "dead".
    net, nodes, log = cluster(10, config=replace(LAN, suspicion_mult=8))
    net.run_for(5.0)
    isolated = nodes[9]
    net.partition([isolated.address])
    net.run_for(1.0)
    net.heal()
    net.run_for(10.0)
    about = [s for s in log if s.member == "node9" and s.time > 5.0]
    assert any(s.kind == EventKind.SUSPECTED for s in about), "the partition was long enough to be noticed"
    assert not any(s.kind == EventKind.FAILED for s in about)
    assert isolated.incarnation >= 1, "it refuted"
    assert states(nodes, "node9") == {MemberState.ALIVE}
    assert all(n.live_count == 10 for n in nodes)


def test_after_a_long_partition_both_sides_rejoin() -> None:
    net, nodes, _ = cluster(10, warm=True)
    net.run_for(2.0)
    minority = [n.address for n in nodes[7:]]
    net.partition(minority)
    net.run_for(15.0)
    assert states(nodes[:7], "node8") == {MemberState.DEAD}
    assert states(nodes[7:], "node0") == {MemberState.DEAD}
    net.heal()
    net.run_for(3 * LAN.reconnect_interval)
    assert all(n.live_count == 10 for n in nodes)


def test_no_false_positives_at_five_percent_loss() -> None:
    net, nodes, log = cluster(10, loss=0.05, seed=7)
    net.run_for(180.0)
    assert [s for s in log if s.kind == EventKind.FAILED] == []
    assert all(n.live_count == 10 for n in nodes)
    assert net.stats.lost > 0.04 * net.stats.sent


def test_a_graceful_leave_is_seen_as_left_not_failed() -> None:
    net, nodes, log = cluster(10, loss=0.05)
    net.run_for(5.0)
    leaving = nodes[3]
    net.apply(leaving.address, leaving.leave(net.now))
    while not leaving.leave_propagated:
        net.run_for(0.1)
    net.crash(leaving.address)
    net.run_for(5.0)
    assert states([n for n in nodes if n is not leaving], "node3") == {MemberState.LEFT}
    assert not [s for s in log if s.kind == EventKind.FAILED]


def test_metadata_updates_reach_everyone_quickly() -> None:
    net, nodes, _ = cluster(10, loss=0.05, warm=True)
    net.run_for(2.0)
    net.apply(
        nodes[0].address, nodes[0].update_meta(HostMeta(host_id=1, leader="node0", leader_epoch=7), net.now)
    )
    net.run_for(1.0)
    for node in nodes[1:]:
        member = node.member("node0")
        assert member is not None and member.meta.leader_epoch == 7


def test_an_isolated_member_notices_its_own_trouble() -> None:
    net, nodes, _ = cluster(10, warm=True)
    net.run_for(2.0)
    isolated = nodes[0]
    net.partition([isolated.address])
    net.run_for(5.0)
    assert isolated.health_score >= 3, "no acks, no nacks: probably our own link"
    assert max(n.health_score for n in nodes[1:]) <= 1, "the others get nacks from their helpers"


def test_a_restarted_member_rejoins_under_its_old_name() -> None:
    net, nodes, _ = cluster(5, loss=0.05)
    net.run_for(3.0)
    net.crash(nodes[2].address)
    net.run_for(10.0)
    assert states(nodes[:2] + nodes[3:], "node2") == {MemberState.DEAD}
    reborn = SwimNode(
        config=LAN,
        name="node2",
        address=nodes[2].address,
        meta=HostMeta(host_id=3),
        rng=random.Random(99),
        now=net.now,
    )
    net.add(reborn)
    net.apply(reborn.address, reborn.join([nodes[0].address], net.now))
    net.run_for(3.0)
    assert states(nodes[:2] + nodes[3:], "node2") == {MemberState.ALIVE}
    assert reborn.live_count == 5
    assert reborn.incarnation > 0, "it outbid its own death"

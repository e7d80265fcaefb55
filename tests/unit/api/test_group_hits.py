"""Gathering a security group's hit counters from many hosts (``zsd.api.grouphits``):
the sum, a slow host and a failing one listed as missing with why (the rest still
counted, the slow one not waited for), hosts gossip calls gone not asked; and the
pure helpers (one host's counters of one group, which hosts count a group, the
per-host deadline). ``collect`` runs on asyncio, as on the API thread."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

import pytest

from zsd.api.grouphits import (
    MEMBERS_PRIORITY,
    GroupHits,
    Hit,
    HostHits,
    collect,
    counting_hosts,
    group_hits,
    per_host_timeout,
    summed,
)
from zsd.compute.records import VmRecord
from zsd.errors import Unavailable
from zsd.network.nics import NicRecord
from zsd.network.secgroups.hostmodel import DefaultRef, HitCount, MembersRuleRef, RuleRef
from zsd.network.secgroups.rules import Direction

IN, OUT = Direction.INGRESS, Direction.EGRESS


def hit(priority: int, direction: str, packets: int, nbytes: int | None = None) -> Hit:
    return Hit(priority=priority, direction=direction, packets=packets, bytes=nbytes or packets * 100)


class FakeHosts:
    """Hosts answering ``ask``: with counters, never (``slow``) or with an error
    (``failing``); it records who was asked with which timeout."""

    def __init__(
        self,
        answers: Mapping[str, tuple[Hit, ...]],
        *,
        slow: frozenset[str] = frozenset(),
        failing: Mapping[str, Exception] | None = None,
    ) -> None:
        self.answers = dict(answers)
        self.slow = slow
        self.failing = dict(failing or {})
        self.asked: list[tuple[str, float]] = []

    async def ask(self, host: str, timeout: float) -> tuple[Hit, ...]:
        self.asked.append((host, timeout))
        if host in self.slow:
            await asyncio.sleep(3600)
        if host in self.failing:
            raise self.failing[host]
        return self.answers[host]


def run(fn: Callable[[], Awaitable[GroupHits]]) -> GroupHits:
    async def main() -> GroupHits:
        return await fn()

    return asyncio.run(main())


def test_the_fake_hosts_answer_hang_and_fail_as_told() -> None:
    fake = FakeHosts(
        {"h1": (hit(0, "ingress", 1),)}, slow=frozenset({"h2"}), failing={"h3": Unavailable("x")}
    )

    async def main() -> None:
        assert await fake.ask("h1", 1.0) == (hit(0, "ingress", 1),)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(fake.ask("h2", 0.01), 0.01)
        with pytest.raises(Unavailable):
            await fake.ask("h3", 1.0)
        with pytest.raises(KeyError):
            await fake.ask("h4", 1.0)

    asyncio.run(main())
    assert [h for h, _ in fake.asked] == ["h1", "h2", "h3", "h4"]


def test_the_counters_of_every_host_that_answered_are_summed() -> None:
    fake = FakeHosts(
        {
            "h2": (hit(0, "ingress", 3), hit(1, "egress", 1)),
            "h1": (hit(MEMBERS_PRIORITY, "egress", 2), hit(0, "ingress", 5)),
            "h3": (),
        }
    )
    result = run(lambda: collect(["h2", "h1", "h3", "h1"], fake.ask, timeout=1.0))
    assert result.missing == ()
    assert [h.host for h in result.counted] == ["h1", "h2", "h3"]
    assert result.total == (hit(-1, "egress", 2), hit(0, "ingress", 8), hit(1, "egress", 1))
    assert sorted(fake.asked) == [("h1", 1.0), ("h2", 1.0), ("h3", 1.0)]  # each once


def test_a_slow_host_is_missing_after_the_deadline_and_the_others_still_count() -> None:
    fake = FakeHosts(
        {"h1": (hit(0, "ingress", 4),), "h3": (hit(0, "ingress", 1),)},
        slow=frozenset({"h2"}),
        failing={"h4": Unavailable("host h4 is unreachable: connection refused", reason="HOST_UNREACHABLE")},
    )
    start = time.monotonic()
    result = run(lambda: collect(["h1", "h2", "h3", "h4"], fake.ask, timeout=0.2))
    took = time.monotonic() - start
    # Asked at once: the slow host costs one deadline, not one per host.
    assert 0.2 <= took < 1.5, took
    assert [h.host for h in result.counted] == ["h1", "h3"]
    assert result.total == (hit(0, "ingress", 5),)
    assert [(m.host, m.reason) for m in result.missing] == [
        ("h2", "DEADLINE_EXCEEDED"),
        ("h4", "HOST_UNREACHABLE"),
    ]
    assert result.missing[0].message == "no answer within 0.2 s"
    assert "connection refused" in result.missing[1].message


def test_hosts_gossip_calls_gone_are_missing_without_being_asked() -> None:
    fake = FakeHosts({"h1": (hit(0, "ingress", 1),), "h2": (), "h3": ()})
    gossip = {"h1": "alive", "h2": "dead", "h3": "left", "h4": "suspect"}
    fake.answers["h4"] = (hit(0, "ingress", 2),)
    result = run(lambda: collect(["h1", "h2", "h3", "h4"], fake.ask, timeout=1.0, gossip=gossip))
    assert [h for h, _ in sorted(fake.asked)] == ["h1", "h4"]  # a suspect may still answer
    assert [(m.host, m.reason, m.message) for m in result.missing] == [
        ("h2", "HOST_DOWN", "gossip says host h2 is dead"),
        ("h3", "HOST_DOWN", "gossip says host h3 is left"),
    ]
    assert result.total == (hit(0, "ingress", 3),)


def test_no_hosts_count_nothing() -> None:
    result = run(lambda: collect([], FakeHosts({}).ask, timeout=1.0))
    assert result == GroupHits(counted=(), missing=()) and result.total == ()


def test_a_hosts_counters_of_one_group_leave_the_others_and_the_nic_defaults_out() -> None:
    counts = [
        HitCount(ref=RuleRef(group="web", priority=1, direction=OUT), packets=2, bytes=200),
        HitCount(ref=RuleRef(group="web", priority=0, direction=IN), packets=5, bytes=500),
        HitCount(ref=MembersRuleRef(group="web", direction=IN), packets=1, bytes=100),
        HitCount(ref=RuleRef(group="db", priority=0, direction=IN), packets=9, bytes=900),
        HitCount(ref=DefaultRef(port="zt0000000001", direction=IN), packets=7, bytes=700),
    ]
    assert group_hits(counts, "web") == (hit(-1, "ingress", 1), hit(0, "ingress", 5), hit(1, "egress", 2))
    assert group_hits(counts, "nope") == ()


def test_sums_keep_priority_and_direction_apart() -> None:
    hosts = [
        HostHits(host="a", hits=(hit(0, "ingress", 1), hit(0, "egress", 2))),
        HostHits(host="b", hits=(hit(0, "egress", 3, 7),)),
    ]
    assert summed(hosts) == (Hit(priority=0, direction="egress", packets=5, bytes=207), hit(0, "ingress", 1))


def test_the_hosts_that_count_a_group_are_those_running_its_nics() -> None:
    def nic(name: str, *groups: str) -> NicRecord:
        return NicRecord(name=name, port_group="lab/web", mac="", security_groups=groups)

    def vm(name: str, host: str, *nics: str) -> VmRecord:
        return VmRecord(name=name, uid=name, host=host, vcpus=1, memory_mib=64, nics=nics)

    nics = [nic("a", "web"), nic("b", "db", "web"), nic("c", "db"), nic("d", "web"), nic("e", "web")]
    vms = [vm("v1", "h2", "a"), vm("v2", "h1", "b"), vm("v3", "h3", "c"), vm("v4", "h2", "e")]
    users = {n: v for v in vms for n in v.nics}
    # d is in no VM: counted nowhere.
    assert counting_hosts(nics, users, "web") == ("h1", "h2")
    assert counting_hosts(nics, users, "db") == ("h1", "h3")
    assert counting_hosts(nics, users, "none") == ()


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [(None, 2.0), (30.0, 2.0), (1.0, 0.8), (0.1, 0.0)],
)
def test_each_host_gets_two_seconds_or_less_when_the_call_ends_sooner(
    remaining: float | None, expected: float
) -> None:
    assert per_host_timeout(remaining) == pytest.approx(expected)
    assert per_host_timeout(remaining, limit=0.5) == pytest.approx(min(expected, 0.5))

"""The sans-IO core driven by hand: messages in, sends and events out."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest

from zsd.cluster.swim.codec import (
    decode_packet,
    decode_stream,
    encode_message,
    encode_meta,
    encode_packet,
    encode_stream,
)
from zsd.cluster.swim.config import SwimConfig
from zsd.cluster.swim.member import Address, HostMeta, Member, MemberState
from zsd.cluster.swim.messages import (
    Ack,
    Alive,
    Dead,
    IndirectPing,
    MemberRecord,
    Message,
    Nack,
    Ping,
    PushPull,
    Suspect,
)
from zsd.cluster.swim.node import SwimNode
from zsd.cluster.swim.transport import EventKind, MemberEvent, Output, SendPacket, SendStream

CONFIG = SwimConfig.lan()
ME = Address("10.0.0.1", 7946)


def addr(name: str) -> Address:
    return Address(f"10.1.0.{ord(name[-1])}", 7946)


def make_node(*others: str, config: SwimConfig = CONFIG) -> SwimNode:
    known = [
        Member(
            name=o, address=addr(o), incarnation=0, state=MemberState.ALIVE, state_since=0.0, meta=HostMeta()
        )
        for o in others
    ]
    return SwimNode(
        config=config,
        name="me",
        address=ME,
        meta=HostMeta(host_id=1),
        rng=random.Random(3),
        now=0.0,
        known=known,
    )


def packet(*messages: Message) -> bytes:
    return encode_packet([encode_message(m) for m in messages])


def sent(outputs: list[Output]) -> list[tuple[Address, Message]]:
    return [(o.to, m) for o in outputs if isinstance(o, SendPacket) for m in decode_packet(o.payload)]


def streams(outputs: list[Output]) -> list[tuple[Address, Message]]:
    return [(o.to, decode_stream(o.payload)) for o in outputs if isinstance(o, SendStream)]


def events(outputs: list[Output]) -> list[tuple[EventKind, str, MemberState]]:
    return [(o.kind, o.member.name, o.member.state) for o in outputs if isinstance(o, MemberEvent)]


def run(node: SwimNode, until: float, start: float = 0.0) -> list[Output]:
    out: list[Output] = []
    now = start
    while node.next_deadline() <= until:
        now = node.next_deadline()
        out += node.tick(now)
    return out


def alive(name: str, incarnation: int, meta: HostMeta | None = None) -> Alive:
    address = ME if name == "me" else addr(name)
    return Alive(incarnation=incarnation, name=name, address=address, meta=encode_meta(meta or HostMeta()))


def test_ping_is_acked_to_its_source_and_misdirected_pings_are_ignored() -> None:
    node = make_node()
    out = node.handle_packet(
        addr("x"), packet(Ping(seq=9, target="me", source="x", source_addr=addr("y"))), 1.0
    )
    assert (addr("y"), Ack(seq=9)) in sent(out)
    assert (
        node.handle_packet(
            addr("x"), packet(Ping(seq=9, target="old", source="x", source_addr=addr("x"))), 1.0
        )
        == []
    )
    # Over the stream channel the ack goes back as a stream too.
    out = node.handle_stream(
        addr("x"), encode_stream(Ping(seq=4, target="me", source="x", source_addr=addr("x"))), 1.0
    )
    assert streams(out) == [(addr("x"), Ack(seq=4))]


def test_garbage_is_counted_not_raised() -> None:
    node = make_node()
    assert node.handle_packet(addr("x"), b"\x00garbage", 1.0) == []
    assert node.handle_stream(addr("x"), b"ZS\x09", 1.0) == []
    assert node.stats.bad_messages == 2


def test_suspicion_of_itself_is_refuted_with_a_higher_incarnation() -> None:
    node = make_node("b")
    out = node.handle_packet(addr("b"), packet(Suspect(incarnation=0, name="me", source="b")), 1.0)
    assert node.incarnation == 1
    assert node.health_score == 1, "being suspected hints at our own bad link"
    assert node.member("me").state == MemberState.ALIVE  # type: ignore[union-attr]
    out += run(node, 1.5, start=1.0)
    assert (addr("b"), alive("me", 1, HostMeta(host_id=1))) in sent(out)
    # An old accusation (lower incarnation) changes nothing.
    node.handle_packet(addr("b"), packet(Suspect(incarnation=0, name="me", source="b")), 2.0)
    assert node.incarnation == 1


def test_death_of_itself_is_refuted_past_the_accused_incarnation() -> None:
    node = make_node("b")
    node.handle_packet(addr("b"), packet(Dead(incarnation=5, name="me", source="b")), 1.0)
    assert node.incarnation == 6
    # A stale alive of ourselves from before a restart (higher incarnation) is outbid too.
    node.handle_packet(addr("b"), packet(alive("me", 9)), 1.0)
    assert node.incarnation == 10
    assert node.stats.refutations == 2


def test_alive_suspect_dead_transitions_follow_incarnations() -> None:
    node = make_node()
    out = node.handle_packet(addr("c"), packet(alive("c", 1)), 1.0)
    assert events(out) == [(EventKind.JOINED, "c", MemberState.ALIVE)]
    assert node.handle_packet(addr("c"), packet(alive("c", 1)), 1.0) == [], "duplicates change nothing"
    out = node.handle_packet(addr("b"), packet(Suspect(incarnation=0, name="c", source="b")), 2.0)
    assert events(out) == [], "an older suspicion is stale"
    out = node.handle_packet(addr("b"), packet(Suspect(incarnation=1, name="c", source="b")), 2.0)
    assert events(out) == [(EventKind.SUSPECTED, "c", MemberState.SUSPECT)]
    out = node.handle_packet(addr("c"), packet(alive("c", 1)), 2.1)
    assert events(out) == [], "refuting needs a higher incarnation"
    out = node.handle_packet(addr("c"), packet(alive("c", 2, HostMeta(version="2"))), 2.2)
    assert events(out) == [(EventKind.UPDATED, "c", MemberState.ALIVE)]
    assert node.member("c").meta.version == "2"  # type: ignore[union-attr]
    out = node.handle_packet(addr("b"), packet(Dead(incarnation=2, name="c", source="b")), 3.0)
    assert events(out) == [(EventKind.FAILED, "c", MemberState.DEAD)]
    out = node.handle_packet(addr("c"), packet(alive("c", 3)), 4.0)
    assert events(out) == [(EventKind.JOINED, "c", MemberState.ALIVE)], "back from the dead"
    out = node.handle_packet(addr("c"), packet(Dead(incarnation=3, name="c", source="c")), 5.0)
    assert events(out) == [(EventKind.LEFT, "c", MemberState.LEFT)]


def test_alive_from_another_address_does_not_steal_a_live_name() -> None:
    node = make_node("b")
    node.handle_packet(addr("x"), packet(Alive(incarnation=7, name="b", address=addr("x"), meta=b"")), 1.0)
    assert node.member("b").address == addr("b")  # type: ignore[union-attr]


def test_a_lone_suspicion_expires_after_the_min_timeout_when_no_confirmation_is_possible() -> None:
    node = make_node("b")  # 2 live members: k = 0
    node.handle_packet(addr("x"), packet(Suspect(incarnation=0, name="b", source="x")), 10.0)
    timeout = CONFIG.suspicion_mult * CONFIG.probe_interval  # log10(2) < 1: scale 1
    assert events(node.tick(10.0 + timeout - 0.01)) == []
    assert events(node.tick(10.0 + timeout)) == [(EventKind.FAILED, "b", MemberState.DEAD)]


def test_confirmations_shorten_the_time_to_declare_dead() -> None:
    others = [f"n{i}" for i in range(9)]
    config = replace(CONFIG, suspicion_mult=4)  # 10 live members: min 0.8 s, max 4.8 s, k = 2

    def time_to_dead(confirmers: list[str]) -> float:
        node = make_node(*others, config=config)
        node.handle_packet(addr("n1"), packet(Suspect(incarnation=0, name="n0", source="n1")), 0.0)
        for source in confirmers:
            node.handle_packet(addr(source), packet(Suspect(incarnation=0, name="n0", source=source)), 0.1)
        now = 0.0
        while node.member("n0").state != MemberState.DEAD:  # type: ignore[union-attr]
            now = node.next_deadline()
            for to, msg in sent(node.tick(now)):
                if isinstance(msg, Ping):  # everyone (n0 too) acks: our own probes confirm nothing
                    node.handle_packet(to, packet(Ack(seq=msg.seq)), now)
        return now

    lone, one, two, three = (time_to_dead(c) for c in ([], ["n2"], ["n2", "n3"], ["n2", "n3", "n4"]))
    assert lone == pytest.approx(4.8)
    assert one == pytest.approx(4.8 - 4.0 * math.log(2) / math.log(3))
    assert two == pytest.approx(0.8)
    assert three == pytest.approx(0.8)
    assert time_to_dead(["n1", "n1", "n2"]) == one, "repeats and the first suspecter do not count"


def test_probe_goes_indirect_then_suspects_and_lowers_local_health() -> None:
    node = make_node("b", "c")
    pings: list[tuple[Address, Message]] = []
    while not pings:
        started = node.next_deadline()
        pings = [(to, m) for to, m in sent(node.tick(started)) if isinstance(m, Ping)]
    ((target_addr, ping),) = pings
    assert isinstance(ping, Ping)
    helper = "c" if ping.target == "b" else "b"
    out = run(node, started + CONFIG.probe_timeout, start=started)
    requests = [(to, m) for to, m in sent(out) if isinstance(m, IndirectPing)]
    assert requests == [
        (
            addr(helper),
            IndirectPing(
                seq=ping.seq,
                target=ping.target,
                target_addr=target_addr,
                source="me",
                source_addr=ME,
                nack=True,
            ),
        )
    ]
    assert [m for _, m in streams(out)] == [ping], "and a fallback ping over the stream"
    node.handle_packet(addr(helper), packet(Nack(seq=ping.seq)), started + 0.15)
    out = node.tick(started + CONFIG.probe_interval)
    assert (EventKind.SUSPECTED, ping.target, MemberState.SUSPECT) in events(out)
    assert node.health_score == 0, "the helper's nack shows our own link works"


def test_missing_nacks_raise_the_local_health_score_and_slow_probing() -> None:
    node = make_node("b", "c", "d", "e")
    start_probes = node.stats.probes
    run(node, 10.0)  # nobody answers at all: every probe fails with no nacks
    assert node.health_score == CONFIG.awareness_max_multiplier - 1
    # Probing slowed down: far fewer than 10 s / 0.2 s probes.
    assert node.stats.probes - start_probes < 20


def test_an_ack_ends_the_probe_and_heals_health() -> None:
    node = make_node("b")
    for incarnation in range(3):  # three refuted accusations: score 3
        node.handle_packet(addr("b"), packet(Suspect(incarnation=incarnation, name="me", source="b")), 0.0)
    assert node.health_score == 3
    pings: list[tuple[Address, Message]] = []
    while not pings:
        started = node.next_deadline()
        pings = [(to, m) for to, m in sent(node.tick(started)) if isinstance(m, Ping)]
    ((_, ping),) = pings
    assert isinstance(ping, Ping)
    node.handle_packet(addr("b"), packet(Ack(seq=ping.seq)), started + 0.01)
    assert node.health_score == 2
    out = node.tick(started + 4 * CONFIG.probe_interval)  # the interval is scaled by score + 1
    assert not [e for e in events(out) if e[0] == EventKind.SUSPECTED]


def test_helper_relays_acks_and_nacks_silence() -> None:
    node = make_node("b", "c")
    request = IndirectPing(
        seq=77, target="c", target_addr=addr("c"), source="b", source_addr=addr("b"), nack=True
    )
    out = node.handle_packet(addr("b"), packet(request), 1.0)
    ((to, relay),) = [(to, m) for to, m in sent(out) if isinstance(m, Ping)]
    assert to == addr("c") and relay.target == "c"
    out = node.handle_packet(addr("c"), packet(Ack(seq=relay.seq)), 1.01)
    assert (addr("b"), Ack(seq=77)) in sent(out)
    # Second request: the target stays silent -> nack after probe_timeout.
    out = node.handle_packet(addr("b"), packet(replace(request, seq=78)), 2.0)
    out = node.tick(2.0 + CONFIG.probe_timeout)
    assert (addr("b"), Nack(seq=78)) in sent(out)


def test_push_pull_merges_and_answers_with_our_table() -> None:
    node = make_node("b")
    records = (
        MemberRecord(
            name="x", address=addr("x"), incarnation=2, state=MemberState.ALIVE, meta=encode_meta(HostMeta())
        ),
        MemberRecord(name="me", address=ME, incarnation=4, state=MemberState.DEAD, meta=b""),
        MemberRecord(name="b", address=addr("b"), incarnation=0, state=MemberState.DEAD, meta=b""),
    )
    request = PushPull(join=True, reply=False, source="x", source_addr=addr("x"), members=records)
    out = node.handle_stream(Address("10.1.0.120", 40000), encode_stream(request), 1.0)
    ((to, reply),) = streams(out)
    assert to == addr("x") and isinstance(reply, PushPull) and reply.reply
    assert {r.name for r in reply.members} == {"me", "b"}
    assert node.member("x").state == MemberState.ALIVE  # type: ignore[union-attr]
    assert node.member("b").state == MemberState.SUSPECT, "a remote 'dead' is only a suspicion here"  # type: ignore[union-attr]
    assert node.incarnation == 5, "our own death in their table is refuted"


def test_leave_is_announced_and_probing_stops() -> None:
    node = make_node("b", "c")
    out = node.leave(1.0)
    gossip = [m for _, m in sent(out)]
    assert Dead(incarnation=0, name="me", source="me") in gossip
    assert node.member("me").state == MemberState.LEFT  # type: ignore[union-attr]
    assert not node.leave_propagated
    probes = node.stats.probes
    out = run(node, 10.0, start=1.0)
    assert node.stats.probes == probes
    assert node.leave_propagated
    # An accusation after leaving is not refuted.
    node.handle_packet(addr("b"), packet(Suspect(incarnation=0, name="me", source="b")), 11.0)
    assert node.incarnation == 0


def test_update_meta_publishes_a_new_incarnation() -> None:
    node = make_node("b")
    node.update_meta(HostMeta(host_id=1, leader="b", leader_epoch=3), 1.0)
    out = run(node, 2.0, start=1.0)
    assert (addr("b"), alive("me", 1, HostMeta(host_id=1, leader="b", leader_epoch=3))) in sent(out)


def test_a_lone_node_knocks_on_its_seeds_until_one_answers() -> None:
    node = make_node()
    seed = Address("10.9.9.9", 7946)
    out = node.join([seed, ME], 0.0)
    assert [to for to, m in streams(out)] == [seed], "never joins itself"
    out = run(node, CONFIG.reconnect_interval + 0.01)
    ((to, ping),) = [(to, m) for to, m in sent(out) if isinstance(m, Ping)]
    assert to == seed and ping.target == ""
    out = node.handle_packet(seed, packet(Ack(seq=ping.seq)), CONFIG.reconnect_interval + 0.02)
    assert [(to, type(m)) for to, m in streams(out)] == [(seed, PushPull)]

"""The simulated network itself: it must do what it is configured to do."""

from __future__ import annotations

import math
import random

import pytest

from zsd.cluster.swim.member import Address
from zsd.cluster.swim.sim import LinkConditions, SimNetwork
from zsd.cluster.swim.transport import Output, SendPacket

A, B, C, D = (Address(f"h{i}", 1) for i in range(4))


class Recorder:
    """An endpoint that records arrivals and ticks at given times."""

    def __init__(self, address: Address, ticks: tuple[float, ...] = ()) -> None:
        self.address = address
        self.packets: list[tuple[float, Address, bytes]] = []
        self.streams: list[tuple[float, Address, bytes]] = []
        self.ticked: list[float] = []
        self._ticks = list(ticks)
        self.send_on_tick: list[Output] = []

    def handle_packet(self, src: Address, data: bytes, now: float) -> list[Output]:
        self.packets.append((now, src, data))
        return []

    def handle_stream(self, src: Address, data: bytes, now: float) -> list[Output]:
        self.streams.append((now, src, data))
        return []

    def tick(self, now: float) -> list[Output]:
        self.ticked.append(now)
        while self._ticks and self._ticks[0] <= now:
            self._ticks.pop(0)
        return self.send_on_tick

    def next_deadline(self) -> float:
        return self._ticks[0] if self._ticks else math.inf


def _net(**conditions: float) -> tuple[SimNetwork, dict[Address, Recorder]]:
    net = SimNetwork(rng=random.Random(42), conditions=LinkConditions(**conditions))  # type: ignore[arg-type]
    endpoints = {address: Recorder(address) for address in (A, B, C, D)}
    for endpoint in endpoints.values():
        net.add(endpoint)
    return net, endpoints


@pytest.mark.parametrize("loss", [0.0, 0.05, 0.3])
def test_observed_loss_matches_configured_loss(loss: float) -> None:
    net, ep = _net(loss=loss)
    n = 20_000
    for _ in range(n):
        net.send_packet(A, B, b"x")
    net.run_for(1.0)
    received = len(ep[B].packets)
    assert received + net.stats.lost == n
    # 5 standard deviations of a binomial: fails by chance about never.
    assert abs((n - received) / n - loss) <= 5 * math.sqrt(loss * (1 - loss) / n) + 1e-9


def test_delay_and_jitter_are_respected() -> None:
    net, ep = _net(delay=0.010, jitter=0.005)
    for _ in range(2000):
        net.send_packet(A, B, b"x")
    net.run_for(0.009)
    assert ep[B].packets == [], "nothing arrives before the base delay"
    net.run_for(1.0)
    arrivals = [t for t, _, _ in ep[B].packets]
    assert len(arrivals) == 2000
    assert all(0.010 <= t < 0.015 for t in arrivals)
    assert min(arrivals) < 0.0105 and max(arrivals) > 0.0145, "jitter spreads over its whole range"
    assert arrivals == sorted(arrivals)


def test_partitions_block_both_ways_until_healed() -> None:
    net, ep = _net()
    net.partition([A], [B, C])  # D is in no group: the "rest"
    for src, dst in [(A, B), (B, A), (B, C), (C, B), (D, A), (D, B), (A, A)]:
        net.send_packet(src, dst, f"{src.host}>{dst.host}".encode())
    net.run_for(0.1)
    got = {data.decode() for r in ep.values() for _, _, data in r.packets}
    assert got == {"h1>h2", "h2>h1", "h0>h0"}
    assert net.stats.blocked == 4
    net.heal()
    net.send_packet(A, B, b"after heal")
    net.run_for(0.1)
    assert ep[B].packets[-1][2] == b"after heal"


def test_a_partition_also_drops_packets_in_flight() -> None:
    net, ep = _net(delay=0.05)
    net.send_packet(A, B, b"in flight")
    net.run_for(0.01)
    net.partition([A], [B])
    net.run_for(0.1)
    assert ep[B].packets == []


def test_crashed_endpoints_neither_receive_nor_tick() -> None:
    net = SimNetwork(rng=random.Random(1))
    b = Recorder(B, ticks=(1.0, 2.0, 3.0))
    net.add(Recorder(A))
    net.add(b)
    net.run_until(1.5)
    assert b.ticked == [1.0]
    net.crash(B)
    net.send_packet(A, B, b"lost")
    net.run_until(2.5)
    assert b.ticked == [1.0] and b.packets == []
    restarted = Recorder(B, ticks=(3.0,))
    net.add(restarted)
    net.send_packet(A, B, b"hello again")
    net.run_until(4.0)
    assert restarted.ticked == [3.0]
    assert [data for _, _, data in restarted.packets] == [b"hello again"]
    assert net.now == 4.0


def test_outputs_of_a_tick_are_sent_and_timers_fire_exactly_on_time() -> None:
    net = SimNetwork(rng=random.Random(1), conditions=LinkConditions(delay=0.25))
    a = Recorder(A, ticks=(0.5, 0.75))
    a.send_on_tick = [SendPacket(to=B, payload=b"tick")]
    b = Recorder(B)
    net.add(a)
    net.add(b)
    net.run_until(10.0)
    assert a.ticked == [0.5, 0.75]
    assert [t for t, _, _ in b.packets] == [0.75, 1.0]


def test_streams_survive_loss_but_pay_retransmission_timeouts() -> None:
    net, ep = _net(loss=0.3, delay=0.001, stream_rto=0.2)
    for _ in range(1000):
        net.send_stream(A, B, b"s")
    net.run_for(100.0)
    delays = [t for t, _, _ in ep[B].streams]
    assert len(delays) + net.stats.streams_dropped == 1000
    assert len(delays) >= 990  # gives up only after 5 losses in a row (0.3**5)
    fast = sum(1 for d in delays if d < 0.2)
    assert 0.6 < fast / len(delays) < 0.8  # about (1 - 0.3) went through first time
    assert all(d >= 0.003 for d in delays)  # handshake + data: three one-way trips


def test_streams_do_not_cross_partitions() -> None:
    net, ep = _net()
    net.partition([A], [B])
    net.send_stream(A, B, b"s")
    net.run_for(1.0)
    assert ep[B].streams == []
    assert net.stats.streams_dropped == 1

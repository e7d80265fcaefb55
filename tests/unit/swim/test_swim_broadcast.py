from __future__ import annotations

from zsd.cluster.swim.broadcast import BroadcastQueue, retransmit_limit


def test_retransmit_limit_grows_with_log_of_size() -> None:
    assert retransmit_limit(4, 1) == 4
    assert retransmit_limit(4, 9) == 4
    assert retransmit_limit(4, 10) == 8
    assert retransmit_limit(4, 100) == 12
    assert retransmit_limit(4, 1000) == 16


def test_least_transmitted_first_then_newest_first() -> None:
    q = BroadcastQueue(retransmit_mult=10)
    q.queue("a", b"A" * 20)
    q.queue("b", b"B" * 20)
    assert q.get(limit=20, num_members=10) == [b"B" * 20]  # newest among never-sent
    assert q.get(limit=20, num_members=10) == [b"A" * 20]  # now the least sent
    q.queue("c", b"C" * 20)
    assert q.get(limit=60, num_members=10) == [b"C" * 20, b"B" * 20, b"A" * 20]
    assert (q.transmits("a"), q.transmits("b"), q.transmits("c")) == (2, 2, 1)


def test_each_update_is_sent_exactly_the_retransmit_limit() -> None:
    q = BroadcastQueue(retransmit_mult=2)
    q.queue("a", b"A" * 20)
    sent = 0
    while q.get(limit=100, num_members=10):  # limit 2 * ceil(log10(11)) = 4
        sent += 1
    assert sent == 4
    assert len(q) == 0
    assert q.transmits("a") is None


def test_newer_update_about_a_member_replaces_the_queued_one() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    q.queue("a", b"suspect a......")
    q.get(limit=100, num_members=10)
    q.queue("a", b"alive a, inc 2.")
    assert len(q) == 1
    assert q.transmits("a") == 0
    assert q.get(limit=100, num_members=10) == [b"alive a, inc 2."]


def test_packing_skips_what_does_not_fit_and_takes_smaller_ones() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    q.queue("small-old", b"s" * 20)
    q.queue("big", b"b" * 200)
    q.queue("small-new", b"t" * 20)
    assert q.get(limit=100, num_members=10) == [b"t" * 20, b"s" * 20]
    assert q.transmits("big") == 0
    assert q.get(limit=0, num_members=10) == []
    assert q.get(limit=300, num_members=10, max_count=1) == [b"b" * 200]


def test_an_update_is_never_picked_twice_for_one_packet() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    for i in range(5):
        q.queue(str(i), bytes([i]) * 20)
    q.get(limit=40, num_members=10)  # two of them now have 1 transmit
    picked = q.get(limit=1000, num_members=10)
    assert sorted(picked) == sorted(bytes([i]) * 20 for i in range(5))


def test_queue_is_bounded_by_dropping_the_most_sent() -> None:
    q = BroadcastQueue(retransmit_mult=10, max_items=3)
    q.queue("a", b"a" * 20)
    q.get(limit=20, num_members=10)
    q.queue("b", b"b" * 20)
    q.queue("c", b"c" * 20)
    q.queue("d", b"d" * 20)
    assert len(q) == 3
    assert q.transmits("a") is None

from __future__ import annotations

import math

import pytest

from zsd.cluster.swim.awareness import Awareness
from zsd.cluster.swim.suspicion import Suspicion, remaining_timeout, suspicion_timeout


def test_min_timeout_scales_with_log10_of_cluster_size() -> None:
    assert suspicion_timeout(4, 1, 0.2) == pytest.approx(0.8)
    assert suspicion_timeout(4, 10, 0.2) == pytest.approx(0.8)  # never below one interval unit
    assert suspicion_timeout(4, 100, 0.2) == pytest.approx(1.6)
    assert suspicion_timeout(4, 1000, 0.2) == pytest.approx(2.4)
    assert suspicion_timeout(3, 0, 1.0) == pytest.approx(3.0)


def test_remaining_timeout_falls_on_a_log_scale_from_max_to_min() -> None:
    values = [remaining_timeout(confirmations=c, k=3, min_timeout=2.0, max_timeout=12.0) for c in range(5)]
    assert values[0] == pytest.approx(12.0)
    assert values[1] == pytest.approx(12.0 - 10.0 * math.log(2) / math.log(4))  # 7.0
    assert values[2] == pytest.approx(12.0 - 10.0 * math.log(3) / math.log(4))
    assert values[3] == pytest.approx(2.0)
    assert values[4] == pytest.approx(2.0)  # never below min
    # Log scale: the first confirmation buys the most.
    assert values[0] - values[1] > values[1] - values[2] > values[2] - values[3]


def test_no_expected_confirmations_means_min_timeout_at_once() -> None:
    assert remaining_timeout(confirmations=0, k=0, min_timeout=2.0, max_timeout=12.0) == 2.0
    s = Suspicion(suspecter="a", incarnation=1, k=0, min_timeout=2.0, max_timeout=12.0, now=100.0)
    assert s.deadline == 102.0
    assert not s.confirm("b")


def test_independent_confirmations_shorten_the_deadline() -> None:
    s = Suspicion(suspecter="a", incarnation=1, k=2, min_timeout=2.0, max_timeout=12.0, now=100.0)
    assert s.deadline == pytest.approx(112.0)
    assert not s.confirm("a"), "the original suspecter is not its own confirmation"
    assert s.confirm("b")
    assert s.confirmations == 1
    assert s.deadline == pytest.approx(100.0 + 12.0 - 10.0 * math.log(2) / math.log(3))
    assert not s.confirm("b"), "a repeat from the same member is not independent"
    assert s.confirm("c")
    assert s.deadline == pytest.approx(102.0)
    assert not s.confirm("d"), "beyond k confirmations nothing changes"
    assert s.deadline == pytest.approx(102.0)


def test_awareness_is_bounded_and_scales_timeouts() -> None:
    a = Awareness(max_multiplier=8)
    assert a.scale(0.2) == pytest.approx(0.2)
    a.apply_delta(-3)
    assert a.score == 0
    a.apply_delta(3)
    assert a.scale(0.2) == pytest.approx(0.8)
    a.apply_delta(100)
    assert a.score == 7
    assert a.scale(1.0) == pytest.approx(8.0)
    a.apply_delta(-1)
    assert a.score == 6

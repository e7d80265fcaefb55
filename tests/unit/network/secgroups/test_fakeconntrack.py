"""The in-memory conntrack table is as strict as ctnetlink where zsd relies on it."""

from __future__ import annotations

import pytest

from tests.unit.network.secgroups.fakeconntrack import FakeConntrack
from zsd.network.secgroups.admission import Flow

A = Flow(zone=1, src="10.0.0.1", dst="10.0.0.2", proto=6, sport=1000, dport=80)
B = Flow(zone=2, src="10.0.0.1", dst="10.0.0.2", proto=6, sport=1000, dport=80)


def test_a_dump_reads_the_zones_asked_for_only() -> None:
    table = FakeConntrack([A, B])
    assert list(table.flows([2])) == [B]
    assert list(table.flows([1, 2])) == [A, B]
    assert list(table.flows([3])) == []


def test_a_delete_takes_the_entry_of_its_zone_once() -> None:
    table = FakeConntrack([A, B])
    assert table.delete(A) is True
    assert table.delete(A) is False
    assert table.entries == [B]


def test_a_delete_during_a_dump_is_refused() -> None:
    table = FakeConntrack([A, B])
    dump = table.flows([1, 2])
    next(dump)
    with pytest.raises(RuntimeError):
        table.delete(A)
    list(dump)
    assert table.delete(A) is True

"""HostMessageCache: same message as a fresh encoding, rebuilt when the record changes."""

from __future__ import annotations

from dataclasses import replace

from tests.fakes import sample_facts
from zsd.api import convert
from zsd.api.services.hosts import HostMessageCache
from zsd.cluster.local import HostRecord, HostState


def record(**changes: object) -> HostRecord:
    base = HostRecord(
        name="n1",
        host_id=1,
        uid="u",
        address="192.0.2.1",
        state=HostState.READY,
        state_reasons=(),
        facts=sample_facts(),
        zsd_version="0.1.0",
        started_at=1000.0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_cached_equals_fresh_and_uptime_moves() -> None:
    cache = HostMessageCache()
    rec = record()
    first = cache.encode(rec, now=1010.0)
    assert first == convert.host(rec, now=1010.0)
    later = cache.encode(rec, now=1070.5)
    assert later.uptime.ToNanoseconds() == 70_500_000_000
    assert later == convert.host(rec, now=1070.5)


def test_callers_cannot_corrupt_the_cache() -> None:
    cache = HostMessageCache()
    rec = record()
    cache.encode(rec, now=1001.0).cpu.model = "tampered"
    assert cache.encode(rec, now=1001.0).cpu.model == "Test CPU"


def test_changed_record_is_re_encoded() -> None:
    cache = HostMessageCache()
    cache.encode(record(), now=1001.0)
    degraded = record(state=HostState.DEGRADED, state_reasons=("libvirtd not reachable",))
    msg = cache.encode(degraded, now=1001.0)
    assert list(msg.state_reasons) == ["libvirtd not reachable"]
    new_facts = record(facts=replace(sample_facts(), kernel="6.2.0"))
    assert cache.encode(new_facts, now=1001.0).kernel == "6.2.0"

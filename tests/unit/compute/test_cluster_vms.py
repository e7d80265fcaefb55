"""The leader's VM bookkeeping without a cluster: placement filters and their
reasons, and which records the janitor may drop, over a real state cache."""

from __future__ import annotations

import pytest

from zsd.cluster.records import KIND_HOST_STATUS
from zsd.cluster.store.cache import StateCache
from zsd.cluster.store.model import Change, ChangeSet, Op
from zsd.compute.janitor import stale
from zsd.compute.placement.model import HostState
from zsd.compute.records import KIND_VM, VmRecord
from zsd.compute.scheduler import Demand, choose
from zsd.compute.settings import PlacementSettings
from zsd.errors import AlreadyExists, NotFound, ResourceExhausted
from zsd.v1 import host_pb2

UID = "6f1c1f0e-0c43-4b8e-9a54-1d7c4f7e2a10"


def host(
    name: str, *, cpus: int = 8, mem: int = 16384, used_cpu: int = 0, used_mem: int = 0, **kw: object
) -> HostState:
    return HostState(
        name=name,
        down=str(kw.get("down", "")),
        alive=bool(kw.get("alive", True)),
        lease_live=bool(kw.get("lease_live", True)),
        maintenance=bool(kw.get("maintenance", False)),
        cpus=cpus,
        memory_mib=mem,
        used_vcpus=used_cpu,
        used_memory_mib=used_mem,
        pools=frozenset(kw.get("pools", ("shared",))),  # type: ignore[arg-type]
    )


def demand(**kw: object) -> Demand:
    base: dict[str, object] = {
        "name": "vm",
        "uid": UID,
        "vcpus": 2,
        "memory_mib": 1024,
        "pools": frozenset({"shared"}),
    }
    base.update(kw)
    return Demand(**base)  # type: ignore[arg-type]


def test_spread_takes_the_host_with_the_most_free_memory() -> None:
    hosts = [host("h1", used_mem=8000), host("h2", used_mem=1000), host("h3", used_mem=4000)]
    assert choose(demand(), hosts) == "h2"


def test_every_rejected_host_says_why() -> None:
    hosts = [
        host("h0", down="has not reported its inventory yet"),
        host("h1", alive=False),
        host("h2", pools=()),
        host("h3", cpus=1, used_cpu=3),
        host("h4", mem=2048, used_mem=1500),
        host("h5", maintenance=True),
        host("h6", lease_live=False),
    ]
    with pytest.raises(ResourceExhausted) as refused:
        choose(demand(), hosts)
    assert refused.value.reason == "NO_VALID_HOST"
    assert dict(refused.value.metadata) == {
        "h0": "has not reported its inventory yet",
        "h1": "not alive",
        "h2": "cannot reach pool(s) shared",
        "h3": "1 vCPUs free of 4 (needs 2)",
        "h4": "548 MiB free of 2048 (needs 1024)",
        "h5": "in maintenance",
        "h6": "sanlock lease not live",
    }
    assert "h3: 1 vCPUs free of 4 (needs 2)" in refused.value.message


def test_cpu_is_overcommitted_memory_is_not() -> None:
    # 2 CPUs x 4 = 8 vCPUs; memory exactly full is still a fit, one MiB more is not.
    assert choose(demand(vcpus=8, memory_mib=1024), [host("h1", cpus=2, mem=1024)]) == "h1"
    with pytest.raises(ResourceExhausted):
        choose(demand(vcpus=1, memory_mib=1025), [host("h1", cpus=2, mem=1024)])


def test_a_pinned_vm_only_goes_to_its_host() -> None:
    hosts = [host("h1"), host("h2", used_mem=9000)]
    assert choose(demand(pinned="h2"), hosts) == "h2"
    with pytest.raises(ResourceExhausted) as full:
        choose(demand(pinned="h2", memory_mib=8000), hosts)
    assert set(full.value.metadata) == {"h2"}, "only the pinned host is considered"
    with pytest.raises(NotFound) as unknown:
        choose(demand(pinned="h9"), hosts)
    assert unknown.value.field == "host"


def test_an_empty_cluster_is_refused() -> None:
    with pytest.raises(ResourceExhausted) as refused:
        choose(demand(), [])
    assert refused.value.reason == "NO_VALID_HOST"


def test_placed_vms_are_known_to_the_engine() -> None:
    # A VM already placed under the same name is not placed twice.
    placed = VmRecord(name="vm", uid=UID, host="h1", vcpus=2, memory_mib=1024)
    with pytest.raises(AlreadyExists):
        choose(demand(), [host("h1", used_cpu=2, used_mem=1024)], [placed])


class Feed:
    def __init__(self) -> None:
        self.cache = StateCache()

    def put(self, kind: str, name: str, data: bytes) -> int:
        revision = self.cache.revision + 1
        change = Change(
            revision=revision,
            epoch=1,
            op=Op.PUT,
            kind=kind,
            name=name,
            data=data,
            create_revision=revision,
            update_time=0.0,
        )
        self.cache.apply(ChangeSet(revision=revision, epoch=1, changes=(change,)))
        return revision

    def report(self, host: str, *vms: host_pb2.HostVm) -> int:
        return self.put(
            KIND_HOST_STATUS, host, host_pb2.Host(name=f"hosts/{host}", vms=list(vms)).SerializeToString()
        )

    def record(self, name: str, uid: str, host: str, created: float = 0.0) -> int:
        rec = VmRecord(name=name, uid=uid, host=host, vcpus=1, memory_mib=128, create_time=created)
        return self.put(KIND_VM, name, rec.encode())


def test_the_janitor_drops_only_what_a_later_report_disowns() -> None:
    feed = Feed()
    feed.report("h1")  # a report from before the records: proves nothing
    feed.record("gone", "u-gone", "h1")
    feed.record("running", "u-run", "h1")
    feed.record("creating", "u-new", "h1")
    feed.record("young", "u-young", "h1", created=95.0)
    feed.record("elsewhere", "u-else", "h2")
    assert stale(feed.cache, now=100.0, grace=20.0) == []

    feed.report(
        "h1",
        host_pb2.HostVm(vm="vms/running", uid="u-run"),
        host_pb2.HostVm(vm="vms/creating", creating=True),
    )
    dropped = stale(feed.cache, now=100.0, grace=20.0)
    assert [(f.record.name, f.revision, f.moved_to) for f in dropped] == [("gone", 2, "")]
    # Once old enough, a record its host does not list goes too.
    assert sorted(f.record.name for f in stale(feed.cache, now=200.0, grace=20.0)) == ["gone", "young"]


def test_a_record_follows_its_vm_to_the_host_that_reports_it() -> None:
    feed = Feed()
    feed.record("mover", "u-move", "h1", created=99.0)
    feed.report("h2", host_pb2.HostVm(vm="vms/mover", uid="u-move"))
    # While the source still lists it (mid-migration), nothing changes.
    feed.report("h1", host_pb2.HostVm(vm="vms/mover", uid="u-move"))
    assert stale(feed.cache, now=100.0) == []
    feed.report("h1")
    fixes = stale(feed.cache, now=100.0)  # young, but moving needs no grace
    assert [(f.record.name, f.moved_to) for f in fixes] == [("mover", "h2")]
    # Two other hosts claiming one VM: ambiguous, the janitor leaves it to people.
    feed.report("h3", host_pb2.HostVm(vm="vms/mover", uid="u-move"))
    assert stale(feed.cache, now=1000.0) == []


def test_pack_fills_the_busiest_host_that_still_fits_and_ratios_are_settings() -> None:
    hosts = [host("h1", used_mem=8000), host("h2", used_mem=1000), host("h3", mem=16384, used_mem=15800)]
    pack = PlacementSettings(strategy="pack")
    assert choose(demand(), hosts, settings=pack) == "h1"  # h3 has only 584 MiB left
    tight = PlacementSettings(cpu_overcommit=1.0)
    with pytest.raises(ResourceExhausted) as refused:
        choose(demand(vcpus=9), [host("h1", cpus=8)], settings=tight)
    assert refused.value.metadata["h1"] == "8 vCPUs free of 8 (needs 9)"
    roomy = PlacementSettings(memory_overcommit=1.5)
    assert choose(demand(memory_mib=20000), [host("h1")], settings=roomy) == "h1"

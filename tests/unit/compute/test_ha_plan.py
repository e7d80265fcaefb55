"""HA decisions without a cluster: which VMs the leader restarts (only HA VMs with a
lease, of hosts sanlock calls dead, from the spec their host reported), what the
host the record now names does (define, start, forget a stale copy), and the
janitor leaving a freshly restarted record alone."""

from __future__ import annotations

from dataclasses import replace

from tests.unit.compute.test_cluster_vms import Feed
from zsd.cluster.control import HostView
from zsd.cluster.lease.authority import HostStatus
from zsd.cluster.records import HostEntry
from zsd.compute import ha, restore
from zsd.compute.janitor import stale
from zsd.compute.records import VmRecord
from zsd.compute.runtime import VmStatus
from zsd.compute.spec import VmSpec
from zsd.v1 import compute_pb2, host_pb2

U1 = "00000000-0000-4000-8000-000000000001"
U2 = "00000000-0000-4000-8000-000000000002"
U3 = "00000000-0000-4000-8000-000000000003"
LEASED = VmSpec(name="a", uid=U1, ha=True, lease_lockspace="zsd", lease_path="/shared/leases/vms/" + U1)


def view(name: str, *, gossip: str | None, lease: HostStatus | None, vms: list[host_pb2.HostVm]) -> HostView:
    report = host_pb2.Host(name=f"hosts/{name}", vms=vms).SerializeToString()
    return HostView(entry=HostEntry(name=name, host_id=1), etag=1, status=report, gossip=gossip, lease=lease)


def hostvm(spec: VmSpec, state: int = compute_pb2.Vm.RUNNING) -> host_pb2.HostVm:
    return host_pb2.HostVm(
        vm=f"vms/{spec.name}", uid=spec.uid, state=state, ha_spec=spec.to_json() if spec.ha else ""
    )


def record(name: str, uid: str, host: str, *, ha_: bool = True) -> VmRecord:
    return VmRecord(name=name, uid=uid, host=host, vcpus=1, memory_mib=128, ha=ha_)


def test_only_leased_ha_vms_of_hosts_sanlock_calls_dead_are_restarted() -> None:
    unleased = VmSpec(name="b", uid=U2, ha=True)
    plain = VmSpec(name="c", uid=U3)
    dead = view(
        "h1",
        gossip="dead",
        lease=HostStatus.DEAD,
        vms=[hostvm(LEASED), hostvm(unleased, compute_pb2.Vm.STOPPED), hostvm(plain)],
    )
    records = [(record("a", U1, "h1"), 5), (record("b", U2, "h1"), 6), (record("c", U3, "h1", ha_=False), 7)]
    restarts, skipped = ha.plan([dead], records)
    assert [(r.record.name, r.revision, r.running) for r in restarts] == [("a", 5, True)]
    assert VmSpec.from_json(restarts[0].spec) == LEASED
    assert [(s.vm, s.why) for s in skipped] == [("b", "it has no VM lease (no sanlock lock manager)")]


def test_gossip_alone_never_restarts_anything() -> None:
    # Partitioned (gossip dead) while sanlock still sees its lease renewed, or failing
    # but not yet dead: the host may still run the VM.
    for lease in (HostStatus.LIVE, HostStatus.FAIL, HostStatus.UNKNOWN, None):
        partitioned = view("h1", gossip="dead", lease=lease, vms=[hostvm(LEASED)])
        assert ha.plan([partitioned], [(record("a", U1, "h1"), 5)]) == ([], [])
    # A dead lease is enough, whatever gossip says (the host lost its storage).
    lost = view("h1", gossip="alive", lease=HostStatus.DEAD, vms=[hostvm(LEASED)])
    assert len(ha.plan([lost], [(record("a", U1, "h1"), 5)])[0]) == 1


def test_a_vm_its_dead_host_never_reported_is_not_restarted() -> None:
    dead = view("h1", gossip="dead", lease=HostStatus.DEAD, vms=[])
    restarts, skipped = ha.plan([dead], [(record("a", U1, "h1"), 5)])
    assert restarts == [] and skipped[0].why == "h1 never reported its spec"


def test_a_restart_asks_placement_for_the_devices_its_reported_spec_gives_the_vm() -> None:
    # The record may predate its devices; the spec is what the new host defines.
    spec = replace(LEASED, hostdevs=("0000:3b:00.1",))
    dead = view("h1", gossip="dead", lease=HostStatus.DEAD, vms=[hostvm(spec)])
    restarts, _ = ha.plan([dead], [(record("a", U1, "h1"), 5)])
    assert restarts[0].hostdevs == ("0000:3b:00.1",)
    assert ha.demand(restarts[0]).hostdevs == ("0000:3b:00.1",)
    assert ha.demand(restarts[0]).ha


def restarted(host: str, *, running: bool = True) -> VmRecord:
    return replace(
        record("a", U1, host),
        restart=LEASED.to_json(),
        restart_running=running,
        restarted_from="h1",
        restart_time=100.0,
    )


def test_the_new_host_defines_then_starts_once() -> None:
    assert restore.work("h2", [restarted("h2")], [], [], set()).define == (restarted("h2"),)
    # Being created right now (a create under the same name): left alone.
    assert restore.work("h2", [restarted("h2")], [], ["a"], set()) == restore.Work()
    defined = [VmStatus(spec=LEASED, state="stopped", generation=1)]
    assert restore.work("h2", [restarted("h2")], defined, [], set()).start == ("a",)
    # Started once already (then the user stopped it), or restarted to stay stopped.
    assert restore.work("h2", [restarted("h2")], defined, [], {U1}) == restore.Work()
    assert restore.work("h2", [restarted("h2", running=False)], defined, [], set()) == restore.Work()
    # Records of other hosts, or never restarted, are none of its business.
    assert restore.work("h3", [restarted("h2")], [], [], set()) == restore.Work()
    assert restore.work("h2", [record("a", U1, "h2")], [], [], set()) == restore.Work()


def test_the_dead_host_back_forgets_only_its_stopped_stale_copy() -> None:
    stopped = VmStatus(spec=LEASED, state="stopped", generation=1)
    assert restore.work("h1", [restarted("h2")], [stopped], [], set()).forget == (stopped,)
    running = replace(stopped, state="running")
    assert restore.work("h1", [restarted("h2")], [running], [], set()) == restore.Work()
    # Another VM under the same name (another uid), or a VM that was not restarted
    # from this host (a migration under way): never touched.
    other = replace(stopped, spec=replace(LEASED, uid=U2))
    assert restore.work("h1", [restarted("h2")], [other], [], set()) == restore.Work()
    migrated = replace(restarted("h2"), restarted_from="h3")
    assert restore.work("h1", [migrated], [stopped], [], set()) == restore.Work()


def test_the_janitor_gives_a_restarted_record_the_same_grace_as_a_new_one() -> None:
    feed = Feed()
    rec = restarted("h2")
    feed.put("vm", "a", replace(rec, create_time=1.0).encode())
    feed.report("h2")  # a report after the record that does not list the VM yet
    assert stale(feed.cache, now=110.0) == []
    assert [f.record.name for f in stale(feed.cache, now=130.0)] == ["a"]

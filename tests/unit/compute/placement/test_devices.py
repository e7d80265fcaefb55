"""PCI passthrough in placement: a VM asking for host devices goes only to a host that
reported them and where no VM placed there holds them (nor one of their IOMMU group);
each rejected host says which device and why; the engine's device index follows every
placement and release."""

from __future__ import annotations

import random

import pytest

from zsd.compute.placement.engine import Engine
from zsd.compute.placement.model import HostState, Placement, VmDemand
from zsd.compute.placement.policies import Policy
from zsd.errors import ResourceExhausted
from zsd.host.pci import PciDevice

NIC, NIC2 = "0000:3b:00.0", "0000:3b:00.1"
GPU, GPU_AUDIO = "0000:af:00.0", "0000:af:00.1"


def dev(address: str, group: int | None, *, driver: str = "vfio-pci") -> PciDevice:
    return PciDevice(
        address=address,
        vendor="0x8086",
        device="0x10fb",
        pci_class="0x020000",
        driver=driver,
        numa_node=0,
        iommu_group=group,
    )


# Each NIC function in its own group; the GPU shares one with its audio function.
INVENTORY = (dev(NIC, 30), dev(NIC2, 31), dev(GPU, 40), dev(GPU_AUDIO, 40))


def host(name: str, devices: tuple[PciDevice, ...] = INVENTORY, **kw: object) -> HostState:
    base: dict[str, object] = {"alive": True, "lease_live": True, "cpus": 4, "memory_mib": 8192}
    return HostState(name=name, pci_devices=devices, **{**base, **kw})  # type: ignore[arg-type]


def vm(name: str, *hostdevs: str, **kw: object) -> VmDemand:
    base: dict[str, object] = {"vcpus": 1, "memory_mib": 1024}
    return VmDemand(name=name, hostdevs=hostdevs, **{**base, **kw})  # type: ignore[arg-type]


def holding(host_name: str, *hostdevs: str) -> Placement:
    return Placement(host=host_name, vcpus=1, memory_mib=1024, hostdevs=hostdevs)


def test_a_vm_goes_only_to_a_host_that_has_its_devices() -> None:
    # h1 is emptier (spread would take it) but lacks the second NIC function.
    engine = Engine(hosts=[host("h1", (dev(NIC, 30),)), host("h2", used_memory_mib=4096)])
    decision = engine.place(vm("a", NIC, NIC2))
    assert decision.host == "h2"
    assert dict(decision.rejected) == {"h1": f"no PCI device {NIC2} on this host"}


def test_a_device_another_vm_holds_on_a_host_is_taken_there() -> None:
    engine = Engine(
        hosts=[host("h1"), host("h2", used_memory_mib=4096)], placements={"x": holding("h1", NIC)}
    )
    decision = engine.place(vm("a", NIC))
    assert decision.host == "h2"
    assert dict(decision.rejected) == {"h1": f"PCI device {NIC} is assigned to VM x"}
    # The same address on another host is another device: h2's NIC is a's now.
    with pytest.raises(ResourceExhausted) as err:
        engine.place(vm("b", NIC))
    assert err.value.reason == "NO_VALID_HOST"
    assert dict(err.value.metadata) == {
        "h1": f"PCI device {NIC} is assigned to VM x",
        "h2": f"PCI device {NIC} is assigned to VM a",
    }
    assert err.value.message.startswith(f"no host can run VM 'b' (1 vCPUs, 1024 MiB, PCI {NIC}): ")
    # Other devices of the host, and VMs without devices, are not held back.
    assert engine.place(vm("c", NIC2)).host == "h1"
    assert engine.place(vm("d")).host == "h1"


def test_releasing_a_vm_frees_its_devices() -> None:
    engine = Engine(hosts=[host("h1")])
    engine.place(vm("a", NIC, GPU, GPU_AUDIO))
    with pytest.raises(ResourceExhausted):
        engine.place(vm("b", GPU))
    engine.release("a")
    assert engine.place(vm("b", GPU, GPU_AUDIO)).host == "h1"


def test_a_device_whose_iommu_group_another_vm_holds_is_refused() -> None:
    engine = Engine(hosts=[host("h1"), host("h2")], placements={"x": holding("h1", GPU_AUDIO)})
    decision = engine.place(vm("a", GPU))
    assert decision.host == "h2"
    assert decision.rejected["h1"] == (
        f"PCI device {GPU} shares IOMMU group 40 with {GPU_AUDIO}, which VM x has"
    )


def test_the_host_side_assignment_rules_apply_to_the_reported_inventory() -> None:
    # The GPU's group partner is on a host driver: that host can never give the GPU alone.
    busy = (dev(GPU, 40), dev(GPU_AUDIO, 40, driver="snd_hda_intel"))
    engine = Engine(hosts=[host("h1", busy), host("h2", (dev(GPU, None),)), host("h3")])
    decision = engine.place(vm("a", GPU))
    assert decision.host == "h3"
    assert decision.rejected["h1"].startswith(f"PCI device {GPU} shares IOMMU group 40 with {GPU_AUDIO}")
    assert decision.rejected["h2"].startswith(f"PCI device {GPU} has no IOMMU group")


def test_a_host_that_could_never_run_the_vm_says_so_before_devices_and_devices_before_capacity() -> None:
    engine = Engine(
        hosts=[
            host("h1", (), alive=False),
            host("h2", (), used_vcpus=16),
            host("h3", used_vcpus=16),
            host("h4", used_vcpus=16),
        ],
        placements={"x": holding("h3", NIC)},
    )
    with pytest.raises(ResourceExhausted) as err:
        engine.place(vm("a", NIC, pools=frozenset({"ceph"})))
    assert dict(err.value.metadata) == {
        "h1": "not alive",
        "h2": "cannot reach pool(s) ceph",
        "h3": "cannot reach pool(s) ceph",
        "h4": "cannot reach pool(s) ceph",
    }
    with pytest.raises(ResourceExhausted) as err:
        engine.place(vm("a", NIC))
    assert dict(err.value.metadata) == {
        "h1": "not alive",
        "h2": f"no PCI device {NIC} on this host",
        "h3": f"PCI device {NIC} is assigned to VM x",
        "h4": "0 vCPUs free of 16 (needs 1)",
    }


def test_devices_come_before_a_mandatory_policy() -> None:
    # h1 runs the group's VM and lacks the device: the device is the lasting reason.
    engine = Engine(
        hosts=[host("h1", ()), host("h2")],
        placements={"g1": Placement(host="h1", group="g", vcpus=1, memory_mib=1024)},
        policies=[Policy(name="p", kind="vm-exclusive", vm_group="g")],
    )
    decision = engine.place(vm("a", NIC, group="g"))
    assert decision.host == "h2"
    assert decision.rejected["h1"] == f"no PCI device {NIC} on this host"


def test_a_batch_never_gives_one_device_twice() -> None:
    engine = Engine(hosts=[host("h1"), host("h2")])
    decisions = engine.place_many([vm("a", NIC), vm("b", NIC)])
    assert sorted(d.host for d in decisions) == ["h1", "h2"]
    with pytest.raises(ResourceExhausted):
        engine.place_many([vm("c", NIC2), vm("d", NIC2), vm("e", NIC2)])
    assert set(engine.placements) == {"a", "b"}
    # The failed batch gave back what it had taken.
    assert engine.place(vm("c", NIC2)).host in ("h1", "h2")


@pytest.mark.parametrize("seed", [1, 2])
def test_devices_stay_exclusive_through_random_places_and_releases(seed: int) -> None:
    rng = random.Random(seed)
    addresses = [f"0000:{bus:02x}:00.0" for bus in range(6)]
    inventory = tuple(dev(a, i) for i, a in enumerate(addresses))
    the_hosts = [host(f"h{i}", inventory, cpus=64, memory_mib=1 << 20) for i in range(3)]
    engine = Engine(hosts=the_hosts)
    live: set[str] = set()
    refused = 0
    for step in range(600):
        if live and rng.random() < 0.4:
            gone = rng.choice(sorted(live))
            engine.release(gone)
            live.remove(gone)
            continue
        wanted = tuple(rng.sample(addresses, rng.randint(0, 2)))
        try:
            decision = engine.place(vm(f"v{step}", *wanted))
        except ResourceExhausted:
            refused += 1
            # Refused only when every host had one of the devices held.
            held = {(p.host, a) for p in engine.placements.values() for a in p.hostdevs}
            assert all(any((h.name, a) in held for a in wanted) for h in the_hosts)
            continue
        live.add(decision.vm)
        held_here = [
            a
            for n, p in engine.placements.items()
            if n != decision.vm and p.host == decision.host
            for a in p.hostdevs
        ]
        assert not set(wanted) & set(held_here)
    assert set(engine.placements) == live
    assert refused > 0

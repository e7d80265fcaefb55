"""The shared-block driver's decisions, with a fake LVM and a fake host (both tested
here too); the real LVM commands are exercised on loop devices in
tests/integration/test_lvm_loop.py."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from zsd.errors import FailedPrecondition, InvalidArgument, NotFound, Unsupported
from zsd.storage.model import PoolKind
from zsd.storage.pools.base import PoolSpec
from zsd.storage.pools.shared_block import SharedBlockPool

GiB = 1 << 30


@dataclass(frozen=True)
class Vg:
    size: int
    free: int
    lock_type: str


@dataclass
class FakeLvm:
    vgs: dict[str, Vg] = field(default_factory=dict)
    pvs: list[str] = field(default_factory=list)

    def pvcreate(self, device: str) -> None:
        self.pvs.append(device)

    def vgcreate(self, name: str, devices: list[str], *, shared: bool) -> None:
        assert all(d in self.pvs for d in devices), "vgcreate before pvcreate"
        self.vgs[name] = Vg(
            size=GiB * len(devices), free=GiB * len(devices), lock_type="sanlock" if shared else ""
        )

    def vg(self, name: str) -> Vg:
        try:
            return self.vgs[name]
        except KeyError:
            raise NotFound(f"volume group {name} not found") from None


@dataclass
class FakeHost:
    dm: bool = True
    lockd: bool = True
    luns: dict[str, str] = field(default_factory=lambda: {"3600a0b8": "/dev/mapper/mpatha"})

    def device_mapper(self) -> bool:
        return self.dm

    def lvmlockd(self) -> bool:
        return self.lockd

    def device_for_wwid(self, wwid: str) -> str | None:
        return self.luns.get(wwid)


def spec(**kw: object) -> PoolSpec:
    base: dict[str, object] = dict(
        name="san", uid="u", kind=PoolKind.SHARED_BLOCK, vg_name="vg_san", wwids=("3600a0b8",)
    )
    base.update(kw)
    return PoolSpec(**base)  # type: ignore[arg-type]


def test_the_fakes_behave_like_lvm() -> None:
    lvm = FakeLvm()
    with pytest.raises(NotFound):
        lvm.vg("x")
    lvm.pvcreate("/dev/a")
    lvm.vgcreate("x", ["/dev/a"], shared=True)
    assert lvm.vg("x").lock_type == "sanlock"
    assert FakeHost().device_for_wwid("nope") is None


async def test_refuses_without_device_mapper_naming_the_capability() -> None:
    pool = SharedBlockPool(spec(), lvm=FakeLvm(), host=FakeHost(dm=False))
    for step in (pool.create, pool.activate):
        with pytest.raises(Unsupported) as e:
            await step()
        assert e.value.reason == "DEVICE_MAPPER_MISSING" and "device-mapper" in e.value.message


async def test_refuses_without_lvmlockd() -> None:
    with pytest.raises(Unsupported) as e:
        await SharedBlockPool(spec(), lvm=FakeLvm(), host=FakeHost(lockd=False)).activate()
    assert e.value.reason == "LVMLOCKD_MISSING"


async def test_create_makes_a_shared_vg_on_the_lun_found_by_wwid() -> None:
    lvm = FakeLvm()
    pool = SharedBlockPool(spec(), lvm=lvm, host=FakeHost())
    await pool.create()
    assert lvm.pvs == ["/dev/mapper/mpatha"] and lvm.vg("vg_san").lock_type == "sanlock"
    await pool.activate()
    assert (await pool.physical()).size == GiB
    assert not pool.capabilities.thin and pool.capabilities.shared


async def test_a_missing_lun_or_a_local_vg_is_refused() -> None:
    with pytest.raises(FailedPrecondition) as e:
        await SharedBlockPool(spec(wwids=("nope",)), lvm=FakeLvm(), host=FakeHost()).create()
    assert e.value.reason == "LUN_NOT_FOUND"
    lvm = FakeLvm(vgs={"vg_san": Vg(size=GiB, free=GiB, lock_type="")})
    with pytest.raises(FailedPrecondition) as e:
        await SharedBlockPool(spec(), lvm=lvm, host=FakeHost()).create()
    assert e.value.reason == "VG_NOT_SHARED"


def test_spec_needs_vg_and_wwids() -> None:
    with pytest.raises(InvalidArgument) as e:
        SharedBlockPool(spec(vg_name=""), lvm=FakeLvm(), host=FakeHost())
    assert e.value.field == "pool.vg_name"
    with pytest.raises(InvalidArgument) as e:
        SharedBlockPool(spec(wwids=()), lvm=FakeLvm(), host=FakeHost())
    assert e.value.field == "pool.wwids"

"""Real LVM on a loop device: PV, VG, the report zsd parses, and the refusals this
kernel forces (no device-mapper: no LV; no lvmlockd: no shared VG). The loop
device and every LVM label are removed whatever happens."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from zsd.errors import FailedPrecondition, NotFound, Unsupported
from zsd.storage.lvmcli import BlockDevices, Lvm
from zsd.storage.model import PoolKind
from zsd.storage.pools.base import PoolSpec
from zsd.storage.pools.shared_block import SharedBlockPool

pytestmark = pytest.mark.integration
MiB = 1 << 20


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("losetup") is None or shutil.which("pvcreate") is None:
        pytest.skip("needs root, losetup and lvm2")
    backing = tmp_path / "lun.img"
    with backing.open("wb") as f:
        f.truncate(64 * MiB)
    device = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield device
    finally:
        lvm = Lvm(devices=[device])
        for vg in ("zsd_test_vg", "zsd_test_shared"):
            with contextlib.suppress(NotFound, FailedPrecondition):
                lvm.vgremove(vg)
        subprocess.run(
            ["wipefs", "-a", device], check=False, capture_output=True
        )  # drops the PV label even if pvremove was never reached
        subprocess.run(["losetup", "-d", device], check=True)


def test_pv_and_vg_on_a_loop_device(loop: str) -> None:
    lvm = Lvm(devices=[loop])
    with pytest.raises(NotFound):
        lvm.vg("zsd_test_vg")
    lvm.pvcreate(loop)
    lvm.vgcreate("zsd_test_vg", [loop], shared=False)
    vg = lvm.vg("zsd_test_vg")
    assert (vg.name, vg.pv_count, vg.lv_count, vg.lock_type) == ("zsd_test_vg", 1, 0, "")
    assert 56 * MiB <= vg.size <= 64 * MiB and vg.free == vg.size and vg.extent_size == 4 * MiB
    if BlockDevices().device_mapper():
        lvm.lvcreate("zsd_test_vg", "lv1", 8 * MiB, shared=False)
        assert lvm.vg("zsd_test_vg").lv_count == 1
    else:
        with pytest.raises(FailedPrecondition) as e:
            lvm.lvcreate("zsd_test_vg", "lv1", 8 * MiB, shared=False)
        assert e.value.reason == "DEVICE_MAPPER_MISSING"
        assert lvm.vg("zsd_test_vg").lv_count == 0
    lvm.vgremove("zsd_test_vg")
    lvm.pvremove(loop)
    with pytest.raises(NotFound):
        lvm.vg("zsd_test_vg")


def test_shared_vg_needs_lvmlockd(loop: str) -> None:
    lvm = Lvm(devices=[loop])
    lvm.pvcreate(loop)
    if BlockDevices().lvmlockd():
        pytest.skip("lvmlockd runs here; the refusal cannot be shown")
    with pytest.raises(FailedPrecondition) as e:
        lvm.vgcreate("zsd_test_shared", [loop], shared=True)
    assert e.value.reason == "LVMLOCKD_MISSING"
    with pytest.raises(NotFound):
        lvm.vg("zsd_test_shared")  # nothing half-made


async def test_the_pool_refuses_activation_on_this_kernel(loop: str) -> None:
    block = BlockDevices()
    if block.device_mapper():
        pytest.skip("this kernel has device-mapper")
    spec = PoolSpec(
        name="san", uid="u", kind=PoolKind.SHARED_BLOCK, vg_name="zsd_test_vg", wwids=("3600a0b8",)
    )
    pool = SharedBlockPool(spec, lvm=Lvm(devices=[loop]), host=block)
    for step in (pool.create, pool.activate):
        with pytest.raises(Unsupported) as e:
            await step()
        assert e.value.reason == "DEVICE_MAPPER_MISSING"
    with pytest.raises(NotFound):
        Lvm(devices=[loop]).vg("zsd_test_vg")  # create refused before touching the disk

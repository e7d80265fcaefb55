"""LVM argv, report parsing, error translation and the kernel probes, without
running LVM (tests/integration/test_lvm_loop.py runs it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from zsd.errors import FailedPrecondition, InvalidArgument, NotFound
from zsd.storage.lvmcli import BlockDevices, Completed, Lvm, parse_vgs

# Real output of `vgs --reportformat json --units b --nosuffix -o ...` on a loop device here.
VGS = """  {
      "report": [
          {
              "vg": [
                  {"vg_name":"vgt", "vg_size":"62914560", "vg_free":"54525952", "vg_extent_size":"4194304",
                   "vg_lock_type":"sanlock", "pv_count":"1", "lv_count":"2"}
              ]
          }
      ]
  }
"""


class Recorder:
    def __init__(self, *answers: Completed) -> None:
        self.answers = list(answers)
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> Completed:
        self.calls.append(list(argv))
        if self.answers:
            return self.answers.pop(0)
        return Completed(argv=tuple(argv), returncode=0, stdout="", stderr="")


def failed(stderr: str, code: int = 5) -> Completed:
    return Completed(argv=("lvm",), returncode=code, stdout="", stderr=stderr)


def test_every_command_is_confined_to_the_pools_devices() -> None:
    lvm = Lvm(Recorder(), devices=["/dev/mapper/mpatha", "/dev/mapper/mpathb"])
    argv = lvm.build_vgcreate("vg_san", ["/dev/mapper/mpatha"], shared=True)
    assert argv[0] == "vgcreate" and argv[-2:] == ["vg_san", "/dev/mapper/mpatha"]
    assert argv[argv.index("--devices") + 1] == "/dev/mapper/mpatha,/dev/mapper/mpathb"
    assert "use_lvmlockd=1" in argv[argv.index("--config") + 1]
    assert argv[argv.index("--lock-type") + 1] == "sanlock" and "--shared" in argv
    local = lvm.build_vgcreate("vg", ["/dev/x"], shared=False)
    assert "--shared" not in local and "use_lvmlockd=1" not in " ".join(local)


def test_lvcreate_on_a_shared_vg_does_not_activate() -> None:
    argv = Lvm().build_lvcreate("vg_san", "vol1", 1 << 30, shared=True)
    assert argv[-6:] == ["-an", "-L", f"{1 << 30}b", "-n", "vol1", "vg_san"]
    assert "-an" not in Lvm().build_lvcreate("vg", "vol1", 512, shared=False)


def test_vgs_report_is_parsed() -> None:
    (vg,) = parse_vgs(VGS)
    assert (vg.name, vg.size, vg.free, vg.extent_size, vg.lock_type, vg.pv_count, vg.lv_count) == (
        "vgt",
        62914560,
        54525952,
        4194304,
        "sanlock",
        1,
        2,
    )
    rec = Recorder(Completed(argv=("vgs",), returncode=0, stdout=VGS, stderr=""))
    assert Lvm(rec).vg("vgt").free == 54525952 and rec.calls[0][-1] == "vgt"


@pytest.mark.parametrize("name", ["", "-x", "..", "a/b", "a b", "x" * 128])
def test_bad_lvm_names(name: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        Lvm().build_vgs(name)
    assert e.value.field == "pool.vg_name"


def test_errors_are_translated() -> None:
    with pytest.raises(NotFound):
        Lvm(Recorder(failed('  Volume group "nope" not found\n  Cannot process volume group nope\n'))).vg(
            "nope"
        )
    with pytest.raises(FailedPrecondition) as e:
        Lvm(
            Recorder(
                failed(
                    "  striped: Required device-mapper target(s) not detected in your kernel.\n"
                    "  Run `lvcreate --help' for more information.\n",
                    3,
                )
            )
        ).lvcreate("vg", "l", 512, shared=False)
    assert e.value.reason == "DEVICE_MAPPER_MISSING"
    with pytest.raises(FailedPrecondition) as e:
        Lvm(
            Recorder(failed("  Using a shared lock type requires lvmlockd (lvm.conf use_lvmlockd.)\n"))
        ).vgcreate("vg", ["/dev/x"], shared=True)
    assert e.value.reason == "LVMLOCKD_MISSING"
    with pytest.raises(FailedPrecondition) as e:
        Lvm(Recorder(failed("  Device /dev/x excluded by a filter.\n"))).pvcreate("/dev/x")
    assert e.value.reason == "LVM_FAILED" and "excluded" in e.value.message


def test_device_mapper_probe(tmp_path: Path) -> None:
    proc, dev = tmp_path / "proc", tmp_path / "dev"
    proc.mkdir()
    (dev / "mapper").mkdir(parents=True)
    probe = BlockDevices(procfs=proc, dev=dev)
    (proc / "misc").write_text(" 58 lvm\n237 loop-control\n")
    assert not probe.device_mapper()
    (proc / "misc").write_text("236 device-mapper\n237 loop-control\n")
    assert not probe.device_mapper()  # listed, but no control node
    (dev / "mapper" / "control").write_text("")
    assert probe.device_mapper()


def test_lvmlockd_probe(tmp_path: Path) -> None:
    run, proc = tmp_path / "run", tmp_path / "proc"
    run.mkdir()
    proc.mkdir()
    probe = BlockDevices(run=run, procfs=proc)
    assert not probe.lvmlockd()
    (run / "lvmlockd.pid").write_text("4242\n")
    assert not probe.lvmlockd()  # stale pid file
    (proc / "4242").mkdir()
    assert probe.lvmlockd()


def test_luns_are_matched_by_wwid_preferring_multipath(tmp_path: Path) -> None:
    sys = tmp_path / "sys"
    for disk, wwid in (
        ("sdb", "naa.600a0b800026b282"),
        ("sdc", "naa.600a0b800026b282"),
        ("sdd", "t10.ATA QEMU"),
    ):
        (sys / "block" / disk / "device").mkdir(parents=True)
        (sys / "block" / disk / "device" / "wwid").write_text(wwid + "\n")
    probe = BlockDevices(sysfs=sys)
    assert probe.device_for_wwid("3600a0b800026b282") == "/dev/sdb"
    (sys / "block" / "dm-0" / "dm").mkdir(parents=True)
    (sys / "block" / "dm-0" / "dm" / "uuid").write_text("mpath-3600a0b800026b282\n")
    (sys / "block" / "dm-0" / "dm" / "name").write_text("mpatha\n")
    assert probe.device_for_wwid("naa.600A0B800026B282") == "/dev/mapper/mpatha"
    assert probe.device_for_wwid("3600a0b8000000000") is None

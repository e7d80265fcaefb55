"""The KVM probe's failure paths and its child-process supervision, without real KVM."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from zsd.host import kvmprobe
from zsd.host.kvmprobe import ChildProcessKvmProber, KvmProbeResult, probe_kvm, run_probe_process

# Generous: the supervisor kills at TIMEOUT, then waits at most a couple of seconds.
TIMEOUT = 0.3
DEADLINE = TIMEOUT + 2.0


def _children() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _stage_then_sleep(stage: str) -> list[str]:
    line = json.dumps({"stage": stage})
    return _python(f"import time; print({line!r}, flush=True); time.sleep(60)")


@pytest.fixture(autouse=True)
def _no_child_left_behind() -> Iterator[None]:
    # Compared with what was there before: other tests' fixtures may own children.
    before = set(_children())
    yield
    assert set(_children()) - before == set()


def test_missing_device() -> None:
    result = probe_kvm(device=Path("/nonexistent/kvm"), timeout=TIMEOUT)

    assert result == KvmProbeResult(usable=False, reason="no /nonexistent/kvm", device_present=False)


@pytest.mark.parametrize("device", [Path("/dev/null"), None])
def test_not_a_kvm_device(device: Path | None, tmp_path: Path) -> None:
    if device is None:
        device = tmp_path / "kvm"
        device.write_bytes(b"")

    result = probe_kvm(device=device, timeout=5.0)

    assert not result.usable
    assert result.reason == (
        f"KVM_GET_API_VERSION failed: errno 25 (Inappropriate ioctl for device); {device} is not a KVM device"
    )


def test_child_process_prober_is_probe_kvm() -> None:
    prober = ChildProcessKvmProber(device=Path("/dev/null"), timeout=5.0)

    assert prober.probe() == probe_kvm(device=Path("/dev/null"), timeout=5.0)


def test_run_guest_reports_stages_in_process(tmp_path: Path) -> None:
    stages: list[str] = []

    null = kvmprobe.run_guest(Path("/dev/null"), stages.append)
    directory = kvmprobe.run_guest(tmp_path)

    assert stages == ["open", "KVM_GET_API_VERSION"]
    assert not null.usable
    assert directory == KvmProbeResult(
        usable=False, reason=f"cannot open {tmp_path}: errno 21 (Is a directory)"
    )


def test_main_prints_stages_and_result(capsys: pytest.CaptureFixture[str]) -> None:
    status = kvmprobe.main(["--device", "/dev/null"])

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1
    assert lines[:2] == [{"stage": "open"}, {"stage": "KVM_GET_API_VERSION"}]
    assert lines[-1]["usable"] is False
    assert "not a KVM device" in lines[-1]["reason"]


def test_hung_child_is_killed_after_timeout() -> None:
    started = time.monotonic()

    result = run_probe_process(_python("import time; time.sleep(60)"), timeout=TIMEOUT)

    assert time.monotonic() - started < DEADLINE
    assert result == KvmProbeResult(
        usable=False, reason=f"KVM probe did not finish within {TIMEOUT} s (no stage reached)"
    )


def test_guest_stuck_in_kvm_run_did_not_halt() -> None:
    result = run_probe_process(_stage_then_sleep("KVM_RUN: running a loop"), timeout=TIMEOUT)

    assert result == KvmProbeResult(
        usable=False,
        reason=f"guest did not halt within {TIMEOUT} s (stuck in KVM_RUN: running a loop; probe killed)",
    )


def test_child_stuck_before_running_names_its_stage() -> None:
    result = run_probe_process(_stage_then_sleep("KVM_CREATE_VM"), timeout=TIMEOUT)

    assert result.reason == f"KVM probe did not finish within {TIMEOUT} s (stuck at KVM_CREATE_VM)"


def test_grandchildren_are_killed_with_the_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    script = f"sleep 60 & echo $! > {pid_file}; wait"

    run_probe_process(["/bin/sh", "-c", script], timeout=TIMEOUT)

    # SIGKILL takes effect asynchronously; reparented to init, the grandchild is
    # then gone or at most a zombie waiting to be reaped.
    with contextlib.suppress(psutil.NoSuchProcess):
        grandchild = psutil.Process(int(pid_file.read_text()))
        deadline = time.monotonic() + 1.0
        while grandchild.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)
        assert grandchild.status() == psutil.STATUS_ZOMBIE


def test_result_line_wins_over_noise_and_exit_status() -> None:
    result_line = json.dumps({"usable": True, "reason": "fine"})
    code = f"print('noise'); print('[1]'); print({result_line!r}); import sys; sys.exit(1)"

    assert run_probe_process(_python(code), timeout=5.0) == KvmProbeResult(usable=True, reason="fine")


def test_child_failing_without_result() -> None:
    code = "import sys; print('{\"stage\": \"open\"}'); sys.stderr.write('boom\\n'); sys.exit(3)"

    result = run_probe_process(_python(code), timeout=5.0)

    assert result == KvmProbeResult(
        usable=False, reason="KVM probe process exited with status 3 at open without a result: boom"
    )


def test_child_killed_by_signal() -> None:
    result = run_probe_process(
        _python("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"), timeout=5.0
    )

    assert result.reason == "KVM probe process was killed by signal 9 without a result"


def test_child_that_cannot_start(tmp_path: Path) -> None:
    result = run_probe_process([str(tmp_path / "missing")], timeout=TIMEOUT)

    assert not result.usable
    assert result.reason.startswith("cannot start the KVM probe process: [Errno 2]")

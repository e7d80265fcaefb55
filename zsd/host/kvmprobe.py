"""Does KVM actually run guest code on this host?

``/dev/kvm`` existing proves little: on paravirtualised hosts (PVM) and some
nested setups the device opens and VMs can be created, yet real guests hang or
abort. So the probe runs a small guest (see ``kvmguest``) and checks every
exit it must produce.

KVM_RUN may never return, so the guest runs in a child process
(``python -m zsd.host.kvmprobe --device /dev/kvm``) that the parent kills after
``timeout``. The child prints one JSON line per stage it enters and a final
result line; on a timeout the last stage tells where it got stuck. This module
imports only the standard library so the child starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import json
import mmap
import os
import platform
import signal
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from zsd.host import kvmabi as abi
from zsd.host import kvmguest as guest


@dataclass(frozen=True, kw_only=True)
class KvmProbeResult:
    usable: bool
    # One line a human can act on, whatever the outcome.
    reason: str
    # False when there is no KVM device at all: TCG is then the normal state of
    # the host, not a fault to report (unlike a device that exists but fails).
    device_present: bool = True


class KvmProber(Protocol):
    def probe(self) -> KvmProbeResult:
        """Blocking; returns within the prober's own timeout plus a little, never raises."""
        ...


@dataclass(frozen=True, kw_only=True)
class ChildProcessKvmProber:
    """The real prober: ``probe_kvm`` on a device."""

    device: Path = Path("/dev/kvm")
    timeout: float = 3.0

    def probe(self) -> KvmProbeResult:
        return probe_kvm(device=self.device, timeout=self.timeout)


# After SIGKILL a process normally dies at once; one stuck in the kernel may not.
_KILL_GRACE = 2.0
# Stages while the guest runs read "KVM_RUN: <what the guest is doing>".
_RUN_STAGE_PREFIX = "KVM_RUN: "


def probe_kvm(*, device: Path = Path("/dev/kvm"), timeout: float = 3.0) -> KvmProbeResult:
    """Run the guest in a child process; blocking, returns within ``timeout`` plus a kill grace of 2 s."""
    machine = platform.machine()
    if machine != "x86_64":
        return KvmProbeResult(
            usable=False, reason=f"the KVM probe only has an x86_64 guest and this machine is {machine}"
        )
    if not device.exists():
        return KvmProbeResult(usable=False, reason=f"no {device}", device_present=False)
    return run_probe_process(probe_command(device), timeout=timeout, env=_child_env())


def probe_command(device: Path) -> list[str]:
    return [sys.executable, "-m", "zsd.host.kvmprobe", "--device", str(device)]


def _child_env() -> dict[str, str]:
    # The child must import this very copy of zsd even when the parent found it
    # through its working directory or a path hook rather than site-packages.
    source_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH", "")) if p)
    return env


def run_probe_process(
    argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> KvmProbeResult:
    """Run a probe child speaking the stage/result JSON-lines protocol; never leaves it behind.

    The child gets its own session so the kill reaches anything it started.
    """
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as e:
        return KvmProbeResult(usable=False, reason=f"cannot start the KVM probe process: {e}")
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return _kill_after_timeout(proc, timeout)
    except BaseException:
        _kill_session(proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=_KILL_GRACE)
        raise
    return _result_from_output(out, err, proc.returncode)


def _kill_session(proc: subprocess.Popen[bytes]) -> None:
    # The child is not reaped yet, so its pid (= its session's process group id)
    # cannot have been reused.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _kill_after_timeout(proc: subprocess.Popen[bytes], timeout: float) -> KvmProbeResult:
    _kill_session(proc)
    try:
        out, _err = proc.communicate(timeout=_KILL_GRACE)
    except subprocess.TimeoutExpired:
        # Stuck in an uninterruptible kernel wait: nothing more can be done from
        # here, but say so rather than pretend it is gone.
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        return KvmProbeResult(
            usable=False,
            reason=f"KVM probe did not finish within {timeout} s and its process {proc.pid} "
            f"did not die after SIGKILL",
        )
    stage = _parse_lines(out).stage
    if stage.startswith(_RUN_STAGE_PREFIX):
        return KvmProbeResult(
            usable=False, reason=f"guest did not halt within {timeout} s (stuck in {stage}; probe killed)"
        )
    where = f"stuck at {stage}" if stage else "no stage reached"
    return KvmProbeResult(usable=False, reason=f"KVM probe did not finish within {timeout} s ({where})")


@dataclass(frozen=True, kw_only=True)
class _ChildOutput:
    stage: str = ""
    result: KvmProbeResult | None = None


def _parse_lines(out: bytes) -> _ChildOutput:
    stage = ""
    result = None
    for line in out.decode(errors="replace").splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if not isinstance(message, dict):
            continue
        if isinstance(message.get("stage"), str):
            stage = message["stage"]
        elif isinstance(message.get("usable"), bool) and isinstance(message.get("reason"), str):
            result = KvmProbeResult(usable=message["usable"], reason=message["reason"])
    return _ChildOutput(stage=stage, result=result)


def _result_from_output(out: bytes, err: bytes, returncode: int) -> KvmProbeResult:
    parsed = _parse_lines(out)
    if parsed.result is not None:
        return parsed.result
    how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
    where = f" at {parsed.stage}" if parsed.stage else ""
    last_error = err.decode(errors="replace").strip().splitlines()[-1:]
    detail = f": {last_error[0]}" if last_error else ""
    return KvmProbeResult(usable=False, reason=f"KVM probe process {how}{where} without a result{detail}")


# --- the child side ---------------------------------------------------------


class _ProbeFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _ioctl_int(fd: int, request: int, name: str, arg: int = 0) -> int:
    try:
        return fcntl.ioctl(fd, request, arg)
    except OSError as e:
        raise _ProbeFailed(f"{name} failed: errno {e.errno} ({e.strerror})") from e


def _ioctl_struct(fd: int, request: int, name: str, buffer: ctypes.Structure) -> None:
    try:
        fcntl.ioctl(fd, request, buffer, True)
    except OSError as e:
        raise _ProbeFailed(f"{name} failed: errno {e.errno} ({e.strerror})") from e


def run_guest(device: Path, on_stage: Callable[[str], None] = lambda _stage: None) -> KvmProbeResult:
    """Run the guest in this process (may hang in KVM_RUN: only the child calls this)."""
    try:
        with contextlib.ExitStack() as cleanup:
            return _run_guest(device, on_stage, cleanup)
    except _ProbeFailed as e:
        return KvmProbeResult(usable=False, reason=e.reason)


def _run_guest(
    device: Path, on_stage: Callable[[str], None], cleanup: contextlib.ExitStack
) -> KvmProbeResult:
    on_stage("open")
    try:
        kvm = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise _ProbeFailed(f"no {device}") from e
    except OSError as e:
        raise _ProbeFailed(f"cannot open {device}: errno {e.errno} ({e.strerror})") from e
    cleanup.callback(os.close, kvm)

    on_stage("KVM_GET_API_VERSION")
    try:
        version = fcntl.ioctl(kvm, abi.KVM_GET_API_VERSION, 0)
    except OSError as e:
        hint = f"; {device} is not a KVM device" if e.errno == errno.ENOTTY else ""
        raise _ProbeFailed(f"KVM_GET_API_VERSION failed: errno {e.errno} ({e.strerror}){hint}") from e
    if version != abi.KVM_API_VERSION:
        raise _ProbeFailed(f"KVM API version is {version}, expected {abi.KVM_API_VERSION}")

    on_stage("KVM_CREATE_VM")
    vm = _ioctl_int(kvm, abi.KVM_CREATE_VM, "KVM_CREATE_VM")
    cleanup.callback(os.close, vm)

    on_stage("KVM_SET_USER_MEMORY_REGION")
    memory = mmap.mmap(-1, guest.MEMORY_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    cleanup.callback(memory.close)
    memory[:] = guest.memory_image()
    # The temporary ctypes view only lends us the address; the mapping itself
    # stays put until ``memory`` is closed when the probe ends.
    address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    region = abi.KvmUserspaceMemoryRegion(
        slot=0, flags=0, guest_phys_addr=0, memory_size=guest.MEMORY_SIZE, userspace_addr=address
    )
    _ioctl_struct(vm, abi.KVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", region)

    on_stage("KVM_CREATE_VCPU")
    vcpu = _ioctl_int(vm, abi.KVM_CREATE_VCPU, "KVM_CREATE_VCPU")
    cleanup.callback(os.close, vcpu)
    run_size = _ioctl_int(kvm, abi.KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE")
    run = mmap.mmap(vcpu, run_size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    cleanup.callback(run.close)

    on_stage("KVM_SET_SREGS")
    sregs = abi.KvmSregs()
    _ioctl_struct(vcpu, abi.KVM_GET_SREGS, "KVM_GET_SREGS", sregs)
    guest.set_long_mode(sregs)
    _ioctl_struct(vcpu, abi.KVM_SET_SREGS, "KVM_SET_SREGS", sregs)
    on_stage("KVM_SET_REGS")
    _ioctl_struct(vcpu, abi.KVM_SET_REGS, "KVM_SET_REGS", guest.initial_regs())

    for checkpoint in guest.CHECKPOINTS:
        stage = f"{_RUN_STAGE_PREFIX}{checkpoint.doing}"
        on_stage(stage)
        _expect_exit(vcpu, run, abi.KVM_EXIT_IO, stage)
        _expect_checkpoint(run, run_size, checkpoint, stage)
    stage = f"{_RUN_STAGE_PREFIX}{guest.HALTING}"
    on_stage(stage)
    _expect_exit(vcpu, run, abi.KVM_EXIT_HLT, stage)
    return KvmProbeResult(
        usable=True,
        reason="guest ran under KVM: long mode, int3 through its IDT, "
        f"{guest.LOOP_ITERATIONS:,} loop iterations, HLT",
    )


def _expect_exit(vcpu: int, run: mmap.mmap, expected: int, stage: str) -> None:
    _ioctl_int(vcpu, abi.KVM_RUN, stage)
    (reason,) = struct.unpack_from("<I", run, abi.KVM_RUN_EXIT_REASON_OFFSET)
    if reason == expected:
        return
    detail = ""
    if reason == abi.KVM_EXIT_FAIL_ENTRY:
        (hw_reason,) = struct.unpack_from("<Q", run, abi.KVM_RUN_EXIT_UNION_OFFSET)
        detail = f", hardware entry failure reason {hw_reason:#x}"
    elif reason == abi.KVM_EXIT_INTERNAL_ERROR:
        (suberror,) = struct.unpack_from("<I", run, abi.KVM_RUN_EXIT_UNION_OFFSET)
        detail = f", suberror {suberror}: {abi.INTERNAL_ERROR_NAMES.get(suberror, 'unknown')}"
    raise _ProbeFailed(
        f"unexpected exit reason {reason} ({_exit_name(reason)}{detail}) in {stage}, "
        f"expected {_exit_name(expected)}"
    )


def _expect_checkpoint(run: mmap.mmap, run_size: int, checkpoint: guest.Checkpoint, stage: str) -> None:
    direction, size, port, count, data_offset = struct.unpack_from(
        abi.KVM_RUN_IO_FORMAT, run, abi.KVM_RUN_EXIT_UNION_OFFSET
    )
    value = run[data_offset] if data_offset < run_size else None
    if (direction, size, port, count, value) != (abi.KVM_EXIT_IO_OUT, 1, guest.PORT, 1, checkpoint.value):
        raise _ProbeFailed(
            f"{stage}: expected OUT of {checkpoint.value:#x} to port {guest.PORT:#x}, got "
            f"direction={direction} size={size} port={port:#x} count={count} value={value}"
        )


def _exit_name(reason: int) -> str:
    return abi.EXIT_REASON_NAMES.get(reason, "unknown")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zsd.host.kvmprobe", description="Run a tiny guest under KVM; print JSON lines."
    )
    parser.add_argument("--device", type=Path, default=Path("/dev/kvm"))
    args = parser.parse_args(argv)

    def emit(message: Mapping[str, object]) -> None:
        # Flushed per line: after a kill the parent still sees the last stage.
        print(json.dumps(message), flush=True)

    result = run_guest(args.device, lambda stage: emit({"stage": stage}))
    emit({"usable": result.usable, "reason": result.reason})
    return 0 if result.usable else 1


if __name__ == "__main__":
    sys.exit(main())

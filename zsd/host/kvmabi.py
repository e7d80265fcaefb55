"""The slice of the Linux KVM ioctl ABI (x86_64) that the KVM probe needs.

Everything here is transcribed from ``include/uapi/linux/kvm.h``,
``arch/x86/include/uapi/asm/kvm.h`` and ``include/uapi/asm-generic/ioctl.h``;
the ioctl numbers are computed from the struct sizes exactly as the C macros do,
so a wrong struct layout shows up as a wrong number (the tests pin a few known
values). Standard library only: this module runs inside the probe child.
"""

from __future__ import annotations

import ctypes

KVMIO = 0xAE
# The only stable API version there has ever been (kvm.h: KVM_API_VERSION 12).
KVM_API_VERSION = 12

# asm-generic/ioctl.h: nr in bits 0-7, type in 8-15, size in 16-29, direction in 30-31.
# (x86 uses the generic layout; powerpc, mips and sparc do not.)
_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def _io(nr: int) -> int:
    return _ioc(_IOC_NONE, nr, 0)


def _iow(nr: int, struct: type[ctypes.Structure]) -> int:
    return _ioc(_IOC_WRITE, nr, ctypes.sizeof(struct))


def _ior(nr: int, struct: type[ctypes.Structure]) -> int:
    return _ioc(_IOC_READ, nr, ctypes.sizeof(struct))


class KvmUserspaceMemoryRegion(ctypes.Structure):
    """struct kvm_userspace_memory_region (32 bytes)."""

    _fields_ = (
        ("slot", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("guest_phys_addr", ctypes.c_uint64),
        ("memory_size", ctypes.c_uint64),
        ("userspace_addr", ctypes.c_uint64),
    )


class KvmRegs(ctypes.Structure):
    """struct kvm_regs (x86): 18 general registers, 144 bytes."""

    _fields_ = tuple(
        (name, ctypes.c_uint64)
        for name in (
            "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
            "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
            "rip", "rflags",
        )
    )  # fmt: skip


class KvmSegment(ctypes.Structure):
    """struct kvm_segment (24 bytes)."""

    _fields_ = (
        ("base", ctypes.c_uint64),
        ("limit", ctypes.c_uint32),
        ("selector", ctypes.c_uint16),
        ("type", ctypes.c_uint8),
        ("present", ctypes.c_uint8),
        ("dpl", ctypes.c_uint8),
        ("db", ctypes.c_uint8),
        ("s", ctypes.c_uint8),
        ("l", ctypes.c_uint8),
        ("g", ctypes.c_uint8),
        ("avl", ctypes.c_uint8),
        ("unusable", ctypes.c_uint8),
        ("padding", ctypes.c_uint8),
    )


class KvmDtable(ctypes.Structure):
    """struct kvm_dtable (16 bytes)."""

    _fields_ = (
        ("base", ctypes.c_uint64),
        ("limit", ctypes.c_uint16),
        ("padding", ctypes.c_uint16 * 3),
    )


# kvm.h: KVM_NR_INTERRUPTS 256 -> interrupt_bitmap[(256 + 63) / 64].
_INTERRUPT_BITMAP_WORDS = (256 + 63) // 64


class KvmSregs(ctypes.Structure):
    """struct kvm_sregs (x86, 312 bytes)."""

    _fields_ = (
        *((name, KvmSegment) for name in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")),
        ("gdt", KvmDtable),
        ("idt", KvmDtable),
        *((name, ctypes.c_uint64) for name in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")),
        ("interrupt_bitmap", ctypes.c_uint64 * _INTERRUPT_BITMAP_WORDS),
    )


# ioctls on the /dev/kvm fd
KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
# ioctls on a VM fd
KVM_SET_USER_MEMORY_REGION = _iow(0x46, KvmUserspaceMemoryRegion)
KVM_CREATE_VCPU = _io(0x41)
# ioctls on a vCPU fd
KVM_RUN = _io(0x80)
KVM_SET_REGS = _iow(0x82, KvmRegs)
KVM_GET_SREGS = _ior(0x83, KvmSregs)
KVM_SET_SREGS = _iow(0x84, KvmSregs)

# struct kvm_run (mmapped from the vCPU fd): exit_reason is the __u32 at offset 8,
# and the exit-specific union starts at offset 32 (after cr8 and apic_base).
KVM_RUN_EXIT_REASON_OFFSET = 8
KVM_RUN_EXIT_UNION_OFFSET = 32
# The union member for KVM_EXIT_IO: __u8 direction, __u8 size, __u16 port,
# __u32 count, __u64 data_offset (from the start of kvm_run).
KVM_RUN_IO_FORMAT = "<BBHIQ"
KVM_EXIT_IO_OUT = 1

# kvm.h exit reasons, named so a failure says more than a number.
KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTERNAL_ERROR = 17
EXIT_REASON_NAMES = {
    0: "KVM_EXIT_UNKNOWN",
    1: "KVM_EXIT_EXCEPTION",
    2: "KVM_EXIT_IO",
    3: "KVM_EXIT_HYPERCALL",
    4: "KVM_EXIT_DEBUG",
    5: "KVM_EXIT_HLT",
    6: "KVM_EXIT_MMIO",
    7: "KVM_EXIT_IRQ_WINDOW_OPEN",
    8: "KVM_EXIT_SHUTDOWN",
    9: "KVM_EXIT_FAIL_ENTRY",
    10: "KVM_EXIT_INTR",
    11: "KVM_EXIT_SET_TPR",
    12: "KVM_EXIT_TPR_ACCESS",
    17: "KVM_EXIT_INTERNAL_ERROR",
    24: "KVM_EXIT_SYSTEM_EVENT",
}
# kvm.h: the first __u32 of the KVM_EXIT_INTERNAL_ERROR union member.
INTERNAL_ERROR_NAMES = {
    1: "emulation failure",
    2: "exception while delivering an exception",
    3: "failure while delivering an event",
    4: "unexpected exit reason",
}

"""The probe's guest and the KVM ABI it relies on, checked without running KVM."""

from __future__ import annotations

import ctypes
import struct

from zsd.host import kvmabi, kvmguest


def test_struct_sizes_match_linux_headers() -> None:
    assert ctypes.sizeof(kvmabi.KvmUserspaceMemoryRegion) == 32
    assert ctypes.sizeof(kvmabi.KvmRegs) == 144
    assert ctypes.sizeof(kvmabi.KvmSegment) == 24
    assert ctypes.sizeof(kvmabi.KvmDtable) == 16
    assert ctypes.sizeof(kvmabi.KvmSregs) == 312


def test_ioctl_numbers_match_known_values() -> None:
    # Values as printed by a C program including <linux/kvm.h> on x86_64.
    assert kvmabi.KVM_GET_API_VERSION == 0xAE00
    assert kvmabi.KVM_CREATE_VM == 0xAE01
    assert kvmabi.KVM_GET_VCPU_MMAP_SIZE == 0xAE04
    assert kvmabi.KVM_CREATE_VCPU == 0xAE41
    assert kvmabi.KVM_SET_USER_MEMORY_REGION == 0x4020AE46
    assert kvmabi.KVM_RUN == 0xAE80
    assert kvmabi.KVM_SET_REGS == 0x4090AE82
    assert kvmabi.KVM_GET_SREGS == 0x8138AE83
    assert kvmabi.KVM_SET_SREGS == 0x4138AE84


def _qword(image: bytes, address: int) -> int:
    (value,) = struct.unpack_from("<Q", image, address)
    return int(value)


def test_page_tables_identity_map_the_first_2_mib() -> None:
    image = kvmguest.memory_image()

    pml4e = _qword(image, kvmguest.PML4_ADDR)
    pdpte = _qword(image, (pml4e & ~0xFFF) + 8 * 0)
    pde = _qword(image, (pdpte & ~0xFFF) + 8 * 0)

    assert pml4e & 0x3 == 0x3 and pdpte & 0x3 == 0x3  # present, writable
    assert pde & 0x83 == 0x83  # present, writable, 2 MiB page
    assert pde & ~0x1FFFFF == 0  # ... at physical 0
    assert kvmguest.STACK_TOP <= kvmguest.MEMORY_SIZE <= 2 * 1024 * 1024


def test_int3_gate_points_at_the_handler_through_a_64_bit_code_descriptor() -> None:
    image = kvmguest.memory_image()

    low, selector, ist, attributes, mid, high, _ = struct.unpack_from(
        "<HHBBHII", image, kvmguest.IDT_ADDR + 16 * kvmguest.INT3_VECTOR
    )
    descriptor = _qword(image, kvmguest.GDT_ADDR + selector)

    assert low | mid << 16 | high << 32 == kvmguest.HANDLER_ADDR
    assert (ist, attributes) == (0, 0x8E)
    assert descriptor >> 53 & 1 == 1  # L: 64-bit code
    assert descriptor >> 54 & 1 == 0  # D must be clear when L is set
    assert descriptor >> 47 & 1 == 1  # present


def test_code_reports_every_checkpoint_in_order_then_halts() -> None:
    image = kvmguest.memory_image()
    main = image[kvmguest.CODE_ADDR : kvmguest.CODE_ADDR + len(kvmguest.MAIN_CODE)]
    handler = image[kvmguest.HANDLER_ADDR : kvmguest.HANDLER_ADDR + len(kvmguest.HANDLER_CODE)]
    code = main + handler

    outs = [
        code[i + 1] for i in range(len(code) - 3) if code[i] == 0xB0 and code[i + 2 : i + 4] == b"\xe6\x10"
    ]

    assert outs == [c.value for c in kvmguest.CHECKPOINTS]
    assert main.endswith(b"\xcc")
    assert handler.endswith(b"\xf4")
    assert struct.pack("<I", kvmguest.LOOP_ITERATIONS) in handler


def test_long_mode_registers() -> None:
    sregs = kvmabi.KvmSregs()
    kvmguest.set_long_mode(sregs)
    regs = kvmguest.initial_regs()

    assert sregs.cr0 == 0x80050033  # PG, AM, WP, NE, ET, MP, PE: what Linux itself runs with
    assert (sregs.cr3, sregs.cr4, sregs.efer) == (kvmguest.PML4_ADDR, 0x20, 0x500)
    assert (sregs.cs.selector, sregs.cs.l, sregs.cs.db, sregs.cs.type) == (0x08, 1, 0, 0xB)
    assert (sregs.ss.selector, sregs.ss.l, sregs.ss.present) == (0x10, 0, 1)
    assert (sregs.idt.base, sregs.idt.limit) == (kvmguest.IDT_ADDR, 4095)
    assert (regs.rip, regs.rsp, regs.rflags) == (kvmguest.CODE_ADDR, kvmguest.STACK_TOP, 0x2)

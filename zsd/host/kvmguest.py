"""The KVM probe's guest: a few 64-bit instructions that do what real kernels need.

A trivial ``out; hlt`` is not enough. On a PVM host (KVM without hardware
virtualisation, ``kvm_pvm``) such a guest runs fine, yet real kernels hang:
there, ordinary guest code is emulated instruction by instruction (about a
microsecond each, measured) and ``int3``/``int n`` in a 64-bit guest end in a
KVM emulation failure. So the guest starts in long mode with paging, takes a
software interrupt through its IDT, and runs a loop that takes milliseconds at
native speed but many seconds when emulated. It reports each checkpoint by
writing a byte to an I/O port, then halts.

Pure data: building the image and the initial CPU state does no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from zsd.host import kvmabi as abi

# Guest-physical layout of the one memory slot (identity-mapped).
MEMORY_SIZE = 0x10000
CODE_ADDR = 0x1000
HANDLER_ADDR = 0x1100
PML4_ADDR = 0x2000
PDPT_ADDR = 0x3000
PD_ADDR = 0x4000
GDT_ADDR = 0x5000
IDT_ADDR = 0x6000
STACK_TOP = 0x9000

PORT = 0x10
INT3_VECTOR = 3
# About 10 million cycles: ~5 ms native, far beyond any sane timeout when emulated.
LOOP_ITERATIONS = 10_000_000

_CODE_SELECTOR = 0x08
_DATA_SELECTOR = 0x10
# Flat descriptors: 64-bit code (L=1, D=0) and read/write data, both DPL 0.
_GDT = (0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF)
_IDT_ENTRIES = 256
_INTERRUPT_GATE = 0x8E  # present, DPL 0, 64-bit interrupt gate

_PAGE_PRESENT_RW = 0x3
_PAGE_SIZE_2M = 0x80

_CR0_PE, _CR0_MP, _CR0_ET, _CR0_NE = 0x1, 0x2, 0x10, 0x20
_CR0_WP, _CR0_AM, _CR0_PG = 0x10000, 0x40000, 0x80000000
_CR4_PAE = 0x20
_EFER_LME, _EFER_LMA = 0x100, 0x400
_RFLAGS_RESERVED = 0x2  # bit 1 always reads as 1


@dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """The guest writes ``value`` to ``PORT`` once it is done ``doing``."""

    value: int
    doing: str


CHECKPOINTS = (
    Checkpoint(value=0x41, doing="entering long mode"),
    Checkpoint(value=0x42, doing="delivering int3 through the IDT"),
    Checkpoint(value=0x43, doing=f"running a {LOOP_ITERATIONS:,}-iteration loop"),
)
HALTING = "halting"


def _out(value: int) -> bytes:
    return bytes((0xB0, value, 0xE6, PORT))  # mov al, value ; out PORT, al


# The main code announces long mode and traps; everything else runs in the handler.
MAIN_CODE = _out(CHECKPOINTS[0].value) + b"\xcc"  # int3
HANDLER_CODE = (
    _out(CHECKPOINTS[1].value)
    + b"\xb9" + struct.pack("<I", LOOP_ITERATIONS)  # mov ecx, LOOP_ITERATIONS
    + b"\xff\xc9\x75\xfc"  # loop: dec ecx ; jnz loop
    + _out(CHECKPOINTS[2].value)
    + b"\xf4"  # hlt
)  # fmt: skip


def memory_image() -> bytes:
    """The whole guest memory: code, page tables (one 2 MiB page at 0), GDT, IDT."""
    image = bytearray(MEMORY_SIZE)
    image[CODE_ADDR : CODE_ADDR + len(MAIN_CODE)] = MAIN_CODE
    image[HANDLER_ADDR : HANDLER_ADDR + len(HANDLER_CODE)] = HANDLER_CODE
    struct.pack_into("<Q", image, PML4_ADDR, PDPT_ADDR | _PAGE_PRESENT_RW)
    struct.pack_into("<Q", image, PDPT_ADDR, PD_ADDR | _PAGE_PRESENT_RW)
    struct.pack_into("<Q", image, PD_ADDR, 0 | _PAGE_PRESENT_RW | _PAGE_SIZE_2M)
    struct.pack_into(f"<{len(_GDT)}Q", image, GDT_ADDR, *_GDT)
    struct.pack_into(
        "<HHBBHII",
        image,
        IDT_ADDR + 16 * INT3_VECTOR,
        HANDLER_ADDR & 0xFFFF,
        _CODE_SELECTOR,
        0,  # no interrupt stack table
        _INTERRUPT_GATE,
        (HANDLER_ADDR >> 16) & 0xFFFF,
        HANDLER_ADDR >> 32,
        0,
    )
    return bytes(image)


def set_long_mode(sregs: abi.KvmSregs) -> None:
    """Turn the vCPU's reset state (from KVM_GET_SREGS) into flat 64-bit long mode."""
    sregs.cr0 = _CR0_PE | _CR0_MP | _CR0_ET | _CR0_NE | _CR0_WP | _CR0_AM | _CR0_PG
    sregs.cr3 = PML4_ADDR
    sregs.cr4 = _CR4_PAE
    sregs.efer = _EFER_LME | _EFER_LMA
    sregs.gdt.base = GDT_ADDR
    sregs.gdt.limit = 8 * len(_GDT) - 1
    sregs.idt.base = IDT_ADDR
    sregs.idt.limit = 16 * _IDT_ENTRIES - 1
    _flat_segment(sregs.cs, selector=_CODE_SELECTOR, type_=0xB, long_mode=True)
    for data in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
        _flat_segment(data, selector=_DATA_SELECTOR, type_=0x3, long_mode=False)


def _flat_segment(segment: abi.KvmSegment, *, selector: int, type_: int, long_mode: bool) -> None:
    segment.base = 0
    segment.limit = 0xFFFFFFFF
    segment.selector = selector
    segment.type = type_
    segment.present = 1
    segment.dpl = 0
    segment.s = 1
    segment.g = 1
    segment.l = int(long_mode)
    segment.db = int(not long_mode)


def initial_regs() -> abi.KvmRegs:
    return abi.KvmRegs(rip=CODE_ADDR, rsp=STACK_TOP, rflags=_RFLAGS_RESERVED)

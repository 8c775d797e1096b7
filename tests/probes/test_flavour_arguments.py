"""Each fentry and kprobe flavour declares its function's arguments as this kernel's BTF has them.

An integer narrower than its u64 slot must be declared so (Arg): 5.10's
trampoline leaves the upper half of an int's slot as stale stack, and a
probe reading it whole saw most TCP transitions as states out of range.
The prototypes come from the running kernel, so each column of the kernel
matrix checks its own.
"""
import ctypes

import pytest

from asm import R0, R1, Program
from gespann import btf
from gespann.bpf import syscall
from gespann.bpf.programs import LoadedProgram, load_program
from gespann.bpf.syscall import ProgType
from gespann.probes import ALL_PROBES, EXAMPLE_PROBES
from gespann.probes.toolkit.arguments import Arg, ArrayArguments
from gespann.probes.toolkit.flavours import Fentry, Kprobe

pytestmark = pytest.mark.root
BPF_PROG_TEST_RUN = 10

#: C spellings of BTF parameter types -> (bytes, signed), for the integers probes read.
INTEGERS = {"int": (4, True), "unsigned int": (4, False), "u32": (4, False), "__u32": (4, False),
            "u16": (2, False), "__u16": (2, False), "u8": (1, False), "__u8": (1, False), "bool": (1, False),
            "long": (8, True), "long int": (8, True), "unsigned long": (8, False), "long unsigned int": (8, False),
            "u64": (8, False), "__u64": (8, False), "size_t": (8, False)}

FUNCTION_FLAVOURS = [pytest.param(probe.name, flavour, target, id=f"{probe.name}-{flavour.mode}-{target}")
                     for probe in (*ALL_PROBES, *EXAMPLE_PROBES) for flavour in probe.flavours
                     if isinstance(flavour, (Fentry, Kprobe)) for target in flavour.targets]


def width(c_type: str) -> tuple[int, bool]:
    """(bytes, signed) of a parameter as it sits in a slot or register; pointers are whole and unsigned."""
    c_type = c_type.replace("const ", "").replace("volatile ", "").strip()
    if c_type.endswith("*"):
        return 8, False
    if c_type.startswith("enum "):
        return 4, False
    assert c_type in INTEGERS, f"parameter type {c_type!r}: add its width to INTEGERS"
    return INTEGERS[c_type]


def test_there_are_function_flavours_to_check():
    assert FUNCTION_FLAVOURS


@pytest.mark.parametrize("probe, flavour, function", FUNCTION_FLAVOURS)
def test_declared_arguments_match_the_kernel_prototype(probe, flavour, function):
    try:
        signature = btf.func_signature(function)
    except btf.BTFError as err:
        pytest.skip(f"n/a: {function} is not in this kernel's BTF ({err})")
    assert len(flavour.args) <= len(signature.params), f"{probe}: {function} is {signature}"
    for arg, param in zip(flavour.args, signature.params):
        size, signed = width(param.type)
        assert (arg.size, arg.signed) == ((size, signed) if size < 8 else (8, arg.signed)), \
            f"{probe}: argument {arg.name!r} of {function} is declared {arg}, but the kernel has {signature}"


class ProgTestRunAttr(ctypes.Structure):
    """The BPF_PROG_TEST_RUN part of union bpf_attr, up to ctx_out."""
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32), ("data_size_in", ctypes.c_uint32),
                ("data_size_out", ctypes.c_uint32), ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32), ("ctx_size_in", ctypes.c_uint32),
                ("ctx_size_out", ctypes.c_uint32), ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64)]


def run_with_context(program: LoadedProgram, slots: list[int]) -> int:
    """Run a RAW_TRACEPOINT program once on u64 argument `slots` (BPF_PROG_TEST_RUN, 5.10+): its R0."""
    ctx = (ctypes.c_uint64 * len(slots))(*slots)
    attr = ProgTestRunAttr(prog_fd=int(program.fd), ctx_size_in=ctypes.sizeof(ctx), ctx_in=ctypes.addressof(ctx))
    if syscall.libc.syscall(ctypes.c_long(syscall.NR_BPF), ctypes.c_int(BPF_PROG_TEST_RUN), ctypes.byref(attr),
                            ctypes.c_uint(ctypes.sizeof(attr))) != 0:
        raise OSError(ctypes.get_errno(), "BPF_PROG_TEST_RUN")
    return attr.retval


@pytest.mark.parametrize("arg, slot, value", [
    pytest.param(Arg.c_int("state"), 0xDEADBEEF_00000007, 7, id="int-stale-upper-half"),  # as 5.10's trampoline
    pytest.param(Arg.c_int("state"), 0x00000000_FFFFFFFE, -2, id="int-negative"),
    pytest.param(Arg("state", 4), 0x12345678_FFFFFFFE, 0xFFFFFFFE, id="u32"),
    pytest.param(Arg("state", 2, signed=True), 0xFFFF_FFFF_0000_8001, -0x7FFF, id="s16"),
    pytest.param(Arg("state"), 0xDEADBEEF_00000007, 0xDEADBEEF_00000007, id="whole-slot"),
])
@pytest.mark.parametrize("half", [0, 32], ids=["low-half", "high-half"])
def test_a_narrow_argument_is_read_from_its_low_bytes_in_the_kernel(arg, slot, value, half):
    """What the declaration buys, run by the kernel: a probe compares the C value, never stale bits.
    The program returns one 32-bit half of the 64-bit register it loaded (R0 comes back as u32)."""
    p = Program("gt_args")
    ArrayArguments(("sk", arg), R1, {}, lambda: None).load(p, R0, "state")
    p.rsh(R0, half)
    p.exit()
    with load_program(p, ProgType.RAW_TRACEPOINT) as program:
        assert run_with_context(program, [0, slot]) == (value % 2**64 >> half) & 0xFFFFFFFF

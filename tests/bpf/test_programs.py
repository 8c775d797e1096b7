"""Loading programs: from the DSL and from bytes, program info, and the verifier's report."""
import errno
import re
import subprocess

import pytest
from kernel_features import kernel_at_least
from sock_programs import count_new_states

from asm import DW, R0, R2, Program
from gespann.bpf import maps, programs
from gespann.bpf.errors import FeatureUnsupportedError, VerifierError
from gespann.bpf.programs import load_program
from gespann.bpf.syscall import AttachType, ProgType

pytestmark = pytest.mark.root
RETURN_ZERO = bytes.fromhex("b700000000000000" "9500000000000000")


def dereferences_a_number() -> Program:
    """Loads through R2 after a dozen instructions made it a number, not a pointer."""
    p = Program("gt_bad")
    for i in range(6):
        p.mov(R2, i)
        p.add(R2, 1)
    p.ldx(DW, R0, R2, 0)
    p.exit()
    return p


def test_load_from_bytes_and_info():
    with load_program(RETURN_ZERO, ProgType.TRACEPOINT, name="gt_zero") as prog:
        info = prog.info()
        assert (info.name, info.type, info.xlated_prog_len, info.map_ids) == ("gt_zero", ProgType.TRACEPOINT, 16, ())
        assert len(info.tag) == 16 and info.id > 0 and info.jited_prog_len > 0
        assert info.verified_insns == (2 if kernel_at_least(5, 16) else 0)  # the kernel reports it since 5.16


def test_load_from_the_dsl_resolves_maps(state_format):
    with maps.ArrayMap(maps.U64, 16, name="gt_counts") as counts, \
            load_program(count_new_states(state_format, 80), maps={"counts": counts}) as prog:
        assert prog.name == "gt_count" and prog.info().map_ids == (counts.info().id,)
        assert prog.verifier_log == ""


def test_long_names_are_cut_to_what_the_kernel_keeps():
    with load_program(RETURN_ZERO, name="gt_a_rather_long_program_name") as prog:
        assert prog.name == prog.info().name == "gt_a_rather_lon"


def test_verifier_error_carries_the_log():
    with pytest.raises(VerifierError) as refused:
        load_program(dereferences_a_number())
    error = refused.value
    assert error.program == "gt_bad" and error.errno == errno.EACCES
    assert error.log.startswith("0: ") and "processed 13 insns" in error.log
    # Kernels before 5.18 call a plain number 'inv', later ones 'scalar'.
    assert "gt_bad" in str(error) and re.search(r"R2 invalid mem access '(scalar|inv)'", str(error))


def test_a_small_log_buffer_grows_until_the_log_fits(monkeypatch):
    with pytest.raises(VerifierError) as complete:
        load_program(dereferences_a_number())
    monkeypatch.setattr(programs, "_LOG_SIZE_FIRST", 128)
    with pytest.raises(VerifierError) as grown:
        load_program(dereferences_a_number())
    assert grown.value.log == complete.value.log and len(grown.value.log) > 128


def test_log_on_request_even_when_loaded():
    with load_program(RETURN_ZERO, name="gt_zero", log_level=2) as prog:
        assert "processed 2 insns" in prog.verifier_log


def test_not_whole_instructions():
    with pytest.raises(ValueError):
        load_program(RETURN_ZERO[:12], name="gt_half")


def test_kprobe_program_loads():
    """Kprobe programs load here although this kernel cannot attach them (no CONFIG_KPROBES)."""
    with load_program(RETURN_ZERO, ProgType.KPROBE, name="gt_kprobe") as prog:
        assert prog.info().type is ProgType.KPROBE


def test_fentry_program_loads_or_says_why_not():
    """A TRACING program needs the BTF id of its kernel function (bpftool finds it for the test).
    This kernel refuses trampolines with EPERM although the process holds every capability: that is
    the kernel ruling fentry out, and the error says so instead of asking for capabilities."""
    dump = subprocess.run(["/usr/sbin/bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux"],
                          capture_output=True, text=True, check=True).stdout
    btf_id = int(re.search(r"^\[(\d+)\] FUNC 'tcp_set_state'", dump, re.M).group(1))
    try:
        prog = load_program(RETURN_ZERO, ProgType.TRACING, name="gt_fentry",
                            expected_attach_type=AttachType.TRACE_FENTRY, attach_btf_id=btf_id)
    except FeatureUnsupportedError as refused:
        assert "does not support fentry/fexit" in str(refused) and "EPERM" in str(refused)
        assert "every capability it needs" in str(refused)
    else:
        with prog:
            assert prog.info().type is ProgType.TRACING

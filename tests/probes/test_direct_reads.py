"""Direct loads through BTF-typed pointers: the probes' cheap way to read kernel memory, and where it applies.

In tp_btf and fentry programs the event's pointers are BTF-typed, and a field
costs one load instead of a bpf_probe_read_kernel call; everywhere else the
arguments are plain integers, and only the helper may follow them. What would
break: a probe back on the helper in its hot path, a direct load in a flavour
whose verifier refuses it, or a direct load reading other bits than the helper.
"""
import pytest
from kernel_features import require
from loopback import Loopback

from asm import DW, R0, R1, R2, R6, R7, R8, R9, R10, Program, Slot
from asm.helpers import HELPERS
from gespann import btf
from gespann.bpf import features
from gespann.bpf.maps import U64, PerCpuArrayMap
from gespann.btf import FieldLocation
from gespann.probes import AttachSettings, ProbeSet
from gespann.probes.examples import tcp_states
from gespann.probes.tcp import lifecycle as tcp_lifecycle
from gespann.probes.tcp import resets as tcp_resets
from gespann.probes.toolkit.arguments import Arguments
from gespann.probes.toolkit.flavours import BtfTracepoint
from gespann.probes.toolkit.kernel_memory import emit_read_field
from gespann.probes.toolkit.probe import BuildTarget, Probe
from gespann.probes.udp import receive as udp_receive
from gespann.probes.udp import send as udp_send

PROBE_READ = f"call {HELPERS['probe_read_kernel']:#x}"


def field(offset: int, size: int, bit_offset: int = 0, bit_size: int = 0) -> FieldLocation:
    return FieldLocation("s", "f", offset, size, bit_offset, bit_size, "int")


def listing(*fields: FieldLocation, direct: bool) -> list[str]:
    p = Program("t")
    scratch = p.frame.alloc("scratch", size=8)
    for location in fields:
        emit_read_field(p, R2, R7, location, scratch, direct=direct)
    return str(p).splitlines()


def test_a_direct_read_is_one_load_of_the_field():
    assert listing(field(0x214, 2), direct=True) == ["\tw2 = *(u16 *)(r7 + 0x214)"]
    assert listing(field(0x18, 8), direct=True) == ["\tr2 = *(u64 *)(r7 + 0x18)"]


def test_a_direct_bitfield_read_extracts_the_same_bits_as_the_helper_read():
    """A 3-bit field at bits 2..4 of the byte at 0x80: load the byte, then the helper form's shifts."""
    bits = field(0x80, 1, bit_offset=0x80 * 8 + 2, bit_size=3)
    direct, helper = listing(bits, direct=True), listing(bits, direct=False)
    assert direct == ["\tw2 = *(u8 *)(r7 + 0x80)", "\tr2 <<= 0x3b", "\tr2 >>= 0x3d"]
    assert helper[-3:] == ["\tw2 = *(u8 *)(r10 - 0x8)", *direct[1:]]
    assert f"\t{PROBE_READ}" in helper


def test_a_field_too_wide_for_a_register_is_refused_either_way():
    for direct in (True, False):
        with pytest.raises(ValueError, match="too wide"):
            listing(field(0, 16), direct=direct)


def test_only_btf_typed_flavours_say_their_pointers_are():
    flavours = {flavour.mode: flavour for probe in (tcp_lifecycle.PROBE, udp_send.PROBE)
                for flavour in probe.flavours}
    assert {mode for mode, flavour in flavours.items() if flavour.btf_pointers} == {"tp_btf", "fentry"}
    for mode in ("tp_btf", "fentry", "raw_tracepoint"):
        args = flavours[mode].arguments(R6, {}, lambda: None)
        assert args.btf_pointers is (mode != "raw_tracepoint")


#: Each probe's path before its first branch target: the reads every event pays (the protocol, skb->sk
#: and sk->sk_protocol, the namespace check), with the number of reads the helper needs there.
HOT_PATHS = [(tcp_lifecycle.PROBE, 3), (tcp_states.PROBE, 3), (tcp_resets.SENT, 2), (udp_send.PROBE, 3),
             (udp_receive.PROBE, 2)]


def first_block(probe: Probe, mode: str) -> str:
    """The listing up to the first label: straight-line code every event runs (scoped to a namespace).
    A probe that first filters on an argument alone (tcp_lifecycle's new state) starts after it."""
    listing = str(probe.program(probe.flavour(mode), BuildTarget(netns=4026531840)))
    return listing.split("\nfollowed:\n", 1)[-1].split(":\n")[0]


@pytest.mark.parametrize("probe, helper_reads", HOT_PATHS, ids=[probe.name for probe, _ in HOT_PATHS])
def test_the_hot_path_reads_without_helper_calls_where_pointers_are_btf_typed(probe, helper_reads):
    assert first_block(probe, "raw_tracepoint").count(PROBE_READ) == helper_reads
    assert PROBE_READ not in first_block(probe, "tp_btf")
    if "fentry" in {flavour.mode for flavour in probe.flavours}:
        assert PROBE_READ not in first_block(probe, "fentry")


@pytest.mark.parametrize("mode, helper_reads", [("tp_btf", 0), ("raw_tracepoint", 2)])
def test_udp_send_leaves_a_packet_of_another_protocol_before_reading_headers(mode, helper_reads):
    """skb->sk, then its sk_protocol against IPPROTO_UDP (17) and out, in the first block: headers come later."""
    before_exit, exit_, _ = first_block(udp_send.PROBE, mode).partition("if r1 != 0x11 goto out")
    assert exit_, "no early exit for sockets of other protocols"
    assert before_exit.count(PROBE_READ) == helper_reads


# -- in the kernel: direct loads read what the helper reads ----------------------------------------

#: (base, struct.path): the fields compared on each packet queued to a device. `ip_summed` is a
#: 2-bit bitfield (CHECKSUM_PARTIAL, 3, on loopback TCP); the socket and namespace ones are read
#: through pointers loaded from skb, as udp_send reads them.
COMPARED = [("skb", "sk_buff.protocol"), ("skb", "sk_buff.ip_summed"), ("skb", "sk_buff.sk"),
            ("sk", "sock.sk_protocol"), ("sk", "sock_common.skc_num"), ("net", "net.ns.inum")]
DIFFERENT, NONZERO = 0, 1  # per field: packets where the two reads differed, where the value was not 0


def location(key: str) -> FieldLocation:
    struct, path = key.split(".", 1)
    return btf.offsetof(struct, path)


def _count(p: Program, key: Slot, slot: int) -> None:
    """counters[slot] += 1, through the stack slot `key`; clobbers R0-R5."""
    done = p.new_label("count")
    p.st(DW, R10, key.at(), slot)
    p.ld_map(R1, "counters")
    p.mov(R2, R10)
    p.add(R2, key.at())
    p.call("map_lookup_elem")
    p.jeq(R0, 0, done)
    p.mov(R1, 1)
    p.atomic_add(DW, R0, 0, R1)
    p.label(done)


def compare_body(p: Program, args: Arguments, target: BuildTarget) -> None:
    bases = {"skb": R6}
    scratch, key = p.frame.alloc("scratch", size=8), p.frame.alloc("key", size=8)
    args.load(p, R6, "skb")
    out = p.new_label("out")
    for index, (base, path) in enumerate(COMPARED):
        if base == "sk" and "sk" not in bases:
            emit_read_field(p, R7, R6, location("sk_buff.sk"), scratch, direct=True)
            p.jeq(R7, 0, out)
            bases["sk"] = R7
        if base == "net":
            emit_read_field(p, R7, R7, location("sock_common.skc_net.net"), scratch, direct=True)
            bases["net"] = R7
        emit_read_field(p, R8, bases[base], location(path), scratch, direct=True)
        emit_read_field(p, R9, bases[base], location(path), scratch)
        same, zero = p.new_label("same"), p.new_label("zero")
        p.jeq(R8, R9, same)
        _count(p, key, 2 * index + DIFFERENT)
        p.label(same)
        p.jeq(R8, 0, zero)
        _count(p, key, 2 * index + NONZERO)
        p.label(zero)
    p.label(out)
    p.mov(R0, 0)
    p.exit()


COMPARE = Probe(name="direct_vs_helper", summary="test: direct loads against probe reads, per field",
                flavours=(BtfTracepoint("net_dev_queue", args=("skb",)),), body=compare_body,
                maps={"counters": lambda: PerCpuArrayMap(U64, 2 * len(COMPARED), name="gt_direct")})


@pytest.mark.root
def test_direct_loads_read_what_the_helper_reads_in_the_kernel():
    require(features.tp_btf())
    with ProbeSet.attach([COMPARE], AttachSettings(mode="tp_btf")) as probes:
        Loopback().run(20)
        counters = {slot: sum(per_cpu) for slot, per_cpu in probes["direct_vs_helper"].maps["counters"].items()}
    for index, (_, key) in enumerate(COMPARED):
        assert counters[2 * index + DIFFERENT] == 0, f"{key}: a direct load read other bits than the helper"
        assert counters[2 * index + NONZERO] > 0, f"{key}: never anything but 0, so nothing was compared"

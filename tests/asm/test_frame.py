"""Stack frames and scoped labels: slots placed by the frame, labels no two helpers share."""
import pytest

from asm import DW, R0, R1, R2, R10, STACK_LIMIT, AsmError, Frame, Program, Record, W, array, u8, u16, u32

KEY = Record("key", [("address", array(u8, 16)), ("port", u16), ("family", u16), ("netns", u32)])  # 24 bytes
ODD = Record("odd", [("a", u32), ("b", u8)])  # 8 bytes, 5 of them used


def test_slots_grow_down_from_r10_in_the_order_asked_for():
    frame = Frame("t")
    first = frame.alloc("first", size=8)
    key = frame.alloc("key", KEY)
    last = frame.alloc("last", size=4)
    assert (first.offset, key.offset, last.offset) == (-8, -32, -40)
    assert (key.size, key.record, last.size, last.record) == (24, KEY, 4, None)
    assert frame.used == frame.depth == 40


@pytest.mark.parametrize("size, taken", [(1, 8), (4, 8), (8, 8), (9, 16), (44, 48)])
def test_every_slot_is_8_byte_aligned(size, taken):
    frame = Frame("t")
    frame.alloc("before", size=4)
    slot = frame.alloc("slot", size=size)
    assert slot.offset % 8 == 0
    assert frame.used == 8 + taken


def test_field_offsets_are_relative_to_r10():
    key = Frame("t").alloc("key", KEY)
    assert key.at() == -24
    assert key.at("port") == -24 + 16
    assert key.at("address", 8) == -24 + 8
    assert key.at(20) == key.at("netns")
    assert key.field("family").size == 2
    assert list(key.words()) == [-24, -16, -8]


def test_a_place_outside_the_slot_or_a_field_it_lacks_is_refused():
    frame = Frame("t")
    key, raw = frame.alloc("key", KEY), frame.alloc("raw", size=8)
    with pytest.raises(AsmError, match="outside slot 'key'"):
        key.at(24)
    with pytest.raises(AsmError, match="no field 'missing'"):
        key.at("missing")
    with pytest.raises(AsmError, match="'raw' holds 8 raw bytes"):
        raw.at("port")
    assert raw.at(7) == raw.offset + 7


def test_a_slot_needs_a_record_or_a_size():
    frame = Frame("t")
    for kwargs in ({}, {"record": KEY, "size": 8}, {"size": 0}):
        with pytest.raises(AsmError, match="slot 's'"):
            frame.alloc("s", **kwargs)


def test_past_the_stack_limit_the_error_names_the_slots():
    frame = Frame("prog")
    frame.alloc("big", size=STACK_LIMIT - 16)
    frame.alloc("key", size=8)
    frame.alloc("last", size=8)  # exactly 512: allowed
    with pytest.raises(AsmError) as error:
        frame.alloc("one too many", size=1)
    message = str(error.value)
    assert "prog" in message and "'one too many'" in message and "520" in message and "512" in message
    assert "big (496), key (8), last (8)" in message


def test_a_scope_gives_its_slots_back_and_keeps_the_depth():
    frame = Frame("t")
    outer = frame.alloc("outer", size=8)
    with frame.scope():
        inner = frame.alloc("inner", KEY)
        assert inner.offset == -32
    again = frame.alloc("again", size=8)
    assert again.offset == -16
    assert frame.slots == (outer, again)
    assert frame.depth == 32 and frame.used == 16
    with pytest.raises(AsmError, match="'inner' is used after its scope ended"):
        inner.at()


def test_two_helpers_in_scopes_share_space():
    frame = Frame("t")

    def helper() -> int:
        with frame.scope():
            return frame.alloc("scratch", ODD).offset

    assert helper() == helper() == -8
    assert frame.depth == 8


def test_a_program_has_a_frame_named_for_it():
    p = Program("named")
    slot = p.frame.alloc("x", size=STACK_LIMIT)
    with pytest.raises(AsmError, match="named: slot 'y'"):
        p.frame.alloc("y", size=8)
    p.st(DW, R10, slot.at(), 0)
    assert p.instructions[0].off == -STACK_LIMIT


# -- labels ----------------------------------------------------------


def emit_skip_zero(p: Program, done: str) -> None:
    """A helper that branches: its label is its own, its exit the caller's."""
    nonzero = p.new_label("nonzero")
    p.jne(R1, 0, nonzero)
    p.ja(done)
    p.label(nonzero)
    p.add(R0, 1)


def test_new_labels_are_unique_and_the_first_keeps_its_name():
    p = Program("t")
    assert [p.new_label("out"), p.new_label("out"), p.new_label("ip")] == ["out", "out.2", "ip"]


def test_a_helper_emitted_twice_assembles_with_labels_of_its_own():
    p = Program("t")
    out = p.new_label("out")
    emit_skip_zero(p, out)
    emit_skip_zero(p, out)
    p.label(out)
    p.exit()
    code = p.assemble()
    assert set(p.labels) == {"out", "nonzero", "nonzero.2"}
    assert len(code) == 7 * 8
    assert [insn.off for insn in p.resolve()[:3]] == [1, 4, 0]  # each jump to its own target


def test_new_labels_avoid_names_already_placed_or_referenced():
    p = Program("t")
    p.label("placed")
    p.ja("referenced")
    assert p.new_label("placed") == "placed.2"
    assert p.new_label("referenced") == "referenced.2"


def test_a_label_made_but_never_placed_is_named_at_assembly():
    p = Program("t")
    done = p.new_label("done")
    p.jeq(R0, 0, done)
    p.exit()
    with pytest.raises(AsmError, match="label 'done' is not defined"):
        p.assemble()


def test_a_made_label_placed_twice_is_refused():
    p = Program("t")
    done = p.new_label("done")
    p.label(done)
    with pytest.raises(AsmError, match="label 'done' is defined twice"):
        p.label(done)


def test_frames_and_labels_in_one_program():
    p = Program("count")
    key = p.frame.alloc("key", size=4)
    p.st(W, R10, key.at(), 0)
    p.ld_map(R1, "counts")
    p.mov(R2, R10)
    p.add(R2, key.at())
    p.call("map_lookup_elem")
    out = p.new_label("out")
    p.jeq(R0, 0, out)
    p.mov(R1, 1)
    p.atomic_add(DW, R0, 0, R1)
    p.label(out)
    p.mov(R0, 0)
    p.exit()
    assert len(p.assemble(maps={"counts": 3})) == 11 * 8
    assert p.frame.depth == 8

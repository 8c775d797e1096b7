"""The parser and the field resolver on small blobs built by btf_builder: every kind, both byte orders."""

from __future__ import annotations

import pytest
from btf_builder import BTFBuilder, sample_blob

from gespann.btf import FieldNotFound, MalformedBTF, TypeNotFound, load_bytes
from gespann.btf import types as t
from gespann.btf.fieldpath import locate
from gespann.btf.functions import func_signature, tracepoint_typedef_id
from gespann.btf.kinds import Kind
from gespann.btf.spec import Spec
from gespann.btf.typeinfo import sizeof, type_name


@pytest.fixture(scope="module", params=["little", "big"])
def sample(request):
    blob, ids = sample_blob(request.param)
    return Spec(blob, name=f"sample-{request.param}"), ids


def test_every_kind_decodes(sample):
    spec, ids = sample
    assert spec.type(ids["u32"]) == t.Int(ids["u32"], "unsigned int", 4, 0, 0, 32)
    assert spec.type(ids["int"]).signed
    assert spec.type(ids["ptr"]) == t.Pointer(ids["ptr"], "", ids["sample"])
    assert spec.type(ids["arr"]) == t.Array(ids["arr"], "", ids["u32"], ids["int"], 4)
    assert isinstance(spec.type(ids["sample"]), t.Struct)
    assert isinstance(spec.type(ids["anon_union"]), t.Union)
    assert spec.type(ids["fwd"]) == t.Fwd(ids["fwd"], "opaque", False)
    assert spec.type(ids["be16"]) == t.Typedef(ids["be16"], "__be16", ids["u16"])
    assert spec.type(ids["cu32"]).kind is Kind.CONST
    assert spec.type(ids["vcu32"]).kind is Kind.VOLATILE
    assert spec.type(ids["restrict"]).kind is Kind.RESTRICT
    assert spec.type(ids["tagged"]) == t.TypeTag(ids["tagged"], "user", ids["vcu32"], False)
    assert spec.type(ids["enum"]).values == (t.EnumValue("RED", 0), t.EnumValue("BLUE", -1))
    assert spec.type(ids["enum64"]).values == (t.EnumValue("HUGE", 2**63 + 5), t.EnumValue("ONE", 1))
    assert spec.type(ids["float"]) == t.Float(ids["float"], "double", 8)
    proto = spec.type(ids["proto"])
    assert proto.variadic and [p.name for p in proto.params] == ["s", "n"]
    assert spec.type(ids["func"]) == t.Func(ids["func"], "sample_fn", ids["proto"], 1)
    assert spec.type(ids["var"]) == t.Var(ids["var"], "sample_var", ids["u32"], 1)
    assert spec.type(ids["datasec"]).vars == (t.VarSecinfo(ids["var"], 0, 4),)
    assert spec.type(ids["decl_tag"]) == t.DeclTag(ids["decl_tag"], "tagged_member", ids["sample"], 0, False)
    assert spec.type(0) is t.VOID
    assert {spec.kind_of(i) for i in spec.ids()} == set(Kind) - {Kind.UNKN}


def test_lookup_by_name_and_kind(sample):
    spec, ids = sample
    assert spec.ids_named("sample") == [ids["sample"]]
    assert spec.find("sample_t", Kind.TYPEDEF).id == ids["typedef_sample"]
    assert spec.ids_named("unsigned int") == [ids["u32"], spec.type(ids["old_bits"]).members[0].type]
    with pytest.raises(TypeNotFound, match="close names: sample"):
        spec.find("sampel", Kind.STRUCT)
    assert spec.lookup_names(["sample", "nothing"]) == {"sample": [ids["sample"]], "nothing": []}


@pytest.mark.parametrize(
    "path, offset, size, bit_offset, bit_size, ctype",
    [
        ("first", 0, 4, 0, 0, "unsigned int"),
        ("word", 4, 4, 32, 0, "unsigned int"),  # member of an anonymous union
        ("lo", 4, 2, 32, 0, "short unsigned int"),  # anonymous struct inside it
        ("hi", 6, 2, 48, 0, "__be16"),
        ("vec", 8, 16, 64, 0, "unsigned int[4]"),
        ("vec[3]", 20, 4, 160, 0, "unsigned int"),
        ("fl.a", 24, 1, 192, 1, "unsigned char"),
        ("fl.b", 24, 1, 193, 3, "unsigned char"),
        ("fl.c", 24, 4, 196, 20, "unsigned int"),
        ("q", 28, 4, 224, 0, "volatile const unsigned int"),
        ("p", 32, 8, 256, 0, "struct sample *"),
    ],
)
def test_field_paths(sample, path, offset, size, bit_offset, bit_size, ctype):
    spec, _ = sample
    loc = locate(spec, "sample", path)
    assert (loc.offset, loc.size, loc.bit_offset, loc.bit_size, loc.type) == (offset, size, bit_offset, bit_size, ctype)
    assert locate(spec, "sample_t", path) == loc  # through a typedef of the struct
    assert locate(spec, "struct sample", path) == loc


def test_old_style_int_encoded_bitfield(sample):
    spec, _ = sample
    loc = locate(spec, "old_style", "x")
    assert (loc.bit_offset, loc.bit_size, loc.offset, loc.size) == (3, 5, 0, 4)


def test_bitfield_shifts_extract_the_bits():
    from gespann.btf import FieldLocation

    loc = FieldLocation("s", "c", 24, 4, 196, 20, "unsigned int")
    lshift, rshift = loc.bitfield_shifts()
    raw = 0xABCDE << 4 | 0xF  # c = 0xABCDE sits above 4 other bits
    assert ((raw << lshift) & (2**64 - 1)) >> rshift == 0xABCDE


@pytest.mark.parametrize(
    "struct, path, message",
    [
        ("sample", "frist", "has no member 'frist'; close names: first"),
        ("sample", "first.x", "is unsigned int, which has no member 'x'"),
        ("sample", "vec[4]", "out of range: the array has 4 elements"),
        ("sample", "first[0]", "not an array"),
        ("sample", "p.first", "struct sample \\*, which has no member"),  # no crossing pointers
        ("sample", "fl.a.b", "has no member 'b'"),
        ("sample", "bad-name", "not a member name"),
        ("nope", "x", "no struct or union named 'nope'"),
    ],
)
def test_clear_errors(sample, struct, path, message):
    spec, _ = sample
    with pytest.raises((FieldNotFound, TypeNotFound), match=message):
        locate(spec, struct, path)


def test_type_names_and_sizes(sample):
    spec, ids = sample
    assert type_name(spec, ids["proto"]) == "int (struct sample *, unsigned int, ...)"
    assert type_name(spec, ids["restrict"]) == "struct sample *restrict"
    assert sizeof(spec, ids["sample"]) == 40 and sizeof(spec, ids["arr"]) == 16
    assert spec.pointer_size == 8


def test_func_signature_and_tracepoint_typedef(sample):
    spec, ids = sample
    sig = func_signature(spec, "sample_fn")
    assert (sig.btf_id, sig.return_type, sig.variadic) == (ids["func"], "int", True)
    assert [(p.name, p.type) for p in sig.params] == [("s", "struct sample *"), ("n", "unsigned int")]
    assert tracepoint_typedef_id(spec, "sample_event") == ids["btf_trace"]


def test_split_btf_continues_ids_and_strings():
    base_blob, ids = sample_blob()
    base = Spec(base_blob, name="base")
    split = BTFBuilder(first_id=len(base), string_base=len(base_blob) - 24 - _type_len(base_blob))
    u64 = split.int_("u64", 8)
    mod = split.composite("module_state", 16, [("count", u64, 0), ("owner", base.find("sample").id, 64)])
    spec = Spec(split.build(), base=base, name="module")
    assert spec.first_id == len(base) and len(spec) == len(base) + 2
    assert spec.type(mod).name == "module_state"
    assert spec.find("sample").id == ids["sample"]  # base types are visible through the split
    loc = locate(spec, "module_state", "owner.vec[1]")
    assert (loc.offset, loc.size) == (8 + 12, 4)


def _type_len(blob: bytes) -> int:
    return int.from_bytes(blob[12:16], "little")


def test_elf_section_is_found(tmp_path):
    for bits, order in ((64, "little"), (32, "big")):
        path = tmp_path / f"vmlinux{bits}"
        path.write_bytes(_elf_with_section(sample_blob(order)[0], bits, order))
        spec = load_bytes(path.read_bytes(), name=str(path))
        assert spec.find("sample").size == 40
        assert spec.little_endian == (order == "little")


def test_elf_without_btf_is_a_clear_error():
    with pytest.raises(MalformedBTF, match="no .BTF section"):
        load_bytes(_elf_with_section(b"", 64, "little", name=b".text"))


def _elf_with_section(payload: bytes, bits: int, order: str, name: bytes = b".BTF") -> bytes:
    """A minimal ELF: header, [payload], [section names], section headers (null, name table, payload)."""
    import struct

    e = "<" if order == "little" else ">"
    names = b"\0.shstrtab\0" + name + b"\0"
    ehsize, shentsize = (64, 64) if bits == 64 else (52, 40)
    payload_at = ehsize
    names_at = payload_at + len(payload)
    shoff = (names_at + len(names) + 7) & ~7
    word = "Q" if bits == 64 else "I"
    ident = b"\x7fELF" + bytes([2 if bits == 64 else 1, 1 if order == "little" else 2, 1]) + bytes(9)
    ehdr = ident + struct.pack(e + f"HHI{word}{word}{word}IHHHHHH", 2, 62, 1, 0, 0, shoff, 0, ehsize, 0, 0,
                               shentsize, 3, 1)

    def shdr(name_off, sh_type, offset, size):
        return struct.pack(e + f"II{word}{word}{word}{word}II{word}{word}", name_off, sh_type, 0, 0, offset, size,
                           0, 0, 1, 0)

    headers = shdr(0, 0, 0, 0) + shdr(1, 3, names_at, len(names)) + shdr(11, 1, payload_at, len(payload))
    body = ehdr + payload + names
    return body + bytes(shoff - len(body)) + headers

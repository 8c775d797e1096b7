"""Just enough ELF to pull one section (".BTF") out of a vmlinux or a kernel module.

Reads the ELF header and the section header table (32- or 64-bit, either byte
order, with the extended numbering used when there are 0xff00+ sections) and
nothing else. No pyelftools: the format needed here is two tables.
"""

from __future__ import annotations

from construct import Bytes, ConstructError, Int16ub, Int16ul, Int32ub, Int32ul, Int64ub, Int64ul, Struct

from .errors import MalformedBTF

ELF_MAGIC = b"\x7fELF"
_CLASS_64, _DATA_LE = 2, 1
_SHN_UNDEF, _SHN_XINDEX = 0, 0xFFFF
_SHT_NOBITS = 8


def _layouts(is_64: bool, little: bool) -> tuple[Struct, Struct]:
    u16 = Int16ul if little else Int16ub
    u32 = Int32ul if little else Int32ub
    word = (Int64ul if little else Int64ub) if is_64 else u32
    ehdr = Struct(
        "e_ident" / Bytes(16),
        "e_type" / u16,
        "e_machine" / u16,
        "e_version" / u32,
        "e_entry" / word,
        "e_phoff" / word,
        "e_shoff" / word,
        "e_flags" / u32,
        "e_ehsize" / u16,
        "e_phentsize" / u16,
        "e_phnum" / u16,
        "e_shentsize" / u16,
        "e_shnum" / u16,
        "e_shstrndx" / u16,
    )
    shdr = Struct(
        "sh_name" / u32,
        "sh_type" / u32,
        "sh_flags" / word,
        "sh_addr" / word,
        "sh_offset" / word,
        "sh_size" / word,
        "sh_link" / u32,
        "sh_info" / u32,
        "sh_addralign" / word,
        "sh_entsize" / word,
    )
    return ehdr, shdr


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


def section(data: bytes, wanted: str, *, source: str = "ELF file") -> bytes | None:
    """The contents of the section named `wanted`, or None if the file has none."""
    if not is_elf(data) or len(data) < 16:
        raise MalformedBTF(f"{source}: not an ELF file")
    ehdr_layout, shdr_layout = _layouts(data[4] == _CLASS_64, data[5] == _DATA_LE)
    try:
        ehdr = ehdr_layout.parse(data[: ehdr_layout.sizeof()])
        if ehdr.e_shoff == 0:
            return None
        if ehdr.e_shentsize < shdr_layout.sizeof():
            raise MalformedBTF(f"{source}: section header entries of {ehdr.e_shentsize} bytes are too small")

        def header(index: int):
            at = ehdr.e_shoff + index * ehdr.e_shentsize
            if at + shdr_layout.sizeof() > len(data):
                raise MalformedBTF(f"{source}: section header {index} is past the end of the file")
            return shdr_layout.parse(data[at : at + shdr_layout.sizeof()])

        count, names_index = ehdr.e_shnum, ehdr.e_shstrndx
        if count == 0 or names_index == _SHN_XINDEX:  # extended numbering lives in section 0
            first = header(0)
            count = count or first.sh_size
            names_index = first.sh_link if names_index == _SHN_XINDEX else names_index
        if count * ehdr.e_shentsize > len(data) or names_index >= count:
            raise MalformedBTF(f"{source}: section header table ({count} entries) does not fit the file")
        names = _contents(data, header(names_index), source)
        target = wanted.encode()
        for index in range(count):
            shdr = header(index)
            end = names.find(b"\0", shdr.sh_name)
            if names[shdr.sh_name : end if end >= 0 else len(names)] == target:
                return _contents(data, shdr, source)
    except ConstructError as err:
        raise MalformedBTF(f"{source}: truncated ELF headers ({err})") from None
    return None


def _contents(data: bytes, shdr, source: str) -> bytes:
    if shdr.sh_type == _SHT_NOBITS:
        return b""
    if shdr.sh_offset + shdr.sh_size > len(data):
        raise MalformedBTF(f"{source}: section at {shdr.sh_offset}+{shdr.sh_size} is past the end of the file")
    return data[shdr.sh_offset : shdr.sh_offset + shdr.sh_size]

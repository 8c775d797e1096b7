"""What the host must have to boot VMs, named by Debian package."""
import sys

from matrix import prereqs


def test_a_static_binary_has_no_interpreter(tmp_path):
    assert not prereqs.is_static_elf(sys.executable)  # Debian's python3 is dynamically linked
    (tmp_path / "script").write_text("#!/bin/sh\n")
    assert not prereqs.is_static_elf(tmp_path / "script")
    assert not prereqs.is_static_elf(tmp_path / "absent")
    elf = bytearray(64 + 56)  # an ELF header and one PT_LOAD program header, nothing else
    elf[:6] = b"\x7fELF\x02\x01"
    elf[0x20:0x28] = (64).to_bytes(8, "little")
    elf[0x36:0x3a] = (56).to_bytes(2, "little") + (1).to_bytes(2, "little")
    elf[64:68] = (1).to_bytes(4, "little")
    (tmp_path / "static").write_bytes(bytes(elf))
    assert prereqs.is_static_elf(tmp_path / "static")
    elf[64:68] = (3).to_bytes(4, "little")  # PT_INTERP
    (tmp_path / "dynamic").write_bytes(bytes(elf))
    assert not prereqs.is_static_elf(tmp_path / "dynamic")


def test_missing_programs_are_named_by_their_package(monkeypatch):
    monkeypatch.setattr(prereqs, "_which", lambda program: None)
    assert prereqs.missing_packages() == ["qemu-system-x86", "kmod", "busybox-static"]
    monkeypatch.setattr(prereqs, "_which", lambda program: sys.executable)  # a busybox, but not a static one
    assert prereqs.missing_packages() == ["busybox-static"]

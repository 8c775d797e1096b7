"""Where BTF comes from: the running kernel, its modules, or a file (raw BTF or ELF).

The parser is imported on first use, not with this module: paths that never
parse BTF (a cache hit, a vendored table) should not pay construct's import.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from .errors import BTFError, MalformedBTF

if TYPE_CHECKING:
    from .spec import Spec

SYSFS_BTF = Path("/sys/kernel/btf")
VMLINUX_BTF = SYSFS_BTF / "vmlinux"


def kernel_has_btf() -> bool:
    return VMLINUX_BTF.is_file()


@functools.lru_cache(maxsize=1)
def load_vmlinux() -> Spec:
    """The running kernel's BTF, read once per process."""
    return load_bytes(read(VMLINUX_BTF), name=str(VMLINUX_BTF))


def load_module(module: str, base: Optional[Spec] = None) -> Spec:
    """A loaded module's BTF from sysfs: split BTF on top of the running kernel's."""
    path = SYSFS_BTF / module
    if module == "vmlinux" or "/" in module:
        raise BTFError(f"{module!r} is not a module name")
    return load_bytes(read(path), base=base if base is not None else load_vmlinux(), name=str(path))


def load_file(path: Union[str, Path], base: Optional[Spec] = None) -> Spec:
    """A raw BTF file, or the .BTF section of an ELF file (vmlinux, a .ko); split on `base` if given."""
    path = Path(path)
    return load_bytes(read(path), base=base, name=str(path))


def load_bytes(data: bytes, base: Optional[Spec] = None, name: str = "BTF") -> Spec:
    """Raw BTF, or an ELF file's .BTF section."""
    from . import elf
    from .spec import Spec

    if elf.is_elf(data):
        section = elf.section(data, ".BTF", source=name)
        if section is None:
            raise MalformedBTF(f"{name}: ELF file has no .BTF section (built without CONFIG_DEBUG_INFO_BTF?)")
        data = section
    return Spec(data, base=base, name=name)


def read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BTFError(f"{path}: no such file") from None
    except OSError as err:
        raise BTFError(f"{path}: {err.strerror or err}") from None

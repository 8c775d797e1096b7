"""Vendored kernel-type tables, for hosts whose kernel exposes no BTF.

Each table is vendored_vmlinux/<machine>/<release>.json: the manifest resolved
against that kernel's BTF by tools/vmlinux_tables.py, reviewable as plain text.

A table is used only for the exact (machine, release) it was made from. Another
build of the same release series is never used in its place: within one series
the probed structs rarely move, but they can (a backported field, a config
change), and a wrong offset reads the wrong bytes without any error. So when
only a near table exists, gespann refuses to start, names that table, the
command that makes the right one, and how to use the near one knowingly (its
path as btf.source): a choice the user makes, never one made silently.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Optional

from . import missing
from .errors import NoKernelTypes
from .kerneltypes import KernelTypes
from .sources import VMLINUX_BTF, read

#: Environment variable that points gespann at another tables directory.
TABLES_ENV = "GESPANN_VENDORED_VMLINUX"

_RELEASE = re.compile(r"^(\d+)\.(\d+)(?:\.\d+)?(?:-\d+|\+deb\d+|-\d+\.\d+)?[-.+_]?(.*)$")


#: Where a wheel install puts the tables (pyproject.toml's data-files).
INSTALLED_TABLES = Path(sys.prefix) / "share" / "gespann" / "vendored_vmlinux"


def tables_dir() -> Path:
    """$GESPANN_VENDORED_VMLINUX; else vendored_vmlinux/ beside the gespann package (a checkout
    or an editable install); else the copy a wheel installs under sys.prefix."""
    override = os.environ.get(TABLES_ENV)
    if override:
        return Path(override)
    beside = Path(__file__).resolve().parents[2] / "vendored_vmlinux"
    return beside if beside.is_dir() else INSTALLED_TABLES


def table_path(release: str, machine: str, directory: Optional[Path] = None) -> Path:
    return (directory or tables_dir()) / machine / f"{release}.json"


def available(directory: Optional[Path] = None) -> list[tuple[str, str]]:
    """(machine, release) of every table present."""
    root = directory or tables_dir()
    return sorted((p.parent.name, p.stem) for p in root.glob("*/*.json"))


def series_and_flavour(release: str) -> tuple[str, str]:
    """"6.1.0-37-cloud-amd64" -> ("6.1", "cloud-amd64"); "6.12.43+deb13-amd64" -> ("6.12", "amd64")."""
    match = _RELEASE.match(release)
    if not match:
        return release, ""
    return f"{match[1]}.{match[2]}", match[3]


def choose_table(release: str, machine: str, directory: Optional[Path] = None, *,
                 kernel_has_btf: bool = False) -> Path:
    """The table made for exactly this kernel; NoKernelTypes naming the nearest one otherwise.

    kernel_has_btf only shapes the error: the table was asked for although the
    kernel has BTF (it can make its own table), or the kernel has none.
    """
    exact = table_path(release, machine, directory)
    if exact.is_file():
        return exact
    raise NoKernelTypes(no_types_message(release, machine, directory, kernel_has_btf=kernel_has_btf))


def nearest_table(release: str, machine: str, directory: Optional[Path] = None) -> Optional[str]:
    """The release of the table nearest to `release`: same machine and major.minor series, the same
    flavour first, then the nearest build (older first). None when the series has no table."""
    series, flavour = series_and_flavour(release)
    near = [r for m, r in available(directory) if m == machine and series_and_flavour(r)[0] == series]
    if not near:
        return None
    return min(near, key=lambda r: (series_and_flavour(r)[1] != flavour, _distance(r, release)))


def load_table(path: Path) -> KernelTypes:
    path = Path(path)
    return KernelTypes.from_json(read(path).decode(), source=f"{missing.VENDORED}{path}")


def no_types_message(release: str, machine: str, directory: Optional[Path] = None, *,
                     kernel_has_btf: bool = False) -> str:
    """One line: why there are no kernel types, the nearest table if any, and the command that makes one."""
    where = directory or tables_dir()
    if kernel_has_btf:
        problem = f"btf.source 'vendored' was asked for, but {where} holds no table for kernel {release} ({machine})"
        make = (f"make one from this kernel's BTF: python3 tools/vmlinux_tables.py --out {where} running "
                f"(in gespann's source tree), or set btf.source to auto to read the kernel's BTF directly")
    else:
        problem = (f"kernel {release} ({machine}) exposes no BTF at {VMLINUX_BTF}, and {where} holds no table "
                   f"for it")
        make = (f"make its table from the kernel image (built with CONFIG_DEBUG_INFO_BTF, or a BTF file made with "
                f"`pahole --btf_encode_detached`): python3 tools/vmlinux_tables.py --out {where} file "
                f"/boot/vmlinuz-{release} --release {release} --machine {machine} (in gespann's source tree)")
    nearest = nearest_table(release, machine, directory)
    if nearest is None:
        return f"{problem}; {make}"
    return (f"{problem}; the nearest, {nearest}, is another build, whose struct offsets may differ, so it is not "
            f"used; {make}; or, knowing the risk, name it as btf.source: {table_path(nearest, machine, directory)}")


def _distance(candidate: str, release: str) -> tuple[int, tuple[int, ...]]:
    """Sort key: releases older than the host first (nearest first), then newer ones (nearest first)."""
    have, want = _numbers(candidate), _numbers(release)
    if have <= want:
        return 0, tuple(-n for n in have)
    return 1, have


def _numbers(release: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", release))

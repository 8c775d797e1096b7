"""Vendored kernel-type tables, for hosts whose kernel exposes no BTF.

Each table is vendored_vmlinux/<machine>/<release>.json: the manifest resolved
against that kernel's BTF by tools/vmlinux_tables.py, reviewable as plain text.

Choosing a table for a host:
1. the exact (machine, release) table;
2. otherwise, only if allowed, the nearest release of the same machine, the same
   major.minor series and the same flavour (what follows the version and the
   distribution's ABI number: "amd64", "cloud-amd64", "generic"). Within one
   stable series and one kernel config the probed structs rarely move, but they
   can, so this is logged as a warning naming both releases. Another flavour or
   series is never used: their configs change struct layouts.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Optional

from .errors import NoKernelTypes
from .kerneltypes import KernelTypes
from .sources import VMLINUX_BTF, read

log = logging.getLogger(__name__)

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


def choose_table(release: str, machine: str, directory: Optional[Path] = None, *, fallback: bool = True) -> Path:
    """The table to use for this kernel (see the module docstring); NoKernelTypes if there is none."""
    exact = table_path(release, machine, directory)
    if exact.is_file():
        return exact
    if fallback:
        series, flavour = series_and_flavour(release)
        near = [
            r for m, r in available(directory)
            if m == machine and series_and_flavour(r) == (series, flavour)
        ]
        if near:
            chosen = min(near, key=lambda r: _distance(r, release))
            log.warning(
                "no vendored kernel types for %s; using those of %s (same %s series and %s flavour)",
                release, chosen, series, flavour or "no",
            )
            return table_path(chosen, machine, directory)
    raise NoKernelTypes(no_types_message(release, machine, directory))


def load_table(path: Path) -> KernelTypes:
    path = Path(path)
    return KernelTypes.from_json(read(path).decode(), source=f"vendored table {path}")


def no_types_message(release: str, machine: str, directory: Optional[Path] = None) -> str:
    """The error for a host with neither BTF nor a table, naming the command that makes a table."""
    where = directory or tables_dir()
    return (
        f"kernel {release} ({machine}) exposes no BTF at {VMLINUX_BTF} and gespann has no table "
        f"for it in {where}. Generate one from the kernel image (it must have been built with "
        f"CONFIG_DEBUG_INFO_BTF, or pass a BTF file made with `pahole --btf_encode_detached`):\n"
        f"    python3 tools/vmlinux_tables.py file /boot/vmlinuz-{release} --release {release} --machine {machine}\n"
        f"or, for Debian's generic kernels: python3 tools/vmlinux_tables.py debian 5.10 6.1 6.12"
    )


def _distance(candidate: str, release: str) -> tuple[int, tuple[int, ...]]:
    """Sort key: releases older than the host first (nearest first), then newer ones (nearest first)."""
    have, want = _numbers(candidate), _numbers(release)
    if have <= want:
        return 0, tuple(-n for n in have)
    return 1, have


def _numbers(release: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", release))

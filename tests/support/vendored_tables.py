"""Vendored tables made at test time, from the running kernel's own BTF, by the project's generator.

Tests of the vendored-offsets path never depend on a committed table for the
kernel they run on: the CI machine's kernel build changes, and so do the
kernels the matrix boots. Each run makes the table for exactly the kernel it
is on, with tools/vmlinux_tables.py, the same code a user runs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gespann.btf.sources import VMLINUX_BTF

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def generator():
    """tools/vmlinux_tables.py, imported as a module."""
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    import vmlinux_tables

    return vmlinux_tables


def make_running_kernel_table(out: Path) -> Path:
    """Write out/<machine>/<release>.json for the running kernel; skip where it has no BTF to make it from."""
    if not VMLINUX_BTF.is_file():
        pytest.skip(f"this kernel has no {VMLINUX_BTF} to make its vendored table from")
    return generator().running_table(out)

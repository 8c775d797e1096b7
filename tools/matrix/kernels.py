"""The kernels of the matrix: Debian's generic amd64 kernels by series, and the host's own.

A Debian kernel is fetched with tools/debian_kernels.py and its module index
built with depmod, because the guest loads 9p and virtio from those modules
before it can mount the host's root. Without the archive (offline, or the
archive is down), the newest kernel of the series fetched earlier is used.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import debian_kernels

#: The name of the column that runs on this machine's own kernel, without a VM.
HOST = "host"


@dataclass(frozen=True)
class Target:
    """One column of the matrix. `vmlinuz` is None for the host, which runs without a VM."""

    name: str  # "6.1", or HOST
    release: str  # what `uname -r` says under it
    vmlinuz: Path | None = None
    modules: Path | None = None  # lib/modules/<release>, which the guest loads modules from on demand

    @property
    def is_host(self) -> bool:
        return self.vmlinuz is None


def host() -> Target:
    return Target(HOST, os.uname().release)


def debian(series: str, cache: Path, say: Callable[[str], None]) -> Target:
    """The newest Debian kernel of `series`, downloaded and extracted under `cache`, ready to boot."""
    try:
        kernel = debian_kernels.fetch_kernel(series, cache)
    except (debian_kernels.DebianKernelError, subprocess.CalledProcessError) as err:
        kernel = newest_cached(series, cache)
        if kernel is None:
            raise
        say(f"the archive did not answer ({_first_line(err)}); using {kernel.release} fetched earlier")
    index_modules(kernel)
    return Target(series, kernel.release, kernel.vmlinuz_path, kernel.modules_dir)


def newest_cached(series: str, cache: Path) -> debian_kernels.KernelPackage | None:
    """The newest kernel of `series` an earlier fetch left under `cache`, if any."""
    kernels = [debian_kernels.cached_kernel(cache, d.name) for d in cache.iterdir() if d.is_dir()] \
        if cache.is_dir() else []
    kernels = [k for k in kernels if k is not None and k.series == series]
    return max(kernels, key=lambda k: _numbers(k.release), default=None)


def index_modules(kernel: debian_kernels.KernelPackage) -> None:
    """Run depmod over the extracted tree once: Debian's package ships no modules.dep."""
    modules = kernel.modules_dir
    if (modules / "modules.dep").is_file():
        return
    base = modules.parent.parent.parent  # the directory holding lib/modules/<release>
    subprocess.run(["depmod", "-b", str(base), kernel.release], check=True, capture_output=True, text=True)


def _numbers(release: str) -> tuple[int, ...]:
    """6.1.0-37-amd64 -> (6, 1, 0, 37): the order in which releases of one series are newer."""
    return tuple(int(n) for n in re.findall(r"\d+", release))


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]

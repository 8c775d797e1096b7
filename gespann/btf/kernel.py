"""The one call the rest of gespann makes: this kernel's field offsets and attach targets.

    types = kernel_types()                      # BTF if the kernel has it, else a vendored table
    types.offset("tcp_sock.srtt_us")

Resolution from BTF is cached on disk (cache.py), so only the first start after
a kernel change pays for parsing, and that in a child process (apart.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from . import apart, cache, vendored
from .errors import NoKernelTypes
from .kerneltypes import KernelTypes
from .sources import VMLINUX_BTF, kernel_has_btf

#: Values of `source` that are not paths.
AUTO, BTF, VENDORED = "auto", "btf", "vendored"


def kernel_types(
    source: Union[str, Path] = AUTO,
    *,
    release: Optional[str] = None,
    machine: Optional[str] = None,
    use_cache: bool = True,
    tables: Optional[Path] = None,
) -> KernelTypes:
    """Resolve the manifest for a kernel.

    source: "auto" (the running kernel's BTF if it has any, else a vendored
    table), "btf" (the running kernel's BTF only), "vendored" (a table only,
    which is how the fallback is tested on kernels that have BTF), or a path:
    a vendored .json table, a raw BTF file, or an ELF vmlinux.
    release/machine default to this host's (os.uname()); they pick the table
    and label the result. tables overrides the tables directory. A table is
    used only for the exact release it was made from (see vendored.py).
    """
    uname = os.uname()
    release, machine = release or uname.release, machine or uname.machine
    has_btf = kernel_has_btf()
    if source == AUTO:
        source = BTF if has_btf else VENDORED
    if source == VENDORED:
        return vendored.load_table(vendored.choose_table(release, machine, tables, kernel_has_btf=has_btf))
    if source == BTF:
        if not has_btf:
            raise NoKernelTypes(f"this kernel has no BTF at {VMLINUX_BTF} (source='btf' was asked for)")
        return _from_btf(VMLINUX_BTF, release, machine, use_cache)
    path = Path(source)
    if path.suffix == ".json":
        return vendored.load_table(path)
    return _from_btf(path, release, machine, use_cache)


def _from_btf(path: Path, release: str, machine: str, use_cache: bool) -> KernelTypes:
    """The manifest resolved from BTF at `path`; the file is read whole only on a cache miss, by a child."""
    key = cache.cache_key(path, release, machine) if use_cache else None
    if key is not None:
        cached = cache.load(key)
        if cached is not None:
            return cached
    types = apart.resolve_apart(path, release, machine)
    if key is not None:
        cache.store(key, types)
    return types

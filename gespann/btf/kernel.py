"""The one call the rest of gespann makes: this kernel's field offsets and attach targets.

    types = kernel_types()                      # BTF if the kernel has it, else a vendored table
    types.offset("tcp_sock.srtt_us")

Resolution from BTF is cached on disk (cache.py), so only the first start after
a kernel change pays for parsing, and that in a child process (apart.py).
Probes that need more than the manifest (KernelNeeds) have it resolved with it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Optional, Union

from . import apart, cache, missing, vendored
from .errors import BTFError, NoKernelTypes
from .kerneltypes import KernelTypes
from .manifest import NO_NEEDS, KernelNeeds, beyond_manifest
from .sources import VMLINUX_BTF, kernel_has_btf

log = logging.getLogger(__name__)

#: Values of `source` that are not paths.
AUTO, BTF, VENDORED = "auto", "btf", "vendored"


def kernel_types(
    source: Union[str, Path] = AUTO,
    *,
    needs: Mapping[str, KernelNeeds] = {},  # never mutated
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
    needs: what probes declare beyond the manifest, by probe name; resolved with
    it from BTF. A vendored table cannot offer them: its lookups say so, naming
    the probe.
    """
    uname = os.uname()
    release, machine = release or uname.release, machine or uname.machine
    for probe, need in needs.items():
        if not isinstance(need, KernelNeeds):
            raise BTFError(f"probe {probe} declares kernel={need!r}: Probe(kernel=...) takes a KernelNeeds(...)")
    extra = beyond_manifest(needs.values()) if needs else NO_NEEDS
    has_btf = kernel_has_btf()
    if source == AUTO:
        source = BTF if has_btf else VENDORED
    if source == VENDORED:
        return _from_table(vendored.choose_table(release, machine, tables, kernel_has_btf=has_btf), needs)
    if source == BTF:
        if not has_btf:
            raise NoKernelTypes(f"this kernel has no BTF at {VMLINUX_BTF} (source='btf' was asked for)")
        return _from_btf(VMLINUX_BTF, release, machine, use_cache, extra)._replace(needs=needs)
    path = Path(source)
    if path.suffix == ".json":
        return _from_table(path, needs)
    return _from_btf(path, release, machine, use_cache, extra)._replace(needs=needs)


def _from_btf(path: Path, release: str, machine: str, use_cache: bool, extra: KernelNeeds) -> KernelTypes:
    """The manifest and `extra` resolved from BTF at `path`; the file is read whole only on a cache miss, by
    a child."""
    key = cache.cache_key(path, release, machine, extra) if use_cache else None
    if key is not None:
        cached = cache.load(key, extra=extra)
        if cached is not None:
            return cached._replace(btf=str(path))
    types = apart.resolve_apart(path, release, machine, extra)
    if key is not None:
        cache.store(key, types)
    return types._replace(btf=str(path))


def _from_table(path: Path, needs: Mapping[str, KernelNeeds]) -> KernelTypes:
    """A vendored table, which carries the manifest's fields only: what the probes' needs lack is logged."""
    types = vendored.load_table(path)._replace(needs=needs)
    for line in missing.not_offered(types):
        log.info("%s", line)
    return types

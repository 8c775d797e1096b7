"""Host directories a guest mounts for itself over 9p, at the same paths, cached where read-only.

virtme-ng mounts the host's root without a cache, so under software
emulation every stat and read of Python's start-up crosses to the host:
`import pytest` took 37 s in a 5.10 guest. The checkout, its virtualenv and
Python's standard library, exported again read-only and mounted with
cache=loose, took it to 16 s. The kernel's module tree is exported too:
virtme-ng links /lib/modules/<release> to it, but puts a tmpfs over
/var/cache, where it may lie, and without it the kernel cannot load modules
on demand (nf_tables for nft, tcp_diag for sock_diag). The directory for
results is exported writable and uncached, so the host sees what the guest
writes. Nothing on the host changes these directories while a VM runs, so a
cache cannot go stale.
"""
from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_MOUNT_OPTIONS = "trans=virtio,version=9p2000.L,msize=524288"
_AWKWARD = re.compile(r"[\s,'\"\\]")  # what cannot pass through vng's --qemu-opts and qemu's option syntax


class ShareError(ValueError):
    """A directory that cannot be exported to the guest."""


@dataclass(frozen=True)
class Share:
    path: Path
    writable: bool = False


def for_suite(repo: Path, python: Path) -> list[Share]:
    """The read-only directories a run of the suite reads: the checkout, and the interpreter's
    prefix and standard library where they lie outside it."""
    question = "import sys, sysconfig; print(sys.prefix); print(sysconfig.get_path('stdlib'))"
    asked = subprocess.run([str(python), "-c", question], capture_output=True, text=True, check=True)
    return [Share(Path(p)) for p in (str(repo), *asked.stdout.split())]


def _arrange(shares: Sequence[Share]) -> list[Share]:
    """Mount order, parents first; a read-only share inside another read-only share is dropped."""
    ordered = sorted({s.path.resolve(): s for s in shares}.values(), key=lambda s: len(s.path.resolve().parts))
    kept: list[Share] = []
    for share in ordered:
        inside = any(not k.writable and share.path.resolve().is_relative_to(k.path.resolve()) for k in kept)
        if share.writable or not inside:
            kept.append(share)
    return kept


def qemu_options(shares: Sequence[Share]) -> list[str]:
    """-fsdev and -device options exporting each share under the tag `gespannN`."""
    options = []
    for tag, share in _tagged(shares):
        if _AWKWARD.search(str(share.path)):
            raise ShareError(f"cannot export {share.path} to a VM: blanks, commas, quotes and backslashes "
                             "do not survive qemu's option syntax")
        readonly = "" if share.writable else ",readonly=on"
        options += ["-fsdev", f"local,id={tag},path={share.path},security_model=none{readonly}",
                    "-device", f"virtio-9p-pci,fsdev={tag},mount_tag={tag}"]
    return options


def mount_commands(shares: Sequence[Share]) -> list[str]:
    """Shell lines that mount each share in the guest, in order, and stop the script if one fails."""
    lines = []
    for tag, share in _tagged(shares):
        options = f"rw,{_MOUNT_OPTIONS}" if share.writable else f"ro,{_MOUNT_OPTIONS},cache=loose"
        path = shlex.quote(str(share.path))
        lines.append(f"mkdir -p {path} && mount -t 9p -o {options} {tag} {path} "
                     f"|| {{ echo kernel-matrix: cannot mount {path}; exit 1; }}")
    return lines


def _tagged(shares: Sequence[Share]) -> list[tuple[str, Share]]:
    return [(f"gespann{i}", share) for i, share in enumerate(_arrange(shares))]

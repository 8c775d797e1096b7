"""Debian's kernel headers for a guest kernel, fetched by package name, for bcc to compile against.

A Debian kernel's headers come in three packages of the same version as the
image: linux-headers-<release> (configuration and generated headers; its
scripts/ and tools/ are links into linux-kbuild), linux-headers-<abi>-common
(the source tree's headers), and linux-kbuild-<series>. Extracted together
under one root, their relative links resolve. bcc finds headers through
/lib/modules/<release>/build, which the guest's /lib/modules does not have,
or through $BCC_KERNEL_SOURCE, which it takes as one tree holding both the
generated and the source headers: `merged` is that tree, made of symbolic
links to the two packages' files (the -amd64 package's over the -common one's).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import debian_kernels


class HeadersError(RuntimeError):
    """The headers could not be fetched or are incomplete."""


def package_names(release: str) -> list[str]:
    """6.1.0-56-amd64 -> the three packages that make its headers."""
    match = re.fullmatch(r"(?P<abi>(?P<series>\d+\.\d+)\.\d+-\d+)-(?P<flavour>\w+)", release)
    if not match:
        raise HeadersError(f"not a Debian kernel release: {release!r}")
    return [f"linux-headers-{release}", f"linux-headers-{match['abi']}-common", f"linux-kbuild-{match['series']}"]


def build_dir(root: Path, release: str) -> Path:
    return root / "usr" / "src" / f"linux-headers-{release}"


def source_dir(root: Path, release: str) -> Path:
    return root / "usr" / "src" / f"linux-headers-{package_names(release)[1].removeprefix('linux-headers-')}"


def fetch(kernel: debian_kernels.KernelPackage, dest: Path) -> Path:
    """The headers of `kernel` extracted under dest/<release>/ (reused when already there); returns that root."""
    root = dest / kernel.release
    marker = root / ".complete"
    if marker.exists():
        return root
    archive = debian_kernels.PrivateArchive(dest / ".apt" / debian_kernels.suite_for(kernel.series))
    try:
        archive.update()
        debs = []
        for package in package_names(kernel.release):
            version = archive.candidate_version(package)
            if package != package_names(kernel.release)[2] and version != kernel.version:
                raise HeadersError(f"{package} is at {version} in the archive, the kernel at {kernel.version}")
            debs.append(archive.download(package, dest / "debs"))
    except debian_kernels.DebianKernelError as err:
        raise HeadersError(str(err)) from None
    if root.exists():
        shutil.rmtree(root)
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    for needed in (build_dir(root, kernel.release) / "Makefile", source_dir(root, kernel.release) / "include"):
        if not needed.exists():
            raise HeadersError(f"the extracted headers lack {needed}")
    merge(root, kernel.release)
    marker.touch()
    return root


def merged_dir(root: Path) -> Path:
    return root / "merged"


def merge(root: Path, release: str) -> Path:
    """The one tree $BCC_KERNEL_SOURCE wants: links to the -common headers, then to the -amd64 ones over them."""
    merged = merged_dir(root)
    if merged.exists():
        shutil.rmtree(merged)
    merged.mkdir()
    for tree in (source_dir(root, release), build_dir(root, release)):
        subprocess.run(["cp", "-r", "-s", "-f", f"{tree.resolve()}/.", f"{merged}/"], check=True, capture_output=True)
    if not (merged / "include" / "generated" / "autoconf.h").exists() or not (merged / "include" / "linux").is_dir():
        raise HeadersError(f"{merged} lacks the generated or the source headers")
    return merged

#!/usr/bin/env python3
"""Fetch Debian's generic amd64 kernel packages by series ("5.10", "6.1", "6.12").

Used to generate vendored_vmlinux/ tables, by the tests that check them, and by
the kernel-matrix VM tool. Debian keeps each kernel series in one suite; to reach
a suite other than the machine's own, this module builds a private apt state
directory whose sources are derived at run time from the machine's own
/etc/apt/sources.list.d/debian.sources (same archive URIs and keyring, another
suite), so the machine's apt configuration is never touched and no archive host
is written anywhere in the repository.

    python3 tools/debian_kernels.py 6.1 --dest /srv/gespann-test/kernels
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

#: Which Debian suite carries each kernel series.
SUITES = {"5.10": "bullseye", "6.1": "bookworm", "6.12": "trixie"}

SYSTEM_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
ARCH = "amd64"

# linux-image-<release> where the release is the generic flavour: 5.10.0-35-amd64,
# 6.1.0-37-amd64, 6.12.43+deb13-amd64. Cloud, rt, dbg and -unsigned packages do not match.
_IMAGE_PACKAGE = re.compile(r"^linux-image-(?P<release>(?P<series>\d+\.\d+)\.\d+(?:-\d+|\+deb\d+)-amd64)$")
_MARKER = "kernel-package.json"


class DebianKernelError(RuntimeError):
    """The archive could not be reached, or it has no kernel of the series asked for."""


@dataclass(frozen=True)
class KernelPackage:
    """One downloaded and extracted linux-image package."""

    series: str  # "6.1"
    release: str  # what `uname -r` prints under this kernel, e.g. "6.1.0-37-amd64"
    package: str  # "linux-image-6.1.0-37-amd64"
    version: str  # the Debian package version, e.g. "6.1.140-1"
    deb_path: Path
    root: Path  # the package's file tree, as extracted by dpkg-deb -x

    @property
    def vmlinuz_path(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def config_path(self) -> Path:
        return self.root / "boot" / f"config-{self.release}"

    @property
    def modules_dir(self) -> Path:
        """lib/modules/<release>; merged-/usr packages (trixie) put it under usr/."""
        for prefix in ("lib", "usr/lib"):
            candidate = self.root / prefix / "modules" / self.release
            if candidate.is_dir():
                return candidate
        return self.root / "lib" / "modules" / self.release

    def to_json(self) -> dict:
        fields = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        fields.update(vmlinuz_path=str(self.vmlinuz_path), modules_dir=str(self.modules_dir))
        return fields


def fetch_kernel(series: str, dest: Path, release: str | None = None) -> KernelPackage:
    """Download and extract the newest generic amd64 kernel of `series` under `dest`.

    With `release`, fetch exactly that kernel instead; a package already extracted
    under `dest` is reused without touching the network, so test reruns are fast.
    """
    dest = Path(dest)
    if release is not None:
        cached = cached_kernel(dest, release)
        if cached is not None:
            return cached
    archive = PrivateArchive(dest / ".apt" / suite_for(series))
    archive.update()
    if release is None:
        package = archive.newest_kernel(series)
    else:
        package = f"linux-image-{release}"
        if package not in archive.kernel_packages(series):
            raise DebianKernelError(f"{package} is no longer in the archive for {series}")
    release = _IMAGE_PACKAGE.match(package)["release"]
    cached = cached_kernel(dest, release)
    if cached is not None:
        return cached
    version = archive.candidate_version(package)
    deb = archive.download(package, dest / "debs")
    root = dest / release
    if root.exists():
        shutil.rmtree(root)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    kernel = KernelPackage(series, release, package, version, deb, root)
    if not kernel.vmlinuz_path.is_file():
        raise DebianKernelError(f"{package} has no {kernel.vmlinuz_path.relative_to(root)}")
    (root / _MARKER).write_text(json.dumps(kernel.to_json(), indent=1) + "\n")
    return kernel


def cached_kernel(dest: Path, release: str) -> KernelPackage | None:
    """The kernel `release` if an earlier fetch_kernel extracted it under `dest`."""
    marker = Path(dest) / release / _MARKER
    try:
        saved = json.loads(marker.read_text())
        kernel = KernelPackage(
            saved["series"], saved["release"], saved["package"], saved["version"],
            Path(saved["deb_path"]), Path(saved["root"]),
        )
    except (OSError, ValueError, KeyError):
        return None
    return kernel if kernel.vmlinuz_path.is_file() else None


def suite_for(series: str) -> str:
    try:
        return SUITES[series]
    except KeyError:
        raise DebianKernelError(
            f"no Debian suite known for kernel series {series!r}; known: {sorted(SUITES)}"
        ) from None


class PrivateArchive:
    """An apt state directory of its own for one suite; the machine's apt state is left alone."""

    def __init__(self, state: Path):
        self.state = Path(state)
        self.suite = self.state.name

    def update(self) -> None:
        (self.state / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (self.state / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        (self.state / "sources.list.d").mkdir(parents=True, exist_ok=True)
        (self.state / "sources.list").write_text("")
        (self.state / "sources.list.d" / "debian.sources").write_text(sources_for_suite(self.suite))
        self._apt("apt-get", "-q", "update")

    def kernel_packages(self, series: str) -> list[str]:
        names = self._apt("apt-cache", "pkgnames", "linux-image-").split()
        return [n for n in names if (m := _IMAGE_PACKAGE.match(n)) and m["series"] == series]

    def newest_kernel(self, series: str) -> str:
        packages = self.kernel_packages(series)
        if not packages:
            raise DebianKernelError(f"suite {self.suite} has no linux-image-*-{ARCH} package of series {series}")
        return max(packages, key=lambda name: tuple(int(n) for n in re.findall(r"\d+", name)))

    def candidate_version(self, package: str) -> str:
        policy = self._apt("apt-cache", "policy", package)
        match = re.search(r"Candidate:\s*(\S+)", policy)
        if not match or match[1] == "(none)":
            raise DebianKernelError(f"{package} has no candidate version in {self.suite}")
        return match[1]

    def download(self, package: str, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        version = self.candidate_version(package)
        self._apt("apt-get", "-q", "download", f"{package}={version}", cwd=directory)
        debs = sorted((*directory.glob(f"{package}_*_{ARCH}.deb"), *directory.glob(f"{package}_*_all.deb")),
                      key=lambda p: p.stat().st_mtime)  # headers' -common packages are Architecture: all
        if not debs:
            raise DebianKernelError(f"apt-get download {package} left no .deb in {directory}")
        return debs[-1]

    def _apt(self, *command: str, cwd: Path | None = None) -> str:
        options = {
            "Dir::Etc::sourcelist": self.state / "sources.list",
            "Dir::Etc::sourceparts": self.state / "sources.list.d",
            "Dir::State::lists": self.state / "lists",
            "Dir::Cache": self.state / "cache",
            "APT::Architecture": ARCH,
            "APT::Architectures": ARCH,
            "Acquire::Languages": "none",
            "APT::Sandbox::User": "root",
        }
        argv = [command[0], *(f"-o{k}={v}" for k, v in options.items()), *command[1:]]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise DebianKernelError(f"{' '.join(command)} failed:\n{done.stderr.strip()}")
        return done.stdout


def sources_for_suite(suite: str, system_sources: Path = SYSTEM_SOURCES) -> str:
    """deb822 sources for `suite`, copied from the machine's own Debian sources.

    Each stanza keeps its URIs, components and keyring; only the codename in its
    suites changes ("bookworm-security" becomes "trixie-security").
    """
    try:
        text = system_sources.read_text()
    except OSError as err:
        raise DebianKernelError(f"cannot read the machine's Debian sources: {err}") from None
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        fields = dict(
            line.split(":", 1) for line in block.splitlines() if ":" in line and not line.lstrip().startswith("#")
        )
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "URIs" not in fields or "Suites" not in fields:
            continue
        suites = [re.sub(r"^[a-z]+", suite, s) for s in fields["Suites"].split()]
        stanza = [
            f"Types: {fields.get('Types', 'deb')}",
            f"URIs: {fields['URIs']}",
            f"Suites: {' '.join(suites)}",
            f"Components: {fields.get('Components', 'main')}",
        ]
        if "Signed-By" in fields:
            stanza.append(f"Signed-By: {fields['Signed-By']}")
        stanzas.append("\n".join(stanza))
    if not stanzas:
        raise DebianKernelError(f"{system_sources} has no usable deb822 stanza")
    return "\n\n".join(stanzas) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("series", nargs="+", choices=sorted(SUITES), help="kernel series")
    parser.add_argument("--dest", type=Path, required=True, help="download and extraction directory")
    parser.add_argument("--release", help="fetch exactly this release (e.g. 6.1.0-37-amd64)")
    args = parser.parse_args(argv)
    try:
        for series in args.series:
            print(json.dumps(fetch_kernel(series, args.dest, args.release).to_json()))
    except (DebianKernelError, subprocess.CalledProcessError) as err:
        print(f"debian_kernels: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

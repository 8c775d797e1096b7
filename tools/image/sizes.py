#!/usr/bin/env python3
"""gespann's image beside what a user would otherwise install to trace connections.

The peers are Debian's bpftrace and bcc's tools (bpfcc-tools). A peer's size is the sum of dpkg's
Installed-Size over every package `apt-get install --simulate --no-install-recommends` would add
for it to the root file system of gespann's own image (a Debian 12 minbase with python3): what the
image already holds is never counted against a peer, so its figure is the least it costs. The
image's is its whole size as podman stores it.

    python3 tools/image/sizes.py [gespann:VERSION]     (as root, after `make image` and apt-get update)
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

PEERS = ("bpftrace", "bpfcc-tools")
_INST = re.compile(r"^Inst (\S+) \((\S+) ")


@dataclass
class PeerSize:
    package: str
    packages_added: int
    installed_bytes: int  # dpkg's Installed-Size, KiB each, summed, in bytes


def image_size(tag: str) -> int:
    return int(subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", tag],
                              capture_output=True, text=True, check=True).stdout)


def added_packages(package: str, dpkg_status: Path) -> list[tuple[str, str]]:
    """(name, version) of each package apt would install for `package` onto a system of `dpkg_status`."""
    done = subprocess.run(["apt-get", "install", "--simulate", "--no-install-recommends",
                           "-o", f"Dir::State::status={dpkg_status}", package],
                          capture_output=True, text=True, check=True, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"})
    return [match.groups() for match in map(_INST.match, done.stdout.splitlines()) if match]


def installed_size_kib(packages: list[tuple[str, str]]) -> int:
    """dpkg's Installed-Size (KiB) of these (name, version) packages, summed, from apt's lists."""
    shown = subprocess.run(["apt-cache", "show", *(f"{name}={version}" for name, version in packages)],
                           capture_output=True, text=True, check=True).stdout
    sizes = [int(size) for size in re.findall(r"^Installed-Size: (\d+)$", shown, re.MULTILINE)]
    assert len(sizes) == len(packages), f"apt-cache show gave {len(sizes)} sizes for {len(packages)} packages"
    return sum(sizes)


def peer_size(package: str, dpkg_status: Path) -> PeerSize:
    added = added_packages(package, dpkg_status)
    if not added:
        raise RuntimeError(f"apt would add nothing for {package}: are its package lists there (apt-get update)?")
    return PeerSize(package, len(added), 1024 * installed_size_kib(added))


def sizes(tag: str) -> tuple[int, list[PeerSize]]:
    """The image's size, and each peer's, against the image's own root file system."""
    root = Path(subprocess.run(["podman", "image", "mount", tag], capture_output=True, text=True,
                               check=True).stdout.strip())
    try:
        peers = [peer_size(package, root / "var/lib/dpkg/status") for package in PEERS]
    finally:
        subprocess.run(["podman", "image", "unmount", tag], capture_output=True, check=True)
    return image_size(tag), peers


def markdown(tag: str, image: int, peers: list[PeerSize]) -> str:
    rows = [f"| `{tag}` (the whole image) | {image / 1e6:.0f} MB | |"]
    rows += [f"| Debian's `{p.package}`, what it adds to that image | {p.installed_bytes / 1e6:.0f} MB "
             f"| {p.packages_added} packages |" for p in peers]
    return "\n".join(["| | size | |", "|---|---|---|", *rows])


def version_tag() -> str:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    return "gespann:" + re.search(r'^version = "(.+)"$', pyproject, re.MULTILINE).group(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tag", nargs="?", default=version_tag())
    parser.add_argument("--json", action="store_true", help="the figures as JSON instead of a Markdown table")
    args = parser.parse_args()
    image, peers = sizes(args.tag)
    if args.json:
        print(json.dumps({"image": args.tag, "image_bytes": image, "peers": [asdict(p) for p in peers]}))
    else:
        print(markdown(args.tag, image, peers))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Generate vendored_vmlinux/ tables: gespann's field manifest resolved for one kernel.

Hosts whose kernel exposes no /sys/kernel/btf/vmlinux read these tables instead.
A table comes from any BTF source of the kernel it describes:

    python3 tools/vmlinux_tables.py running                 # this machine's kernel
    python3 tools/vmlinux_tables.py debian 5.10 6.1 6.12    # Debian's generic amd64 kernels
    python3 tools/vmlinux_tables.py file PATH --release REL [--machine x86_64]

PATH may be raw BTF, an ELF vmlinux, a bzImage vmlinuz, or a linux-image .deb.
This is a tool, not runtime: it may call dpkg-deb, zstd and lz4.
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import lzma
import os
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from debian_kernels import DebianKernelError, fetch_kernel  # noqa: E402

from gespann.btf import BTFError  # noqa: E402
from gespann.btf.elf import is_elf, section  # noqa: E402
from gespann.btf.resolve import resolve_manifest  # noqa: E402
from gespann.btf.sources import VMLINUX_BTF, load_bytes  # noqa: E402
from gespann.btf.vendored import table_path  # noqa: E402

DEFAULT_OUT = ROOT / "vendored_vmlinux"
DEFAULT_DOWNLOADS = Path("/srv/gespann-test/kernels")
DEBIAN_MACHINE = "x86_64"  # Debian's amd64

BTF_MAGICS = (b"\x9f\xeb", b"\xeb\x9f")
# Compressed payloads of a bzImage, by magic. Commands only where Python has no decoder.
_PAYLOADS = [
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"BZh", "bzip2"),
    (b"\x5d\x00\x00", "lzma"),
]


class TableError(RuntimeError):
    """The input has no usable BTF."""


def extract_vmlinux(image: bytes) -> bytes:
    """The ELF vmlinux inside a bzImage: its payload, decompressed.

    The x86 boot header says where the payload is (payload_offset and
    payload_length, boot protocol 2.08+); without it, look for a known
    compression magic and keep the first stream that decompresses to an ELF.
    """
    if image[0x202:0x206] == b"HdrS" and int.from_bytes(image[0x206:0x208], "little") >= 0x208:
        setup_sects = image[0x1F1] or 4
        start = (setup_sects + 1) * 512 + int.from_bytes(image[0x248:0x24C], "little")
        length = int.from_bytes(image[0x24C:0x250], "little")
        candidates = [start]
        payload_end = start + length
    else:
        candidates = sorted({at for magic, _ in _PAYLOADS for at in _all(image, magic)})
        payload_end = len(image)
    for at in candidates:
        for magic, method in _PAYLOADS:
            if image.startswith(magic, at):
                try:
                    vmlinux = _decompress(method, image[at:payload_end])
                except (OSError, EOFError, lzma.LZMAError, zlib.error, subprocess.CalledProcessError):
                    continue
                if is_elf(vmlinux):
                    return vmlinux
    raise TableError("no compressed ELF vmlinux found in the kernel image")


def _all(data: bytes, magic: bytes):
    at = data.find(magic)
    while at >= 0:
        yield at
        at = data.find(magic, at + 1)


def _decompress(method: str, stream: bytes) -> bytes:
    if method == "gzip":
        return zlib.decompressobj(wbits=31).decompress(stream)  # gzip; stops at the stream end
    if method in ("xz", "lzma"):
        decoder = lzma.LZMADecompressor(lzma.FORMAT_XZ if method == "xz" else lzma.FORMAT_ALONE)
        return decoder.decompress(stream)  # stops at the stream's end; trailing bytes are ignored
    if method == "bzip2":
        return bz2.BZ2Decompressor().decompress(stream)
    command = {"zstd": ["zstd", "-dcq"], "lz4": ["lz4", "-dcq"]}[method]
    try:
        done = subprocess.run(command, input=stream, capture_output=True)
    except FileNotFoundError:
        raise TableError(f"this kernel image is {method}-compressed: install the {method} command") from None
    if not done.stdout:  # both stop with an error on trailing padding after a good stream
        raise subprocess.CalledProcessError(done.returncode, command, stderr=done.stderr)
    return done.stdout


def btf_from_file(path: Path) -> bytes:
    """The BTF blob in a raw BTF file, an ELF vmlinux, a bzImage, or a linux-image .deb."""
    if path.suffix == ".deb":
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["dpkg-deb", "-x", str(path), tmp], check=True)
            images = sorted(Path(tmp, "boot").glob("vmlinuz-*"))
            if not images:
                raise TableError(f"{path} has no boot/vmlinuz-*")
            return btf_from_file(images[0])
    data = path.read_bytes()
    if data[:2] in BTF_MAGICS:
        return data
    if not is_elf(data):
        data = extract_vmlinux(data)
    btf = section(data, ".BTF", source=str(path))
    if btf is None:
        raise TableError(f"{path}: the kernel was built without CONFIG_DEBUG_INFO_BTF (no .BTF section)")
    return btf


def make_table(btf: bytes, release: str, machine: str, source: str, out: Path = DEFAULT_OUT) -> Path:
    """Resolve the manifest against `btf` and write out/<machine>/<release>.json."""
    types = resolve_manifest(load_bytes(btf, name=source), release=release, machine=machine, attach=False)
    types = types._replace(source=source)
    path = table_path(release, machine, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(types.to_json(attach=False, extra={"btf_sha256": hashlib.sha256(btf).hexdigest()}))
    return path


def debian_table(series: str, downloads: Path, out: Path = DEFAULT_OUT) -> Path:
    kernel = fetch_kernel(series, downloads)
    btf = btf_from_file(kernel.vmlinuz_path)
    return make_table(btf, kernel.release, DEBIAN_MACHINE, f"Debian {kernel.package} {kernel.version}", out)


def running_table(out: Path = DEFAULT_OUT) -> Path:
    uname = os.uname()
    return make_table(VMLINUX_BTF.read_bytes(), uname.release, uname.machine, f"{VMLINUX_BTF} of {uname.release}", out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="tables directory (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("running", help="this machine's kernel, from /sys/kernel/btf/vmlinux")
    debian = commands.add_parser("debian", help="Debian's generic amd64 kernels, fetched with apt")
    debian.add_argument("series", nargs="+", help="5.10, 6.1, 6.12")
    debian.add_argument("--downloads", type=Path, default=DEFAULT_DOWNLOADS, help="(default: %(default)s)")
    file = commands.add_parser("file", help="raw BTF, vmlinux, vmlinuz or linux-image .deb")
    file.add_argument("path", type=Path)
    file.add_argument("--release", required=True, help="the kernel's `uname -r`")
    file.add_argument("--machine", default=os.uname().machine, help="the kernel's `uname -m` (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        if args.command == "running":
            written = [running_table(args.out)]
        elif args.command == "debian":
            written = [debian_table(series, args.downloads, args.out) for series in args.series]
        else:
            btf = btf_from_file(args.path)
            written = [make_table(btf, args.release, args.machine, f"{args.path.name} ({args.release})", args.out)]
    except (TableError, BTFError, DebianKernelError, OSError, subprocess.CalledProcessError) as err:
        print(f"vmlinux_tables: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

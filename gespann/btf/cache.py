"""On-disk cache of resolved kernel types, keyed by the exact BTF they came from.

The key is a fingerprint of the whole BTF file, not the release string or
/sys/kernel/notes: two builds with the same release can differ, and some
kernels carry a meaningless build-id note. The fingerprint is the file's
length with its CRC-32 and Adler-32 (zlib's, about 2 ms for the kernel's
5-6 MB, read in chunks: a warm start never holds the blob in memory). That
tells kernel builds apart; no one chooses their BTF to collide with another,
and hashlib would map libcrypto, a few MiB of resident memory, for it. The digest
of the manifest and of the probes' needs beyond it, and the document format, are
part of the key too, so a changed manifest, or a set of probes that needs more,
never reads a stale entry; without such needs the key is the manifest's alone.

Every failure here (unwritable directory, corrupt entry) silently means "no
cache": the cache only ever saves time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import zlib
from pathlib import Path
from typing import Optional

from . import manifest
from .errors import BTFError
from .kerneltypes import FORMAT, KernelTypes

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/gespann, else /var/cache/gespann for root, else ~/.cache/gespann."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "gespann"
    if os.geteuid() == 0:
        return Path("/var/cache/gespann")
    return Path.home() / ".cache" / "gespann"


def cache_key(btf: Path, release: str, machine: str, extra: manifest.KernelNeeds = manifest.NO_NEEDS) -> str:
    """Names one resolution: the BTF in file `btf`, labelled with this release and machine, by this manifest
    and the probes' needs beyond it (`extra`)."""
    length, crc, adler = 0, 0, 1
    try:
        with btf.open("rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                length, crc, adler = length + len(chunk), zlib.crc32(chunk, crc), zlib.adler32(chunk, adler)
    except OSError as err:
        raise BTFError(f"{btf}: {err.strerror or err}") from None
    labels = zlib.crc32(f"{release}\0{machine}".encode())
    return f"btf-{length:x}-{crc:08x}{adler:08x}-{labels:08x}-m{manifest.digest(extra)}-f{FORMAT}"


def load(key: str, directory: Optional[Path] = None,
         extra: manifest.KernelNeeds = manifest.NO_NEEDS) -> Optional[KernelTypes]:
    """The entry under `key`, unless it is unreadable or lacks part of the manifest or of `extra`."""
    path = (directory or cache_dir()) / f"{key}.json"
    try:
        types = KernelTypes.from_json(path.read_text(), source=f"cache {path}")
    except (OSError, BTFError, UnicodeDecodeError) as err:
        if not isinstance(err, FileNotFoundError):
            log.debug("ignoring BTF cache entry %s: %s", path, err)
        return None
    return None if types.missing_fields() or types.missing_enums() or types.missing_needs(extra) else types


def store(key: str, types: KernelTypes, directory: Optional[Path] = None) -> None:
    directory = directory or cache_dir()
    final = directory / f"{key}.json"
    temporary = directory / f".{key}.{os.getpid()}.tmp"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        temporary.write_text(types.to_json())
        os.replace(temporary, final)  # atomic: readers never see half an entry
    except OSError as err:
        log.debug("not caching kernel types in %s: %s", directory, err)
        with contextlib.suppress(OSError):
            temporary.unlink()

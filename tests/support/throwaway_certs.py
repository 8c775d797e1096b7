"""Throwaway certificates for the TLS tests, made with the openssl command (Debian's openssl package).

Two CAs: the one gespann trusts for client certificates, and a stranger whose
client certificate must be refused. The server certificate names 127.0.0.1 and
::1 as IP subject alternative names, which is what Prometheus (Go) checks
against a target given by address.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

OPENSSL = shutil.which("openssl")
SKIP_REASON = "needs the openssl command (tools/setup-host.sh installs it)"


@dataclasses.dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclasses.dataclass(frozen=True)
class Certificates:
    ca: Pair  # signs the server's and the trusted client's certificates
    server: Pair
    client: Pair
    stranger_ca: Pair
    stranger: Pair  # a client certificate the trusted CA did not sign


def make(directory: Path) -> Certificates:
    ca = _self_signed(directory, "ca", "gespann test CA")
    stranger_ca = _self_signed(directory, "stranger-ca", "someone else's CA")
    return Certificates(
        ca=ca,
        server=_signed(directory, "server", ca, "subjectAltName=IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n"),
        client=_signed(directory, "client", ca, "extendedKeyUsage=clientAuth\n"),
        stranger_ca=stranger_ca,
        stranger=_signed(directory, "stranger", stranger_ca, "extendedKeyUsage=clientAuth\n"))


def _openssl(*args: str) -> None:
    subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=30)


def _self_signed(directory: Path, name: str, subject: str) -> Pair:
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-subj", f"/CN={subject}", "-keyout", str(pair.key), "-out", str(pair.cert))
    return pair


def _signed(directory: Path, name: str, ca: Pair, extensions: str) -> Pair:
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    request, extfile = directory / f"{name}.csr", directory / f"{name}.ext"
    extfile.write_text(extensions)
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-subj", f"/CN=gespann test {name}", "-keyout", str(pair.key), "-out", str(request))
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
             "-days", "2", "-extfile", str(extfile), "-out", str(pair.cert))
    return pair

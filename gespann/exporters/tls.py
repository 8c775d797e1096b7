"""TLS for the metrics page from the standard library's `ssl.SSLContext`, set up the way exporters set it up.

The settings are those of the Prometheus exporter-toolkit's `tls_server_config`
(cert_file, key_file, client_auth_type, client_ca_file, min_version,
max_version), so one web config file serves node_exporter and gespann alike
(web_config.py reads them). A client CA alone means RequireAndVerifyClientCert,
as in the toolkit; the minimum version is TLS 1.2 unless set. The system's CA
store is never loaded: only the configured client CA vouches for clients.

ssl is imported only here and only when TLS is configured: it maps libcrypto,
which a plain-HTTP sidecar does not need. The settings are checked together at
config time by building the context once: a key that does not match its
certificate, or a CA file that holds no certificate, is a config error naming
its key, not a failure at the first scrape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

from gespann.settings import ConfigError

if TYPE_CHECKING:
    import ssl

#: The setting names, as the exporter-toolkit's tls_server_config (and the prometheus exporter kind) name them.
CERT_FILE, KEY_FILE, CLIENT_CA_FILE = "cert_file", "key_file", "client_ca_file"
CLIENT_AUTH_TYPE, MIN_VERSION, MAX_VERSION = "client_auth_type", "min_version", "max_version"
#: The exporter-toolkit's client_auth_type values gespann serves (Go's tls.ClientAuthType), and what each asks
#: of a client. RequestClientCert and RequireAnyClientCert accept certificates nobody verified: not offered.
NO_CLIENT_CERT, VERIFY_IF_GIVEN, REQUIRE_AND_VERIFY = ("NoClientCert", "VerifyClientCertIfGiven",
                                                      "RequireAndVerifyClientCert")
CLIENT_AUTH_TYPES = (NO_CLIENT_CERT, VERIFY_IF_GIVEN, REQUIRE_AND_VERIFY)
UNVERIFIED_CLIENT_AUTH_TYPES = ("RequestClientCert", "RequireAnyClientCert")
TLS_VERSIONS = ("TLS10", "TLS11", "TLS12", "TLS13")


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """A server certificate and its key (PEM), and optionally the CA that client certificates must chain to,
    with how the client's certificate is asked for (`client_auth_type`, one of CLIENT_AUTH_TYPES; given a CA
    and no type: RequireAndVerifyClientCert, whose clients without a certificate of the CA are refused during
    the handshake)."""

    cert_file: str
    key_file: str
    client_ca_file: Optional[str] = None
    client_auth_type: Optional[str] = None
    min_version: Optional[str] = None
    max_version: Optional[str] = None

    @property
    def client_auth(self) -> str:
        if self.client_auth_type is not None:
            return self.client_auth_type
        return REQUIRE_AND_VERIFY if self.client_ca_file is not None else NO_CLIENT_CERT

    def server_context(self) -> ssl.SSLContext:
        """Raises ssl.SSLError or OSError when a file does not load."""
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = _version(self.min_version or "TLS12")
        if self.max_version is not None:
            context.maximum_version = _version(self.max_version)
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.client_auth != NO_CLIENT_CERT:
            context.load_verify_locations(cafile=self.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED if self.client_auth == REQUIRE_AND_VERIFY else ssl.CERT_OPTIONAL
        return context


def from_settings(settings: Mapping[str, Any]) -> Optional[TlsFiles]:
    """The TLS files of validated flat settings (cert_file, key_file, client_ca_file); None serves plain HTTP."""
    if CERT_FILE not in settings:
        return None
    return TlsFiles(settings[CERT_FILE], settings[KEY_FILE], settings.get(CLIENT_CA_FILE))


def check_settings(settings: Mapping[str, Any], key: str) -> None:
    """A certificate needs its key and a key its certificate; a client CA needs TLS; together they must load."""
    given = {name for name in (CERT_FILE, KEY_FILE, CLIENT_CA_FILE) if name in settings}
    if CERT_FILE in given and KEY_FILE not in given:
        raise ConfigError(f"{key}.{KEY_FILE}", f"missing: {CERT_FILE} needs the private key of its certificate")
    if KEY_FILE in given and CERT_FILE not in given:
        raise ConfigError(f"{key}.{KEY_FILE}", f"given without {CERT_FILE}: a key serves TLS only with its certificate")
    if CLIENT_CA_FILE in given and CERT_FILE not in given:
        raise ConfigError(f"{key}.{CLIENT_CA_FILE}",
                          f"client certificates need TLS: give {CERT_FILE} and {KEY_FILE} too")
    if CERT_FILE in given:
        check_loads(from_settings(settings), key)


def check_loads(files: TlsFiles, key: str) -> None:
    """The files as one context, or a ConfigError naming `key`'s setting at fault."""
    import ssl

    if files.client_ca_file is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=files.client_ca_file)
        except (ssl.SSLError, ValueError) as err:
            raise ConfigError(f"{key}.{CLIENT_CA_FILE}", f"holds no usable CA certificate ({_reason(err)})") from None
    try:
        files.server_context()
    except (ssl.SSLError, OSError) as err:
        raise ConfigError(f"{key}.{CERT_FILE}", f"{CERT_FILE} and {KEY_FILE} are not a PEM certificate and its "
                                                f"private key ({_reason(err)})") from None
    except ValueError as err:  # min_version above max_version
        raise ConfigError(f"{key}.{MIN_VERSION}", f"not a version range TLS can use ({err})") from None


def _version(name: str) -> ssl.TLSVersion:
    import ssl

    return {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1, "TLS12": ssl.TLSVersion.TLSv1_2,
            "TLS13": ssl.TLSVersion.TLSv1_3}[name]


def _reason(err: Exception) -> str:
    return getattr(err, "reason", None) or str(err)

"""TLS for the metrics page, and client certificates where a node requires them.

The context comes from prometheus-client's own helper (the one behind its
`start_http_server(certfile=..., keyfile=..., client_cafile=...)`), so gespann
serves TLS exactly as prometheus-client does. It, and ssl with it, are
imported only here and only when TLS is configured: together they map
libcrypto and about 12 MiB that a plain-HTTP sidecar does not need. The
settings are checked together at config time by building that context once: a
key that does not match its certificate, or a CA file that holds no
certificate, is a config error naming its key, not a failure at the first
scrape.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping, Optional

from gespann.settings import ConfigError

if TYPE_CHECKING:
    import ssl

#: The setting names, as the prometheus exporter kind declares them.
CERT_FILE, KEY_FILE, CLIENT_CA_FILE = "cert_file", "key_file", "client_ca_file"


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """A server certificate and its key (PEM), and optionally the CA that client certificates must chain to:
    with one, a client without a certificate it signed is refused during the handshake."""

    cert_file: str
    key_file: str
    client_ca_file: Optional[str] = None

    def server_context(self) -> ssl.SSLContext:
        """Raises ssl.SSLError or OSError when a file does not load."""
        import ssl

        from prometheus_client.exposition import _get_ssl_ctx

        return _get_ssl_ctx(certfile=self.cert_file, keyfile=self.key_file, protocol=ssl.PROTOCOL_TLS_SERVER,
                            cafile=self.client_ca_file, client_auth_required=self.client_ca_file is not None)


def from_settings(settings: Mapping[str, Any]) -> Optional[TlsFiles]:
    """The TLS files of validated settings; None serves plain HTTP."""
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
    if CERT_FILE not in given:
        return
    import ssl

    files = from_settings(settings)
    if files.client_ca_file is not None:
        try:
            ssl.create_default_context(cafile=files.client_ca_file)
        except (ssl.SSLError, ValueError) as err:
            raise ConfigError(f"{key}.{CLIENT_CA_FILE}", f"holds no usable CA certificate ({_reason(err)})") from None
    try:
        files.server_context()
    except (ssl.SSLError, OSError) as err:
        raise ConfigError(f"{key}.{CERT_FILE}", f"{CERT_FILE} and {KEY_FILE} are not a PEM certificate and its "
                                                f"private key ({_reason(err)})") from None


def _reason(err: Exception) -> str:
    return getattr(err, "reason", None) or str(err)

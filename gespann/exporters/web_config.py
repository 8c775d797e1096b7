"""TLS and basic auth for the metrics page as Prometheus' exporters take them: the exporter-toolkit's web config.

The same YAML that node_exporter reads with `--web.config.file`:

    tls_server_config:
      cert_file: server.crt           # relative paths: from the web config file's directory
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: scrapers-ca.crt
    basic_auth_users:
      prometheus: $2y$10$...          # bcrypt (htpasswd -nbBC 10 USER PASSWORD)

is given either as a file, the prometheus exporter's `web_config_file`
setting, or as its two keys among the exporter's settings. The older settings
`cert_file`, `key_file` and `client_ca_file` keep working. Every file is read
when the config is, and every problem is a config error naming its key: a
missing bcrypt package too, when basic auth is configured (bcrypt is imported
only then).

Not taken from the toolkit's format: `cipher_suites`, `curve_preferences`,
`prefer_server_cipher_suites`, `client_allowed_sans`, inline `cert`/`key`, and
the client auth types that accept unverified certificates; naming one is a
config error that says so. `http_server_config.http2` is accepted and has no
effect (the page is served over HTTP/1.0).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any, Optional

import yaml

from gespann.settings import ConfigError, choice, expect, flag, key_name, readable_file, reject_unknown, show

from . import tls
from .tls import TlsFiles

#: The settings of the prometheus exporter that carry a web config, as a file or inline.
WEB_CONFIG_FILE, TLS_SERVER_CONFIG, BASIC_AUTH_USERS = "web_config_file", "tls_server_config", "basic_auth_users"
HTTP_SERVER_CONFIG = "http_server_config"
#: tls_server_config's keys that gespann takes; the toolkit's others, which it does not.
TLS_KEYS = (tls.CERT_FILE, tls.KEY_FILE, tls.CLIENT_AUTH_TYPE, tls.CLIENT_CA_FILE, tls.MIN_VERSION, tls.MAX_VERSION)
UNSUPPORTED_TLS_KEYS = ("cipher_suites", "curve_preferences", "prefer_server_cipher_suites", "client_allowed_sans",
                        "cert", "key")
#: A bcrypt hash: $2a$, $2b$ or $2y$, the cost, then 53 characters of salt and digest.
_BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")


@dataclasses.dataclass(frozen=True)
class WebConfig:
    """What the page is served with: TLS (None: plain HTTP) and basic-auth users (none: no auth)."""

    tls: Optional[TlsFiles] = None
    basic_auth_users: Mapping[str, str] = dataclasses.field(default_factory=dict)


def tls_server_config(value: Any, key: str, base: str = "") -> TlsFiles:
    """A tls_server_config mapping; relative file paths are taken from `base`."""
    expect(value, dict, key, "a mapping with cert_file and key_file")
    for name in value:
        if name in UNSUPPORTED_TLS_KEYS:
            raise ConfigError(f"{key}.{name}", "not supported by gespann; leave it out (Python's ssl module and "
                                               "OpenSSL's defaults choose it)")
    reject_unknown(value, TLS_KEYS, key)
    for required in (tls.CERT_FILE, tls.KEY_FILE):
        if value.get(required) is None:
            raise ConfigError(f"{key}.{required}", "missing")
    files = {name: _file(value[name], f"{key}.{name}", base) for name in (tls.CERT_FILE, tls.KEY_FILE,
                                                                            tls.CLIENT_CA_FILE)
             if value.get(name) is not None}
    auth_type = value.get(tls.CLIENT_AUTH_TYPE)
    if auth_type is not None:
        if auth_type in tls.UNVERIFIED_CLIENT_AUTH_TYPES:
            raise ConfigError(f"{key}.{tls.CLIENT_AUTH_TYPE}",
                              f"{auth_type} accepts certificates nobody verified, which gespann does not offer; use "
                              f"{tls.VERIFY_IF_GIVEN} or {tls.REQUIRE_AND_VERIFY} with client_ca_file")
        choice(auth_type, tls.CLIENT_AUTH_TYPES, f"{key}.{tls.CLIENT_AUTH_TYPE}", what="client auth type")
        if auth_type != tls.NO_CLIENT_CERT and tls.CLIENT_CA_FILE not in files:
            raise ConfigError(f"{key}.{tls.CLIENT_CA_FILE}", f"missing: {auth_type} verifies client certificates "
                                                             "against this CA")
        if auth_type == tls.NO_CLIENT_CERT and tls.CLIENT_CA_FILE in files:
            raise ConfigError(f"{key}.{tls.CLIENT_AUTH_TYPE}", f"{auth_type} asks for no client certificate, yet "
                                                               "client_ca_file is given; choose one")
    versions = {name: choice(value[name], tls.TLS_VERSIONS, f"{key}.{name}", what="TLS version")
                for name in (tls.MIN_VERSION, tls.MAX_VERSION) if value.get(name) is not None}
    if len(versions) == 2 and tls.TLS_VERSIONS.index(versions[tls.MIN_VERSION]) > tls.TLS_VERSIONS.index(
            versions[tls.MAX_VERSION]):
        raise ConfigError(f"{key}.{tls.MIN_VERSION}", f"above {tls.MAX_VERSION}")
    files_tls = TlsFiles(files[tls.CERT_FILE], files[tls.KEY_FILE], files.get(tls.CLIENT_CA_FILE), auth_type,
                         versions.get(tls.MIN_VERSION), versions.get(tls.MAX_VERSION))
    tls.check_loads(files_tls, key)
    return files_tls


def basic_auth_users(value: Any, key: str, _base: str = "") -> dict[str, str]:
    """A basic_auth_users mapping: user name -> bcrypt hash; bcrypt must be importable."""
    expect(value, dict, key, "a mapping of user name to bcrypt hash")
    if not value:
        raise ConfigError(key, "empty: name at least one user, or leave the key out")
    users = {}
    for user, hashed in value.items():
        user_key = f"{key}.{key_name(user)}"
        expect(user, str, user_key, "a user name")
        if not user or ":" in user:
            raise ConfigError(user_key, "a user name must be non-empty and hold no ':'")
        expect(hashed, str, user_key, "a bcrypt hash such as htpasswd -nbBC 10 USER PASSWORD makes")
        if not _BCRYPT.fullmatch(hashed):
            raise ConfigError(user_key, "not a bcrypt hash ($2y$10$... as htpasswd -nbBC 10 USER PASSWORD makes it); "
                                        "a plain password is never accepted")
        users[user] = hashed
    try:
        import bcrypt  # noqa: F401  (only to know, now, that checks will be possible)
    except ImportError:
        raise ConfigError(key, "basic auth needs the Python package bcrypt, which is not installed (pip install "
                               "bcrypt, or Debian's python3-bcrypt)") from None
    return users


def http_server_config(value: Any, key: str, _base: str = "") -> None:
    expect(value, dict, key, "a mapping")
    for name, setting in value.items():
        if name != "http2":
            raise ConfigError(f"{key}.{key_name(name)}", "not supported by gespann; only http2 (which has no effect: "
                                                         "the page is served over HTTP/1.0) may be given")
        flag(setting, f"{key}.{name}")


_SECTIONS = {TLS_SERVER_CONFIG: tls_server_config, BASIC_AUTH_USERS: basic_auth_users,
             HTTP_SERVER_CONFIG: http_server_config}


def web_config_file(value: Any, key: str) -> WebConfig:
    """A web config file as the exporter-toolkit reads it; its problems are errors of `key`, naming the file."""
    path = readable_file("a YAML file path")(value, key)
    try:
        with open(path, "rb") as file:
            document = yaml.safe_load(file.read().decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError):
        raise ConfigError(key, f"{show(path)} is not a YAML web config file") from None
    document = {} if document is None else document
    try:
        expect(document, dict, "(top level)", "a mapping with tls_server_config and/or basic_auth_users")
        reject_unknown(document, tuple(_SECTIONS), "")
        base = os.path.dirname(os.path.abspath(path))
        sections = {name: _SECTIONS[name](section, name, base) for name, section in document.items()
                    if section is not None}
    except ConfigError as err:
        raise ConfigError(key, f"{path}: {err}") from None
    return WebConfig(sections.get(TLS_SERVER_CONFIG), sections.get(BASIC_AUTH_USERS, {}))


def from_settings(settings: Mapping[str, Any]) -> WebConfig:
    """The web config of validated prometheus settings: its file, its inline keys, or the older flat TLS keys."""
    if WEB_CONFIG_FILE in settings:
        return settings[WEB_CONFIG_FILE]
    return WebConfig(settings.get(TLS_SERVER_CONFIG) or tls.from_settings(settings),
                     settings.get(BASIC_AUTH_USERS, {}))


def check_settings(settings: Mapping[str, Any], key: str) -> None:
    """One way of giving TLS at a time: a file, inline, or the older flat keys; then the older keys' own checks."""
    flat = [name for name in (tls.CERT_FILE, tls.KEY_FILE, tls.CLIENT_CA_FILE) if name in settings]
    inline = [name for name in (TLS_SERVER_CONFIG, BASIC_AUTH_USERS) if name in settings]
    if WEB_CONFIG_FILE in settings and (flat or inline):
        raise ConfigError(f"{key}.{(flat + inline)[0]}", f"given with {WEB_CONFIG_FILE}, which holds it: keep one")
    if TLS_SERVER_CONFIG in settings and flat:
        raise ConfigError(f"{key}.{flat[0]}", f"given with {TLS_SERVER_CONFIG}, which holds it: keep one")
    tls.check_settings(settings, key)


def _file(value: Any, key: str, base: str) -> str:
    expect(value, str, key, "a PEM file path")
    path = os.path.join(base, value) if base and value and not os.path.isabs(value) else value
    return readable_file("a PEM file path")(path, key)

"""Basic auth for the metrics page, with bcrypt-hashed passwords, as the Prometheus exporter-toolkit checks it.

The users and hashes are the toolkit's `basic_auth_users` (web_config.py), so
the hashes `htpasswd -nbBC 10 USER PASSWORD` or Python's bcrypt make serve
node_exporter and gespann alike. bcrypt is imported only when basic auth is
configured, and checks run on one thread of their own (page_server.py), one
at a time: a bcrypt check is deliberately slow (tens to hundreds of
milliseconds), and a client sending wrong passwords must not hold up the
event loop or take more than one core.

As in the toolkit, each outcome is remembered for its exact credentials, right
or wrong, so a scraper repeating the same header costs one check, not one per
scrape; an unknown user name is checked against a fixed hash, so that the
answer's timing does not tell which user names exist. Only a digest of the
credentials is kept, never the password.
"""

from __future__ import annotations

import binascii
import collections
import threading
from collections.abc import Mapping
from typing import Optional

from .page_server import NO_CREDENTIALS, WRONG_CREDENTIALS

#: Credentials whose outcome is remembered at most (the oldest is forgotten first).
MAX_REMEMBERED = 1024
#: What a check of an unknown user name compares against (a bcrypt hash of a random password, cost 10).
_NOT_A_USER = b"$2b$10$M8AOFLarxysewCDpA42sEubxN4oA9Ulkkiv/c0ZZJ6SPxdFMV/4yq"


class BasicAuth:
    """Checks `Authorization` header values against `users` (user name -> bcrypt hash)."""

    #: What `known()` returns when only a bcrypt check can tell.
    UNKNOWN = object()

    def __init__(self, users: Mapping[str, str]):
        import hashlib

        import bcrypt

        self._bcrypt = bcrypt
        self._digest = hashlib.sha256
        self._users = {name: hashed.encode() for name, hashed in users.items()}
        self._remembered: collections.OrderedDict[bytes, Optional[str]] = collections.OrderedDict()
        self._lock = threading.Lock()  # the loop reads what the check thread remembers

    def known(self, authorization: str):
        """None when these credentials are known to be right, a refusal kind when known (or seen) to be wrong,
        else UNKNOWN: `check()` must tell, on the thread that runs bcrypt."""
        credentials = _credentials(authorization)
        if credentials is None:
            return NO_CREDENTIALS
        with self._lock:
            return self._remembered.get(self._key(*credentials), self.UNKNOWN)

    def check(self, authorization: str) -> Optional[str]:
        """None when the header names a user and its password, else the refusal kind. Runs bcrypt: slow."""
        credentials = _credentials(authorization)
        if credentials is None:
            return NO_CREDENTIALS
        user, password = credentials
        hashed = self._users.get(user)
        try:
            right = self._bcrypt.checkpw(password.encode(), hashed or _NOT_A_USER) and hashed is not None
        except ValueError:  # a password bcrypt cannot take (over 72 bytes in its newer versions)
            right = False
        verdict = None if right else WRONG_CREDENTIALS
        with self._lock:
            self._remembered[self._key(user, password)] = verdict
            if len(self._remembered) > MAX_REMEMBERED:
                self._remembered.popitem(last=False)
        return verdict

    def _key(self, user: str, password: str) -> bytes:
        return self._digest(f"{len(user)}:{user}:{password}".encode()).digest()


def _credentials(authorization: str) -> Optional[tuple[str, str]]:
    """(user, password) of a `Basic` Authorization header value, or None when it holds none."""
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, colon, password = binascii.a2b_base64(encoded.strip().encode("ascii")).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeError, ValueError):
        return None
    return (user, password) if colon else None

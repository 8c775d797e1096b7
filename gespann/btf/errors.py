"""What can go wrong when reading kernel types, one exception per cause."""

from __future__ import annotations


class BTFError(Exception):
    """Base of every error raised by gespann.btf."""


class MalformedBTF(BTFError, ValueError):
    """The BTF data is truncated, corrupt or hostile; nothing in it can be trusted."""


class TypeNotFound(BTFError, LookupError):
    """No type of that name (and kind) exists in this BTF."""

    def __init__(self, message: str, close_names: tuple[str, ...] = ()):
        super().__init__(message)
        self.close_names = close_names


class FieldNotFound(BTFError, LookupError):
    """The struct or union exists but has no member by that name (or it cannot be indexed)."""

    def __init__(self, message: str, close_names: tuple[str, ...] = ()):
        super().__init__(message)
        self.close_names = close_names


class NoKernelTypes(BTFError):
    """The host has no BTF and gespann has no vendored table for its kernel."""


class NotDeclared(BTFError, KeyError):
    """A probe looked up a kernel name that neither gespann's manifest lists nor any probe declared: it was
    never resolved. A KeyError too, as looking up an unknown key always was."""

    def __str__(self) -> str:
        return Exception.__str__(self)  # KeyError's own would quote the message

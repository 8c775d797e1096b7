"""The kernel's names for why it dropped a packet (enum skb_drop_reason, 5.17+), read from its BTF.

Counted drops carry the reason's number; the label is its name in the running
kernel's enum, so a reason a newer kernel adds is named with no release of
gespann's. Connection records carry the latest drop's reason too, named the same way.
"""

from __future__ import annotations

from typing import Mapping, Optional

from ...bpf.errors import BPFError
from ...bpf.tracefs import read_format
from ...btf import KernelTypes

#: The key's reason when the kernel passes none (before 5.17).
NO_REASON = 0xFFFFFFFF
UNKNOWN = "unknown"
#: What the enum's names start with, left out of the label (the tracepoint prints them so too).
REASON_PREFIX = "SKB_DROP_REASON_"
DROP_REASONS = "skb_drop_reason"


def enum(types: Optional[KernelTypes]) -> Optional[Mapping[int, str]]:
    if types is None:
        return None
    try:
        return types.enum(DROP_REASONS)
    except (KeyError, AttributeError):
        return None


def reasons_available(types: Optional[KernelTypes]) -> str:
    """Whether drops are counted by the kernel's reason on this kernel, and why not, for `gespann check`."""
    try:
        passed = any(field.name == "reason" for field in read_format("skb", "kfree_skb").fields)
    except BPFError:
        passed = enum(types) is not None
    if not passed:
        return ("no: this kernel's kfree_skb passes no reason (Linux 5.17+); every drop counts under reason "
                "unknown")
    names = enum(types)
    if names is None:
        return "by number only: the kernel passes reasons, but no kernel BTF names them (enum skb_drop_reason)"
    return f"yes: {len(names)} reasons, named from the kernel's BTF (enum skb_drop_reason)"


class DropReasons:
    """A drop reason's label: its name in the kernel's enum without the prefix, as the tracepoint prints it
    (NO_SOCKET); its number where no BTF names it; `unknown` where the kernel passed none."""

    def __init__(self, names: Optional[Mapping[int, str]]):
        self._names = {value: name[len(REASON_PREFIX):] if name.startswith(REASON_PREFIX) else name
                       for value, name in (names or {}).items()}

    @classmethod
    def of(cls, types: Optional[KernelTypes]) -> "DropReasons":
        return cls(enum(types))

    def __call__(self, value: int) -> str:
        if value == NO_REASON:
            return UNKNOWN
        return self._names.get(value, str(value))

    @classmethod
    def of_target(cls, types_of) -> "DropReasons":
        """Reasons named from the kernel types `types_of()` gives, by number where there are none."""
        from ...btf import BTFError

        try:
            return cls.of(types_of())
        except BTFError:
            return cls(None)

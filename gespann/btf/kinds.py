"""BTF kind numbers and INT encoding bits (include/uapi/linux/btf.h), free of any parser."""

from enum import IntEnum


class Kind(IntEnum):
    """BTF_KIND_*: what a type record describes."""

    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


#: Bit 0 of an INT's encoding: signed. Bit 1: char. Bit 2: bool.
INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4

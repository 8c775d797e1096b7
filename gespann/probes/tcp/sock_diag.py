"""A minimal sock_diag client: one INET_DIAG dump of a namespace's TCP sockets, with tcp_info.

gespann asks the kernel one question, every collection: which TCP sockets are
open, and what tcp_info says of each. That is one netlink request
(SOCK_DIAG_BY_FAMILY with NLM_F_DUMP) and a stream of fixed-layout replies,
so it is spoken here with the standard library: a general netlink library's
import alone would be a third of gespann's memory and a fifth of its start-up.
The layouts are the kernel's UAPI (linux/netlink.h, linux/inet_diag.h,
linux/tcp.h), read with struct: a dump is decoded at every scrape, for every
open socket, so it must be cheap.

A netlink socket answers for the network namespace it was made in, whichever
thread uses it later: `DiagSocket(netns_path)` makes its socket inside
`netns_path` (setns() on the calling thread, then back), which takes
CAP_SYS_ADMIN; the PermissionError says so to the caller.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
import threading
from typing import Iterator, NamedTuple, Optional

from ..toolkit.netns import in_namespace as _in_namespace

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP, NLM_F_DUMP_INTR = 0x1, 0x300, 0x10
INET_DIAG_INFO = 2  # the attribute carrying struct tcp_info; its request bit is 1 << (2 - 1)

#: struct nlmsghdr: length, type, flags, sequence, port id.
_HEADER = struct.Struct("=IHHII")
#: struct inet_diag_req_v2: family, protocol, extensions, pad, states, then an all-zero inet_diag_sockid.
_REQUEST = struct.Struct("=BBBxI48x")
#: struct inet_diag_msg: family, state, timer, retrans, then the sockid (ports big-endian, addresses,
#: interface, cookie as two u32 halves), expires, rqueue, wqueue, uid, inode.
_MESSAGE = struct.Struct("=BBBB2H16s16sIII5I")
_MESSAGE_PORTS = struct.Struct("!HH")
#: struct rtattr: length (header included), type.
_ATTRIBUTE = struct.Struct("=HH")
#: The parts of struct tcp_info read here, at their UAPI offsets.
_U32 = struct.Struct("=I")
_BYTES_ACKED_AND_RECEIVED = struct.Struct("=QQ")
_LAST_DATA_SENT, _LAST_DATA_RECV, _BYTES_ACKED = 44, 52, 120
_TCP_INFO_NEEDED = 136  # through tcpi_bytes_received (Linux 4.2 on)
#: tcpi_bytes_sent and tcpi_bytes_retrans (Linux 4.19 on): payload transmitted, and retransmitted.
_BYTES_SENT_AND_RETRANS = struct.Struct("=QQ")
_BYTES_SENT = 200
_RECEIVE_BUFFER = 1 << 16
_DUMP_ATTEMPTS = 3  # a dump the kernel marks interrupted (sockets changed under it) is asked again


class TcpSocket(NamedTuple):
    """One socket of a dump, with what gespann reads of its tcp_info (a named tuple: a collection makes
    one per open socket, and a frozen dataclass cost several times as much to make)."""

    cookie: int  # stable for the socket's life, never reused
    family: int
    state: int
    local_port: int
    remote_port: int
    bytes_acked: int
    bytes_received: int
    last_data_sent_ms: int
    last_data_recv_ms: int
    #: Payload transmitted at least once (tcpi_bytes_sent - tcpi_bytes_retrans); None before 4.19.
    bytes_transmitted: Optional[int] = None


class DiagSocket:
    """A NETLINK_SOCK_DIAG socket of one network namespace (`netns_path`, or the caller's own)."""

    def __init__(self, netns_path: Optional[str] = None):
        self._sequence = itertools.count(1)
        self._lock = threading.Lock()
        self._socket = _in_namespace(netns_path, _netlink_socket)

    def tcp_sockets(self, family: int, states: int) -> list[TcpSocket]:
        """Every TCP socket of `family` whose state is in the bit mask `states`, with tcp_info."""
        with self._lock:
            for _ in range(_DUMP_ATTEMPTS):
                found, interrupted = self._dump(family, states)
                if not interrupted:
                    break
            return found

    def close(self) -> None:
        self._socket.close()

    def __enter__(self) -> DiagSocket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _dump(self, family: int, states: int) -> tuple[list[TcpSocket], bool]:
        sequence = next(self._sequence) & 0xFFFFFFFF
        body = _REQUEST.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), states)
        self._socket.send(_HEADER.pack(_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY,
                                       NLM_F_REQUEST | NLM_F_DUMP, sequence, 0) + body)
        found, interrupted = [], False
        while True:
            data = self._socket.recv(_RECEIVE_BUFFER)
            for kind, flags, payload in _messages(data, sequence):
                if kind == NLMSG_DONE:
                    return found, interrupted
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise OSError(code, f"sock_diag dump: {os.strerror(code)}")
                    continue
                interrupted |= bool(flags & NLM_F_DUMP_INTR)
                parsed = _tcp_socket(payload)
                if parsed is not None:
                    found.append(parsed)


def _messages(data: bytes, sequence: int) -> Iterator[tuple[int, int, memoryview]]:
    """(type, flags, payload) of each netlink message in `data` that answers `sequence`."""
    view, offset = memoryview(data), 0
    while offset + _HEADER.size <= len(data):
        length, kind, flags, answered, _ = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            raise OSError(errno.EBADMSG, f"sock_diag: a netlink message of {length} bytes")
        if answered == sequence:
            yield kind, flags, view[offset + _HEADER.size:offset + length]
        offset += (length + 3) & ~3


def _tcp_socket(payload: memoryview) -> Optional[TcpSocket]:
    """A dumped socket, or None if it carries no tcp_info (a TIME_WAIT or request socket)."""
    family, state, _, _, _, _, _, _, _, cookie_low, cookie_high, *_ = _MESSAGE.unpack_from(payload)
    local_port, remote_port = _MESSAGE_PORTS.unpack_from(payload, 4)
    info = _attribute(payload, _MESSAGE.size, INET_DIAG_INFO)
    if info is None or len(info) < _TCP_INFO_NEEDED:
        return None
    bytes_acked, bytes_received = _BYTES_ACKED_AND_RECEIVED.unpack_from(info, _BYTES_ACKED)
    transmitted = None
    if len(info) >= _BYTES_SENT + _BYTES_SENT_AND_RETRANS.size:
        sent, retransmitted = _BYTES_SENT_AND_RETRANS.unpack_from(info, _BYTES_SENT)
        transmitted = max(sent - retransmitted, 0)
    return TcpSocket(
        cookie=cookie_high << 32 | cookie_low, family=family, state=state,
        local_port=local_port, remote_port=remote_port,
        bytes_acked=bytes_acked, bytes_received=bytes_received,
        last_data_sent_ms=_U32.unpack_from(info, _LAST_DATA_SENT)[0],
        last_data_recv_ms=_U32.unpack_from(info, _LAST_DATA_RECV)[0],
        bytes_transmitted=transmitted,
    )


def _attribute(payload: memoryview, offset: int, wanted: int) -> Optional[memoryview]:
    while offset + _ATTRIBUTE.size <= len(payload):
        length, kind = _ATTRIBUTE.unpack_from(payload, offset)
        if length < _ATTRIBUTE.size:
            return None
        if kind & 0x3FFF == wanted:  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
            return payload[offset + _ATTRIBUTE.size:offset + length]
        offset += (length + 3) & ~3
    return None


def _netlink_socket() -> socket.socket:
    diag = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
    diag.bind((0, 0))
    return diag

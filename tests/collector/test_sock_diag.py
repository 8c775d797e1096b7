"""gespann's own sock_diag dump against two oracles: pyroute2's decoding of the same dump, and
the byte counts the test itself sent over real loopback connections (IPv4 and IPv6)."""
import errno
import os
import socket
import threading
import time

import pytest
from namespaces import Namespace
from pyroute2 import DiagSocket as OracleSocket
from pyroute2 import netns

from gespann.probes.tcp.lifecycle import CLOSE_WAIT, ESTABLISHED, FIN_WAIT2
from gespann.probes.tcp.sock_diag import DiagSocket

pytestmark = pytest.mark.root

ALL_STATES = 0xFFF


def _pair(family: int, address: str):
    listener = socket.socket(family)
    listener.bind((address, 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname()[:2])
    server, _ = listener.accept()
    return listener, client, server


def _oracle(family: int) -> dict:
    """cookie -> (state, ports, bytes, last data) as pyroute2 decodes the same dump."""
    with OracleSocket() as diag:
        diag.bind()
        found = {}
        for msg in diag.get_sock_stats(family=family, states=ALL_STATES, extensions=1 << 1):
            info = msg.get_attr("INET_DIAG_INFO")
            if info is not None:
                found[msg["idiag_cookie"]] = (msg["idiag_state"], msg["idiag_sport"], msg["idiag_dport"],
                                              info["tcpi_bytes_acked"], info["tcpi_bytes_received"])
        return found


@pytest.mark.parametrize("family, address", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_a_dump_decodes_as_the_oracle_does_and_counts_what_was_sent(family, address):
    namespace = Namespace()
    try:
        with namespace.enter():
            listener, client, server = _pair(family, address)
        client.sendall(b"x" * 1000)
        assert len(server.recv(1000, socket.MSG_WAITALL)) == 1000
        server.sendall(b"y" * 300)
        assert len(client.recv(300, socket.MSG_WAITALL)) == 300
        client.shutdown(socket.SHUT_WR)  # the client in FIN_WAIT2, the server in CLOSE_WAIT
        assert server.recv(1) == b""
        time.sleep(0.05)
        with DiagSocket(namespace.path) as diag:
            ours = diag.tcp_sockets(family, ALL_STATES)
        netns.pushns(namespace.name)
        try:
            oracle = _oracle(family)
        finally:
            netns.popns()
        assert {s.cookie: (s.state, s.local_port, s.remote_port, s.bytes_acked, s.bytes_received)
                for s in ours} == oracle
        port = client.getsockname()[1]
        by_port = {s.local_port: s for s in ours}
        client_side, server_side = by_port[port], next(s for s in ours if s.remote_port == port)
        assert (client_side.state, server_side.state) == (FIN_WAIT2, CLOSE_WAIT)
        # tcp_info's sequence-space counts: the client's SYN and FIN, the peer's FIN (see open_sockets).
        assert (client_side.bytes_acked, client_side.bytes_received) == (1000 + 2, 300)
        assert (server_side.bytes_acked, server_side.bytes_received) == (300, 1000 + 1)
        assert all(s.last_data_sent_ms < 5000 and s.last_data_recv_ms < 5000 for s in ours)
        assert {s.family for s in ours} == {family}
        for sock in (client, server, listener):
            sock.close()
    finally:
        namespace.remove()


def test_a_dump_longer_than_one_read_is_whole():
    """400 sockets' replies fill several netlink reads (each at most 32 KiB): none is missed."""
    namespace = Namespace()
    try:
        with namespace.enter():
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(256)
            sockets = []
            for _ in range(200):
                sockets.append(socket.create_connection(listener.getsockname()))
                sockets.append(listener.accept()[0])
        with DiagSocket(namespace.path) as diag:
            ours = diag.tcp_sockets(socket.AF_INET, 1 << ESTABLISHED)
        netns.pushns(namespace.name)
        try:
            oracle = _oracle(socket.AF_INET)
        finally:
            netns.popns()
        assert len(ours) == 400
        assert {s.cookie for s in ours} == {cookie for cookie, seen in oracle.items() if seen[0] == ESTABLISHED}
        for sock in (*sockets, listener):
            sock.close()
    finally:
        namespace.remove()


def test_a_state_filter_is_applied_by_the_kernel():
    namespace = Namespace()
    try:
        with namespace.enter():
            sockets = _pair(socket.AF_INET, "127.0.0.1")
        with DiagSocket(namespace.path) as diag:
            assert {s.state for s in diag.tcp_sockets(socket.AF_INET, 1 << ESTABLISHED)} == {ESTABLISHED}
            assert diag.tcp_sockets(socket.AF_INET, 1 << FIN_WAIT2) == []
        for sock in sockets:
            sock.close()
    finally:
        namespace.remove()


def test_a_namespace_that_cannot_be_entered_is_an_error_naming_it(tmp_path):
    not_a_namespace = tmp_path / "plain-file"
    not_a_namespace.write_text("")
    with pytest.raises(OSError) as raised:
        DiagSocket(str(not_a_namespace))
    assert raised.value.errno == errno.EINVAL
    assert str(not_a_namespace) in str(raised.value)


def _own_namespace() -> int:
    return os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino


def test_the_calling_thread_is_back_in_its_own_namespace():
    before = _own_namespace()
    namespace = Namespace()
    try:
        with DiagSocket(namespace.path) as diag:
            assert _own_namespace() == before
            assert diag.tcp_sockets(socket.AF_INET, ALL_STATES) == []  # nothing open in there
    finally:
        namespace.remove()

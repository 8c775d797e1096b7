"""sock_diag sees the watched namespace's connections only, from whichever thread asks.

Exporters collect on their own threads (Prometheus scrapes on its server's); a
dump made there must still be a dump of the watched namespace.
"""
import threading

import pytest
from namespaces import Namespace
from tcp_traffic import TcpTraffic

from gespann.probes.tcp.open_sockets import OpenSockets

pytestmark = pytest.mark.root


def test_a_dump_from_another_thread_stays_in_the_namespace():
    host = TcpTraffic()
    client, server = host.connect()  # open in the host namespace: must not be seen
    namespace = Namespace()
    try:
        with namespace.enter():
            inside = TcpTraffic()
            pair = inside.connect()
        sockets = OpenSockets(namespace.path)
        seen = []
        worker = threading.Thread(target=lambda: seen.append(sockets.connections()))
        worker.start()
        worker.join()
        ports = {(c.local_port, c.remote_port) for c in seen[0]}
        assert ports == {(pair[0].getsockname()[1], inside.port), (inside.port, pair[0].getsockname()[1])}
        assert ports == {(c.local_port, c.remote_port) for c in sockets.connections()}
        for sock in (*pair, inside.listener):
            sock.close()
    finally:
        namespace.remove()
        for sock in (client, server, host.listener):
            sock.close()

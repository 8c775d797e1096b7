"""Per-peer figures behind a Service-like DNAT: the service dialed and the backend that answered, exact.

The topology, all namespaces of the test's own:

  pod 10.1.0.2 ── node 10.1.0.1 ─┬─ 10.2.1.2 backend b1 (nginx on :80)
                                  ├─ 10.2.2.2 backend b2 (nginx on :80)
                                  └─ 10.2.3.2 backend b3 (nginx on :8080 only: port 80 refuses)

The node holds nftables rules of the shape kube-proxy's nftables mode writes:
the Service 10.96.0.10:80 goes to one of the three backends, round-robin, each
through its own endpoint chain (with a counter) in PREROUTING (pods) and
OUTPUT (the host network); the Service 10.96.0.11:80 has no endpoints and is
rejected with a TCP reset; the Service 10.96.0.12:80 goes to the two backends
that serve, for ApacheBench's many connections (ab stops at the first refused
connect). curl runs in the pod and in the node itself, ab in the pod.

The oracles: each backend's own Tcp PassiveOpens and OutRsts, nginx's access
log (request and response bytes), the nft counters, and ab's own count of
requests completed and bytes transferred.
"""

import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import emulation
import mib
import pytest
from loopback import wait_for
from namespaces import Namespace, link

from gespann.bpf.channel import RecordChannel
from gespann.collector.collector import KernelCollector
from gespann.probes import AttachSettings, ProbeSet
from gespann.probes.tcp import lifecycle as tcp_lifecycle
from gespann.probes.tcp import nat as tcp_nat
from gespann.probes.tcp import resets as tcp_resets

pytestmark = pytest.mark.root
SERVICE, EMPTY_SERVICE, SERVING_SERVICE = "10.96.0.10", "10.96.0.11", "10.96.0.12"
BACKENDS = ("10.2.1.2", "10.2.2.2", "10.2.3.2")
CLOSED = BACKENDS[2]
PROBES = (tcp_lifecycle.PROBE, *tcp_resets.PROBES, tcp_nat.PROBE)
CURLS = 9  # three rounds of the round-robin
EMPTY_CURLS = 2

RULES = """
table ip gespann_svc {
  chain prerouting { type nat hook prerouting priority dstnat; policy accept; jump services; }
  chain output { type nat hook output priority -100; policy accept; jump services; }
  chain services {
    ip daddr %(service)s tcp dport 80 numgen inc mod 3 \\
      vmap { 0 : jump endpoint0, 1 : jump endpoint1, 2 : jump endpoint2 }
    ip daddr %(serving)s tcp dport 80 numgen inc mod 2 vmap { 0 : jump serving0, 1 : jump serving1 }
  }
  chain endpoint0 { meta l4proto tcp counter dnat to %(b0)s:80; }
  chain endpoint1 { meta l4proto tcp counter dnat to %(b1)s:80; }
  chain endpoint2 { meta l4proto tcp counter dnat to %(b2)s:80; }
  chain serving0 { meta l4proto tcp counter dnat to %(b0)s:80; }
  chain serving1 { meta l4proto tcp counter dnat to %(b1)s:80; }
  chain forward { type filter hook forward priority filter; policy accept; jump reject_empty; }
  chain local_out { type filter hook output priority filter; policy accept; jump reject_empty; }
  chain reject_empty { ip daddr %(empty)s tcp dport 80 counter reject with tcp reset; }
}
"""

NGINX = """
worker_processes 1;
daemon off;
pid %(dir)s/nginx.pid;
error_log %(dir)s/error.log;
events { worker_connections 64; }
http {
  log_format bytes '$request_length $bytes_sent';
  access_log %(dir)s/access.log bytes;
  client_body_temp_path %(dir)s/body;
  proxy_temp_path %(dir)s/proxy;
  fastcgi_temp_path %(dir)s/fastcgi;
  uwsgi_temp_path %(dir)s/uwsgi;
  scgi_temp_path %(dir)s/scgi;
  server { listen %(port)d; location / { return 200 "backend %(name)s\\n"; } }
}
"""


def run(namespace: Namespace, *argv: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", namespace.name, *argv], capture_output=True, text=True,
                          timeout=30, check=check, **kwargs)


class Topology:
    def __init__(self, tmp: Path):
        self.namespaces: list[Namespace] = []
        self.nginx: list[subprocess.Popen] = []
        self.tmp = tmp
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _namespace(self) -> Namespace:
        namespace = Namespace()
        self.namespaces.append(namespace)
        return namespace

    def _build(self) -> None:
        self.pod, self.node = self._namespace(), self._namespace()
        link(self.pod, self.node, ["10.1.0.2/24"], ["10.1.0.1/24"])
        run(self.pod, "ip", "route", "add", "default", "via", "10.1.0.1")
        run(self.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # The Service range routed somewhere, as a node's default route does: a packet nothing translates
        # then reaches the filter hooks (and the REJECT) instead of failing its route lookup.
        run(self.node, "ip", "link", "add", "services", "type", "veth", "peer", "name", "services-peer")
        for device in ("services", "services-peer"):
            run(self.node, "ip", "link", "set", device, "up")
        run(self.node, "ip", "route", "add", "10.96.0.0/16", "dev", "services")
        self.backends = []
        for index, address in enumerate(BACKENDS):
            backend = self._namespace()
            link(self.node, backend, [f"10.2.{index + 1}.1/24"], [f"{address}/24"])
            run(backend, "ip", "route", "add", "default", "via", f"10.2.{index + 1}.1")
            self.backends.append(backend)
            self._start_nginx(backend, f"b{index}", 8080 if address == CLOSED else 80)
        rules = self.tmp / "rules.nft"
        rules.write_text(RULES % {"service": SERVICE, "empty": EMPTY_SERVICE, "serving": SERVING_SERVICE,
                                  **{f"b{i}": address for i, address in enumerate(BACKENDS)}})
        run(self.node, "nft", "-f", str(rules))

    def _start_nginx(self, backend: Namespace, name: str, port: int) -> None:
        directory = self.tmp / name
        directory.mkdir()
        (directory / "nginx.conf").write_text(NGINX % {"dir": directory, "port": port, "name": name})
        process = subprocess.Popen(["ip", "netns", "exec", backend.name, "nginx", "-p", str(directory), "-c",
                                    str(directory / "nginx.conf")], stderr=subprocess.DEVNULL)
        self.nginx.append(process)

        def listening() -> bool:
            return any(f":{port:04X} " in line and line.split()[3] == "0A"
                       for line in run(backend, "cat", "/proc/net/tcp").stdout.splitlines()[1:])
        wait_for(listening, timeout=60)  # minutes under emulation are seconds here
        if not listening():
            log = directory / "error.log"
            raise RuntimeError(f"nginx in {backend.name} does not listen on {port}: exit {process.poll()}, "
                               f"{log.read_text()[-500:] if log.exists() else 'no error log'}")

    def access_log(self, index: int) -> tuple[int, int, int]:
        """(requests, request bytes, response bytes) nginx logged on backend `index`."""
        path = self.tmp / f"b{index}" / "access.log"
        lines = [tuple(map(int, line.split())) for line in path.read_text().splitlines()] if path.exists() else []
        return len(lines), sum(request for request, _ in lines), sum(sent for _, sent in lines)

    def counters(self) -> dict[str, int]:
        """nft counters: packets of each endpoint chain, and of the reject rule."""
        listed = run(self.node, "nft", "list", "table", "ip", "gespann_svc").stdout
        found, chain = {}, None
        for line in listed.splitlines():
            words = line.split()
            if words[:1] == ["chain"]:
                chain = words[1]
            if "packets" in words:
                found[chain] = int(words[words.index("packets") + 1])
        return found

    def close(self) -> None:
        for process in self.nginx:
            process.send_signal(signal.SIGTERM)  # nginx's master stops its worker and exits
        for process in self.nginx:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for namespace in reversed(self.namespaces):
            namespace.remove()


@pytest.fixture
def topology(tmp_path):
    built = Topology(tmp_path)
    yield built
    built.close()


def by(snapshot, name: str, **wanted) -> int:
    return sum(n for key, n in snapshot[name].series.items()
               if all(dict(key).get(label) == value for label, value in wanted.items()))


def curls(namespace: Namespace, address: str, n: int) -> list[int]:
    """curl's exit codes of `n` runs to address:80 (0 served, 7 refused or reset at connect)."""
    return [run(namespace, "curl", "-s", "-o", "/dev/null", "--max-time", "5", f"http://{address}/",
                check=False).returncode for _ in range(n)]


@pytest.mark.parametrize("client", ["pod", "host_network"])
def test_service_and_backend_are_both_labelled_exact_against_each_backend(topology, client):
    namespace = topology.pod if client == "pod" else topology.node
    settings = AttachSettings(netns=namespace.inode, peers=True)
    before_mib = [mib_of(backend) for backend in topology.backends]
    before_nft = topology.counters()
    events = []
    with RecordChannel.for_reader("auto", "gsp_records") as channel, \
            ProbeSet.attach(PROBES, settings, records=channel) as probes, \
            KernelCollector(probes, namespace.path, records=channel) as collector:
        codes = curls(namespace, SERVICE, CURLS)
        empty_codes = curls(namespace, EMPTY_SERVICE, EMPTY_CURLS)
        wait_for(lambda: by(collector.snapshot(), "peer_connections_closed_total") +
                 by(collector.snapshot(), "peer_connections_failed_total") +
                 by(collector.snapshot(), "peer_connections_reset_total") >= CURLS + EMPTY_CURLS, timeout=5)
        snapshot = collector.snapshot()
        deadline = time.monotonic() + 5
        while len(events) < CURLS + EMPTY_CURLS and time.monotonic() < deadline:
            events.extend(collector.events(0.1))
    # Records name the service (the remote address) and the backend.
    named = Counter((e.remote_address, e.remote_port, e.backend_address, e.backend_port, e.outcome) for e in events)
    assert named == Counter({**{(SERVICE, 80, address, 80, "close"): CURLS // 3 for address in BACKENDS[:2]},
                             (SERVICE, 80, CLOSED, 80, "failed"): CURLS // 3,
                             (EMPTY_SERVICE, 80, "", 0, "failed"): EMPTY_CURLS})
    after_nft = topology.counters()
    service = dict(role="client", peer_address=SERVICE, peer_port="80")
    served = 0
    for index, (backend, address) in enumerate(zip(topology.backends, BACKENDS)):
        kernel = {name: mib_of(backend)[name] - before_mib[index][name] for name in ("PassiveOpens", "OutRsts")}
        dnat = after_nft[f"endpoint{index}"] - before_nft.get(f"endpoint{index}", 0)
        labels = dict(service, backend_address=address, backend_port="80")
        opened = by(snapshot, "peer_connections_opened_total", **labels)
        refused = by(snapshot, "peer_connections_failed_total", **labels, reason="refused")
        assert opened == kernel["PassiveOpens"]
        assert opened + refused == dnat == CURLS // 3  # round-robin
        if address == CLOSED:
            assert (opened, refused) == (0, kernel["OutRsts"]) and refused == CURLS // 3
        else:
            requests, request_bytes, response_bytes = topology.access_log(index)
            assert requests == opened == CURLS // 3
            assert by(snapshot, "peer_bytes_total", **labels, direction="sent") == request_bytes
            assert by(snapshot, "peer_bytes_total", **labels, direction="received") == response_bytes
            assert by(snapshot, "peer_connections_closed_total", **labels) == opened
            served += opened
    assert codes.count(0) == served and codes.count(7) == CURLS - served
    # The Service without endpoints: never translated, its resets counted on the Service itself.
    rejected = after_nft["reject_empty"] - before_nft.get("reject_empty", 0)
    assert by(snapshot, "peer_connections_failed_total", role="client", peer_address=EMPTY_SERVICE, peer_port="80",
              backend_address="", reason="refused") == rejected == EMPTY_CURLS
    assert empty_codes == [7] * EMPTY_CURLS
    # Every client series behind the Service names a backend.
    assert by(snapshot, "peer_connections_opened_total", **service, backend_address="") == 0


def test_apache_bench_through_the_service_is_exact_per_backend(topology):
    """ab's many concurrent connections to a Service of two backends: per backend, opened equals its
    PassiveOpens and the nft counter, bytes equal nginx's log, and all of it adds up to what ab counted.
    (ab may open a connection or two more than it sends requests on: connections are the kernel's to count,
    requests nginx's.)"""
    requests = emulation.scaled(400, 100)
    settings = AttachSettings(netns=topology.pod.inode, peers=True)
    before_mib = [mib_of(backend) for backend in topology.backends[:2]]
    before_nft, before_log = topology.counters(), [topology.access_log(index) for index in range(2)]
    service = dict(role="client", peer_address=SERVING_SERVICE, peer_port="80")

    def ended(snapshot) -> bool:
        opened = by(snapshot, "peer_connections_opened_total", **service)
        return opened >= requests and by(snapshot, "peer_connections_closed_total", **service) == opened

    with ProbeSet.attach(PROBES, settings) as probes, KernelCollector(probes, topology.pod.path) as collector:
        report = run(topology.pod, "ab", "-q", "-n", str(requests), "-c", "8", "-s", "10",
                     f"http://{SERVING_SERVICE}/").stdout
        wait_for(lambda: ended(collector.snapshot()), timeout=10)
        snapshot = collector.snapshot()
    completed = int(report.split("Complete requests:")[1].split()[0])
    failed = int(report.split("Failed requests:")[1].split()[0])
    transferred = int(report.split("Total transferred:")[1].split()[0])
    assert (completed, failed) == (requests, 0), report
    after_nft, logged_requests, received = topology.counters(), 0, 0
    for index, backend in enumerate(topology.backends[:2]):
        labels = dict(service, backend_address=BACKENDS[index], backend_port="80")
        opened = by(snapshot, "peer_connections_opened_total", **labels)
        logged = [now - then for now, then in zip(topology.access_log(index), before_log[index])]
        assert opened == mib_of(backend)["PassiveOpens"] - before_mib[index]["PassiveOpens"] > 0
        assert opened == after_nft[f"serving{index}"] - before_nft.get(f"serving{index}", 0)
        assert by(snapshot, "peer_connections_closed_total", **labels) == opened
        assert by(snapshot, "peer_bytes_total", **labels, direction="sent") == logged[1]
        assert by(snapshot, "peer_bytes_total", **labels, direction="received") == logged[2]
        logged_requests += logged[0]
        received += logged[2]
    assert logged_requests == requests
    assert by(snapshot, "peer_bytes_total", **service, direction="received") == received == transferred
    assert by(snapshot, "peer_connections_failed_total", **service) == 0


def mib_of(namespace: Namespace) -> dict[str, int]:
    with namespace.enter():
        return mib.counters()["Tcp"]


def test_check_names_the_fallback_where_conntrack_types_cannot_be_read():
    from gespann.probes.toolkit.probe import CheckContext

    def line(**settings) -> str:
        return tcp_nat.describe(CheckContext(AttachSettings(**settings), PROBES, ()))

    assert line() == "not resolved: labels.peers is off"
    assert line(peers=True).startswith("service and backend: conntrack entries read")
    vendored = line(peers=True, btf_source="vendored")
    assert vendored.startswith("by the address dialed only (backends not resolved): btf.source is vendored")

    class Config:
        label_peers, btf_source = True, "vendored"
    assert not tcp_nat.PROBE.wanted(Config())  # left out, so that the rest attaches


def test_the_backend_outlives_the_conntrack_entry(topology):
    """A connection through the Service whose conntrack entry the node flushes before it ends: its end still
    counts under its backend (gespann keeps the translation; conntrack has forgotten it)."""
    import socket as sockets

    settings = AttachSettings(netns=topology.pod.inode, peers=True)
    with ProbeSet.attach(PROBES, settings) as probes, KernelCollector(probes, topology.pod.path) as collector:
        with topology.pod.enter():
            client = sockets.create_connection((SERVICE, 80), timeout=5)
        assert client.getpeername() == (SERVICE, 80)  # the socket knows only the Service
        client.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reply = b""
        while chunk := client.recv(4096):  # to nginx's FIN
            reply += chunk
        flush = ("from pyroute2 import Conntrack\n"
                 "with Conntrack() as ct:\n    print(ct.count()); ct.flush(); print(ct.count())")
        entries = run(topology.node, sys.executable, "-c", flush).stdout.split()
        assert int(entries[0]) >= 1 and int(entries[1]) == 0
        client.setsockopt(sockets.SOL_SOCKET, sockets.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # ends it here at once (a reset sent): no packet of its needs the flushed entry
        backend = BACKENDS[int(reply.rsplit(b"backend b", 1)[1][:1])]  # nginx says which one it is
        ended = dict(role="client", peer_address=SERVICE)
        wait_for(lambda: by(collector.snapshot(), "peer_connections_closed_total", **ended) +
                 by(collector.snapshot(), "peer_connections_reset_total", **ended) == 1, timeout=5)
        snapshot = collector.snapshot()
    labels = dict(ended, peer_port="80", backend_address=backend, backend_port="80")
    assert by(snapshot, "peer_connections_opened_total", **labels) == 1
    assert by(snapshot, "peer_connections_reset_total", **labels, direction="sent") == 1
    assert by(snapshot, "peer_bytes_total", **labels, direction="received") == len(reply)

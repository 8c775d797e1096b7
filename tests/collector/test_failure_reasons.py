"""A failed connect keeps its true reason while the application reads SO_ERROR as fast as it can.

The kernel publishes a failed open's errno in sk->sk_err a moment before the
socket enters CLOSE; SO_ERROR clears it. Here a second thread of the client
spins on getsockopt(SO_ERROR) over every pending connect, so it takes many of
those errnos in that moment, and gespann's failed-by-reason counts must still
equal the errnos the application itself saw: refused on loopback, host
unreachable from a neighbour that never answers, host and network unreachable
from a router, and SYN timeouts.
"""
import collections
import errno
import socket
import subprocess
import sys
import threading
import time

import mib
import pytest
from emulation import scaled
from kernel_features import require
from kernel_skips import allowed
from loopback import wait_for
from namespaces import Namespace, link
from probe_flavours import FLAVOURS
from tcp_traffic import CLOSED_PORT, DROPPED_PORT, TCP_CLOSE, drop_syns_to

from gespann.collector.collector import KernelCollector
from gespann.probes import AttachSettings, ProbeSet
from gespann.probes.tcp import icmp_errors as tcp_icmp_errors
from gespann.probes.tcp import lifecycle as tcp_lifecycle
from gespann.probes.tcp import resets as tcp_resets
from gespann.probes.tcp import unseen_ends as tcp_unseen_ends

pytestmark = pytest.mark.root

REASONS = {errno.ECONNREFUSED: "refused", errno.ETIMEDOUT: "timeout", errno.EHOSTUNREACH: "host_unreachable",
           errno.ENETUNREACH: "network_unreachable"}
#: Connects of each kind (at least 1,000 failures in all; a tenth in the matrix's emulated VMs).
REFUSED, SILENT_NEIGHBOUR, ROUTER_HOST, ROUTER_NET, TIMEOUTS = (scaled(700, 70), scaled(300, 30), scaled(25, 5),
                                                              scaled(25, 5), scaled(200, 20))
#: The client's link to a neighbour that never answers (its far end has no address), and to a router.
SILENT_NET, SILENT_HOSTS = "10.71.0", range(2, 250)
ROUTER_LINK, HOST_UNREACHABLE, NET_UNREACHABLE = "10.72.0", "10.73.1", "10.73.2"
#: Failed opens the program may not see at all, beyond the runs the kernel counts as missed (kernel_skips.py).
UNEXPLAINED = allowed(REFUSED + SILENT_NEIGHBOUR + ROUTER_HOST + ROUTER_NET + TIMEOUTS)


def _sysctl(name: str, value: int) -> None:
    with open(f"/proc/sys/{name.replace('.', '/')}", "w") as f:
        f.write(str(value))


@pytest.fixture
def network(namespace):
    """The client's namespace, with a silent neighbour and a router that rejects two networks."""
    silent, router = Namespace(), Namespace()
    try:
        link(namespace, silent, [f"{SILENT_NET}.1/24"], [])
        link(namespace, router, [f"{ROUTER_LINK}.1/24"], [f"{ROUTER_LINK}.2/24"])
        with namespace.enter():
            device = _device_to(f"{SILENT_NET}.1")
            _sysctl(f"net.ipv4.neigh.{device}.retrans_time_ms", 10)
            _sysctl(f"net.ipv4.neigh.{device}.mcast_solicit", 1)
            _sysctl("net.ipv4.icmp_ratemask", 0)  # ARP failures come back as local ICMP: none rate-limited
            subprocess.run(["ip", "route", "add", "10.73.0.0/16", "via", f"{ROUTER_LINK}.2"], check=True)
        with router.enter():
            _sysctl("net.ipv4.ip_forward", 1)
            _sysctl("net.ipv4.icmp_ratemask", 0)
            # Routed back towards the client, so the forward hook sees them (no route: ICMPs the kernel limits).
            subprocess.run(["ip", "route", "add", "10.73.0.0/16", "dev", _device_to(f"{ROUTER_LINK}.2")], check=True)
            rules = ("add table ip gespann_test\n"
                     "add chain ip gespann_test forwarded { type filter hook forward priority 0; }\n"
                     f"add rule ip gespann_test forwarded ip daddr {HOST_UNREACHABLE}.0/24 reject with icmp "
                     "type host-unreachable\n"
                     f"add rule ip gespann_test forwarded ip daddr {NET_UNREACHABLE}.0/24 reject with icmp "
                     "type net-unreachable\n")
            subprocess.run(["nft", "-f", "-"], input=rules.encode(), check=True)
        with namespace.enter():
            drop_syns_to(DROPPED_PORT)
        yield namespace
    finally:
        silent.remove()
        router.remove()


def _device_to(address: str) -> str:
    out = subprocess.run(["ip", "-o", "addr", "show", "to", address], check=True, capture_output=True, text=True)
    return out.stdout.split()[1]


class FailingConnects:
    """Non-blocking connects, each watched by a thread that spins on SO_ERROR over all that are pending.

    Records the errno each connect ended with, as the application saw it: the last one SO_ERROR gave
    before its socket reached CLOSE (a soft error seen earlier may be replaced by the final one).
    """

    def __init__(self, concurrency: int):
        self.concurrency = concurrency
        self.pending: dict[socket.socket, int] = {}
        self.seen: collections.Counter = collections.Counter()
        self.connected = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.spinner = threading.Thread(target=self._spin, daemon=True)
        self.spinner.start()

    def _spin(self) -> None:
        while not self.done.is_set():
            with self.lock:
                sockets = list(self.pending)
            for s in sockets:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self.pending[s] = err
                elif self.pending[s] == 0:
                    continue
                if s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != TCP_CLOSE:
                    continue
                last = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or self.pending[s]
                with self.lock:
                    del self.pending[s]
                self.seen[last] += 1
                s.close()

    def connect(self, address: tuple, options=(), count: int = 1, limit: float = 30.0) -> None:
        """`count` connects to `address`, at most `concurrency` pending at once."""
        deadline = time.monotonic() + limit
        for _ in range(count):
            while len(self.pending) >= self.concurrency and time.monotonic() < deadline:
                time.sleep(0.0005)
            s = socket.socket(socket.AF_INET)
            for level, option, value in options:
                s.setsockopt(level, option, value)
            s.setblocking(False)
            with self.lock:
                self.pending[s] = 0
            if s.connect_ex(address) not in (errno.EINPROGRESS, 0):
                raise AssertionError(f"connect to {address} failed at once: the failure would not be an open")

    def finish(self, limit: float = 30.0) -> collections.Counter:
        deadline = time.monotonic() + limit
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        self.done.set()
        self.spinner.join()
        assert not self.pending, f"{len(self.pending)} connects neither failed nor connected"
        return self.seen


def _failures(network) -> collections.Counter:
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # the spinner holds the GIL through each getsockopt: hand it over often
    try:
        return _fail_each_kind(network)
    finally:
        sys.setswitchinterval(switching)


def _fail_each_kind(network) -> collections.Counter:
    with network.enter():
        connects = FailingConnects(concurrency=1)
        started = time.monotonic()
        connects.connect(("127.0.0.1", CLOSED_PORT), count=REFUSED)
        for i in range(SILENT_NEIGHBOUR):
            connects.connect((f"{SILENT_NET}.{SILENT_HOSTS[i % len(SILENT_HOSTS)]}", 80))
        connects.concurrency = 16  # a router's answer takes a while to come back
        connects.connect((f"{HOST_UNREACHABLE}.9", 80), count=ROUTER_HOST)
        connects.connect((f"{NET_UNREACHABLE}.9", 80), count=ROUTER_NET)
        connects.concurrency = TIMEOUTS  # they all wait for the same first retransmission timer
        quick_timeout = [(socket.IPPROTO_TCP, socket.TCP_SYNCNT, 1), (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1)]
        connects.connect(("127.0.0.1", DROPPED_PORT), options=quick_timeout, count=TIMEOUTS)
        seen = connects.finish()
        kernel = mib.counters()["Tcp"]  # the namespace's own count of failed opens
        assert kernel["AttemptFails"] == kernel["ActiveOpens"] == sum(seen.values())
        print(f"{sum(seen.values())} failures in {time.monotonic() - started:.1f} s: {dict(seen)}")
    return seen


def _by_label(snapshot, name: str) -> collections.Counter:
    """The metric's non-zero series, by the value of its one label."""
    return collections.Counter({key[0][1]: n for key, n in snapshot[name].series.items() if n})


def _failed_or_unseen(snapshot) -> int:
    """Failed opens counted by any reason, and opens whose outcome no run saw (tcp_unseen_ends)."""
    return sum(_by_label(snapshot, "connections_failed_total").values()) \
        + snapshot["connection_opens_unseen_total"].total()


@pytest.mark.parametrize("mode, perf_event_link, needed", FLAVOURS)
def test_failure_reasons_are_exact_while_the_application_reads_so_error(network, mode, perf_event_link, needed):
    require(*(feature() for feature in needed))
    # tcp_icmp_errors attaches by the first flavour this kernel has: icmp:icmp_send came in 6.11.
    settings = AttachSettings(mode=mode, perf_event_link=perf_event_link, netns=network.inode,
                              probe_modes={tcp_icmp_errors.PROBE.name: "auto"})
    probe_set = (tcp_lifecycle.PROBE, *tcp_resets.PROBES, tcp_icmp_errors.PROBE, tcp_unseen_ends.PROBE)
    with ProbeSet.attach(probe_set, settings) as probes, \
            KernelCollector(probes, network.path) as collector:
        assert probes["tcp_lifecycle"].flavour.mode == mode
        seen = _failures(network)
        assert sum(seen.values()) == REFUSED + SILENT_NEIGHBOUR + ROUTER_HOST + ROUTER_NET + TIMEOUTS
        assert seen[errno.ECONNREFUSED] == REFUSED and seen[errno.ETIMEDOUT] >= TIMEOUTS
        expected = collections.Counter({REASONS.get(number, str(number)): n for number, n in seen.items()})
        wait_for(lambda: _failed_or_unseen(collector.snapshot()) >= sum(expected.values()), timeout=3)
        snapshot = collector.snapshot()
        counted = _by_label(snapshot, "connections_failed_total")
        missed = _by_label(snapshot, "probe_runs_missed_total")["tcp_lifecycle"]
        # Every failure counted has its true reason: none under another's reason, and none under "aborted" but
        # for an open whose ICMP error tcp_icmp_errors' program did not see, a run the kernel skipped as
        # below (seen in the full suite under load: 1 in 1,250, host_unreachable; an open issue).
        wrong = counted - expected
        aborted = wrong.pop("aborted", 0)
        assert not wrong and aborted <= UNEXPLAINED, \
            f"gespann counted {dict(counted)}, the application saw {dict(expected)}"
        # And every failure is counted, or said: an open whose CLOSE no run of the program saw is counted
        # unseen when the application frees the socket (tcp_unseen_ends), by no reason. The kernel runs no
        # program for events it handles in softirq on top of some tasks, and counts no miss (kernel_skips.py):
        # a timer that ends a batch of SYN timeouts there loses the whole batch's CLOSEs.
        uncounted = sum((expected - counted).values())  # Counter.total() is 3.10+
        unseen = snapshot["connection_opens_unseen_total"].total()
        untracked = snapshot["connection_ends_untracked_total"].total()
        print(f"uncounted {uncounted}, said unseen {unseen}, tcp_lifecycle runs missed {missed}, "
              f"ends untracked {untracked}, aborted {aborted}; counted {dict(counted)}, seen {dict(expected)}")
        assert unseen <= uncounted, "an open counted both as failed and as unseen"
        assert uncounted <= unseen + missed + UNEXPLAINED, \
            f"gespann counted {dict(counted)} ({unseen} said unseen, {missed} runs missed), " \
            f"the application saw {dict(expected)}"

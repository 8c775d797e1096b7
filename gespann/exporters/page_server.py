"""One page over HTTP or HTTPS, at a cost bounded whatever clients do: one event loop, one render thread.

The metrics port is the one part of gespann that strangers can reach, so what
a client can make the server spend is fixed here, not left to the clients:

- **One thread for every connection's I/O**, an event loop over non-blocking
  sockets (`selectors`: epoll). A thread per connection, as before, cost
  about 22 KiB of resident memory each, held as long as a client liked: 2,000
  idle connections were 2,000 threads and 44 MiB. A connection here is a
  socket and a small state object.
- **At most `max_connections` open.** A new client past it takes the place of
  the connection that has waited longest without sending a complete request
  (an idle or slow client: evicted, counted); when every open connection has
  a request being answered, the new one is refused at once (503 over plain
  HTTP, closed over TLS; counted). A scraper, which sends its request at once,
  is therefore served while thousands of idle or slow clients come and go.
- **A deadline on the whole exchange**, not on each read: the request
  (and TLS handshake) must be complete within REQUEST_DEADLINE_SECONDS of the
  connection, the answer written within ANSWER_DEADLINE_SECONDS; a client
  sending one byte at a time is dropped at its deadline all the same.
- **The page is rendered by one thread of its own**, never by the loop: a
  slow snapshot delays no handshake or write. Requests that arrive while a
  page renders are answered by the next render, which starts as soon as it
  ends, so fifty simultaneous scrapes cost two renders, not fifty, and each
  gets figures taken after its request arrived. Password checks (bcrypt,
  deliberately slow) run on one more thread, only when basic auth is configured.
- **No busy loop when descriptors run out.** accept() failing with EMFILE or
  ENFILE first evicts the longest-waiting incomplete connection, as a new
  client past the cap does; with none to evict, accepting pauses, from 50 ms
  doubling to 1 s, while the clients wait in the listen backlog (1024).
  Each failure is counted by its errno.

An answer is HTTP/1.0: one request per connection, closed after the answer.
A scrape is one GET (or HEAD) of one path; anything else gets the status that
says why (404 names the page's path, 405 the methods). The page is
gzip-compressed for a client that accepts it, as Prometheus does. Refusals
of a client (wrong password, no client certificate, a failed handshake) are
logged once per client address when they start, then once a minute with
their count, and counted in gespann's own metrics (`ServerCounts`).

Written on `selectors` and `socket` rather than http.server: the latter
imports http.client, and with it ssl and email, which a sidecar serving
plain HTTP should not carry in its resident memory. ssl is imported only
with TLS (tls.py), bcrypt only with basic auth (basic_auth.py).
"""

from __future__ import annotations

import collections
import errno
import logging
import queue
import selectors
import socket
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Protocol

if TYPE_CHECKING:
    import ssl

    from .basic_auth import BasicAuth

log = logging.getLogger(__name__)

#: A client must have sent its whole request (TLS handshake included) within this long of connecting.
REQUEST_DEADLINE_SECONDS = 10.0
#: ... and have read the whole answer within this long of connecting (Prometheus' longest scrape_timeout is
#: its scrape_interval; a page is written within milliseconds to any client that reads it).
ANSWER_DEADLINE_SECONDS = 60.0
#: The default cap on open connections: 50 simultaneous scrapes and room for idle clients besides.
DEFAULT_MAX_CONNECTIONS = 128
#: Connections the kernel completes and queues while gespann has not accepted them yet.
LISTEN_BACKLOG = 1024
#: Longest request line, and longest request head (request line and headers), and most header lines.
MAX_LINE_BYTES = 8192
MAX_HEAD_BYTES = 16384
MAX_HEADERS = 100
#: accept() pauses after EMFILE/ENFILE with nothing to evict: first this long, doubling up to the longest.
ACCEPT_PAUSE_SECONDS, LONGEST_ACCEPT_PAUSE_SECONDS = 0.05, 1.0
#: Connections accepted per wakeup at most, so that a flood of connections leaves room for the rest.
ACCEPTS_PER_WAKEUP = 64
#: How often the loop looks for connections past their deadline (and at most how long close() waits).
SWEEP_SECONDS = 0.1
#: After the first refusal of a client is logged, further ones are summed and logged at most this often.
REFUSAL_LOG_SECONDS = 60.0
#: Client addresses whose refusals are remembered for the log (the counts in the metrics are kept regardless).
MAX_LOGGED_CLIENTS = 1024
#: The errnos of accept() that mean "out of descriptors or buffers": back off, do not spin.
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
#: Refusal kinds, as `auth_failures` counts them.
NO_CREDENTIALS, WRONG_CREDENTIALS = "no_credentials", "wrong_credentials"
CLIENT_CERTIFICATE, TLS_HANDSHAKE = "client_certificate", "tls_handshake"
AUTH_FAILURE_KINDS = (NO_CREDENTIALS, WRONG_CREDENTIALS, CLIENT_CERTIFICATE, TLS_HANDSHAKE)
#: OpenSSL's reasons for a handshake refused for the client's certificate (missing, or not from the CA).
_CERTIFICATE_REASONS = ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_VERIFY_FAILED", "NO_CERTIFICATE_RETURNED",
                        "CERTIFICATE_REQUIRED")
_TEXT = "text/plain; charset=utf-8"


class Rendering(Protocol):
    """One render of the page, for every client that asked for it: `answer(accept)` is the content type and
    body for an Accept header (called from the render thread only)."""

    def answer(self, accept: str) -> tuple[str, bytes]:
        ...


@dataclass
class ServerCounts:
    """What the server refused, dropped and answered since start; read by the page's own render."""

    open_connections: int = 0
    #: Answered requests by HTTP status code (a number's text).
    requests: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    evicted: int = 0
    #: Connections past a deadline, by what was missing: "request" or "answer".
    timeouts: dict[str, int] = field(default_factory=lambda: {"request": 0, "answer": 0})
    auth_failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(AUTH_FAILURE_KINDS, 0))
    #: accept() failures by errno name.
    accept_errors: dict[str, int] = field(default_factory=lambda: {"EMFILE": 0})


class PageServer:
    """Serves a page at exactly `path` on `address`:`port` (0: any free port) from threads of its own.

    `render()` takes a snapshot and returns a Rendering; `tls`, when given, is the server's SSLContext (TLS
    only is then spoken); `auth`, when given, checks each request's basic-auth credentials. `close()` stops
    serving and frees the port. Raises OSError from the constructor when the address cannot be bound.
    """

    def __init__(self, address: str, port: int, path: str, render: Callable[[], Rendering], *,
                 tls: Optional[ssl.SSLContext] = None, auth: Optional[BasicAuth] = None,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS):
        family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            # a restarted gespann binds its port at once, whatever TIME_WAIT remains
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((address, port))
            self._listener.listen(LISTEN_BACKLOG)
            self._listener.setblocking(False)
        except BaseException:
            self._listener.close()
            raise
        self.port: int = self._listener.getsockname()[1]
        self.counts = ServerCounts()
        self._path, self._render, self._tls, self._auth = path, render, tls, auth
        self._max_connections = max_connections
        # What a non-blocking TLS socket raises for "wait until readable / writable"; never raised without TLS.
        self._want_read: type[BaseException] = _Never
        self._want_write: type[BaseException] = _Never
        if tls is not None:
            import ssl

            self._want_read, self._want_write = ssl.SSLWantReadError, ssl.SSLWantWriteError
        self._selector = selectors.DefaultSelector()
        self._wake_reader, self._wake_writer = socket.socketpair()
        for end in (self._wake_reader, self._wake_writer):
            end.setblocking(False)
        self._connections: set[_Connection] = set()
        #: The open connections without a complete request yet, the longest waiting first: whom to evict.
        self._incomplete: collections.OrderedDict[_Connection, None] = collections.OrderedDict()
        self._waiting_for_render: list[_Connection] = []
        self._rendering = False
        self._render_jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._auth_jobs: queue.SimpleQueue = queue.SimpleQueue()
        #: What the worker threads hand back to the loop: (what, connection, result).
        self._finished: collections.deque = collections.deque()
        self._accept_paused_until = 0.0
        self._accept_pause = ACCEPT_PAUSE_SECONDS
        self._refusals = _RefusalLog()
        self._stopping = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ, self._accept)
        self._selector.register(self._wake_reader, selectors.EVENT_READ, self._take_finished)
        targets = [("gespann-page-server", self._loop), ("gespann-page-render", self._render_worker)]
        if self._auth is not None:
            targets.append(("gespann-page-auth", self._auth_worker))
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        self._stopping = True
        self._render_jobs.put(None)
        self._auth_jobs.put(None)
        self._wake()
        for thread in self._threads:
            thread.join()
        self._threads = []
        for connection in list(self._connections):
            _close_quietly(connection.sock)
        self._connections.clear()
        self._selector.close()
        for sock in (self._listener, self._wake_reader, self._wake_writer):
            sock.close()

    # The loop thread: every socket operation happens here.

    def _loop(self) -> None:
        next_sweep = time.monotonic() + SWEEP_SECONDS
        while not self._stopping:
            for key, _events in self._selector.select(SWEEP_SECONDS):
                try:
                    if isinstance(key.data, _Connection):
                        self._advance(key.data)
                    else:
                        key.data()
                except Exception:  # a fault of gespann's own: that connection is lost, the server serves on
                    log.exception("metrics page: serving a connection failed")
                    if isinstance(key.data, _Connection):
                        self._drop(key.data)
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + SWEEP_SECONDS
                self._sweep(now)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, peer = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as err:
                if self._out_of_descriptors(err):
                    continue
                return
            self._accept_pause = ACCEPT_PAUSE_SECONDS
            self._admit(sock, peer[0])

    def _out_of_descriptors(self, err: OSError) -> bool:
        """Counts a failed accept(); True when evicting a connection made room to try again at once."""
        name = errno.errorcode.get(err.errno, str(err.errno))
        self.counts.accept_errors[name] = self.counts.accept_errors.get(name, 0) + 1
        if err.errno not in OUT_OF_RESOURCES:
            log.debug("metrics page: accept failed: %s", err)
            return False
        if self._incomplete:
            self._evict_oldest()
            return True
        self._selector.unregister(self._listener)
        self._accept_paused_until = time.monotonic() + self._accept_pause
        log.debug("metrics page: accept failed (%s): accepting again in %.2fs", name, self._accept_pause)
        self._accept_pause = min(self._accept_pause * 2, LONGEST_ACCEPT_PAUSE_SECONDS)
        return False

    def _admit(self, sock: socket.socket, peer: str) -> None:
        if len(self._connections) >= self._max_connections:
            if not self._incomplete:
                self._refuse(sock)
                return
            self._evict_oldest()
        sock.setblocking(False)
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except OSError as err:
                log.debug("metrics page: TLS for %s failed: %s", peer, err)
                _close_quietly(sock)
                return
        connection = _Connection(sock, peer, time.monotonic(), handshaking=self._tls is not None)
        self._connections.add(connection)
        self._incomplete[connection] = None
        self.counts.open_connections = len(self._connections)
        self._advance(connection)

    def _refuse(self, sock: socket.socket) -> None:
        """Every open connection has a request being answered: this one is turned away at once."""
        self.counts.refused += 1
        if self._tls is None:
            try:
                sock.setblocking(False)
                sock.recv(MAX_HEAD_BYTES)  # a request left unread would make close() a reset, losing the 503
            except OSError:
                pass
            try:
                sock.send(_response("503 Service Unavailable", b"too many connections; try again\n", _TEXT,
                                    ("Retry-After: 1",)))
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        _close_quietly(sock)

    def _evict_oldest(self) -> None:
        self.counts.evicted += 1
        self._drop(next(iter(self._incomplete)))

    def _advance(self, connection: _Connection) -> None:
        """Take a connection as far as it goes without blocking: its handshake, its request, its answer."""
        try:
            if connection.handshaking:
                connection.sock.do_handshake()
                connection.handshaking = False
            if connection.answer is not None:
                self._write(connection)
            elif connection in self._incomplete:
                self._read(connection)
        except self._want_read:
            self._listen(connection, selectors.EVENT_READ)
        except self._want_write:
            self._listen(connection, selectors.EVENT_WRITE)
        except BlockingIOError:
            self._listen(connection, selectors.EVENT_READ if connection.answer is None else selectors.EVENT_WRITE)
        except OSError as err:  # an ssl.SSLError too
            if connection.handshaking:
                self._handshake_failed(connection, err)
            else:
                log.debug("metrics page: connection from %s failed: %s", connection.peer, err)
            self._drop(connection)

    def _read(self, connection: _Connection) -> None:
        while True:
            chunk = connection.sock.recv(4096)
            if not chunk:  # closed before its request was complete
                self._drop(connection)
                return
            connection.received += chunk
            request = _parse_head(connection.received)
            if request is not None:
                del self._incomplete[connection]
                connection.received = b""
                connection.request = request
                self._handle(connection, request)
                return

    def _handle(self, connection: _Connection, request: _Request) -> None:
        if request.error is not None:
            self._answer(connection, request.error, b"bad request\n")
        elif request.method not in ("GET", "HEAD"):
            self._answer(connection, "405 Method Not Allowed", b"only GET and HEAD\n", ("Allow: GET, HEAD",))
        elif request.target.split("?", 1)[0] != self._path:
            self._answer(connection, "404 Not Found", f"gespann serves metrics at {self._path}\n".encode(),
                         head_only=request.method == "HEAD")
        elif self._auth is None:
            self._wait_for_render(connection)
        else:
            authorization = request.headers.get("authorization", "")
            verdict = self._auth.known(authorization)
            if verdict is self._auth.UNKNOWN:  # a bcrypt check, on the auth thread
                self._listen(connection, 0)
                self._auth_jobs.put((connection, authorization))
            else:
                self._authorized(connection, verdict)

    def _authorized(self, connection: _Connection, refusal: Optional[str]) -> None:
        """`refusal`: None for the right credentials, else its kind (NO_CREDENTIALS or WRONG_CREDENTIALS)."""
        if refusal is None:
            self._wait_for_render(connection)
            return
        self.counts.auth_failures[refusal] += 1
        if refusal == WRONG_CREDENTIALS:
            self._refusals.note(connection.peer, refusal, "a wrong user name or password (basic auth)")
        self._answer(connection, "401 Unauthorized", b"Unauthorized\n",
                     ('WWW-Authenticate: Basic realm="gespann", charset="UTF-8"',))

    def _wait_for_render(self, connection: _Connection) -> None:
        """The next render answers it: one starts now when none runs, else as soon as the running one ends."""
        self._listen(connection, 0)
        self._waiting_for_render.append(connection)
        if not self._rendering:
            self._start_render()

    def _start_render(self) -> None:
        self._rendering = True
        batch, self._waiting_for_render = self._waiting_for_render, []
        self._render_jobs.put(batch)

    def _take_finished(self) -> None:
        try:
            while self._wake_reader.recv(4096):
                pass
        except BlockingIOError:
            pass
        while self._finished:
            what, connection, result = self._finished.popleft()
            if what == "rendered":
                self._rendering = False
            elif connection not in self._connections:
                continue  # dropped at its deadline meanwhile
            elif what == "answer":
                self._count(result[0])
                connection.answer = memoryview(result[1])
                self._advance(connection)
            else:
                self._authorized(connection, result)
        if not self._rendering and self._waiting_for_render:
            self._start_render()

    def _answer(self, connection: _Connection, status: str, body: bytes, extra: tuple[str, ...] = (),
                head_only: bool = False) -> None:
        self._count(status)
        connection.answer = memoryview(_response(status, body, _TEXT, extra, head_only))
        self._advance(connection)

    def _count(self, status: str) -> None:
        code = status.split(" ", 1)[0]
        self.counts.requests[code] = self.counts.requests.get(code, 0) + 1

    def _write(self, connection: _Connection) -> None:
        while connection.answer:
            sent = connection.sock.send(connection.answer[:1 << 18])
            connection.answer = connection.answer[sent:]
        try:
            connection.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._drop(connection)

    def _listen(self, connection: _Connection, events: int) -> None:
        """Watch the connection's socket for `events`; 0 while it waits for a worker thread."""
        if events == connection.events:
            return
        if not events:
            self._selector.unregister(connection.sock)
        elif connection.events:
            self._selector.modify(connection.sock, events, connection)
        else:
            self._selector.register(connection.sock, events, connection)
        connection.events = events

    def _handshake_failed(self, connection: _Connection, err: OSError) -> None:
        reason = getattr(err, "reason", None) or ""
        if reason in _CERTIFICATE_REASONS:
            kind, what = CLIENT_CERTIFICATE, f"no certificate of the client CA ({reason})"
        elif reason:
            kind, what = TLS_HANDSHAKE, f"a failed TLS handshake ({reason})"
        else:  # the client left: a closed or reset connection is no refusal
            log.debug("metrics page: %s left during the TLS handshake: %s", connection.peer, err)
            return
        self.counts.auth_failures[kind] += 1
        self._refusals.note(connection.peer, kind, what)

    def _sweep(self, now: float) -> None:
        """Drop connections past their deadline; accept again after a pause; log refusals' counts."""
        for connection in list(self._connections):
            waited = now - connection.connected
            if connection in self._incomplete:
                if waited > REQUEST_DEADLINE_SECONDS:
                    self.counts.timeouts["request"] += 1
                    self._drop(connection)
            elif waited > ANSWER_DEADLINE_SECONDS:
                self.counts.timeouts["answer"] += 1
                self._drop(connection)
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._selector.register(self._listener, selectors.EVENT_READ, self._accept)
        self._refusals.summarize(now)

    def _drop(self, connection: _Connection) -> None:
        if connection not in self._connections:
            return
        self._connections.discard(connection)
        self._incomplete.pop(connection, None)
        self.counts.open_connections = len(self._connections)
        self._listen(connection, 0)
        _close_quietly(connection.sock)

    def _wake(self) -> None:
        try:
            self._wake_writer.send(b"\0")
        except OSError:
            pass  # a wakeup is pending already (the buffer is full), or the server is closing

    # The worker threads: they hand results to the loop, never touch a socket.

    def _render_worker(self) -> None:
        while True:
            batch = self._render_jobs.get()
            if batch is None:
                return
            for connection, answer in self._render_batch(batch):
                self._finished.append(("answer", connection, answer))
            self._finished.append(("rendered", None, None))
            self._wake()

    def _render_batch(self, batch: list[_Connection]) -> list[tuple[_Connection, tuple[str, bytes]]]:
        """One render for every connection of the batch, each answered in the format and encoding it asked for."""
        try:
            rendering = self._render()
        except Exception:
            log.exception("metrics page: rendering failed")
            failed = _response("500 Internal Server Error", b"rendering the page failed; see gespann's log\n", _TEXT)
            return [(connection, ("500", failed)) for connection in batch]
        encoded: dict[tuple[str, bool], bytes] = {}
        answers = []
        for connection in batch:
            headers = connection.request.headers
            content_type, body = rendering.answer(headers.get("accept", ""))
            gzipped = _accepts_gzip(headers.get("accept-encoding", ""))
            if gzipped:
                if (content_type, True) not in encoded:
                    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: the gzip container
                    encoded[content_type, True] = compressor.compress(body) + compressor.flush()
                body = encoded[content_type, True]
            extra = ("Content-Encoding: gzip",) if gzipped else ()
            head_only = connection.request.method == "HEAD"
            answers.append((connection, ("200", _response("200 OK", body, content_type, extra, head_only))))
        return answers

    def _auth_worker(self) -> None:
        while True:
            job = self._auth_jobs.get()
            if job is None:
                return
            connection, authorization = job
            self._finished.append(("auth", connection, self._auth.check(authorization)))
            self._wake()


class _Never(Exception):
    """Raised by nothing: what a plain socket 'wants' where a TLS one would want a read or a write."""


class _Connection:
    """One client's connection and how far its exchange has come."""

    __slots__ = ("answer", "connected", "events", "handshaking", "peer", "received", "request", "sock")

    def __init__(self, sock: socket.socket, peer: str, connected: float, handshaking: bool):
        self.sock, self.peer, self.connected, self.handshaking = sock, peer, connected, handshaking
        self.received = b""
        self.request: Optional[_Request] = None
        self.answer: Optional[memoryview] = None
        self.events = 0  # the selector events it is registered for; 0: not registered


@dataclass(frozen=True)
class _Request:
    method: str = ""
    target: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    #: The status that answers a request that could not be read (400, 431), else None.
    error: Optional[str] = None


def _parse_head(received: bytes) -> Optional[_Request]:
    """The request when its head is complete (or can no longer be), else None: more is to come."""
    end = received.find(b"\r\n\r\n")
    if end < 0:
        end = received.find(b"\n\n")
    first_line_end = received.find(b"\n")
    if (first_line_end < 0 and len(received) > MAX_LINE_BYTES) or first_line_end > MAX_LINE_BYTES:
        return _Request(error="400 Bad Request")
    if end < 0:
        return _Request(error="431 Request Header Fields Too Large") if len(received) > MAX_HEAD_BYTES else None
    request_line, *header_lines = received[:end].decode("latin-1").splitlines()
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return _Request(error="400 Bad Request")
    if len(header_lines) > MAX_HEADERS or any(len(line) > MAX_LINE_BYTES for line in header_lines):
        return _Request(error="431 Request Header Fields Too Large")
    headers = {}
    for line in header_lines:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return _Request(parts[0], parts[1], headers)


def _response(status: str, body: bytes, content_type: str, extra: tuple[str, ...] = (),
              head_only: bool = False) -> bytes:
    head = [f"HTTP/1.0 {status}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
            "Connection: close", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


class _RefusalLog:
    """Refused clients in the log: a client's first refusal of each kind at once, then their count once a minute."""

    def __init__(self) -> None:
        #: (address, kind) -> [refusals not logged yet, when last logged, what the last one was]
        self._clients: dict[tuple[str, str], list] = {}
        self._full = False

    def note(self, peer: str, kind: str, what: str) -> None:
        client = self._clients.get((peer, kind))
        if client is not None:
            client[0] += 1
            client[2] = what
            return
        if len(self._clients) >= MAX_LOGGED_CLIENTS:
            if not self._full:
                self._full = True
                log.warning("metrics page: refused more than %d clients; refusals of others are only counted, in "
                            "gespann_metrics_page_auth_failures_total", MAX_LOGGED_CLIENTS)
            return
        self._clients[peer, kind] = [0, time.monotonic(), what]
        log.warning("metrics page: refused %s: %s; more refusals of it for this are logged once a minute, with "
                    "their count", peer, what)

    def summarize(self, now: float) -> None:
        for (peer, _kind), client in self._clients.items():
            if client[0] and now - client[1] >= REFUSAL_LOG_SECONDS:
                log.warning("metrics page: refused %s %d more times in %.0fs, the last for %s", peer, client[0],
                            now - client[1], client[2])
                client[0], client[1] = 0, now


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding value allows gzip: named (or `*`) and not with q=0."""
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            quality = params.strip().lower()
            return not quality.startswith("q=") or _number(quality[2:]) != 0
    return False


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0

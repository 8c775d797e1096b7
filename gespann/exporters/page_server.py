"""One page over HTTP, or HTTPS: what a scraper needs and no more.

A scrape is one GET (or HEAD) of one path; anything else is answered with
the status that says why (404 names the page's path, 405 the methods). Each
connection gets a thread of its own, so a slow scraper holds up no other, and
a timeout, so one that sends nothing does not hold its thread for long. The
answer is HTTP/1.0: one request per connection, closed after the answer. The
page is gzip-compressed when the client accepts it, as Prometheus does.

Written on socketserver rather than http.server: the latter imports
http.client, and with it ssl and email, which a sidecar that serves plain
HTTP should not carry in its resident memory. With TLS the listening socket
is wrapped by the caller; each handshake then runs in its connection's own
thread, at the first read.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import sys
import threading
import zlib
from typing import Callable, Optional

log = logging.getLogger(__name__)

#: How often the idle server checks for close(): bounds how long close() takes.
SHUTDOWN_POLL_SECONDS = 0.1
#: A connection that sends no complete request within this long is dropped.
REQUEST_TIMEOUT_SECONDS = 30
#: Longest request line or header line, and most header lines, read before answering 400 / 431.
MAX_LINE_BYTES = 8192
MAX_HEADERS = 100


class PageServer:
    """Serves `render()`'s bytes at exactly `path` on `address`:`port` (0: any free port) from a thread.

    `wrap_socket`, when given, wraps the listening socket (TLS); `close()` stops serving and frees the port.
    Raises OSError from the constructor when the address cannot be bound.
    """

    def __init__(self, address: str, port: int, path: str, render: Callable[[], bytes], content_type: str,
                 wrap_socket: Optional[Callable[[socket.socket], socket.socket]] = None):
        family = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        server_class = _ThreadedServerV6 if family == socket.AF_INET6 else _ThreadedServer
        self._server = server_class((address, port), _PageHandler)
        self._server.page = _Page(path, render, content_type)
        if wrap_socket is not None:
            try:
                self._server.socket = wrap_socket(self._server.socket)
            except BaseException:
                self._server.server_close()
                raise
        self.port: int = self._server.server_address[1]
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(SHUTDOWN_POLL_SECONDS,),
                                        name="gespann-page-server", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()


class _Page:
    def __init__(self, path: str, render: Callable[[], bytes], content_type: str):
        self.path, self.render, self.content_type = path, render, content_type


class _ThreadedServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True  # a restarted gespann binds its port at once, whatever TIME_WAIT remains
    daemon_threads = True
    block_on_close = False  # close() does not wait for a scraper that keeps its connection open
    page: _Page

    def handle_error(self, request, client_address) -> None:
        """A client refused in the TLS handshake, gone mid-request or too slow is one debug line, not a
        traceback (SSLError, ConnectionError and TimeoutError are all OSErrors)."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            log.debug("metrics page: request from %s failed: %s", client_address[0], error)
        else:
            super().handle_error(request, client_address)


class _ThreadedServerV6(_ThreadedServer):
    address_family = socket.AF_INET6


class _BadRequest(Exception):
    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


class _PageHandler(socketserver.StreamRequestHandler):
    timeout = REQUEST_TIMEOUT_SECONDS
    server: _ThreadedServer

    def handle(self) -> None:
        try:
            method, target, headers = self._read_request()
        except _BadRequest as bad:
            self._respond(bad.status, b"bad request\n", "text/plain; charset=utf-8", head_only=False)
            return
        if not method:
            return  # connected and closed without a request
        page = self.server.page
        if method not in ("GET", "HEAD"):
            self._respond("405 Method Not Allowed", b"only GET and HEAD\n", "text/plain; charset=utf-8",
                          head_only=False, extra=("Allow: GET, HEAD",))
        elif target.split("?", 1)[0] != page.path:
            self._respond("404 Not Found", f"gespann serves metrics at {page.path}\n".encode(),
                          "text/plain; charset=utf-8", head_only=method == "HEAD")
        else:
            self._serve(page, headers, head_only=method == "HEAD")

    def _serve(self, page: _Page, headers: dict[str, str], head_only: bool) -> None:
        try:
            body = page.render()
        except Exception:
            log.exception("metrics page: rendering failed")
            self._respond("500 Internal Server Error", b"rendering the page failed; see gespann's log\n",
                          "text/plain; charset=utf-8", head_only)
            return
        extra: tuple[str, ...] = ()
        if _accepts_gzip(headers.get("accept-encoding", "")):
            compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: the gzip container
            body = compressor.compress(body) + compressor.flush()
            extra = ("Content-Encoding: gzip",)
        self._respond("200 OK", body, page.content_type, head_only, extra)

    def _read_request(self) -> tuple[str, str, dict[str, str]]:
        """(method, target, headers with lower-case names); ("", "", {}) when the client sent nothing."""
        line = self.rfile.readline(MAX_LINE_BYTES + 1)
        if not line:
            return "", "", {}
        parts = line.decode("latin-1").split()
        if len(line) > MAX_LINE_BYTES or len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise _BadRequest("400 Bad Request")
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            header = self.rfile.readline(MAX_LINE_BYTES + 1)
            if header in (b"\r\n", b"\n", b""):
                return parts[0], parts[1], headers
            if len(header) > MAX_LINE_BYTES:
                raise _BadRequest("431 Request Header Fields Too Large")
            name, colon, value = header.decode("latin-1").partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        raise _BadRequest("431 Request Header Fields Too Large")

    def _respond(self, status: str, body: bytes, content_type: str, head_only: bool,
                 extra: tuple[str, ...] = ()) -> None:
        head = [f"HTTP/1.0 {status}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
                "Connection: close", *extra]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body))


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

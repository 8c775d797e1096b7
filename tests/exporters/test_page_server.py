"""The metrics page's HTTP server, spoken to over real sockets: what a scraper, a browser or a stray client gets,
and what it costs the server when clients come too many, too slow or too early."""

from __future__ import annotations

import gzip
import socket
import threading
import time

import pytest

from gespann.exporters.page_server import PageServer

PAGE = b"# TYPE up gauge\nup 1.0\n" * 200
TEXT = "text/plain; version=0.0.4; charset=utf-8"


class Fixed:
    """A rendering that is always PAGE (or `page`), in the text format."""

    def __init__(self, page: bytes = PAGE):
        self.page = page

    def answer(self, accept: str) -> tuple[str, bytes]:
        return TEXT, self.page


def serve(render, **options) -> PageServer:
    served = PageServer("127.0.0.1", 0, "/metrics", render, **options)
    served.start()
    return served


@pytest.fixture
def server():
    renders = []

    def render() -> Fixed:
        renders.append(threading.current_thread().name)
        return Fixed()

    served = serve(render)
    served.renders = renders
    yield served
    served.close()


def exchange(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """(status line, headers with lower-case names, body) of one request sent as is."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        response = b"".join(iter(lambda: conn.recv(1 << 16), b""))
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return status, headers, body


def test_a_get_serves_the_page_with_its_length_and_type(server):
    status, headers, body = exchange(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == "HTTP/1.0 200 OK"
    assert body == PAGE and int(headers["content-length"]) == len(PAGE)
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "content-encoding" not in headers


def test_a_client_that_accepts_gzip_gets_it(server):
    status, headers, body = exchange(server.port, b"GET /metrics HTTP/1.1\r\nAccept-Encoding: deflate, gzip\r\n\r\n")
    assert status.endswith("200 OK") and headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == PAGE and len(body) < len(PAGE) / 10
    _, refused, body = exchange(server.port, b"GET /metrics HTTP/1.1\r\nAccept-Encoding: gzip;q=0\r\n\r\n")
    assert "content-encoding" not in refused and body == PAGE


def test_head_has_the_headers_and_no_body(server):
    status, headers, body = exchange(server.port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
    assert status.endswith("200 OK") and int(headers["content-length"]) == len(PAGE) and body == b""


def test_a_query_string_still_reaches_the_page(server):
    assert exchange(server.port, b"GET /metrics?name[]=up HTTP/1.0\r\n\r\n")[2] == PAGE


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n", "405 Method Not Allowed"),
    (b"GET /other HTTP/1.0\r\n\r\n", "404 Not Found"),
    (b"nonsense\r\n\r\n", "400 Bad Request"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.0\r\n\r\n", "400 Bad Request"),
    (b"GET /metrics HTTP/1.0\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", "431 Request Header Fields Too Large"),
])
def test_what_is_not_a_scrape_gets_the_status_that_says_why(server, request_bytes, status):
    got, headers, body = exchange(server.port, request_bytes)
    assert got == f"HTTP/1.0 {status}"
    assert int(headers["content-length"]) == len(body) and body
    if status.startswith("405"):
        assert headers["allow"] == "GET, HEAD"
    if status.startswith("404"):
        assert b"/metrics" in body
    assert server.renders == []


def test_a_client_that_sends_nothing_holds_up_no_scrape(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10):
        for _ in range(3):
            assert exchange(server.port, b"GET /metrics HTTP/1.0\r\n\r\n")[2] == PAGE


def test_a_render_that_fails_is_a_500_and_a_logged_traceback(caplog):
    def broken() -> bytes:
        raise KeyError("no such series")

    served = serve(broken)
    try:
        status, _, body = exchange(served.port, b"GET /metrics HTTP/1.0\r\n\r\n")
    finally:
        served.close()
    assert status == "HTTP/1.0 500 Internal Server Error" and b"log" in body
    assert "KeyError: 'no such series'" in caplog.text


def test_close_frees_the_port_even_with_a_client_connected():
    served = serve(Fixed)
    idle = socket.create_connection(("127.0.0.1", served.port), timeout=10)
    try:
        served.close()
        again = PageServer("127.0.0.1", served.port, "/metrics", lambda: Fixed(b"again\n"))
        again.start()
        try:
            assert exchange(again.port, b"GET /metrics HTTP/1.0\r\n\r\n")[2] == b"again\n"
        finally:
            again.close()
    finally:
        idle.close()


# What clients cost the server: deadlines, the cap on connections, and one render for many scrapes.

def test_a_client_sending_a_byte_at_a_time_is_dropped_at_the_request_deadline(monkeypatch):
    """The deadline is on the whole request, not on each read: bytes arriving in time do not extend it."""
    from gespann.exporters import page_server

    monkeypatch.setattr(page_server, "REQUEST_DEADLINE_SECONDS", 1.0)
    served = serve(Fixed)
    try:
        slow = socket.create_connection(("127.0.0.1", served.port), timeout=10)
        started = time.monotonic()
        dropped = None
        for byte in b"GET /metrics HTTP/1.0\r\nX-Slow: " + b"a" * 40:
            try:
                slow.send(bytes([byte]))
            except OSError:
                dropped = time.monotonic() - started
                break
            time.sleep(0.1)
        slow.close()
        assert dropped is not None and 1.0 <= dropped < 2.5, dropped
        assert served.counts.timeouts == {"request": 1, "answer": 0}
    finally:
        served.close()


def test_past_max_connections_a_newcomer_takes_the_place_of_the_longest_idle_one():
    served = serve(Fixed, max_connections=4)
    try:
        idle = [socket.create_connection(("127.0.0.1", served.port), timeout=10) for _ in range(4)]
        time.sleep(0.2)
        assert exchange(served.port, b"GET /metrics HTTP/1.0\r\n\r\n")[2] == PAGE
        assert idle[0].recv(1) == b""  # the oldest was closed to make room
        assert served.counts.evicted == 1 and served.counts.refused == 0
        for client in idle:
            client.close()
    finally:
        served.close()


def test_past_max_connections_with_every_one_being_answered_a_newcomer_is_refused_at_once():
    release = threading.Event()

    def slow_render() -> Fixed:
        release.wait(10)
        return Fixed()

    served = serve(slow_render, max_connections=2)
    try:
        waiting = [socket.create_connection(("127.0.0.1", served.port), timeout=10) for _ in range(2)]
        for client in waiting:
            client.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        time.sleep(0.3)
        status, headers, _ = exchange(served.port, b"GET /metrics HTTP/1.0\r\n\r\n")
        assert status == "HTTP/1.0 503 Service Unavailable" and headers["retry-after"] == "1"
        release.set()
        for client in waiting:
            assert b"".join(iter(lambda: client.recv(1 << 16), b"")).endswith(PAGE)
            client.close()
        assert served.counts.refused == 1
    finally:
        release.set()
        served.close()


def test_fifty_simultaneous_scrapes_share_a_few_renders():
    """A request is answered by the first render that starts after it arrived: 50 at once cost at most a few."""
    renders = []

    def render() -> Fixed:
        renders.append(time.monotonic())
        time.sleep(0.05)
        return Fixed()

    served = serve(render)
    try:
        clients = [socket.create_connection(("127.0.0.1", served.port), timeout=10) for _ in range(50)]
        for client in clients:
            client.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        for client in clients:
            assert b"".join(iter(lambda: client.recv(1 << 16), b"")).endswith(PAGE)
            client.close()
    finally:
        served.close()
    assert 1 <= len(renders) <= 3, len(renders)


def test_the_page_is_rendered_off_the_loop_thread(server):
    exchange(server.port, b"GET /metrics HTTP/1.0\r\n\r\n")
    assert server.renders == ["gespann-page-render"]

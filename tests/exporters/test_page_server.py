"""The metrics page's HTTP server, spoken to over real sockets: what a scraper, a browser or a stray client gets,
and what it costs the server when clients come too many, too slow or too early."""

from __future__ import annotations

import gzip
import socket
import threading

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

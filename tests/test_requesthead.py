"""A request head read by requesthead.py is exactly what the standard library reads from it, and
every head it does not take is left unread for the standard library."""

from __future__ import annotations

import io
from http.server import BaseHTTPRequestHandler

from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from autoglm_exporter.web import requesthead

PROMETHEUS = (
    b"GET /metrics HTTP/1.1\r\n",
    b"Host: 127.0.0.1:9877\r\nUser-Agent: Prometheus/2.53.0\r\n"
    b"Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n"
    b"Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n",
)


class Reference(BaseHTTPRequestHandler):
    """The standard library's reading of a head, without a socket."""

    protocol_version = "HTTP/1.1"  # as our handler speaks

    def __init__(self, request_line: bytes, rest: bytes) -> None:  # no socket: skip handle()
        self.raw_requestline = request_line
        self.rfile = io.BufferedReader(io.BytesIO(rest))
        self.wfile = io.BytesIO()
        self.client_address = ("127.0.0.1", 0)
        self.requestline = ""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def ours(request_line: bytes, rest: bytes) -> tuple[requesthead.Head | None, int]:
    rfile = io.BufferedReader(io.BytesIO(rest))
    return requesthead.read(request_line, rfile), rfile.tell()


def test_the_head_prometheus_sends_is_read_fast_as_the_standard_library_reads_it() -> None:
    head, consumed = ours(*PROMETHEUS)
    assert head is not None and consumed == len(PROMETHEUS[1])
    assert head.headers["accept-encoding"] == "gzip" and head.keep_alive


def test_100_continue_and_a_head_still_arriving_are_left_to_the_standard_library() -> None:
    assert ours(b"POST /-/reload HTTP/1.1\r\n", b"Expect: 100-continue\r\nContent-Length: 0\r\n\r\n") == (
        None,
        0,
    )
    assert ours(PROMETHEUS[0], PROMETHEUS[1][:40]) == (None, 0)


# Plain heads (read fast) and heads with one thing or another wrong (left to the standard library).
TEXT = st.text(alphabet=st.sampled_from(list('aZ09-_:/.;=*, \t\r\n\x00\x7f\xe9"')), max_size=12)
PLAIN_TEXT = st.text(alphabet=st.sampled_from(list('aZ09-_:/.;=*, \t"')), max_size=12)


def request_lines(
    methods: list[str], seps: list[str], paths: st.SearchStrategy[str], versions: list[str], ends: list[str]
):
    return st.builds(
        lambda method, sep, path, version, end: f"{method}{sep}{path}{sep}{version}{end}".encode("latin-1"),
        st.sampled_from(methods),
        st.sampled_from(seps),
        paths,
        st.sampled_from(versions),
        st.sampled_from(ends),
    )


PLAIN_LINE = request_lines(
    ["GET", "HEAD", "POST", "PUT"],
    [" "],
    st.sampled_from(["/metrics", "//x//y", "/?q=1", "*"]),
    ["HTTP/1.1", "HTTP/1.0"],
    ["\r\n"],
)
ODD_LINE = request_lines(
    ["GET", "get", "G\x85T", ""],
    [" ", "  ", "\t"],
    st.sampled_from(["/metrics", "/a b", "/\xa0"]) | TEXT,
    ["HTTP/1.1", "HTTP/2.0", "HTTP/1.10", "http/1.1", ""],
    ["\r\n", "\n", "\r\r\n"],
)
REQUEST_LINE = PLAIN_LINE | ODD_LINE
PLAIN_HEADER = st.builds(
    lambda name, colon, value: f"{name}{colon}{value}\r\n",
    st.sampled_from(
        ["Host", "Connection", "connection", "Content-Length", "Transfer-Encoding", "X-A", "From"]
    ),
    st.sampled_from([":", ": ", ":\t "]),
    st.sampled_from(["close", "keep-alive", "Keep-Alive", "5", " x ", ""]) | PLAIN_TEXT,
)
ODD_HEADER = st.builds(
    lambda name, colon, value, end: f"{name}{colon}{value}{end}",
    st.sampled_from(["Expect", "From ", "Bad Name", "", " Host", "Host\t"]) | TEXT,
    st.sampled_from([":", " :", ""]),
    st.just("100-continue") | TEXT,
    st.sampled_from(["\r\n", "\n", "\r", "\r\n folded\r\n", "\r\n\tfolded\r\n"]),
)
REST = st.builds(
    lambda headers, end, body: ("".join(headers) + end + body).encode("latin-1"),
    st.lists(PLAIN_HEADER, max_size=6) | st.lists(PLAIN_HEADER | ODD_HEADER, max_size=6),
    st.just("\r\n") | st.sampled_from(["\n", ""]),
    st.sampled_from(["", "GET / HTTP/1.1\r\n\r\n", "body"]),
)


@settings(max_examples=2000, deadline=None)
@given(REQUEST_LINE, REST)
@example(*PROMETHEUS)
@example(b"GET //a//b HTTP/1.0\r\n", b"Connection: keep-alive \r\nX: a\tb \r\n\r\n")
@example(b"GET / HTTP/1.1\r\n", b"Connection: close\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.1\r\n\r\n")
@example(b"GET / HTTP/1.1\r\n", b"".join(b"X-%d: y\r\n" % n for n in range(101)) + b"\r\n")
def test_what_is_read_fast_is_what_the_standard_library_reads(request_line: bytes, rest: bytes) -> None:
    head, consumed = ours(request_line, rest)
    event("read fast" if head is not None else "left to the standard library")
    if head is None:
        assert consumed == 0  # left whole for the standard library
        return
    reference = Reference(request_line, rest)
    assert reference.parse_request() is True, reference.wfile.getvalue()
    assert (head.command, head.path, head.version, head.requestline) == (
        reference.command,
        reference.path,
        reference.request_version,
        reference.requestline,
    )
    assert head.keep_alive is not reference.close_connection
    assert head.headers.items() == reference.headers.items()
    assert not reference.headers.defects and not reference.headers.get_payload()
    assert consumed == reference.rfile.tell()

"""Plain request heads, read without the email parser.

BaseHTTPRequestHandler reads every header block with the email package's parser, which costs more
than serving the cached page: about 30 us for wrk's lone `Host:`, 150 us for the five headers
Prometheus sends, all of it holding the GIL that every other scrape waits for. A head of the plain
shape scrapers send, already whole in the read buffer, is read here into the HTTPMessage the
standard library would have built: `METHOD /path HTTP/1.0|1.1`, then `Name: value` lines of
printable ASCII, CRLF everywhere, at most MAX_HEADERS of them, no Expect. Anything else (folded
or bare-LF lines, other bytes, a head still arriving, 100-continue) is left to the standard
library, so what it refuses is refused as before.
"""

from __future__ import annotations

import http.client
import io
import re
from dataclasses import dataclass

_REQUEST_LINE = re.compile(rb"([A-Z]+) ([!-~]+) (HTTP/1\.[01])\r\n")
# A token name, the colon, then a value of printable ASCII, spaces and tabs; the leading ones are
# not part of the value, the trailing ones are (as the email parser reads it).
_HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\t -~]*)\r\n")
MAX_HEADERS = 100  # http.client's limit: more is the standard library's 431


@dataclass(frozen=True)
class Head:
    command: str
    path: str
    version: str  # "HTTP/1.0" or "HTTP/1.1"
    headers: http.client.HTTPMessage
    requestline: str  # as received, without its CRLF (the path not reduced)

    @property
    def keep_alive(self) -> bool:
        """Whether the connection stays open after this request (we speak HTTP/1.1)."""
        connection = self.headers.get("Connection", "").lower()
        if connection == "close":
            return False
        return self.version == "HTTP/1.1" or connection == "keep-alive"


def read(request_line: bytes, rfile: io.BufferedReader) -> Head | None:
    """The head whose request line was `request_line` and whose headers come next in `rfile`,
    consumed from it; None (nothing consumed) when it is not plain or not whole in the buffer."""
    line = _REQUEST_LINE.fullmatch(request_line)
    if line is None:
        return None
    buffered = rfile.peek(1)  # what the buffer holds already (one read when it holds nothing)
    headers = http.client.HTTPMessage()
    position = 0
    while not buffered.startswith(b"\r\n", position):
        header = _HEADER_LINE.match(buffered, position)
        if header is None or len(headers) == MAX_HEADERS:
            return None  # not plain, or not all here yet: the standard library reads it
        headers.set_raw(header[1].decode("ascii"), header[2].decode("ascii"))
        position = header.end()
    if "Expect" in headers:
        return None  # the standard library answers 100-continue
    rfile.read(position + 2)
    command, path, version = (part.decode("ascii") for part in line.groups())
    if path.startswith("//"):
        path = "/" + path.lstrip("/")  # as the standard library reduces it
    return Head(command, path, version, headers, request_line[:-2].decode("ascii"))

"""The HTTP server against hostile clients: real sockets, the real server, raw bytes on the wire.

In-process servers (a real Store, hooks that record what the daemon was asked) where a test must
hold requests in flight or swap the web config; the real exporter process for random input.
"""

from __future__ import annotations

import base64
import re
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoglm_exporter import cli
from autoglm_exporter.core.store import Store
from autoglm_exporter.web import webconfig
from autoglm_exporter.web.connections import DEFAULT_MAX_CONNECTIONS
from autoglm_exporter.web.server import DEFAULT_MAX_REQUESTS, ExporterHTTPServer, ServerHooks, _send_all
from autoglm_exporter.web.webconfig import WebConfig, WebConfigError, build_web_config

from .conftest import ExporterProcess, free_port, require_binary, stop_process, wait_until

TIMEOUT = 10.0  # seconds; bounds every socket operation of these tests


def exchange(port: int, data: bytes, half_close: bool = True) -> bytes:
    """Send raw bytes and read everything the server sends until it closes the connection.

    half_close: say we are done sending (the server then closes after its answers). Without it,
    only a server that closes by itself lets this return."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            raise
        except OSError:  # reset: the server refused a request line and closed before reading the rest
            pass
    return b"".join(chunks)


def statuses(reply: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"^HTTP/1\.[01] (\d{3}) ", reply, re.MULTILINE)]


def request(method: str, path: str, *headers: str, body: bytes = b"", host: str = "127.0.0.1") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *headers]
    if body and not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class Served:
    server: ExporterHTTPServer
    reloads: list[str] = field(default_factory=list)  # one entry per reload the daemon was asked for
    captures: list[str] = field(default_factory=list)  # the services a capture was asked for
    release: threading.Event = field(default_factory=threading.Event)  # reloads wait for it

    @property
    def port(self) -> int:
        return self.server.port

    def status(self, data: bytes) -> int:
        answered = statuses(exchange(self.port, data))
        assert len(answered) == 1, answered
        return answered[0]


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """Start real ExporterHTTPServers on 127.0.0.1; reloads block until `release` is set."""
    started: list[Served] = []

    def start(begin: bool = True, **kwargs: object) -> Served:
        served = Served(server=None)  # type: ignore[arg-type]
        served.release.set()

        def reload() -> tuple[bool, str]:
            served.reloads.append(threading.current_thread().name)
            served.release.wait(TIMEOUT)
            return True, "config reloaded"

        def capture(service: str) -> tuple[int, str]:
            served.captures.append(service)
            return 202, f"capturing {service}"

        hooks = ServerHooks(reload=reload, capture=capture)
        served.server = ExporterHTTPServer(("127.0.0.1", 0), Store(), hooks, **kwargs)  # type: ignore[arg-type]
        started.append(served)
        if begin:
            served.server.start_background()
        return served

    yield start
    for served in started:
        served.release.set()
        if served.server._thread is not None:
            served.server.stop()
        else:
            served.server.server_close()


# --- sending ---------------------------------------------------------------------------------------


def test_a_page_larger_than_the_socket_buffer_arrives_whole() -> None:
    """Head and body go out in one call; what the send buffer did not take is sent after it."""
    head, body = b"HTTP/1.1 200 OK\r\nContent-Length: 4000000\r\n\r\n", bytes(range(256)) * 15625
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        ours.settimeout(TIMEOUT)  # as the server's connections: a deadline on every send
        received: list[bytes] = []

        def read() -> None:
            theirs.settimeout(TIMEOUT)
            while chunk := theirs.recv(65536):
                received.append(chunk)

        reader = threading.Thread(target=read)
        reader.start()
        _send_all(ours, head, body)
        ours.shutdown(socket.SHUT_WR)
        reader.join(TIMEOUT)
    assert b"".join(received) == head + body


# --- the listen backlog ---------------------------------------------------------------------------


def test_a_burst_of_200_connections_waits_in_the_backlog_and_all_are_served(serve) -> None:
    served = serve(begin=False)  # listening, not accepting yet: the kernel's queue holds them all
    sockets = [socket.socket() for _ in range(200)]
    try:
        for sock in sockets:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", served.port))
        pending = set(sockets)

        def all_connected() -> bool:
            _, writable, _ = select.select([], list(pending), [], 0.1)
            for sock in writable:
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                pending.discard(sock)
            return not pending

        wait_until(all_connected, timeout=TIMEOUT)  # a backlog of 5 leaves ~194 stuck in SYN-SENT
        served.server.start_background()
        for sock in sockets:
            sock.setblocking(True)
            sock.settimeout(TIMEOUT)
            sock.sendall(request("GET", "/metrics", "Connection: close"))
        for sock in sockets:
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
            assert statuses(reply) == [200]
    finally:
        for sock in sockets:
            sock.close()


# --- requests in flight -------------------------------------------------------------------------


RELOAD = request("POST", "/-/reload", "Content-Length: 0")


def _hold_reloads(served: Served, count: int) -> list[socket.socket]:
    """`count` reloads in flight (the hook waits for served.release); their sockets, unread."""
    served.release.clear()
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT)
        sock.sendall(RELOAD)
        sock.shutdown(socket.SHUT_WR)
        held.append(sock)
    wait_until(lambda: len(served.reloads) == count, timeout=TIMEOUT)
    return held


def _answers(held: list[socket.socket]) -> list[int]:
    codes = []
    for sock in held:
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        sock.close()
        codes += statuses(reply)
    return codes


def test_requests_beyond_max_requests_get_503_at_once(serve) -> None:
    served = serve(max_requests=2)
    held = _hold_reloads(served, 2)
    reply = exchange(served.port, request("GET", "/metrics"))
    assert statuses(reply) == [503] and b"\r\nRetry-After: 1\r\n" in reply
    served.release.set()
    assert _answers(held) == [200, 200]
    assert served.status(request("GET", "/metrics")) == 200  # the places are given back


def test_max_requests_0_means_no_limit(serve) -> None:
    served = serve(max_requests=0)
    held = _hold_reloads(served, 3)
    assert served.status(request("GET", "/metrics")) == 200
    served.release.set()
    assert _answers(held) == [200] * 3


def test_the_default_limit_admits_200_requests_in_flight(serve) -> None:
    served = serve()
    held = _hold_reloads(served, 200)
    assert served.status(request("GET", "/metrics")) == 200
    served.release.set()
    assert _answers(held) == [200] * 200


def test_the_flag_sets_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    def options(*argv: str) -> int:
        return cli.options_from(cli.build_parser().parse_args(["run", *argv])).max_requests

    assert options() == DEFAULT_MAX_REQUESTS >= 200
    assert options("--web.max-requests=0") == 0
    monkeypatch.setenv("AUTOGLM_EXPORTER_WEB_MAX_REQUESTS", "7")
    assert options() == 7
    assert cli.main(["run", "--web.max-requests=-1"]) == cli.EXIT_BAD_CONFIG


def _read_until_closed(sock: socket.socket) -> bytes:
    reply = b""
    try:
        while chunk := sock.recv(65536):
            reply += chunk
    except ConnectionResetError:
        pass
    return reply


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A connection from `source` (any address of 127.0.0.0/8 is this machine)."""
    sock = socket.socket()
    sock.settimeout(TIMEOUT)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


# --- a flood of wrong passwords -----------------------------------------------------------------


def _basic(user: str, password: str) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_wrong_password_flood_neither_starves_the_right_one_nor_runs_bcrypt_unbounded(
    serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = serve(web_config=WebConfig(basic_auth_users={"prometheus": _hashed("scrape-me")}))
    good = request("GET", "/metrics", _basic("prometheus", "scrape-me"), "Connection: close")
    assert served.status(good) == 200  # Prometheus scraped before the flood began
    checked: list[bytes] = []
    real_checkpw = webconfig.bcrypt.checkpw
    monkeypatch.setattr(
        webconfig.bcrypt, "checkpw", lambda pw, hashed: checked.append(pw) or real_checkpw(pw, hashed)
    )
    answers: list[int] = []
    started = time.monotonic()

    def attacker(n: int) -> None:
        for attempt in range(3):  # 600 distinct wrong passwords: more than any cache of verdicts holds
            wrong = request(
                "GET", "/metrics", _basic("prometheus", f"guess-{n}-{attempt}"), "Connection: close"
            )
            with _connect(served.port, "127.0.0.2") as sock:  # another host than Prometheus
                sock.sendall(wrong)
                answers.extend(statuses(_read_until_closed(sock)))

    flood = [threading.Thread(target=attacker, args=(n,)) for n in range(200)]
    for thread in flood:
        thread.start()
    scrapes = [served.status(good) for _ in range(20)]
    for thread in flood:
        thread.join(TIMEOUT * 6)
    elapsed = time.monotonic() - started
    assert scrapes == [200] * 20
    assert b"scrape-me" not in checked  # the right password was never checked again
    authenticator = served.server.web_config.authenticator()  # type: ignore[union-attr]
    most = authenticator.FAILURE_BURST + elapsed / authenticator.FAILURE_REFILL_SECONDS + 1
    assert len(checked) <= most, (len(checked), elapsed)  # the rest were refused unchecked
    assert sorted(set(answers)) == [401, 429] and len(answers) == 600
    with _connect(served.port, "127.0.0.2") as sock:  # the flooding host is refused as it connects
        assert statuses(_read_until_closed(sock)) == [429]


# --- connections held ----------------------------------------------------------------------------


def test_connections_over_the_cap_are_refused_at_once_and_hold_no_thread(serve) -> None:
    served = serve(max_connections=20)
    threads_before = threading.active_count()
    held = [_connect(served.port, source) for source in ("127.0.0.2", "127.0.0.3") for _ in range(10)]
    over: list[socket.socket] = []
    try:
        wait_until(lambda: served.server.connections.open == 20, timeout=TIMEOUT)
        for n in range(60):
            over.append(_connect(served.port, f"127.0.0.{n % 3 + 1}"))
        for sock in over:
            reply = _read_until_closed(sock)  # sent nothing: the refusal comes unasked, then the close
            assert statuses(reply) == [503] and b"Retry-After: 1" in reply, reply
        assert threading.active_count() <= threads_before + 20 + 2  # a thread per held connection only
    finally:
        for sock in held + over:
            sock.close()
    wait_until(lambda: served.server.connections.open == 0, timeout=TIMEOUT)
    assert served.status(request("GET", "/metrics")) == 200  # the places are given back


def test_one_client_address_holds_half_the_places_at_most(serve) -> None:
    served = serve(max_connections=20)
    flood = [_connect(served.port, "127.0.0.2") for _ in range(10)]
    try:
        wait_until(lambda: served.server.connections.open == 10, timeout=TIMEOUT)
        extra = _connect(served.port, "127.0.0.2")
        assert statuses(_read_until_closed(extra)) == [503]  # its half is full
        extra.close()
        with _connect(served.port) as scraper:  # another address still gets in
            scraper.sendall(request("GET", "/metrics", "Connection: close"))
            assert statuses(_read_until_closed(scraper)) == [200]
    finally:
        for sock in flood:
            sock.close()


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(serve) -> None:
    served = serve(idle_timeout=0.5)
    with socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT) as sock:
        sock.sendall(request("GET", "/-/healthy"))  # keep-alive: the server waits for the next request
        assert statuses(_read_until_closed(sock)) == [200]  # returns only because the server closed it
    wait_until(lambda: served.server.connections.open == 0, timeout=TIMEOUT)


def _dribbled_until_closed(sock: socket.socket, start: bytes, byte: bytes) -> bool:
    """Send `start`, then one byte every 0.2 s: True once the server closed the connection, False
    when it still reads after TIMEOUT seconds (each read succeeds: no per-read timeout fires)."""
    sock.sendall(start)
    started = time.monotonic()
    while time.monotonic() - started < TIMEOUT:
        try:
            sock.sendall(byte)
            readable, _, _ = select.select([sock], [], [], 0.2)
            if readable and sock.recv(65536) == b"":
                return True
        except OSError:  # reset: the server closed while we wrote
            return True
    return False


def test_a_slowloris_is_cut_when_its_request_deadline_passes(serve) -> None:
    served = serve(request_timeout=1.0)
    with socket.create_connection(("127.0.0.1", served.port), timeout=TIMEOUT) as sock:
        head = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        assert _dribbled_until_closed(sock, head, b"X"), "a header line that never ends is still read"
    wait_until(lambda: served.server.connections.open == 0, timeout=TIMEOUT)


def test_the_max_connections_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    def options(*argv: str) -> int:
        return cli.options_from(cli.build_parser().parse_args(["run", *argv])).max_connections

    assert options() == DEFAULT_MAX_CONNECTIONS >= 2 * DEFAULT_MAX_REQUESTS
    assert options("--web.max-connections=64") == 64
    monkeypatch.setenv("AUTOGLM_EXPORTER_WEB_MAX_CONNECTIONS", "7")
    assert options() == 7
    assert cli.main(["run", "--web.max-connections=0"]) == cli.EXIT_BAD_CONFIG


# --- request framing ------------------------------------------------------------------------------

SMUGGLED = request("POST", "/-/reload", "Content-Length: 0")

FRAMING = [
    # (what, header lines, body, the status of the one answer)
    (
        "Content-Length beside Transfer-Encoding",
        ["Content-Length: 5", "Transfer-Encoding: chunked"],
        b"0\r\n\r\n",
        400,
    ),
    (
        "Transfer-Encoding beside Content-Length",
        ["Transfer-Encoding: chunked", "Content-Length: 5"],
        b"0\r\n\r\n",
        400,
    ),
    ("a chunked body we do not read", ["Transfer-Encoding: chunked"], b"0\r\n\r\n", 411),
    ("Transfer-Encoding hidden by a space", ["Transfer-Encoding : chunked"], b"0\r\n\r\n", 400),
    ("two Content-Lengths", ["Content-Length: 5", "Content-Length: 5"], b"debug", 400),
    ("a signed Content-Length", ["Content-Length: +5"], b"debug", 400),
    ("a negative Content-Length", ["Content-Length: -1"], b"debug", 400),
    ("a hex Content-Length", ["Content-Length: 0x5"], b"debug", 400),
    ("a Content-Length of two numbers", ["Content-Length: 5 5"], b"debug", 400),
    ("a non-ASCII digit", ["Content-Length: \xb2"], b"de", 400),
    ("a 20-digit Content-Length", ["Content-Length: 99999999999999999999"], b"debug", 400),
    ("a body too large to read", ["Content-Length: 1000000000"], b"debug", 413),
    ("a folded header line", ["X-Note: a", " Transfer-Encoding: chunked"], b"", 400),
    ("two Host headers", ["Host: 127.0.0.1"], b"", 400),
]


@pytest.mark.parametrize(("what", "headers", "body", "expected"), FRAMING, ids=[case[0] for case in FRAMING])
def test_a_request_of_doubtful_length_is_refused_and_its_connection_closed(
    serve, what: str, headers: list[str], body: bytes, expected: int
) -> None:
    served = serve()
    raw = request("POST", "/-/log-level", *headers) + body + SMUGGLED
    reply = exchange(served.port, raw, half_close=False)  # returns only if the server closes
    assert statuses(reply) == [expected], reply
    assert served.reloads == []  # the request after it was never read


def test_a_well_framed_body_and_the_request_after_it_are_both_answered(serve) -> None:
    served = serve()
    raw = request("POST", "/-/log-level", body=b"loud") + SMUGGLED  # pipelined: two real requests
    assert statuses(exchange(served.port, raw)) == [400, 200]
    assert len(served.reloads) == 1


# --- cross-origin requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "expected"),
    [
        ("POST", "/-/reload", ["Origin: https://evil.example"], 403),
        ("PUT", "/-/reload", ["Origin: http://evil.example:{port}"], 403),
        ("POST", "/api/capture?service=vllm", ["Origin: http://evil.example"], 403),
        ("PUT", "/-/log-level", ["Origin: http://localhost:{port}"], 403),  # another host name
        ("POST", "/-/reload", ["Origin: null"], 403),  # a sandboxed page or a file
        ("POST", "/-/reload", ["Origin: http://127.0.0.1:1"], 403),  # another port
        ("POST", "/-/reload", ["Origin: https://127.0.0.1:{port}"], 403),  # another scheme
        ("POST", "/-/reload", ["Sec-Fetch-Site: cross-site"], 403),
        ("POST", "/-/reload", ["Origin: http://127.0.0.1:{port}"], 200),  # our own page
        ("POST", "/-/reload", ["Origin: HTTP://127.0.0.1:{port}", "Sec-Fetch-Site: same-origin"], 200),
        ("POST", "/api/capture?service=vllm", ["Origin: http://127.0.0.1:{port}"], 202),
        ("POST", "/-/reload", [], 200),  # curl, scripts: no Origin
        ("GET", "/metrics", ["Origin: https://evil.example"], 200),  # reading stays open
        ("GET", "/api/captures", ["Sec-Fetch-Site: cross-site"], 200),
    ],
)
def test_state_changing_requests_from_another_origin_are_refused(
    serve, method: str, path: str, headers: list[str], expected: int
) -> None:
    served = serve()
    host = f"127.0.0.1:{served.port}"
    lines = [h.format(port=served.port) for h in headers] + ["Content-Length: 0"]
    assert served.status(request(method, path, *lines, host=host)) == expected
    assert len(served.reloads) == (1 if path == "/-/reload" and expected == 200 else 0)


def test_the_default_port_is_the_same_origin(serve) -> None:
    served = serve(allowed_hosts="exporter.example")
    raw = request("POST", "/-/reload", "Origin: http://exporter.example", "Content-Length: 0")
    assert served.status(raw.replace(b"Host: 127.0.0.1", b"Host: exporter.example:80")) == 200


# --- DNS rebinding: the Host header -------------------------------------------------------------

STATE_CHANGING = [
    ("POST", "/-/reload"),
    ("PUT", "/-/reload"),
    ("POST", "/api/capture?service=api"),
    ("POST", "/-/log-level?level=debug"),
]


@pytest.mark.parametrize(("method", "path"), STATE_CHANGING)
def test_a_rebound_page_cannot_reach_a_state_changing_endpoint(serve, method: str, path: str) -> None:
    served = serve()
    host = f"evil.example:{served.port}"  # evil.example now resolves to 127.0.0.1: same origin
    raw = request(method, path, f"Origin: http://{host}", "Content-Length: 0", host=host)
    assert served.status(raw) == 403
    assert served.status(request(method, path, "Content-Length: 0", host=host)) == 403  # no Origin either
    assert served.reloads == [] and served.captures == []
    assert served.status(request("GET", "/-/log-level", host=host)) == 200  # nothing changed: reading is open


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "api.localhost", "{hostname}", "10.1.2.3"],
)
def test_our_own_names_reach_the_state_changing_endpoints(serve, host: str) -> None:
    served = serve()
    named = host.format(port=served.port, hostname=socket.gethostname())
    assert served.status(request("POST", "/-/reload", "Content-Length: 0", host=named)) == 200
    assert served.reloads


def test_prometheus_scrapes_by_any_name_unless_hosts_are_given(serve) -> None:
    default = serve()
    for host in ("exporter.monitoring.svc:9877", "node-7.example", "10.0.0.7:9877"):
        assert default.status(request("GET", "/metrics", host=host)) == 200
    given = serve(allowed_hosts="exporter.monitoring.svc, node-7.example.")
    for host, expected in [
        ("exporter.monitoring.svc:9877", 200),
        ("NODE-7.example", 200),
        ("10.0.0.7:9877", 200),  # an address is never a rebinding
        ("localhost", 200),
        ("evil.example", 403),
    ]:
        assert given.status(request("GET", "/metrics", host=host)) == expected, host
    assert given.status(request("POST", "/-/reload", "Content-Length: 0", host="evil.example")) == 403
    assert given.status(request("POST", "/-/reload", "Content-Length: 0", host="node-7.example")) == 200
    anyone = serve(allowed_hosts="*")
    assert anyone.status(request("POST", "/-/reload", "Content-Length: 0", host="evil.example")) == 200


def test_with_basic_auth_the_password_guards_state_changes(serve) -> None:
    served = serve(web_config=WebConfig(basic_auth_users={"ops": _hashed("reload-me")}))
    raw = request("POST", "/-/reload", _basic("ops", "reload-me"), "Content-Length: 0", host="ops.example")
    assert served.status(raw) == 200  # a rebound page has no password; the operator's own name works
    assert served.status(request("POST", "/-/reload", "Content-Length: 0", host="ops.example")) == 401


def test_the_allowed_hosts_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    def options(*argv: str) -> str | None:
        return cli.options_from(cli.build_parser().parse_args(["run", *argv])).allowed_hosts

    assert options() is None
    assert options("--web.allowed-hosts=a.example,b.example") == "a.example,b.example"
    monkeypatch.setenv("AUTOGLM_EXPORTER_WEB_ALLOWED_HOSTS", "*")
    assert options() == "*"
    assert cli.main(["run", "--web.allowed-hosts=http://a.example/"]) == cli.EXIT_BAD_CONFIG


# --- the web config, swapped in --------------------------------------------------------------------


def _hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


def _certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [require_binary("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_a_new_web_config_is_built_completely_then_swapped_in(serve, tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{_hashed('first')}'\n")
    served = serve(web_config=build_web_config(str(web)))
    url = f"http://127.0.0.1:{served.port}/metrics"
    assert httpx.get(url, auth=("prometheus", "first"), timeout=TIMEOUT).status_code == 200

    web.write_text(f"basic_auth_users:\n  prometheus: '{_hashed('second')}'\n")  # a rotated password
    served.server.use_web_config(build_web_config(str(web)))
    assert httpx.get(url, auth=("prometheus", "first"), timeout=TIMEOUT).status_code == 401
    assert httpx.get(url, auth=("prometheus", "second"), timeout=TIMEOUT).status_code == 200

    web.write_text("basic_auth_users:\n  prometheus: plaintext\n")  # a bad file fails before any swap
    with pytest.raises(WebConfigError, match="basic_auth_users.prometheus"):
        build_web_config(str(web))
    assert httpx.get(url, auth=("prometheus", "second"), timeout=TIMEOUT).status_code == 200

    cert, key = _certificate(tmp_path)
    web.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")  # TLS from now on
    served.server.use_web_config(build_web_config(str(web)))
    assert served.server.scheme == "https"
    trust = ssl.create_default_context(cafile=str(cert))
    assert httpx.get(url.replace("http:", "https:"), verify=trust, timeout=TIMEOUT).status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, timeout=TIMEOUT)


def test_a_certificate_that_does_not_load_fails_the_build(tmp_path: Path) -> None:
    cert, _ = _certificate(tmp_path)
    (tmp_path / "other").mkdir()
    _, other_key = _certificate(tmp_path / "other")
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {other_key}\n")
    with pytest.raises(WebConfigError, match="does not match the certificate"):
        build_web_config(str(web))
    assert build_web_config(None) is None


# --- bugs answer 500 and the server keeps serving ------------------------------------------------


def test_a_failing_hook_answers_500_and_the_server_keeps_serving(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("a bug")

    server = ExporterHTTPServer(("127.0.0.1", 0), Store(), ServerHooks(reload=broken))
    server.start_background()
    try:
        assert statuses(exchange(server.port, RELOAD, half_close=False)) == [500]
        assert statuses(exchange(server.port, request("GET", "/metrics"))) == [200]
        assert "request failed" in caplog.text
    finally:
        server.stop()


# --- random input to the real exporter ------------------------------------------------------------

METHODS = st.sampled_from(["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "BREW", "get", ""]) | st.text(
    alphabet=st.characters(codec="latin-1"), max_size=8
)
PATHS = st.sampled_from(
    [
        "/metrics",
        "/-/reload",
        "/-/log-level?level=info",
        "/-/log-level",
        "/api/capture?service=nobody",
        "/api/captures/../../../etc/passwd",
        "/api/diagnosis",
        "/",
        "*",
        "//metrics",
        "/%00",
    ]
) | st.text(alphabet=st.characters(codec="latin-1", exclude_characters="\r\n "), max_size=30)
VERSIONS = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.1x", "HTTP/9.9", ""])
HEADER_NAMES = st.sampled_from(
    ["Content-Length", "Transfer-Encoding", "Host", "Origin", "Authorization", "Accept-Encoding", "Accept",
     "Expect", "Connection", "Sec-Fetch-Site", "X-Any", ""]
) | st.text(alphabet=st.characters(codec="latin-1", exclude_characters="\r\n:"), max_size=12)  # fmt: skip
HEADER_VALUES = st.sampled_from(
    ["0", "4", "5", "-1", "+5", "99999999999999999999", "chunked", "gzip", "identity", "100-continue", "close",
     "keep-alive", "http://evil.example", "null", "Basic !!!", "Basic " + "A" * 5000,
     "application/openmetrics-text; version=1.0.0", "debug"]
) | st.text(alphabet=st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40)  # fmt: skip
SEPARATORS = st.sampled_from([": ", ":", " : ", ":\t", "::"])
LINE_ENDS = st.sampled_from(["\r\n", "\n"])


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    end = draw(LINE_ENDS)
    lines = [f"{draw(METHODS)} {draw(PATHS)} {draw(VERSIONS)}".strip()]
    for _ in range(draw(st.integers(0, 6))):
        lines.append(f"{draw(HEADER_NAMES)}{draw(SEPARATORS)}{draw(HEADER_VALUES)}")
    head = (end.join(lines) + end + end).encode("latin-1")
    return head + draw(st.binary(max_size=64)) + draw(st.sampled_from([b"", request("GET", "/metrics")]))


def _answer_of(exporter: ExporterProcess, data: bytes) -> bytes:
    reply = exchange(exporter.port, data)
    assert reply == b"" or reply.startswith(b"HTTP/1."), reply[:200]
    return reply


def _still_serving(exporter: ExporterProcess) -> None:
    assert exporter.process.poll() is None, exporter.log()
    assert exporter.get("/metrics").status_code == 200
    log = exporter.log()
    assert "Traceback" not in log and "level=error" not in log, log[-3000:]


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterProcess]:
    """One real exporter shared by every random example of this module."""
    workdir = tmp_path_factory.mktemp("fuzzed")
    port = free_port()
    log_path = workdir / "exporter.log"
    command = [sys.executable, "-m", "autoglm_exporter", f"--web.listen-address=127.0.0.1:{port}"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    started = ExporterProcess(process, port, log_path)
    try:
        wait_until(lambda: started.get("/-/ready").status_code == 200, timeout=30)
        yield started
    finally:
        stop_process(process)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=512))
def test_random_bytes_never_crash_the_server(exporter: ExporterProcess, data: bytes) -> None:
    _answer_of(exporter, data)
    _still_serving(exporter)


@settings(max_examples=200, deadline=None)
@given(data=request_heads())
def test_random_request_heads_never_crash_the_server(exporter: ExporterProcess, data: bytes) -> None:
    _answer_of(exporter, data)
    _still_serving(exporter)

"""The one HOST:PORT parser: every address the config, the listen flag, Redis and the probes take."""

from __future__ import annotations

import pytest

from autoglm_exporter.base.hostport import HostPort, HostPortError, parse_host_port, url_host_port
from autoglm_exporter.commands.doctor import local_exporter_url
from autoglm_exporter.web.server import ListenAddressError, parse_listen_address


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:6379", "127.0.0.1", 6379),
        ("localhost:8080", "localhost", 8080),
        ("redis-0.redis.svc.cluster.local:6379", "redis-0.redis.svc.cluster.local", 6379),
        ("my_redis:1", "my_redis", 1),
        ("[::1]:6379", "::1", 6379),
        ("[fe80::1%eth0]:65535", "fe80::1%eth0", 65535),
    ],
)
def test_reads_ipv4_names_and_bracketed_ipv6(text: str, host: str, port: int) -> None:
    assert parse_host_port(text) == HostPort(host, port)


def test_writes_back_what_it_read() -> None:
    for text in ("127.0.0.1:6379", "[::1]:6379", "redis:6379"):
        assert str(parse_host_port(text)) == text


def test_a_default_port_fills_a_missing_one() -> None:
    assert parse_host_port("example.com", default_port=80) == HostPort("example.com", 80)
    assert parse_host_port("[::1]", default_port=80) == HostPort("::1", 80)
    assert parse_host_port("example.com:8443", default_port=80).port == 8443


def test_a_listen_address_may_leave_the_host_out_and_ask_for_any_port() -> None:
    assert parse_host_port(":9877", empty_host=True) == HostPort("", 9877)
    assert parse_host_port("127.0.0.1:0", port_zero=True).port == 0
    with pytest.raises(HostPortError, match="host is missing"):
        parse_host_port(":9877")
    with pytest.raises(HostPortError, match="1-65535, got 0"):
        parse_host_port("127.0.0.1:0")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "host is missing"),
        ("localhost", r":PORT is missing"),
        ("localhost:", "port must be a number"),
        ("localhost:http", "port must be a number"),
        ("localhost:+80", "port must be a number"),
        ("localhost:٣", "port must be a number"),  # a digit to str.isdigit, not to a socket
        ("localhost:65536", "1-65535, got 65536"),
        ("::1:6379", "must be in brackets"),
        ("[::1:6379", "not closed"),
        ("[::1]6379", r"after \] comes :PORT"),
        ("[redis]:6379", "must be an IPv6 address"),
        ("redis://host:6379", "no scheme and no path"),
        ("a host:80", "not a host name"),
        ("host/path:80", "no scheme and no path"),
        ("host:80 ", "port must be a number"),
    ],
)
def test_bad_input_gets_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(HostPortError, match=message):
        parse_host_port(text)


def test_an_error_never_repeats_credentials() -> None:
    with pytest.raises(HostPortError) as caught:
        parse_host_port("admin:s3cret@redis:6379")
    assert "s3cret" not in str(caught.value)
    assert "credentials" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("http://127.0.0.1:8080/inference", HostPort("127.0.0.1", 8080)),
        ("http://svc/inference", HostPort("svc", 80)),
        ("https://svc/v1/chat/completions", HostPort("svc", 443)),
        ("HTTPS://SVC", HostPort("svc", 443)),
        ("http://[::1]:8000/health", HostPort("::1", 8000)),
        ("127.0.0.1:6379", HostPort("127.0.0.1", 6379)),  # a tcp target's HOST:PORT
    ],
)
def test_a_urls_address_fills_the_schemes_port(url: str, where: HostPort) -> None:
    assert url_host_port(url) == where


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://host:99999/", "unreadable"),
        ("http:///path", "names no host"),
        ("ftp://host/file", "scheme has none by default"),
    ],
)
def test_an_unreadable_url_gets_a_clear_error(url: str, message: str) -> None:
    with pytest.raises(HostPortError, match=message):
        url_host_port(url)


@pytest.mark.parametrize(
    ("listen", "where", "doctor_asks"),
    [
        (":9877", ("0.0.0.0", 9877), "http://127.0.0.1:9877"),
        ("[::]:9877", ("::", 9877), "http://[::1]:9877"),
        ("[::1]:9877", ("::1", 9877), "http://[::1]:9877"),
        ("127.0.0.1:0", ("127.0.0.1", 0), "http://127.0.0.1:0"),
    ],
)
def test_the_listen_address_and_where_doctor_finds_the_exporter(
    listen: str, where: tuple[str, int], doctor_asks: str
) -> None:
    assert parse_listen_address(listen) == where
    assert local_exporter_url(listen) == doctor_asks


def test_a_bad_listen_address_says_why() -> None:
    with pytest.raises(ListenAddressError, match=r"'::1:9877'.*must be in brackets"):
        parse_listen_address("::1:9877")

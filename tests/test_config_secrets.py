"""Secrets written into an address or a URL are refused when the config is read, with a message
that names the keys that take them and never shows them; a target's basic auth comes from them."""

from __future__ import annotations

import base64
import http.server
import string
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from autoglm_exporter.collectors.probe import ProbeCollector
from autoglm_exporter.config import ConfigError, load_config, parse_config

from .conftest import check_config

SECRET = "Hunter2-s3cret"
# `/` or `#` in a password end a URL's userinfo early for a URL parser: it reads `u:Hunter2` as a
# host and a port; these are refused (and not shown) all the same.
SECRETS = (SECRET, "Hunter2-s3cret/pw#x")

REDIS_HINT = (
    "must not hold credentials (user:password@ is refused, never shown); "
    "give the password with password_env or password_file (and username)"
)
TARGET_HINT = (
    "must not hold credentials (user:password@ is refused, never shown); "
    "give them with username and password_env or password_file (basic auth), "
    "or bearer_token_env or bearer_token_file"
)
ENGINE_HINT = (
    "must not hold credentials (user:password@ is refused, never shown); "
    "the engine's metrics are read without credentials"
)

# config text -> the one error it must give (every form of credentials in every URL-ish key)
CREDENTIALS = {
    f"redis: [{{name: r, address: 'redis://:{SECRET}@127.0.0.1:6379'}}]": f"redis[0].address: {REDIS_HINT}",
    f"redis: [{{name: r, address: 'default:{SECRET}@127.0.0.1:6379'}}]": f"redis[0].address: {REDIS_HINT}",
    f"redis: [{{name: r, address: ':{SECRET}@localhost:6379'}}]": f"redis[0].address: {REDIS_HINT}",
    f"targets: [{{name: t, url: 'http://admin:{SECRET}@127.0.0.1:1/x'}}]": f"targets[0].url: {TARGET_HINT}",
    f"targets: [{{name: t, module: inference, url: 'https://{SECRET}@example.com/'}}]": (
        f"targets[0].url: {TARGET_HINT}"
    ),
    f"targets: [{{name: t, module: tcp, url: 'user:{SECRET}@127.0.0.1:6379'}}]": (
        "targets[0].url: must not hold credentials (user:password@ is refused, never shown); "
        "a tcp probe only connects"
    ),
    f"targets: [{{name: t, layer: dependencies, url: 'http://u:{SECRET}@10.0.0.1:80/'}}]": (
        f"targets[0].url: {TARGET_HINT}"
    ),
    f"engines: [{{name: e, metrics_url: 'http://u:{SECRET}@127.0.0.1:8000/metrics'}}]": (
        f"engines[0].metrics_url: {ENGINE_HINT}"
    ),
}


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("text", sorted(CREDENTIALS))
def test_credentials_in_an_address_are_refused_without_being_shown(text: str, secret: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text.replace(SECRET, secret))
    assert caught.value.errors == [CREDENTIALS[text]]
    for piece in (secret, "Hunter2", "s3cret"):
        assert piece not in str(caught.value)


def test_a_redis_url_is_not_an_address() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("redis: [{name: r, address: 'redis://127.0.0.1:6379'}]")
    assert caught.value.errors == ["redis[0].address: must be HOST:PORT, got 'redis://127.0.0.1:6379'"]


def test_check_config_and_the_daemon_refuse_them_and_never_print_the_secret(tmp_path: Path) -> None:
    config = tmp_path / "autoglm.yml"
    config.write_text(f"redis: [{{name: r, address: 'user:{SECRET}@127.0.0.1:6379'}}]\n")
    checked = check_config(config)
    assert checked.returncode == 2
    assert f"redis[0].address: {REDIS_HINT}" in checked.stderr
    started = subprocess.run(
        [
            sys.executable,
            "-m",
            "autoglm_exporter",
            f"--config.file={config}",
            "--web.listen-address=127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 2
    for output in (checked.stdout, checked.stderr, started.stdout, started.stderr):
        assert "Hunter2" not in output


def test_basic_auth_needs_a_password_key_and_is_not_given_twice() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "targets: [{name: t, url: 'http://127.0.0.1:1/', username: u},"
            " {name: v, url: 'http://127.0.0.1:1/', password_env: P, bearer_token_env: T}]"
        )
    assert caught.value.errors == [
        "targets[0].username: needs password_env or password_file",
        "targets[1].bearer_token_env: give a bearer token or a password, not both",
    ]


@pytest.fixture
def basic_auth_server() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on 127.0.0.1 that answers 200 only to user `probe`, password SECRET."""
    seen: list[str] = []
    expected = "Basic " + base64.b64encode(f"probe:{SECRET}".encode()).decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(200 if seen[-1] == expected else 401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", seen
    server.shutdown()
    server.server_close()


def test_a_target_logs_in_with_the_password_from_its_file(
    tmp_path: Path, basic_auth_server: tuple[str, list[str]]
) -> None:
    url, seen = basic_auth_server
    password = tmp_path / "password"
    password.write_text(SECRET + "\n")
    config = tmp_path / "autoglm.yml"
    config.write_text(f"targets: [{{name: t, url: '{url}', username: probe, password_file: {password}}}]\n")
    collector = ProbeCollector(load_config(str(config)).targets)
    fact = collector.collect().facts.targets["t"]
    assert fact.outcome.success and fact.outcome.status == 200
    assert seen == ["Basic " + base64.b64encode(f"probe:{SECRET}".encode()).decode()]
    password.write_text("wrong\n")  # read when used: a rotated file counts at once
    assert collector.collect().facts.targets["t"].outcome.status == 401


# Passwords as people write them: letters, digits and the punctuation URLs mangle (`/`, `#`, `@`;
# `?` is left out: after it comes the query, where `@` is data). "Pw9" makes each one a string no
# error message holds by chance.
PASSWORDS = st.text(
    alphabet=string.ascii_letters + string.digits + "!$%&'()*+,;=-._~:/#[]@", min_size=3, max_size=24
).map(lambda tail: "Pw9" + tail)
FORMS = st.sampled_from(
    [
        ("redis", "address", "redis://:{pw}@127.0.0.1:6379"),
        ("redis", "address", "rediss://user:{pw}@cache.internal:6380"),
        ("redis", "address", "user:{pw}@127.0.0.1:6379"),
        ("targets", "url", "http://user:{pw}@127.0.0.1:8080/inference"),
        ("targets", "url", "https://{pw}@example.com/v1/chat/completions"),
        ("engines", "metrics_url", "http://u:{pw}@127.0.0.1:8000/metrics"),
    ]
)


@settings(max_examples=300, deadline=None)
@given(form=FORMS, password=PASSWORDS)
def test_no_password_in_any_address_form_is_accepted_or_shown(
    form: tuple[str, str, str], password: str
) -> None:
    section, key, template = form
    value = template.format(pw=password)
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump({section: [{"name": "x", key: value}]}))
    assert caught.value.errors[0].startswith(f"{section}[0].{key}: must not hold credentials")
    assert password not in str(caught.value)

"""Tests for the exporter-toolkit style web config: real certs (openssl CLI), real
bcrypt hashes, real TLS handshakes on 127.0.0.1."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import bcrypt
import pytest

from autoglm_exporter.web import webconfig
from autoglm_exporter.web.webconfig import (
    BasicAuthenticator,
    TLSConfig,
    WebConfig,
    WebConfigError,
    load_web_config,
)

from .conftest import wait_until

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
TIMEOUT = 5.0  # seconds; every socket operation is bounded by this

ALICE_PW = "alice-secret"
ALICE_HASH = bcrypt.hashpw(ALICE_PW.encode(), bcrypt.gensalt(rounds=4)).decode()
BOB_PW = "b:o:b pässword"  # a colon and non-ASCII in the password are legal
BOB_HASH = bcrypt.hashpw(BOB_PW.encode(), bcrypt.gensalt(rounds=4)).decode()


# --- helpers -----------------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run([OPENSSL, *args], check=True, capture_output=True, timeout=60)


def _self_signed(directory: Path, name: str, cn: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "1", "-subj", f"/CN={cn}", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return cert, key


class Certs:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.cert, self.key = _self_signed(directory, "server", "localhost")
        self.other_cert, self.other_key = _self_signed(directory, "other", "other")
        # A self-signed client cert doubles as its own CA for client_ca_file.
        self.client_cert, self.client_key = _self_signed(directory, "client", "scraper")
        self.stranger_cert, self.stranger_key = _self_signed(directory, "stranger", "stranger")
        self.encrypted_key = directory / "encrypted.key"
        _openssl(
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-aes256", "-pass", "pass:hunter2", "-out", str(self.encrypted_key),
        )  # fmt: skip
        self.junk = directory / "junk.pem"
        self.junk.write_text("this is not PEM\n")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


def write_config(directory: Path, text: str, name: str = "web.yml") -> str:
    path = directory / name
    path.write_text(text)
    return str(path)


def config_errors(path: str) -> list[str]:
    with pytest.raises(WebConfigError) as info:
        load_web_config(path)
    return info.value.errors


def basic(user: str | bytes, password: str = "") -> str:
    raw = user if isinstance(user, bytes) else f"{user}:{password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def serve_once(ctx: ssl.SSLContext) -> tuple[int, threading.Thread, dict[str, Any]]:
    """Accept one TLS connection on 127.0.0.1 and echo one message back."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(TIMEOUT)
            with ctx.wrap_socket(conn, server_side=True) as tls:
                data = tls.recv(1024)
                tls.sendall(data)
                result["echoed"] = data
        except OSError as exc:  # ssl.SSLError included
            result["error"] = exc
        finally:
            listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread, result


def client_roundtrip(port: int, ctx: ssl.SSLContext) -> tuple[bytes, str | None]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"ping")
        return tls.recv(1024), tls.version()


def client_context(certs: Certs, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.cert))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


# --- parsing -------------------------------------------------------------------


def test_valid_config_parses(tmp_path: Path, certs: Certs) -> None:
    path = write_config(
        tmp_path,
        f"""
tls_server_config:
  cert_file: {certs.cert}
  key_file: {certs.key}
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: {certs.client_cert}
  min_version: TLS13
basic_auth_users:
  alice: {ALICE_HASH}
  bob: '{BOB_HASH}'
http_server_config:
  headers:
    X-Frame-Options: deny
    Content-Security-Policy: "default-src 'none'"
    X-XSS-Protection: ""
""",
    )
    config = load_web_config(path)
    assert config.tls == TLSConfig(
        cert_file=str(certs.cert),
        key_file=str(certs.key),
        client_auth_type="RequireAndVerifyClientCert",
        client_ca_file=str(certs.client_cert),
        min_version="TLS13",
    )
    assert dict(config.basic_auth_users) == {"alice": ALICE_HASH, "bob": BOB_HASH}
    # A blank header value means "unset", as in exporter-toolkit.
    assert dict(config.headers) == {
        "X-Frame-Options": "deny",
        "Content-Security-Policy": "default-src 'none'",
    }
    assert isinstance(config.ssl_context(), ssl.SSLContext)
    assert config.authenticator() is not None
    # One shared authenticator, so its verdict cache survives across requests.
    assert config.authenticator() is config.authenticator()


def test_defaults(tmp_path: Path, certs: Certs) -> None:
    path = write_config(tmp_path, f"tls_server_config:\n  cert_file: {certs.cert}\n  key_file: {certs.key}\n")
    config = load_web_config(path)
    assert config.tls is not None
    assert config.tls.client_auth_type == "NoClientCert"
    assert config.tls.client_ca_file is None
    assert config.tls.min_version == "TLS12"
    assert config.authenticator() is None
    assert dict(config.headers) == {}


def test_relative_paths_resolved_against_config_dir(
    tmp_path: Path, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    (conf_dir / "tls").mkdir(parents=True)
    for src, dst in ((certs.cert, "server.crt"), (certs.key, "server.key"), (certs.client_cert, "ca.crt")):
        shutil.copy(src, conf_dir / "tls" / dst)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative to the config file, not to the cwd

    path = write_config(
        conf_dir,
        "tls_server_config:\n  cert_file: tls/server.crt\n  key_file: ./tls/server.key\n"
        "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: tls/ca.crt\n",
    )
    config = load_web_config(path)
    assert config.tls is not None
    assert config.tls.cert_file == str(conf_dir / "tls" / "server.crt")
    assert Path(config.tls.key_file).resolve() == conf_dir / "tls" / "server.key"
    assert config.tls.client_ca_file == str(conf_dir / "tls" / "ca.crt")
    assert config.ssl_context() is not None

    # A config path given relative to the cwd resolves the same way.
    monkeypatch.chdir(tmp_path)
    config = load_web_config("conf/web.yml")
    assert config.tls is not None and config.tls.cert_file == str(conf_dir / "tls" / "server.crt")


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "{}\n", "---\n"])
def test_empty_config_means_plain_http_without_auth(tmp_path: Path, text: str) -> None:
    config = load_web_config(write_config(tmp_path, text))
    assert config.tls is None
    assert config.ssl_context() is None
    assert config.authenticator() is None
    assert dict(config.basic_auth_users) == {}


# Each bad config and exactly the errors it must produce; {d} is the config's directory.
BAD_CONFIGS: dict[str, tuple[str, list[str]]] = {
    "unknown top-level key": ("foo: 1\n", ["foo: unknown key"]),
    "unknown tls key": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  bar: 1\n",
        ["tls_server_config.bar: unknown key"],
    ),
    "toolkit tls keys we do not implement": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  cipher_suites: []\n",
        ["tls_server_config.cipher_suites: unknown key"],
    ),
    "unknown http key": ("http_server_config:\n  http2: false\n", ["http_server_config.http2: unknown key"]),
    "top level not a mapping": ("- a\n- b\n", ["(top level): must be a mapping, got a list"]),
    "tls not a mapping": (
        "tls_server_config: yes\n",
        ["tls_server_config: must be a mapping, got a boolean"],
    ),
    "cert and key required": (
        "tls_server_config: {{}}\n",
        [
            "tls_server_config.cert_file: required when tls_server_config is set",
            "tls_server_config.key_file: required when tls_server_config is set",
        ],
    ),
    "cert file missing": (
        "tls_server_config:\n  cert_file: nope.pem\n  key_file: {key}\n",
        ["tls_server_config.cert_file: file not found: {d}/nope.pem"],
    ),
    "cert file is a directory": (
        "tls_server_config:\n  cert_file: .\n  key_file: {key}\n",
        ["tls_server_config.cert_file: not a regular file: {d}/."],
    ),
    "cert file not a string": (
        "tls_server_config:\n  cert_file: 42\n  key_file: {key}\n",
        ["tls_server_config.cert_file: must be a string, got an integer"],
    ),
    "bad client_auth_type": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_auth_type: Whatever\n",
        [
            "tls_server_config.client_auth_type: must be one of NoClientCert, RequestClientCert, "
            "RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert, got 'Whatever'"
        ],
    ),
    "RequireAnyClientCert cannot be done with stdlib ssl": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        "  client_auth_type: RequireAnyClientCert\n",
        [
            "tls_server_config.client_auth_type: RequireAnyClientCert is not supported (Python's ssl "
            "module cannot require a client certificate without verifying it); use "
            "RequireAndVerifyClientCert with client_ca_file"
        ],
    ),
    "verifying client certs needs a CA": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n",
        ["tls_server_config.client_ca_file: required when client_auth_type is RequireAndVerifyClientCert"],
    ),
    "verify-if-given needs a CA too": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        "  client_auth_type: VerifyClientCertIfGiven\n",
        ["tls_server_config.client_ca_file: required when client_auth_type is VerifyClientCertIfGiven"],
    ),
    "CA without a client auth policy": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_ca_file: {cert}\n",
        ["tls_server_config.client_ca_file: set, but client_auth_type is NoClientCert"],
    ),
    "TLS10 is insecure": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: TLS10\n",
        ["tls_server_config.min_version: TLS10 is insecure and not supported; use TLS12 or TLS13"],
    ),
    "TLS11 is insecure": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: TLS11\n",
        ["tls_server_config.min_version: TLS11 is insecure and not supported; use TLS12 or TLS13"],
    ),
    "unknown TLS version": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: 1.2\n",
        ["tls_server_config.min_version: must be one of TLS12, TLS13, got 1.2"],
    ),
    "users not a mapping": (
        "basic_auth_users: [alice]\n",
        ["basic_auth_users: must be a mapping of user name to bcrypt hash, got a list"],
    ),
    "plaintext password instead of a hash": (
        "basic_auth_users:\n  alice: hunter2\n",
        ["basic_auth_users.alice: must be a bcrypt hash string"],
    ),
    "truncated hash": (
        "basic_auth_users:\n  alice: '{alice_hash_short}'\n",
        ["basic_auth_users.alice: must be a bcrypt hash string"],
    ),
    "hash with an unknown bcrypt prefix": (
        "basic_auth_users:\n  alice: '{alice_hash_2x}'\n",
        ["basic_auth_users.alice: must be a bcrypt hash string"],
    ),
    "hash not a string": (
        "basic_auth_users:\n  alice: 12\n",
        ["basic_auth_users.alice: must be a bcrypt hash string"],
    ),
    "user name with a colon": (
        "basic_auth_users:\n  'al:ice': '{alice_hash}'\n",
        ["basic_auth_users.al:ice: user name must not contain ':' or NUL"],
    ),
    "user name not a string": (
        "basic_auth_users:\n  123: '{alice_hash}'\n",
        ["basic_auth_users.123: user name must be a string, got an integer"],
    ),
    "header not allowed": (
        "http_server_config:\n  headers:\n    X-Custom: 1\n",
        [
            "http_server_config.headers.X-Custom: header can not be configured; allowed: "
            "Content-Security-Policy, Strict-Transport-Security, X-Content-Type-Options, "
            "X-Frame-Options, X-XSS-Protection"
        ],
    ),
    "header with a value outside its enumeration": (
        "http_server_config:\n  headers:\n    X-Frame-Options: allow-from x\n",
        ["http_server_config.headers.X-Frame-Options: must be one of deny, sameorigin, got 'allow-from x'"],
    ),
    "header injection": (
        'http_server_config:\n  headers:\n    Content-Security-Policy: "a\\r\\nSet-Cookie: x=1"\n',
        ["http_server_config.headers.Content-Security-Policy: must not contain CR, LF or NUL"],
    ),
    "header value not a string": (
        "http_server_config:\n  headers:\n    Strict-Transport-Security: 300\n",
        ["http_server_config.headers.Strict-Transport-Security: must be a string, got an integer"],
    ),
    "headers not a mapping": (
        "http_server_config:\n  headers: [a]\n",
        ["http_server_config.headers: must be a mapping of header name to value, got a list"],
    ),
}


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=list(BAD_CONFIGS))
def test_bad_config_error_messages(tmp_path: Path, certs: Certs, case: str) -> None:
    text, expected = BAD_CONFIGS[case]
    values = {
        "d": str(tmp_path),
        "cert": str(certs.cert),
        "key": str(certs.key),
        "alice_hash": ALICE_HASH,
        "alice_hash_short": ALICE_HASH[:-1],
        "alice_hash_2x": "$2x$" + ALICE_HASH[4:],
    }
    path = write_config(tmp_path, text.format(**values))
    assert config_errors(path) == [e.format(**values) for e in expected]


def test_all_errors_reported_together(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        f"""
foo: 1
tls_server_config:
  cert_file: missing.crt
  bar: 2
  client_auth_type: RequireAndVerifyClientCert
  min_version: TLS10
basic_auth_users:
  alice: not-a-hash
  bob: {BOB_HASH}
http_server_config:
  headers:
    X-Frame-Options: nope
""",
    )
    with pytest.raises(WebConfigError) as info:
        load_web_config(path)
    errors = [
        "foo: unknown key",
        "tls_server_config.bar: unknown key",
        f"tls_server_config.cert_file: file not found: {tmp_path}/missing.crt",
        "tls_server_config.key_file: required when tls_server_config is set",
        "tls_server_config.client_ca_file: required when client_auth_type is RequireAndVerifyClientCert",
        "tls_server_config.min_version: TLS10 is insecure and not supported; use TLS12 or TLS13",
        "basic_auth_users.alice: must be a bcrypt hash string",
        "http_server_config.headers.X-Frame-Options: must be one of deny, sameorigin, got 'nope'",
    ]
    assert info.value.errors == errors
    assert str(info.value) == f"bad web config {path}:\n  " + "\n  ".join(errors)
    assert BOB_HASH not in str(info.value)


def test_yaml_syntax_error_has_line_number(tmp_path: Path) -> None:
    path = write_config(tmp_path, "basic_auth_users:\n  alice: x\n  bob: [unclosed\n")
    assert config_errors(path) == [
        "YAML syntax error at line 4, column 1: expected ',' or ']', but got '<stream end>'"
    ]
    path = write_config(tmp_path, "tls_server_config:\n  cert_file: a\n key_file: b\n")
    assert config_errors(path) == [
        "YAML syntax error at line 3, column 2: expected <block end>, but found '<block mapping start>'"
    ]


def test_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    # Plain YAML loaders keep the last one silently: a whole user list could vanish.
    path = write_config(tmp_path, f"basic_auth_users:\n  alice: '{ALICE_HASH}'\nbasic_auth_users: {{}}\n")
    assert config_errors(path) == ["YAML syntax error at line 3, column 1: duplicate key 'basic_auth_users'"]


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.yml")
    with pytest.raises(WebConfigError) as info:
        load_web_config(path)
    assert info.value.errors == ["file not found"]
    assert str(info.value) == f"bad web config {path}:\n  file not found"


def test_config_path_is_a_directory(tmp_path: Path) -> None:
    assert config_errors(str(tmp_path)) == ["cannot read file: Is a directory"]


# --- ssl_context errors ----------------------------------------------------------


def _tls_errors(tls: TLSConfig) -> list[str]:
    with pytest.raises(WebConfigError) as info:
        tls.ssl_context()
    return info.value.errors


def test_ssl_context_key_does_not_match_cert(certs: Certs) -> None:
    tls = TLSConfig(str(certs.cert), str(certs.other_key), source="web.yml")
    with pytest.raises(WebConfigError) as info:
        tls.ssl_context()
    assert info.value.errors == [
        "tls_server_config.key_file: private key does not match the certificate in cert_file"
    ]
    assert str(info.value).startswith("bad web config web.yml:\n  ")


def test_ssl_context_encrypted_key_fails_instead_of_prompting(certs: Certs) -> None:
    tls = TLSConfig(str(certs.cert), str(certs.encrypted_key))
    assert _tls_errors(tls) == [
        f"tls_server_config.key_file: encrypted private keys are not supported: {certs.encrypted_key}"
    ]


def test_ssl_context_not_pem(certs: Certs) -> None:
    assert _tls_errors(TLSConfig(str(certs.junk), str(certs.key))) == [
        f"tls_server_config.cert_file: no PEM certificate in {certs.junk}"
    ]
    assert _tls_errors(TLSConfig(str(certs.cert), str(certs.junk))) == [
        f"tls_server_config.key_file: no usable PEM private key in {certs.junk}"
    ]
    tls = TLSConfig(str(certs.cert), str(certs.key), "RequireAndVerifyClientCert", str(certs.junk))
    assert _tls_errors(tls) == [f"tls_server_config.client_ca_file: no PEM certificate in {certs.junk}"]


def test_ssl_context_file_removed_after_load(tmp_path: Path, certs: Certs) -> None:
    key = tmp_path / "server.key"
    shutil.copy(certs.key, key)
    config = load_web_config(
        write_config(tmp_path, f"tls_server_config:\n  cert_file: {certs.cert}\n  key_file: {key}\n")
    )
    key.unlink()
    with pytest.raises(WebConfigError) as info:
        config.ssl_context()
    assert info.value.errors == [f"tls_server_config.key_file: file not found: {key}"]


# --- real TLS handshakes ------------------------------------------------------------


def _tls_config(certs: Certs, **kwargs: Any) -> TLSConfig:
    return TLSConfig(cert_file=str(certs.cert), key_file=str(certs.key), **kwargs)


def test_tls_handshake_and_round_trip(certs: Certs) -> None:
    port, thread, result = serve_once(_tls_config(certs).ssl_context())
    reply, version = client_roundtrip(port, client_context(certs))
    thread.join(TIMEOUT)
    assert reply == b"ping"
    assert result == {"echoed": b"ping"}
    assert version in ("TLSv1.2", "TLSv1.3")


def test_tls13_minimum_refuses_tls12_client(certs: Certs) -> None:
    port, thread, result = serve_once(_tls_config(certs, min_version="TLS13").ssl_context())
    client = client_context(certs)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        client_roundtrip(port, client)
    thread.join(TIMEOUT)
    assert isinstance(result.get("error"), ssl.SSLError)


def test_require_and_verify_client_cert(certs: Certs) -> None:
    ctx = _tls_config(
        certs, client_auth_type="RequireAndVerifyClientCert", client_ca_file=str(certs.client_cert)
    ).ssl_context()

    # A client with a certificate from the configured CA gets through.
    port, thread, result = serve_once(ctx)
    assert client_roundtrip(port, client_context(certs, certs.client_cert, certs.client_key))[0] == b"ping"
    thread.join(TIMEOUT)
    assert result == {"echoed": b"ping"}

    # Without a certificate, or with one from another CA, the server refuses.
    # (With TLS 1.3 the client may only notice on its first read.)
    for cert, key in ((None, None), (certs.stranger_cert, certs.stranger_key)):
        port, thread, result = serve_once(ctx)
        try:
            reply = client_roundtrip(port, client_context(certs, cert, key))[0]
        except OSError:
            reply = b""
        thread.join(TIMEOUT)
        assert reply != b"ping"
        assert isinstance(result.get("error"), ssl.SSLError), result
        assert "echoed" not in result


def test_verify_client_cert_if_given_allows_no_cert(certs: Certs) -> None:
    ctx = _tls_config(
        certs, client_auth_type="VerifyClientCertIfGiven", client_ca_file=str(certs.client_cert)
    ).ssl_context()
    port, thread, result = serve_once(ctx)
    assert client_roundtrip(port, client_context(certs))[0] == b"ping"
    thread.join(TIMEOUT)
    assert result == {"echoed": b"ping"}


def test_request_client_cert_accepts_any_client(certs: Certs) -> None:
    ctx = _tls_config(certs, client_auth_type="RequestClientCert").ssl_context()
    for cert, key in ((None, None), (certs.stranger_cert, certs.stranger_key)):
        port, thread, result = serve_once(ctx)
        assert client_roundtrip(port, client_context(certs, cert, key))[0] == b"ping"
        thread.join(TIMEOUT)
        assert result == {"echoed": b"ping"}


# --- basic auth ------------------------------------------------------------------------


@pytest.fixture()
def auth() -> BasicAuthenticator:
    return BasicAuthenticator({"alice": ALICE_HASH, "bob": BOB_HASH})


@pytest.fixture()
def checkpw_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record the hash of every real bcrypt.checkpw call made by webconfig."""
    calls: list[bytes] = []
    real: Callable[[bytes, bytes], bool] = bcrypt.checkpw

    def recording(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(webconfig.bcrypt, "checkpw", recording)
    return calls


def test_basic_auth_right_and_wrong_passwords(auth: BasicAuthenticator) -> None:
    assert auth.check(basic("alice", ALICE_PW)) is True
    assert auth.check(basic("bob", BOB_PW)) is True
    assert auth.check("basic " + basic("alice", ALICE_PW)[6:]) is True  # scheme is case-insensitive
    assert auth.check(basic("alice", "wrong")) is False
    assert auth.check(basic("alice", ALICE_PW + " ")) is False
    assert auth.check(basic("alice", BOB_PW)) is False
    assert auth.check(basic("bob", ALICE_PW)) is False
    assert auth.check(basic("alice", "")) is False
    assert auth.check(basic("Alice", ALICE_PW)) is False
    assert auth.check(basic("mallory", ALICE_PW)) is False
    assert auth.check(basic("alice", "x" * 100)) is False  # over bcrypt's 72-byte limit


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic",
        "Basic ",
        "Bearer " + base64.b64encode(f"alice:{ALICE_PW}".encode()).decode(),
        base64.b64encode(f"alice:{ALICE_PW}".encode()).decode(),  # no scheme
        "Basic !!!not-base64!!!",
        "Basic YWxpY2U6",  # "alice:" with the padding cut off
        basic(b"alice" + ALICE_PW.encode()),  # no colon
        basic(b"alice:\xff\xfe"),  # not UTF-8
        basic(b"\xffalice:" + ALICE_PW.encode()),
        "Basic ä",  # non-ASCII where base64 is expected
        "Basic " + "A" * 10_000,
    ],
)
def test_basic_auth_malformed_headers(auth: BasicAuthenticator, header: str | None) -> None:
    assert auth.check(header) is False


def test_unknown_user_still_spends_a_bcrypt_comparison(
    auth: BasicAuthenticator, checkpw_calls: list[bytes]
) -> None:
    assert auth.check(basic("mallory", "guess")) is False
    assert len(checkpw_calls) == 1  # same work as for a known user
    assert auth.check(basic("alice", "guess")) is False
    assert len(checkpw_calls) == 2


def test_only_successes_are_remembered(auth: BasicAuthenticator, checkpw_calls: list[bytes]) -> None:
    for _ in range(3):
        assert auth.check(basic("alice", ALICE_PW)) is True
        assert auth.check(basic("alice", "wrong")) is False
    # The right password was checked once; a wrong one every time (a failure is never remembered).
    assert checkpw_calls == [ALICE_HASH.encode()] * 4
    # What is remembered: salted digests only, never the password.
    for key in auth._granted:
        assert len(key) == 32 and ALICE_PW.encode() not in key


def test_a_flood_of_wrong_passwords_never_evicts_the_good_credentials(
    auth: BasicAuthenticator, checkpw_calls: list[bytes]
) -> None:
    assert auth.check(basic("alice", ALICE_PW)) is True
    for i in range(2 * auth.CACHE_SIZE + 10):
        assert auth.check(basic("alice", f"wrong{i}")) is False
    calls = len(checkpw_calls)
    assert auth.check(basic("alice", ALICE_PW)) is True
    assert len(checkpw_calls) == calls  # still remembered: no bcrypt


def test_remembered_successes_are_bounded_lru(auth: BasicAuthenticator, checkpw_calls: list[bytes]) -> None:
    auth.CACHE_SIZE = 1
    assert auth.check(basic("alice", ALICE_PW)) and auth.check(basic("bob", BOB_PW))  # bob pushes alice out
    calls = len(checkpw_calls)
    assert auth.check(basic("bob", BOB_PW)) and len(checkpw_calls) == calls
    assert auth.check(basic("alice", ALICE_PW)) and len(checkpw_calls) == calls + 1


def test_a_client_that_fails_too_often_is_refused_unchecked(
    auth: BasicAuthenticator, checkpw_calls: list[bytes]
) -> None:
    auth.FAILURE_REFILL_SECONDS = 3600.0  # no check given back while the test runs, however slow
    assert auth.verdict(basic("alice", ALICE_PW), client="10.0.0.1") == "granted"
    for i in range(auth.FAILURE_BURST):
        assert auth.verdict(basic("alice", f"guess{i}"), client="10.0.0.9") == "denied"
    calls = len(checkpw_calls)
    for i in range(50):
        assert auth.verdict(basic("mallory", f"more{i}"), client="10.0.0.9") == "throttled"
    assert auth.verdict(basic("bob", BOB_PW), client="10.0.0.9") == "throttled"  # unknown yet: unchecked
    assert len(checkpw_calls) == calls  # no bcrypt work for a throttled client
    assert auth.throttled("10.0.0.9") and not auth.throttled("10.0.0.1")  # the server refuses it at accept
    # Credentials that passed before are granted at once, whoever sends them; other clients are checked.
    assert auth.verdict(basic("alice", ALICE_PW), client="10.0.0.9") == "granted"
    assert auth.verdict(basic("bob", BOB_PW), client="10.0.0.2") == "granted"
    assert auth.verdict(basic("alice", "nope"), client="10.0.0.3") == "denied"


def test_a_throttled_client_is_checked_again_once_it_waited(auth: BasicAuthenticator) -> None:
    auth.FAILURE_REFILL_SECONDS = 0.05
    for i in range(auth.FAILURE_BURST):
        auth.verdict(basic("alice", f"guess{i}"), client="10.0.0.9")
    assert auth.verdict(basic("alice", "guess"), client="10.0.0.9") == "throttled"
    wait_until(lambda: auth.verdict(basic("bob", BOB_PW), client="10.0.0.9") == "granted", timeout=TIMEOUT)


def test_the_clients_remembered_are_bounded(auth: BasicAuthenticator) -> None:
    auth.MAX_CLIENTS = 8
    for n in range(100):
        auth.verdict(basic("alice", "wrong"), client=f"10.0.1.{n}")
    assert len(auth._budgets) == 8


def test_cache_makes_repeat_checks_much_faster() -> None:
    hashed = bcrypt.hashpw(b"scrape-me", bcrypt.gensalt(rounds=10)).decode()
    auth = BasicAuthenticator({"prometheus": hashed})
    header = basic("prometheus", "scrape-me")

    start = time.perf_counter()
    assert auth.check(header) is True
    first = time.perf_counter() - start
    start = time.perf_counter()
    assert auth.check(header) is True
    second = time.perf_counter() - start
    assert second < first / 10, (first, second)


def test_concurrent_checks(auth: BasicAuthenticator) -> None:
    results: list[tuple[bool, bool]] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        good = i % 2 == 0
        verdict = auth.check(basic("alice", ALICE_PW if good else f"bad{i % 4}"))
        with lock:
            results.append((good, verdict))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert len(results) == 32
    assert all(good == verdict for good, verdict in results)


def test_authenticator_rejects_non_bcrypt_hashes() -> None:
    with pytest.raises(ValueError):
        BasicAuthenticator({"alice": "hunter2"})


def test_empty_authenticator_denies_everyone() -> None:
    assert BasicAuthenticator({}).check(basic("alice", ALICE_PW)) is False


def test_repr_hides_password_hashes(tmp_path: Path, certs: Certs) -> None:
    path = write_config(tmp_path, f"basic_auth_users:\n  alice: '{ALICE_HASH}'\n  bob: '{BOB_HASH}'\n")
    config = load_web_config(path)
    for text in (repr(config), str(config), f"{config}", repr(config.authenticator())):
        assert ALICE_HASH not in text and BOB_HASH not in text
        assert "$2b$" not in text
        assert "alice" in text
    assert repr(config) == (
        "WebConfig(tls=None, basic_auth_users={'alice': '<redacted>', 'bob': '<redacted>'}, headers={})"
    )
    # Equality still sees the real hashes.
    assert config == WebConfig(basic_auth_users={"alice": ALICE_HASH, "bob": BOB_HASH})


def test_config_is_immutable(tmp_path: Path) -> None:
    users = {"alice": ALICE_HASH}
    config = WebConfig(basic_auth_users=users)
    users["mallory"] = ALICE_HASH  # the caller's dict is copied, not shared
    assert "mallory" not in config.basic_auth_users
    with pytest.raises(TypeError):
        cast(Any, config.basic_auth_users)["mallory"] = ALICE_HASH
    with pytest.raises(AttributeError):
        cast(Any, config).tls = None


# --- certificate rotation in the running exporter -----------------------------------------------


def _served_certificate(port: int) -> bytes:
    """The DER certificate the server presents to a new connection (not verified: we compare it)."""
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=TIMEOUT)
    return ssl.PEM_cert_to_DER_cert(pem)


def _der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def _replace(target: Path, source: Path) -> None:
    """Put a file in place atomically, as cert-manager or a deploy script would."""
    staged = target.with_suffix(".new")
    shutil.copy(source, staged)
    os.replace(staged, target)


def test_a_rotated_certificate_is_served_without_restart(start_exporter, tmp_path: Path) -> None:
    first_cert, first_key = _self_signed(tmp_path, "first", "localhost")
    second_cert, second_key = _self_signed(tmp_path, "second", "localhost")
    live = tmp_path / "live"
    live.mkdir()
    _replace(live / "tls.crt", first_cert)
    _replace(live / "tls.key", first_key)
    web = write_config(live, "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")
    trust_first = ssl.create_default_context(cafile=str(first_cert))
    exporter = start_exporter(f"--web.config.file={web}", scheme="https", verify=trust_first)
    assert _served_certificate(exporter.port) == _der(first_cert)

    _replace(live / "tls.crt", second_cert)  # half a rotation: the key does not match yet
    assert _served_certificate(exporter.port) == _der(first_cert)  # the last good pair still serves
    wait_until(lambda: "TLS files changed but do not load" in exporter.log())

    _replace(live / "tls.key", second_key)
    wait_until(lambda: _served_certificate(exporter.port) == _der(second_cert))
    trust_second = ssl.create_default_context(cafile=str(second_cert))
    assert exporter.get("/metrics", verify=trust_second).status_code == 200
    assert exporter.process.poll() is None
    assert "TLS certificate reloaded" in exporter.log()


def test_certificate_files_are_not_read_again_while_unchanged(
    tmp_path: Path, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_web_config(
        write_config(tmp_path, f"tls_server_config:\n  cert_file: {certs.cert}\n  key_file: {certs.key}\n")
    )
    builds: list[int] = []
    real = TLSConfig.ssl_context
    monkeypatch.setattr(TLSConfig, "ssl_context", lambda self: builds.append(1) or real(self))
    first = config.tls_context()
    assert all(config.tls_context() is first for _ in range(100))
    assert len(builds) == 1


def test_web_config_files_over_the_size_limit_or_too_deep_are_refused(tmp_path: Path) -> None:
    big = write_config(tmp_path, "# " + "x" * (webconfig.MAX_FILE_BYTES + 10) + "\n", name="big.yml")
    assert config_errors(big) == [f"file is larger than {webconfig.MAX_FILE_BYTES} bytes"]
    deep = write_config(tmp_path, "a: " + "[" * 20000 + "]" * 20000 + "\n", name="deep.yml")
    assert config_errors(deep) == ["YAML nested too deeply"]
    hostile = write_config(tmp_path, "tls_server_config:\n  min_version: [TLS12]\n", name="list.yml")
    assert "tls_server_config.min_version: must be one of TLS12, TLS13, got ['TLS12']" in config_errors(
        hostile
    )

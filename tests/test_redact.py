"""The one redactor: every secret pattern, in text, in log lines (logfmt and JSON) and in error values."""

from __future__ import annotations

import io
import json
import logging
import string
import time
from collections.abc import Iterator

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from autoglm_exporter.logs.redact import MASK, redact, redact_variable, safe_repr
from autoglm_exporter.web import logsetup

REDACTED = [
    # environment-style names: the secret word anywhere in an upper-case name
    ("PGPASSWORD=hunter2 psql -h db", "PGPASSWORD=*** psql -h db"),
    ("export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "export AWS_SECRET_ACCESS_KEY=***"),
    ("MYSQL_ROOT_PASSWORD='p w' next", "MYSQL_ROOT_PASSWORD='***' next"),
    ("GITHUB_TOKEN=abc OPENAI_API_KEY=def", "GITHUB_TOKEN=*** OPENAI_API_KEY=***"),
    ("DJANGO_SECRET=x1 SECRETKEY=x2 API_KEYS=a,b", "DJANGO_SECRET=*** SECRETKEY=*** API_KEYS=***"),
    ("DB_PASSWORD_FILE=/run/secrets/db", "DB_PASSWORD_FILE=***"),
    ('{"PGPASSWORD": "hunter2", "HOME": "/root"}', '{"PGPASSWORD": "***", "HOME": "/root"}'),
    ("X-API-KEY: abc123", "X-API-KEY: ***"),
    # flags, with a space or =
    ("vllm serve glm --api-key abc123 --port 8000", "vllm serve glm --api-key *** --port 8000"),
    ("redis-cli --password hunter2 ping", "redis-cli --password *** ping"),
    ("app --password=hunter2 --token=t0k3n", "app --password=*** --token=***"),
    ("app --secret 's e c' --hf-token hf_x", "app --secret '***' --hf-token ***"),
    ('app --client-secret="a b" -v', 'app --client-secret="***" -v'),
    ("app --token\tabc", "app --token\t***"),
    # URLs with user:password@
    ("dsn postgresql://admin:hunter2@db:5432/app", "dsn postgresql://admin:***@db:5432/app"),
    ("redis://:topsecret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("GET http://u:p@h/x?api_key=abc", "GET http://u:***@h/x?api_key=***"),
    # user:password@ without a scheme, IPv6 hosts, percent-encoded and @ in the password
    ("user:hunter2@127.0.0.1:6379", "user:***@127.0.0.1:6379"),
    ("Redis at :hunter2@[::1]:6379 is down", "Redis at :***@[::1]:6379 is down"),
    ("address: 'bob:p%40ss%3Aw@redis.internal:6379'", "address: 'bob:***@redis.internal:6379'"),
    ("http://u:p@ss@[fe80::1]:8080/x", "http://u:***@[fe80::1]:8080/x"),
    (
        "redis-cli -h redis://:hunter2@127.0.0.1 -p 6379 ping",
        "redis-cli -h redis://:***@127.0.0.1 -p 6379 ping",
    ),
    # commands that take a password by a short flag
    ("redis-cli -h 127.0.0.1 -p 6379 -a hunter2 ping", "redis-cli -h 127.0.0.1 -p 6379 -a *** ping"),
    ("redis-cli --pass hunter2 --user bob", "redis-cli --pass *** --user bob"),
    ("redis-server --requirepass hunter2", "redis-server --requirepass ***"),
    ("curl -sv -u bob:hunter2 http://h/x", "curl -sv -u bob:*** http://h/x"),
    ("sshpass -p hunter2 ssh h", "sshpass -p *** ssh h"),
    ("mysql -phunter2 app", "mysql -p*** app"),
    # today's patterns still hold
    ("password=hunter2 user=bob", "password=*** user=bob"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "Authorization: Bearer ***"),
    ("using key sk-proj-AbCdEf1234567890abcdefGHIJ now", "using key sk-*** now"),
]

UNCHANGED = [
    "TOKENIZERS_PARALLELISM=false MAX_TOKENS=50 CUDA_VISIBLE_DEVICES=0,1",
    "KEYBOARD=us HOME=/root PATH=/usr/bin:/bin",
    "vllm serve glm --max-tokens 50 --tokenizer /models/glm --max-num-batched-tokens 2048",
    "--eos-token 2 --pad-token-id 0",
    "app --token --verbose",
    "ERROR: engine died",
    "http://127.0.0.1:8000/v1/chat/completions",
    "git clone git@github.com:org/repo.git && scp out.txt bob@host:/tmp",
    "ERROR:root:engine died at 12:30:01",
    "ls -a /tmp; grep -a x f; curl --user-agent a:b http://h/",
    "redis-cli -h 127.0.0.1 -p 6379 ping",
]


@pytest.mark.parametrize(("text", "expected"), REDACTED)
def test_every_pattern_is_redacted_and_keeps_its_name(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert redact(expected) == expected  # idempotent


@pytest.mark.parametrize("text", UNCHANGED)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_environment_variables_by_name() -> None:
    assert redact_variable("PGPASSWORD", "hunter2") == MASK
    assert redact_variable("pgpassword", "hunter2") == MASK  # names count in any case
    assert redact_variable("VLLM_ARGS", "--api-key abc --port 8000") == "--api-key *** --port 8000"
    assert redact_variable("HOME", "/root") == "/root"
    assert redact_variable("TOKENIZERS_PARALLELISM", "false") == "false"


SECRET = st.text(alphabet="abcdefghijkmnopqrstuvwxyzACDEFGHJKLMNPQRSTUVWXYZ2345679", min_size=8, max_size=24)
CONTEXT = st.text(alphabet=st.characters(codec="ascii", exclude_characters="\r\n"), max_size=20)
FORMS = [
    "PGPASSWORD={s}",
    "AWS_SECRET_ACCESS_KEY={s}",
    "HF_TOKEN={s}",
    "--password {s}",
    "--api-key={s}",
    "--token {s}",
    "--secret={s}",
    "postgres://user:{s}@db/x",
    "password: {s}",
    '{{"api_key": "{s}"}}',
]


@settings(max_examples=300, deadline=None)
@given(secret=SECRET, form=st.sampled_from(FORMS), before=CONTEXT)
def test_a_secret_never_survives_whatever_comes_before(secret: str, form: str, before: str) -> None:
    assume(secret not in before and secret not in form)  # a secret spelled like its own name cannot hide
    text = f"{before} {form.format(s=secret)} tail"
    shown = redact(text)
    assert secret not in shown, shown
    assert redact(shown) == shown


# --- generated URLs and command lines ------------------------------------------------------------

# RFC 3986 userinfo: unreserved, sub-delims, ':' and percent-encoded octets; '@' too, as people write it
_USERINFO_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@"
PASSWORD = st.lists(
    st.sampled_from(list(_USERINFO_CHARS)) | st.sampled_from(["%40", "%2F", "%3A", "%23", "%25", "%20"]),
    min_size=6,
    max_size=20,
).map("".join)
USER = st.text(alphabet=string.ascii_lowercase + string.digits + "._-", max_size=8)
LABEL = st.from_regex(r"[a-z][a-z0-9-]{0,9}[a-z0-9]", fullmatch=True)
HOST = (
    st.lists(LABEL, min_size=1, max_size=3).map(".".join)
    | st.tuples(*[st.integers(0, 255)] * 4).map(lambda o: ".".join(map(str, o)))
    | st.sampled_from(["[::1]", "[fe80::1]", "[2001:db8::8a2e:370:7334]"])
)
PORT = st.integers(1, 65535)
SCHEME = st.sampled_from(["", "redis://", "rediss://", "http://", "https://", "postgresql://", "amqp://"])
PATH = st.sampled_from(["", "/", "/0", "/v1/models", "/metrics"])
URL_CONTEXT = st.sampled_from(
    [
        "{}",
        "connecting to {} failed",
        "Redis at {} is down (connect_refused)",
        "redis-cli -u {} ping",
        "address: '{}'",
        'url="{}" next',
        "({})",
    ]
)


@settings(max_examples=400, deadline=None)
@given(scheme=SCHEME, user=USER, password=PASSWORD, host=HOST, port=PORT, path=PATH, context=URL_CONTEXT)
def test_a_url_password_never_survives_and_the_address_stays_readable(
    scheme: str, user: str, password: str, host: str, port: int, path: str, context: str
) -> None:
    address = f"{host}:{port}{path if scheme else ''}"
    text = context.format(f"{scheme}{user}:{password}@{address}")
    assume(password not in context.format(f"{scheme}{user}:@{address}"))
    shown = redact(text)
    assert password not in shown, shown
    assert f"{scheme}{user}:***@{address}" in shown, shown  # who, where: still readable
    assert redact(shown) == shown


# What a shell passes as one word: the password of a command line
SHELL_PASSWORD = st.text(
    alphabet=string.ascii_letters + string.digits + "._~%+,=:@/", min_size=6, max_size=20
)
COMMANDS = [
    ("redis-cli -h {host} -p 6379 -a {pw} ping", "redis-cli -h {host} -p 6379 -a *** ping"),
    ("redis-cli -h {host} -a '{pw}' --no-auth-warning", "redis-cli -h {host} -a '***' --no-auth-warning"),
    ("redis-cli --pass {pw} -h {host}", "redis-cli --pass *** -h {host}"),
    ("app --password={pw} --host {host}", "app --password=*** --host {host}"),
    ("app --db-password {pw} --host {host}", "app --db-password *** --host {host}"),
    ("curl -sv -u bob:{pw} http://{host}/x", "curl -sv -u bob:*** http://{host}/x"),
    ("PGPASSWORD={pw} psql -h {host}", "PGPASSWORD=*** psql -h {host}"),
    ("sshpass -p {pw} ssh {host}", "sshpass -p *** ssh {host}"),
]


@settings(max_examples=300, deadline=None)
@given(password=SHELL_PASSWORD, host=HOST, command=st.sampled_from(COMMANDS))
def test_a_command_line_password_never_survives_and_the_command_stays_readable(
    password: str, host: str, command: tuple[str, str]
) -> None:
    form, expected = command
    assume(password not in form.format(pw="", host=host))
    shown = redact(form.format(pw=password, host=host))
    assert shown == expected.format(host=host), shown
    assert redact(shown) == shown


def test_hostile_text_costs_little() -> None:
    for text in (
        "A" * 20000,
        "A_" * 10000,
        "PASSWORD_" * 2000,
        "--a " * 5000,
        "--password " * 2000,
        "X=" * 10000,
        "a:" * 10000 + "@",
        ":" + "@" * 20000,
        "redis-cli " + "-a " * 5000,
    ):
        started = time.perf_counter()
        redact(text)
        assert time.perf_counter() - started < 0.5, text[:20]


# --- values in error messages --------------------------------------------------------------------


def test_safe_repr_shows_short_values_as_repr() -> None:
    assert safe_repr("5m") == "'5m'"
    assert safe_repr(3) == "3" and safe_repr(None) == "None" and safe_repr([1, "a"]) == "[1, 'a']"


def test_safe_repr_never_echoes_a_secret() -> None:
    assert safe_repr("postgres://admin:hunter2@db/app") == "'postgres://admin:***@db/app'"
    assert "hunter2" not in safe_repr({"password": "hunter2", "user": "x"})
    long_url = "postgres://admin:" + "Q" * 500 + "@db/app"  # the cut must not show half the password
    assert "QQ" not in safe_repr(long_url)


def test_safe_repr_cuts_long_values_and_says_how_long() -> None:
    shown = safe_repr("x" * 100_000)
    assert len(shown) < 100 and shown.endswith("(100000 characters)")
    assert len(safe_repr(list(range(100_000)))) <= 60


def test_safe_repr_of_hostile_values_is_cheap() -> None:
    bomb = yaml.safe_load(
        "a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
        )
    )
    for value in (bomb, 10**100_000, "é" * 10_000_000, float("nan")):
        started = time.perf_counter()
        shown = safe_repr(value)
        assert len(shown) <= 100 and time.perf_counter() - started < 1.0


# --- log lines ------------------------------------------------------------------------------------


@pytest.fixture(params=["logfmt", "json"])
def captured_log(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logsetup.JsonFormatter() if request.param == "json" else logsetup.LogfmtFormatter())
    logger = logging.getLogger("autoglm_exporter.test_redact")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)


def test_nothing_logged_carries_a_secret(captured_log: io.StringIO) -> None:
    logger = logging.getLogger("autoglm_exporter.test_redact")
    logger.info("connecting with PGPASSWORD=hunter2", extra={"dsn": "redis://:topsecret@h:6379"})
    logger.warning("started", extra={"cmdline": "vllm serve --api-key abc123def --port 8000"})
    logger.error(
        "redis at default:b4reSecret@10.0.0.7:6379 is down", extra={"next": "redis-cli -a b4reSecret"}
    )
    try:
        raise ValueError("bad --password s3cr3t-pw")
    except ValueError:
        logger.exception("failed", extra={"count": 3})
    text = captured_log.getvalue()
    for secret in ("hunter2", "topsecret", "abc123def", "s3cr3t-pw", "b4reSecret"):
        assert secret not in text
    assert "PGPASSWORD=***" in text and "--api-key ***" in text and "redis://:***@h:6379" in text


def test_a_field_named_like_a_line_field_does_not_replace_it(captured_log: io.StringIO) -> None:
    logging.getLogger("autoglm_exporter.test_redact").warning("changed", extra={"level": "debug", "ts": "x"})
    line = captured_log.getvalue().strip()
    if line.startswith("{"):
        fields = json.loads(line)
        assert (fields["level"], fields["field_level"], fields["field_ts"]) == ("warn", "debug", "x")
        assert fields["ts"].endswith("Z")
    else:
        assert line.startswith("ts=20") and "level=warn" in line
        assert "field_level=debug" in line and "field_ts=x" in line

"""Hostile config files: every one gives a clear error with its path and exit 2, never a traceback,
a hang or gigabytes of memory; what check-config accepts, the daemon runs; no secret is echoed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from autoglm_exporter.config import ConfigError, load_config, parse_config

from .conftest import FIXTURES, REPO, check_config

ALIAS_BOMB = "\n".join(
    [
        "a: &a [x, x, x, x, x, x, x, x, x, x]",
        *(f"{n}: &{n} [{', '.join(['*' + p] * 10)}]" for p, n in zip("abcdefg", "bcdefgh", strict=True)),
    ]
)

# file content -> a piece of the one error line it must give
HOSTILE = {
    "interval_inf.yml": ("global: {interval: .inf}", "global.interval: must be a finite duration"),
    "interval_huge.yml": ("global: {interval: 100000000000000}", "global.interval: must be at most 24h"),
    "timeout_nan.yml": ("global: {timeout: .nan}", "global.timeout: must be a finite duration"),
    "jitter_nan.yml": ("global: {jitter: .nan}", "global.jitter: must be a finite duration"),
    "probe_timeout_huge.yml": (
        "targets: [{name: a, url: 'http://127.0.0.1:1/', timeout: 99999999999h}]",
        "targets[0].timeout: must be at most 10m",
    ),
    "duplicate_key.yml": ("targets: []\ntargets: [{name: a}]\n", "duplicate key 'targets'"),
    "deep.yml": ("a: " + "[" * 20000 + "]" * 20000, "nested deeper than 64 levels"),
    "alias_bomb.yml": (
        ALIAS_BOMB,
        "line 5, column 36: an alias here expands the document to more than 100000",
    ),
    "alias_bomb_in_body.yml": (
        "targets: [{name: a, module: inference, url: 'http://127.0.0.1:1/', body: "
        + json.dumps({"k": "v"})
        + "}]\n"
        + ALIAS_BOMB,
        "line 6, column 36: an alias here expands the document to more than 100000 values",
    ),
    "recursive_alias.yml": ("a: &a [1, *a]", "line 1, column 11: an alias inside the node it names"),
    "many_values.yml": (
        "[" + ",".join(["1"] * 100_001) + "]",
        "line 1, column 200002: the document holds more",
    ),
    "huge_number.yml": ("redis: [{name: r, db: " + "9" * 5000 + "}]", "a value cannot be read"),
    "bool_interval.yml": ("global: {interval: yes}", "global.interval: must be a duration"),
    "list_for_mapping.yml": ("global: [1, 2]", "global: must be a mapping"),
    "null_service.yml": ("services: [null]", "services[0]: must be a mapping"),
    "bad_depends.yml": (
        "services: [{name: a, match: {port: 1}, depends_on: [nowhere]}]",
        "services[0].depends_on: no redis, engine or service named 'nowhere'",
    ),
    "self_depends.yml": (
        "services: [{name: a, match: {port: 1}, depends_on: [a]}]",
        "services[0].depends_on: a service cannot depend on itself",
    ),
    "password_and_bearer.yml": (
        "targets: [{name: a, url: 'http://127.0.0.1:1/', password_env: P, bearer_token_env: TOKEN}]",
        "targets[0].bearer_token_env: give a bearer token or a password, not both",
    ),
    "int_key.yml": ("1: 2", "top-level keys must be strings"),
}


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    for name, (content, _) in HOSTILE.items():
        (folder / name).write_text(content)
    (folder / "not_utf8.yml").write_bytes(b"global:\n  interval: \xff\xfe10s\n")
    (folder / "too_big.yml").write_text("# padding\n" * 200_000)
    return folder


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_each_hostile_file_is_one_clear_error(hostile_dir: Path, name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(hostile_dir / name))
    assert any(HOSTILE[name][1] in error for error in caught.value.errors), caught.value.errors


def test_file_limits_are_checked_before_parsing(hostile_dir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(hostile_dir / "not_utf8.yml"))
    assert caught.value.errors == ["line 2, column 13: not UTF-8 text: byte 0xff at offset 20"]
    with pytest.raises(ConfigError) as caught:
        load_config(str(hostile_dir / "too_big.yml"))  # 10 bytes a line: the limit is in line 104858
    assert caught.value.errors == ["line 104858, column 7: the file is longer than 1048576 bytes"]
    with pytest.raises(ConfigError) as caught:
        parse_config("# padding\n" * 200_000)  # text handed over, not a file: the same limit and line
    assert caught.value.errors == ["line 104858, column 7: the document is longer than 1048576 bytes"]


@pytest.mark.parametrize(
    "name", ["deep.yml", "alias_bomb.yml", "not_utf8.yml", "huge_number.yml", "too_big.yml"]
)
def test_check_config_and_run_exit_2_without_a_traceback(hostile_dir: Path, name: str) -> None:
    checked = check_config(hostile_dir / name)
    assert checked.returncode == 2
    assert f"bad config {hostile_dir / name}" in checked.stderr
    assert "Traceback" not in checked.stderr
    started = subprocess.run(
        [sys.executable, "-m", "autoglm_exporter", f"--config.file={hostile_dir / name}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 2
    assert "Traceback" not in started.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["check-config", "{path}"],
        ["--config.file={path}", "--web.listen-address=127.0.0.1:0"],
        ["doctor", "--config.file={path}"],
    ],
    ids=["check-config", "run", "doctor"],
)
def test_a_config_file_that_never_ends_is_an_error_not_a_hang(tmp_path: Path, command: list[str]) -> None:
    """A FIFO no one writes (or a file on a hung mount): reading it blocks forever. Start-up,
    check-config and doctor say so and exit 2, as a reload fails."""
    fifo = tmp_path / "autoglm.yml"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-m", "autoglm_exporter", *(part.format(path=fifo) for part in command)],
        capture_output=True,
        text=True,
        timeout=120,  # bounded: without the read's deadline this hung until killed
    )
    assert done.returncode == 2, done.stderr
    assert f"reading {fifo} did not return within 5s" in done.stderr
    assert "Traceback" not in done.stderr


def test_error_messages_never_echo_secrets_or_whole_values() -> None:
    secret = "hunter2-Sup3rS3cret-Passw0rd"
    long_value = "x" * 5000
    text = yaml.safe_dump(
        {
            "targets": [{"name": "a", "url": f"ftp://admin:{secret}@db.internal/"}],
            "global": {"interval": long_value},
        }
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    message = str(caught.value)
    assert secret not in message
    assert "targets[0].url: must not hold credentials" in message  # refused before any excerpt
    assert long_value not in message and len(message) < 400


def test_what_check_config_accepts_the_defaults_resolve_to_runnable_values() -> None:
    config = parse_config("global: {interval: 24h, timeout: 1h, jitter: 0}")
    for name in ("system", "probe", "environment"):
        resolved = config.collector(name)
        assert 0 < resolved.interval <= 86400 and 0 < resolved.timeout <= 3600


def test_config_schema_describes_every_key_and_accepts_the_shipped_examples() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "autoglm_exporter", "config-schema"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert printed.returncode == 0, printed.stderr
    schema = json.loads(printed.stdout)
    validator = jsonschema.Draft202012Validator(schema)
    readme = (REPO / "README.md").read_text()
    example = readme.split("## Configuration", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    for document in (yaml.safe_load(example), yaml.safe_load((FIXTURES / "configs/good.yml").read_text())):
        assert list(validator.iter_errors(document)) == []
    typo = list(validator.iter_errors({"global": {"intervall": "10s"}}))
    assert typo and "intervall" in typo[0].message  # editors flag unknown keys too
    assert set(schema["properties"]) >= {"global", "services", "targets", "redis", "forensics", "diagnosis"}

"""The config file: defaults that match the seed, strict validation, every error with its path."""

from __future__ import annotations

import subprocess
import sys

import pytest

from autoglm_exporter.config import ConfigError, default_config, load_config, parse_config

from .conftest import FIXTURES, check_config

CONFIGS = FIXTURES / "configs"

EMPTY = "the file holds no settings (it is empty or only comments); write {} to run the built-in defaults"

BAD_CONFIGS = {
    "unknown_keys.yml": [
        "colectors: unknown key (did you mean collectors?)",
        "global.intervall: unknown key (did you mean interval?)",
        "services[0].match.cmd: unknown key (did you mean cmdline?)",
    ],
    "bad_values.yml": [
        "global.interval: must be a duration like 10s, 500ms or 1m, got '-1s'",
        "global.timeout: must be > 0",
        "services[0].match.cmdline: invalid regular expression: missing ), unterminated subpattern at position 0",
        "services[0].match.port: must be a TCP port 1-65535, got 70000",
        "services[1].name: is required",
        "services[1].match: needs at least one of cmdline, exe, pidfile, port",
        "services[2].name: duplicate name 'api'",
        "services[3].name: must start with a letter or _ and hold only letters, digits, _ . -",
        "collectors.system.enabled: must be true or false, got 'yes'",
        "collectors.system.interval: must be a duration like 10s, 500ms or 1m, got 'soon'",
    ],
    "not_a_mapping.yml": ["top level must be a mapping"],
    "bad_yaml.yml": ["line 3, column 11: invalid YAML: mapping values are not allowed here"],
    "empty.yml": [EMPTY],
    "only_comments.yml": [EMPTY],
    "every_error_of_an_item.yml": [
        "services[0].name: must start with a letter or _ and hold only letters, digits, _ . -",
        "services[0].match: needs at least one of cmdline, exe, pidfile, port",
        "targets[0].module: must be one of inference, openai_chat, http, tcp, got 'grpc'",
        "targets[0].url: must be an http:// or https:// URL, or HOST:PORT for module tcp",
        "targets[1]: give bearer_token_env or bearer_token_file, not both",
        "targets[1].url: must be an http:// or https:// URL, got 'ftp://x'",
        "targets[1].timeout: must be a duration like 10s, 500ms or 1m, got 'forever'",
        "targets[1].body: only the inference and openai_chat modules send a body",
        "redis[0].db: must be a whole number from 0 to 1000000, got -1",
        "redis[0].queues[0].typo: unknown key (did you mean type?)",
        "redis[0].queues[0].group: is required for type stream_pending",
    ],
    "directories.yml": [
        "redis[0].password_file: is a directory, not a file",
        "logs[0].path: is a directory, not a file",
        "forensics.directory: exists and is not a directory",
    ],
}


def test_defaults_watch_the_seed_setup() -> None:
    config = default_config()
    services = {s.name: s for s in config.services}
    assert services["open-autoglm"].port == 8080
    assert services["vllm"].port == 8000
    assert config.interval == 10.0
    assert all(config.collector(name).enabled for name in ("system", "process"))
    assert load_config(None) == config


def test_good_file_is_read_with_units_and_inheritance() -> None:
    config = load_config(str(CONFIGS / "good.yml"))
    assert (config.interval, config.timeout, config.jitter) == (5.0, 2.5, 0.0)
    assert config.collector("system").interval == 60.0
    assert config.collector("system").timeout == 2.5  # inherited from global
    assert config.collector("process").timeout == 3.0
    api, engine = config.services
    assert api.match.port == 8080 and api.port == 8080  # expected port defaults to the matched one
    assert api.include_children
    assert engine.match.pidfile == "/run/vllm.pid" and engine.port == 8000


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_file_reports_every_error_with_its_path(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(CONFIGS / name))
    assert caught.value.errors == BAD_CONFIGS[name]


def test_missing_file_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="cannot read file: No such file or directory"):
        load_config("/nonexistent/autoglm.yml")


def test_empty_services_list_watches_no_service() -> None:
    assert parse_config("services: []").services == ()


def test_an_empty_mapping_runs_the_defaults_on_purpose(tmp_path) -> None:
    config = tmp_path / "autoglm.yml"
    config.write_text("# the built-in defaults\n{}\n")
    assert load_config(str(config)) == default_config()


def test_a_log_path_that_is_a_directory_stops_the_daemon_at_start() -> None:
    started = subprocess.run(
        [sys.executable, "-m", "autoglm_exporter", f"--config.file={CONFIGS / 'directories.yml'}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 2
    assert "logs[0].path: is a directory, not a file" in started.stderr


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_check_config_command_exits_2_and_prints_all_errors(name: str) -> None:
    run = check_config(CONFIGS / name)
    assert run.returncode == 2
    for error in BAD_CONFIGS[name]:
        assert error in run.stderr


def test_check_config_command_accepts_a_good_file() -> None:
    run = check_config(CONFIGS / "good.yml")
    assert run.returncode == 0, run.stderr
    assert "OK" in run.stdout and "api, engine" in run.stdout


def test_the_readme_example_config_is_valid() -> None:
    readme = (FIXTURES.parent.parent / "README.md").read_text()
    example = readme.split("## Configuration", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    config = parse_config(example, "README.md")
    assert [t.module for t in config.targets] == ["inference", "openai_chat"]
    assert config.redis[0].queues[1].group == "workers"
    assert config.logs[1].trace

"""Property-based: whatever document or value a config holds, the loader answers with a valid
config or a ConfigError (never another exception), and check-config with exit 0 or 2."""

from __future__ import annotations

import string
import subprocess
import sys
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoglm_exporter.config import ConfigError, parse_config

KEYS = st.sampled_from(
    [
        "global", "paths", "collectors", "services", "targets", "redis", "engines", "logs", "gpu",
        "forensics", "environment", "diagnosis", "name", "match", "url", "module", "timeout",
        "interval", "jitter", "port", "cmdline", "queues", "key", "type", "depends_on", "expect",
        "status", "tls", "body", "enabled", "hang_after", "confirm_readings", "x",
    ]
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=string.printable, max_size=30),
    st.sampled_from(["10s", "500ms", "1m", "-1s", "0", "http://127.0.0.1:1/", "a:1", "(", ".*", "list"]),
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.one_of(KEYS, st.integers()), children, max_size=5)
    ),
    max_leaves=30,
)

# A valid base config whose every field is then replaced by random values, one kind at a time.
FIELDS = {
    ("global", "interval"): SCALARS,
    ("global", "jitter"): SCALARS,
    ("forensics", "hang_after"): SCALARS,
    ("forensics", "max_bytes"): SCALARS,
    ("diagnosis", "confirm_readings"): SCALARS,
    ("gpu", "nvml"): SCALARS,
    ("paths", "proc"): SCALARS,
}


def _accepts_or_refuses(text: str) -> None:
    try:
        parse_config(text)
    except ConfigError as exc:
        assert exc.errors and all(isinstance(line, str) and line for line in exc.errors)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS)
def test_any_yaml_document_is_a_config_or_a_config_error(document: object) -> None:
    _accepts_or_refuses(yaml.safe_dump(document))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(FIELDS)), st.data())
def test_any_value_of_any_field_is_a_config_or_a_config_error(
    field: tuple[str, str], data: st.DataObject
) -> None:
    section, key = field
    value = data.draw(FIELDS[field])
    _accepts_or_refuses(yaml.safe_dump({section: {key: value}}))
    target = {"name": "t", "url": "http://127.0.0.1:1/", key: value}
    _accepts_or_refuses(
        yaml.safe_dump({"targets": [target], "services": [{"name": "s", "match": {"port": value}}]})
    )


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    _accepts_or_refuses(text)


@settings(max_examples=8, deadline=None)
@given(DOCUMENTS)
def test_check_config_answers_0_or_2_for_any_document(tmp_path_factory, document: object) -> None:
    path: Path = tmp_path_factory.mktemp("doc") / "autoglm.yml"
    path.write_text(yaml.safe_dump(document))
    run = subprocess.run(
        [sys.executable, "-m", "autoglm_exporter", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode in (0, 2), run.stderr
    assert "Traceback" not in run.stderr

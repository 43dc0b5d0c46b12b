"""The bounded (layer, reason) set is the one source: links, the README and the metrics agree on it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autoglm_exporter.diagnosis import REASONS
from autoglm_exporter.diagnosis.model import Link

README = Path(__file__).resolve().parent.parent / "README.md"


def test_a_link_with_a_misspelt_reason_fails_at_once() -> None:
    with pytest.raises(ValueError, match="engine_stalld"):
        Link("engine", "stall", False, "stalled", reason="engine_stalld")


def test_a_link_in_an_unknown_layer_fails_at_once() -> None:
    with pytest.raises(ValueError, match="stalls"):
        Link("engine", "stalls", False, "stalled", reason="engine_stalled")


def test_a_broken_link_must_say_why() -> None:
    with pytest.raises(ValueError, match="needs a reason"):
        Link("engine", "stall", False, "stalled")


def test_every_known_reason_makes_a_link() -> None:
    for layer, reasons in REASONS.items():
        for reason in reasons:
            assert Link("x", layer, False, "broken", reason=reason).reason == reason


def test_the_readme_reason_table_lists_exactly_the_known_reasons() -> None:
    table = README.read_text().split("| layer | reasons |", 1)[1].split("\n\n", 1)[0]
    listed: dict[str, set[str]] = {}
    for row in table.splitlines()[2:]:
        layer, reasons = (cell.strip() for cell in row.strip("|").split("|", 1))
        # A reason is a code span at the start of a list item; words in parentheses explain it.
        listed[layer] = set(re.findall(r"(?:^|, )`([a-z_]+)`", re.sub(r"\([^()]*\)", "", reasons)))
    assert listed == {layer: set(reasons) for layer, reasons in REASONS.items()}

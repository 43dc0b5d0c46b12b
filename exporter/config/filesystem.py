"""Checks of the files a config names that can be made when it is read: a path that must name a
file names a directory (or the reverse). A path that does not exist yet is fine (a log appears
later, a capture directory is made); what exists in the wrong kind would run watching nothing.

Like `references`, they read the raw YAML tree defensively, so they are reported together with
the value errors of the same file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import Any

from .errors import Loc, Problem

_FILE_KEYS = ("password_file", "bearer_token_file")  # secrets, in any item of these sections
_SECTIONS_WITH_SECRETS = ("targets", "redis")


def check(raw: dict[str, Any]) -> list[Problem]:
    problems = [
        Problem(loc, "is a directory, not a file") for loc, path in _files(raw) if _is(path, stat.S_ISDIR)
    ]
    directory = _get(raw, "forensics", "directory")
    if isinstance(directory, str) and _exists(directory) and not _is(directory, stat.S_ISDIR):
        problems.append(Problem(("forensics", "directory"), "exists and is not a directory"))
    return problems


def _files(raw: dict[str, Any]) -> Iterator[tuple[Loc, Any]]:
    """Every path the config names that must be a file, with where it is named."""
    for index, log in _items(raw, "logs"):
        yield ("logs", index, "path"), log.get("path")
    for section in _SECTIONS_WITH_SECRETS:
        for index, item in _items(raw, section):
            for key in _FILE_KEYS:
                yield (section, index, key), item.get(key)
    for index, target in _items(raw, "targets"):
        yield ("targets", index, "tls", "ca_file"), _get(target, "tls", "ca_file")
    baselines = _get(raw, "environment", "baselines")
    for service, path in baselines.items() if isinstance(baselines, dict) else ():
        yield ("environment", "baselines", str(service)), path


def _items(raw: dict[str, Any], section: str) -> Iterator[tuple[int, dict[str, Any]]]:
    items = raw.get(section)
    for index, item in enumerate(items if isinstance(items, list) else []):
        if isinstance(item, dict):
            yield index, item


def _get(raw: Any, *keys: str) -> Any:
    for key in keys:
        raw = raw.get(key) if isinstance(raw, dict) else None
    return raw


def _exists(path: str) -> bool:
    try:
        os.stat(path)
    except (OSError, ValueError):
        return False
    return True


def _is(path: Any, kind: Any) -> bool:
    if not isinstance(path, str) or not path:
        return False
    try:
        return bool(kind(os.stat(path).st_mode))
    except (OSError, ValueError):  # missing, unreadable, or a NUL in the path (reported elsewhere)
        return False

# ruff: noqa: UP031 -- %-formatting on purpose: the service's Python may be older than f-strings.
"""The environment probe: a program run INSIDE the service's own interpreter, never imported there.

take.py runs `python -B -c <this file's text>` with the service's interpreter and environment;
it prints one JSON object: the interpreter's version and prefix, the installed distributions the
service would import (the first of a name on sys.path wins), and the dependency conflicts
`pip check` would report. That interpreter may lack our package and anything outside the
standard library (it uses `packaging` only when the service has it), and may be old: this file
stands alone, imports nothing of ours, and keeps to what Python 3.5 runs: no f-strings, no
walrus, no variable annotations (type comments instead), annotations quoted so that none is
evaluated.
"""

import json
import os
import re
import sys
import typing

if typing.TYPE_CHECKING:
    from typing import Any

    Found = dict[str, tuple[str, list[str]]]  # canonical name -> (version, requirements)

NO_METADATA = "importlib.metadata is not available (Python older than 3.8)"
NO_PACKAGING = "packaging is not importable by the service's Python: conflicts unknown"


def canonical(name: "str") -> "str":
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(metadata: "Any") -> "Found":
    """Every distribution on sys.path, the first of each name (the one that is imported)."""
    found = {}  # type: Found
    for dist in metadata.distributions():
        try:
            name, version = dist.metadata["Name"], dist.version
        except Exception:  # a broken dist-info: not installed as far as imports go
            continue
        if name and version and canonical(name) not in found:
            found[canonical(name)] = (version, dist.requires or [])
    return found


def requirement_class() -> "Any":
    """packaging's Requirement, from the service's packaging or pip's vendored copy; None without."""
    for module in ("packaging.requirements", "pip._vendor.packaging.requirements"):
        try:
            return __import__(module, fromlist=["Requirement"]).Requirement
        except Exception:  # not there, or broken: try the next one
            pass
    return None


def conflicts(found: "Found", requirement: "Any") -> "list[str]":
    """What `pip check` reports: requirements not installed, or installed in a version that misses."""
    problems = set()
    for key in sorted(found):
        version, requires = found[key]
        for line in requires:
            try:
                problem = conflict(key, version, requirement(line), found)
            except Exception:  # a requirement line packaging cannot read: pip skips it too
                continue
            if problem:
                problems.add(problem)
    return sorted(problems)


def conflict(key: "str", version: "str", req: "Any", found: "Found") -> "str | None":
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        return None
    dependency = found.get(canonical(req.name))
    if dependency is None:
        return "%s %s requires %s, which is not installed." % (key, version, canonical(req.name))
    if not req.specifier.contains(dependency[0], prereleases=True):
        return "%s %s has requirement %s, but you have %s %s." % (
            key,
            version,
            req,
            canonical(req.name),
            dependency[0],
        )
    return None


def probe() -> "dict[str, Any]":
    out = {
        "version": "%d.%d.%d" % tuple(sys.version_info[:3]),
        "implementation": sys.implementation.name,
        "prefix": sys.prefix,
        "base_prefix": getattr(sys, "base_prefix", sys.prefix),
        "packages": None,
        "conflicts": None,
        "errors": [],
    }  # type: dict[str, Any]
    try:
        from importlib import metadata
    except ImportError:
        out["errors"].append(NO_METADATA)
        return out
    found = installed(metadata)
    out["packages"] = {key: found[key][0] for key in sorted(found)}
    requirement = requirement_class()
    if requirement is None:
        out["errors"].append(NO_PACKAGING)
    else:
        out["conflicts"] = conflicts(found, requirement)
    return out


if __name__ == "__main__":
    # `-c` puts the working directory first on sys.path: the service's packages, not whatever
    # lies in the exporter's working directory, are what counts.
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    sys.stdout.write(json.dumps(probe()))

"""What changed between two environment snapshots, in plain words, and which parts drifted.

Each change is a line a human reads ("torch 2.3.1 → 2.4.0") tagged with the part of the
environment it belongs to (one of DRIFT_COMPONENTS, or "machine" / "service" / "snapshot" for
changes that are not drift). A part unknown in one snapshot is "not compared", never a change.
Environment values are shown through the log redactor: a snapshot written by an older exporter
may hold what today's would mask.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..logs.redact import redact
from .take import check_snapshot

DRIFT_COMPONENTS = ("packages", "python", "model_files", "env", "gpu_driver", "conflicts")
SHA_SHOWN = 12  # hex digits of a digest shown in a diff line

Change = tuple[str, str]  # (component, the line that says what changed)

# How a changed key reads: (removed, added, changed).
PACKAGE_WORDS = (
    "package {key} removed (was {before})",
    "package {key} added ({after})",
    "{key} {before} → {after}",
)
ENV_WORDS = ("{key} unset (was {before})", "{key} set to {after} (was unset)", "{key} {before} → {after}")


def diff_snapshots(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What changed from a to b, in plain words, in a stable order."""
    return [line for _, line in _changes(a, b)]


def drift_components(a: dict[str, Any], b: dict[str, Any]) -> dict[str, bool]:
    """For each of DRIFT_COMPONENTS: whether it changed from a to b (unknown parts never drift)."""
    changed = {component for component, _ in _changes(a, b)}
    return {component: component in changed for component in DRIFT_COMPONENTS}


def _changes(a: dict[str, Any], b: dict[str, Any]) -> list[Change]:
    check_snapshot(a)
    check_snapshot(b)
    out: list[Change] = []
    machine_a, machine_b = a.get("machine") or {}, b.get("machine") or {}
    for key, label in (("hostname", "host"), ("kernel", "kernel")):
        if machine_a.get(key) != machine_b.get(key):
            out.append(("machine", f"{label} {machine_a.get(key)} → {machine_b.get(key)}"))
    service_a, service_b = a.get("service"), b.get("service")
    if service_a and service_b:
        out += _service_changes(service_a, service_b)
    elif service_a or service_b:
        which = "first" if service_a else "second"
        out.append(("snapshot", f"only the {which} snapshot has a service part"))
    out += _gpu_changes(a.get("gpu"), b.get("gpu"))
    out += _model_changes(a.get("model_dirs") or {}, b.get("model_dirs") or {})
    return out


# --- the service part ------------------------------------------------------------------------


def _service_changes(a: dict[str, Any], b: dict[str, Any]) -> list[Change]:
    out: list[Change] = []
    if a.get("pid") != b.get("pid"):
        out.append(("service", f"service pid {a.get('pid')} → {b.get('pid')}"))
    out += _python_changes(a, b)
    out += _keyed_changes("packages", "packages", a.get("packages"), b.get("packages"), PACKAGE_WORDS)
    out += _conflict_changes(a.get("conflicts"), b.get("conflicts"))
    out += _keyed_changes("env", "environment variables", a.get("env"), b.get("env"), ENV_WORDS, _shown)
    return out


def _python_changes(a: dict[str, Any], b: dict[str, Any]) -> list[Change]:
    python_a, python_b = a.get("python"), b.get("python")
    if not python_a or not python_b:
        return _unknown("python", python_a, python_b)
    compared = (
        ("python", python_a.get("implementation"), python_b.get("implementation")),
        ("python", python_a.get("version"), python_b.get("version")),
        ("python executable", a.get("executable"), b.get("executable")),
        ("python environment", python_a.get("prefix"), python_b.get("prefix")),
    )
    return [("python", f"{label} {before} → {after}") for label, before, after in compared if before != after]


def _keyed_changes(
    component: str,
    what: str,
    a: dict[str, str] | None,
    b: dict[str, str] | None,
    words: tuple[str, str, str],
    shown: Callable[[str | None], str] = str,
) -> list[Change]:
    """One line per key whose value differs, in key order, worded by `words`: the templates for a
    key removed, added, or changed ({key}, {before}, {after})."""
    if a is None or b is None:
        return _unknown(what, a, b)
    removed, added, changed = words
    out: list[Change] = []
    for key in sorted(set(a) | set(b)):
        before, after = a.get(key), b.get(key)
        if before != after:
            template = removed if after is None else added if before is None else changed
            out.append((component, template.format(key=key, before=shown(before), after=shown(after))))
    return out


def _conflict_changes(a: list[str] | None, b: list[str] | None) -> list[Change]:
    if a is None or b is None:
        return _unknown("dependency conflicts", a, b)
    new = [("conflicts", f"new dependency conflict: {c}") for c in sorted(set(b) - set(a))]
    resolved = [("conflicts", f"dependency conflict resolved: {c}") for c in sorted(set(a) - set(b))]
    return new + resolved


def _unknown(what: str, a: Any, b: Any) -> list[Change]:
    if (a is None) == (b is None):
        return []
    which = "first" if a is None else "second"
    return [("snapshot", f"{what} not compared: unknown in the {which} snapshot")]


# --- the machine's GPUs and the model files ------------------------------------------------------

_GPU_LABELS = {"driver_version": "GPU driver", "cuda_driver_version": "CUDA driver", "names": "GPUs"}


def _gpu_changes(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[Change]:
    if a is None or b is None:
        return []
    out = []
    known = [key for key in _GPU_LABELS if key in a or key in b]
    others = sorted((set(a) | set(b)) - set(_GPU_LABELS))
    for key in known + others:
        if a.get(key) != b.get(key):
            label = _GPU_LABELS.get(key, f"GPU {key}")
            out.append(("gpu_driver", f"{label} {_listed(a.get(key))} → {_listed(b.get(key))}"))
    return out


def _model_changes(a: dict[str, Any], b: dict[str, Any]) -> list[Change]:
    out: list[Change] = []
    directories = sorted(set(a) | set(b))
    for directory in directories:
        if directory not in a or directory not in b:
            which = "first" if directory in a else "second"
            out.append(("snapshot", f"model directory {directory} only in the {which} snapshot"))
            continue
        files_a, files_b = a[directory].get("files") or {}, b[directory].get("files") or {}
        for relative in sorted(set(files_a) | set(files_b)):
            name = relative if len(directories) == 1 else f"{directory}/{relative}"
            change = _model_file_change(name, files_a.get(relative), files_b.get(relative))
            if change is not None:
                out.append(("model_files", change))
    return out


def _model_file_change(name: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> str | None:
    """How one model file changed: by digest when both have one, else by size."""
    if after is None:
        return f"model file {name} removed"
    if before is None:
        return f"model file {name} added ({after.get('size')} bytes)"
    if before.get("sha256") and after.get("sha256"):
        if before["sha256"] == after["sha256"]:
            return None
        old, new = before["sha256"][:SHA_SHOWN], after["sha256"][:SHA_SHOWN]
        return f"model file {name} changed (sha256 {old}… → {new}…)"
    if before.get("size") != after.get("size"):
        return f"model file {name} changed size ({before.get('size')} → {after.get('size')} bytes)"
    return None


def _shown(value: str | None) -> str:
    return redact(value) if value else '""'


def _listed(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) or "none"
    return str(value)

"""One-shot commands for a human at the terminal: capture, profile, snapshot, diff.

They find the service the way the daemon does (the config's match rules) and use the same code
as the daemon, so what a human gets by hand is what an alert would have shown.
"""

from __future__ import annotations

import sys

from ..config import Config
from ..core.hangwatch import HangWatch
from ..forensics import CaptureError, profile
from ..linux.processes import ProcfsUnreadable, ServiceMatcher
from ..snapshot import diff_snapshots, read_snapshot, take_snapshot, write_snapshot

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class ServiceNotFound(Exception):
    pass


def main_pid(config: Config, service: str) -> int:
    """The service's main (oldest) process, found by its configured rules."""
    chosen = [s for s in config.services if s.name == service]
    if not chosen:
        known = ", ".join(s.name for s in config.services) or "none"
        raise ServiceNotFound(f"no service named {service!r} in the config (known: {known})")
    try:
        found = ServiceMatcher(tuple(chosen), config.proc_root).current().main_pid(service)
    except ProcfsUnreadable as exc:
        raise ServiceNotFound(str(exc)) from exc
    if found is None:
        raise ServiceNotFound(f"service {service} has no running process")
    return found


def capture(config: Config, service: str) -> int:
    try:
        pid = main_pid(config, service)
    except ServiceNotFound as exc:
        print(f"autoglm-exporter capture: {exc}", file=sys.stderr)
        return EXIT_USAGE
    evidence = HangWatch(config.forensics).capture_now(service, pid, "cli")
    if evidence.analysis is None or evidence.capture is None:
        print(f"capture of {service} (pid {pid}) failed: {evidence.error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{service} (pid {pid}): {evidence.analysis.summary}")
    for thread in evidence.analysis.threads:
        print(f"  {thread.state:8} {thread.description}")
    print(f"saved: {evidence.capture.path}")
    return EXIT_OK


def record_profile(config: Config, service: str, seconds: float, output: str) -> int:
    try:
        pid = main_pid(config, service)
        path = profile(pid, seconds, output, py_spy=config.forensics.py_spy)
    except ServiceNotFound as exc:
        print(f"autoglm-exporter profile: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CaptureError as exc:
        print(f"profile of {service} failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"flame graph of {service} (pid {pid}, {seconds:g} s): {path}")
    return EXIT_OK


def snapshot(config: Config, service: str | None, model_dirs: list[str], output: str) -> int:
    try:
        pid = main_pid(config, service) if service else None
    except ServiceNotFound as exc:
        print(f"autoglm-exporter snapshot: {exc}", file=sys.stderr)
        return EXIT_USAGE
    taken = take_snapshot(pid, config.proc_root, model_dirs or config.environment.model_dirs)
    write_snapshot(taken, output)
    packages = (taken.get("service") or {}).get("packages") or {}
    print(f"snapshot of {service or 'this machine'} written to {output} ({len(packages)} packages)")
    return EXIT_OK


def diff(before: str, after: str) -> int:
    try:
        changes = diff_snapshots(read_snapshot(before), read_snapshot(after))
    except (OSError, ValueError) as exc:
        print(f"autoglm-exporter diff: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for line in changes:
        print(line)
    if not changes:
        print("no differences")
    return EXIT_FAILED if changes else EXIT_OK

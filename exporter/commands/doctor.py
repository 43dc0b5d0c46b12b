"""`autoglm-exporter doctor`: every enabled collector once, through the same runner, then the chain.

Exit 0 when every link is healthy, 1 when one is broken, 2 when the config is bad.

One reading cannot say since when a link is broken, nor what happened before. When an exporter
runs (`--exporter.url`, by default the local one), doctor adds its verdict with since-when and
its timeline; otherwise it says plainly that this is a one-shot reading.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from ..base.hostport import HostPort
from ..collectors import build_collectors
from ..config import ConfigError, load_config
from ..core.daemon import Options, read_at_start
from ..core.runner import CollectorRunner
from ..core.store import Store
from ..diagnosis import Diagnosis, Link, chains_of, diagnose, to_dict
from ..logs.redact import redact, redact_data
from ..logs.urls import display_url
from ..web.server import ListenAddressError, parse_listen_address

EXIT_OK, EXIT_BROKEN, EXIT_BAD_CONFIG = 0, 1, 2
DEFAULT_EXPORTER_URL = "http://127.0.0.1:9877"
EXPORTER_TIMEOUT = 3.0  # seconds: a running exporter answers /api/diagnosis from memory
TIMELINE_SHOWN = 10


def local_exporter_url(listen_address: str) -> str:
    """Where an exporter started with the same --web.listen-address answers on this machine."""
    try:
        host, port = parse_listen_address(listen_address)
    except ListenAddressError:
        return DEFAULT_EXPORTER_URL
    if host == "0.0.0.0":  # parse_listen_address's word for all interfaces
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://{HostPort(host, port)}"


_MARKS = {True: ("✔", "\033[32m"), False: ("✘", "\033[31m"), None: ("?", "\033[33m")}


@dataclass(frozen=True)
class Running:
    """What a running exporter says, or why it could not be asked."""

    url: str  # without credentials
    diagnosis: dict[str, Any] | None = None
    error: str | None = None


def run_doctor(
    options: Options, as_json: bool = False, color: bool = False, exporter_url: str | None = None
) -> int:
    try:
        named = options.config_file or "the built-in defaults"
        config = read_at_start(lambda: load_config(options.config_file), named)
    except ConfigError as exc:
        print(redact(str(exc)), file=sys.stderr)
        return EXIT_BAD_CONFIG
    store = Store()
    collectors = build_collectors(config, options.collector_overrides)
    store.set_collectors(c.name for c in collectors)
    runners = [CollectorRunner(c, store, config.collector(c.name).timeout) for c in collectors]
    threads = [threading.Thread(target=r.run_once, name=f"doctor-{r.name}") for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    published = store.published()
    result = diagnose(
        published.facts,
        published.health,
        observed_at=published.observed_at,
        chains=chains_of(config),
        hang_after=config.forensics.hang_after,
    )
    running = ask_running(exporter_url or local_exporter_url(options.listen_address))
    print(render_json(result, running) if as_json else render_text(result, color, running))
    return EXIT_OK if result.healthy else EXIT_BROKEN


def ask_running(url: str, timeout: float = EXPORTER_TIMEOUT) -> Running:
    """GET /api/diagnosis of a running exporter; user:password in the URL is sent as basic auth."""
    shown = display_url(url)
    parts = urlsplit(url)
    request = urllib.request.Request(shown.rstrip("/") + "/api/diagnosis")
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(pair).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Running(shown, diagnosis=json.loads(response.read(4 * 1024 * 1024)))
    except urllib.error.HTTPError as exc:
        why = {401: "it asks for a password (user:password@ in --exporter.url)", 503: "it has no verdict yet"}
        return Running(shown, error=why.get(exc.code, f"HTTP {exc.code}"))
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Running(shown, error=f"nothing answers ({reason})")
    except ValueError:
        return Running(shown, error="it answers, but not with a diagnosis")


def render_json(result: Diagnosis, running: Running | None = None) -> str:
    report = to_dict(result)
    if running is not None:
        report["running_exporter"] = {"url": running.url, "error": running.error}
        if running.diagnosis is not None:
            report["running_exporter"] |= {
                "chains": running.diagnosis.get("chains", []),
                "history": running.diagnosis.get("history", []),
            }
    return json.dumps(redact_data(report), indent=2)


def render_text(result: Diagnosis, color: bool, running: Running | None = None) -> str:
    def paint(ok: bool | None, text: str) -> str:
        mark, code = _MARKS[ok]
        return f"{code}{mark} {text}\033[0m" if color else f"{mark} {text}"

    lines = ["autoglm-exporter doctor: the chain, first link first", ""]
    layer = None
    for link in result.links:
        if link.layer != layer:
            layer = link.layer
            lines.append(f"{layer}")
        lines.append("  " + paint(link.ok, f"{link.name}: {link.summary}"))
    lines.append("")
    lines += _verdict_lines(result.verdict, paint)
    if running is not None:
        lines += [""] + _running_lines(running)
    return "\n".join(redact(line) for line in lines)


def _verdict_lines(verdict: Link | None, paint: Callable[[bool | None, str], str]) -> list[str]:
    if verdict is None:
        return [paint(True, "verdict: healthy, every link answers")]
    lines = [paint(False, f"verdict: {verdict.layer} / {verdict.reason}: {verdict.name}: {verdict.summary}")]
    lines += [f"  evidence: {line}" for line in verdict.evidence]
    if verdict.next_command:
        lines.append(f"  next: {verdict.next_command}")
    return lines


def _running_lines(running: Running) -> list[str]:
    if running.diagnosis is None:
        return [
            f"This is a one-shot reading: it cannot say since when, nor what happened before. "
            f"No running exporter to ask at {running.url}: {running.error} "
            "(--exporter.url names one)."
        ]
    lines = [f"The running exporter at {running.url} says:"]
    for chain in running.diagnosis.get("chains", []):
        verdict = chain.get("verdict")
        named = f"{verdict['layer']} / {verdict['reason']}: {verdict['summary']}" if verdict else "healthy"
        lines.append(f"  {chain.get('service')}: {named}, {chain.get('since_text')}")
    history = running.diagnosis.get("history", [])
    if history:
        lines.append(f"  timeline (the last {min(len(history), TIMELINE_SHOWN)}, oldest first):")
        for change in history[-TIMELINE_SHOWN:]:
            state = f"{change['layer']} / {change['reason']}" if change.get("reason") else "ok"
            lines.append(
                f"    {change['at_text']} {change['kind']} {change['name']}: {state}: {change['summary']}"
            )
    else:
        lines.append("  timeline: nothing changed since it started")
    return lines

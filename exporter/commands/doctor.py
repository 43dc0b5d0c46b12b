"""`autoglm-exporter doctor`: every enabled collector once, through the same runner, then the chain.

Exit 0 when every link is healthy, 1 when one is broken, 2 when the config is bad.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable

from ..collectors import build_collectors
from ..config import ConfigError, load_config
from ..core.daemon import Options
from ..core.runner import CollectorRunner
from ..core.store import Store
from ..diagnosis import Diagnosis, Link, diagnose, to_dict

EXIT_OK, EXIT_BROKEN, EXIT_BAD_CONFIG = 0, 1, 2

_MARKS = {True: ("✔", "\033[32m"), False: ("✘", "\033[31m"), None: ("?", "\033[33m")}


def run_doctor(options: Options, as_json: bool = False, color: bool = False) -> int:
    try:
        config = load_config(options.config_file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
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
    result = diagnose(store.facts(), store.health())
    print(render_json(result) if as_json else render_text(result, color))
    return EXIT_OK if result.healthy else EXIT_BROKEN


def render_json(result: Diagnosis) -> str:
    return json.dumps(to_dict(result), indent=2)


def render_text(result: Diagnosis, color: bool) -> str:
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
    return "\n".join(lines)


def _verdict_lines(verdict: Link | None, paint: Callable[[bool | None, str], str]) -> list[str]:
    if verdict is None:
        return [paint(True, "verdict: healthy, every link answers")]
    lines = [paint(False, f"verdict: {verdict.layer} / {verdict.reason}: {verdict.name}: {verdict.summary}")]
    lines += [f"  evidence: {line}" for line in verdict.evidence]
    if verdict.next_command:
        lines.append(f"  next: {verdict.next_command}")
    return lines

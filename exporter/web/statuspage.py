"""The status page at `/`: the verdict of each service with since when, the chain drawn as coloured
links, the evidence, the incident timeline, last errors.

Everything shown comes from the world (log lines, error messages, URLs) and is hostile input:
every value passes through the redactor, then html.escape. The page refreshes itself, needs no JavaScript, and
loads nothing from outside.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from typing import Any

from .. import __version__
from ..base.health import CollectorHealth
from ..diagnosis import LAYERS, ChainVerdict, Change, Diagnosis, Link
from ..diagnosis.model import clock, since_text
from ..logs.redact import redact

REFRESH_SECONDS = 10
HISTORY_SHOWN = 30  # newest changes on the page; /api/diagnosis has them all

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2330;background:#f6f7f9}
h1{font-size:1.3rem;margin:0 0 1rem}
.verdict{padding:1rem 1.2rem;border-radius:8px;margin-bottom:1.2rem;color:#fff}
.verdict.ok{background:#2e7d32}.verdict.broken{background:#c62828}
.verdict h2{margin:0 0 .4rem;font-size:1.15rem}.verdict .since{font-weight:bold;margin-bottom:.3rem}
.verdict ul{margin:.4rem 0 .2rem 1.2rem;padding:0}
code{background:rgba(0,0,0,.08);padding:.1rem .3rem;border-radius:4px;white-space:pre-wrap}
.verdict code{background:rgba(255,255,255,.18)}
.chain{display:flex;gap:.5rem;align-items:stretch;flex-wrap:wrap;margin-bottom:1.2rem}
.layer{flex:1;min-width:10rem;background:#fff;border-radius:8px;border-top:6px solid #9e9e9e;padding:.6rem}
.layer.ok{border-color:#2e7d32}.layer.broken{border-color:#c62828}.layer.unknown{border-color:#f9a825}
.layer h3{margin:0 0 .4rem;font-size:.95rem;text-transform:uppercase;letter-spacing:.05em}
.arrow{align-self:center;color:#9e9e9e;font-size:1.4rem}
.link{font-size:.85rem;margin:.3rem 0}.link .mark{font-weight:bold;margin-right:.3rem}
.link.ok .mark{color:#2e7d32}.link.broken .mark{color:#c62828}.link.unknown .mark{color:#f9a825}
table{border-collapse:collapse;background:#fff;font-size:.85rem}
td,th{padding:.3rem .6rem;border-bottom:1px solid #e0e0e0;text-align:left}
section{margin-bottom:1.2rem}footer{font-size:.8rem;color:#666}
"""

_MARK = {True: "✔", False: "✘", None: "?"}


def _shown(text: str) -> str:
    """A value as the page shows it: secrets redacted, then escaped."""
    return html.escape(redact(text))


def _state(ok: bool | None) -> str:
    return {True: "ok", False: "broken", None: "unknown"}[ok]


def render(
    diagnosis: Diagnosis | None,
    health: Mapping[str, CollectorHealth],
    telemetry_path: str = "/metrics",
    newest_capture: Mapping[str, Any] | None = None,
    now: float | None = None,
) -> str:
    now = time.time() if now is None else now
    esc = _shown
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>",
        "<title>autoglm-exporter status</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>autoglm-exporter: the inference chain</h1>",
    ]
    if diagnosis is None:
        parts.append("<div class='verdict broken'><h2>No diagnosis yet: collectors are starting</h2></div>")
    else:
        several = len(diagnosis.chains) > 1
        parts += [_verdict(chain, several, now, first=n == 0) for n, chain in enumerate(diagnosis.chains)]
        parts.append(_chain(diagnosis.links, dict(diagnosis.link_since)))
        parts.append(_history(diagnosis.history))
        parts.append(_recent_errors(diagnosis.recent_errors))
    parts.append(_newest_capture(newest_capture))
    parts.append(_collectors(health))
    metrics = esc(telemetry_path)
    parts.append(
        f"<footer>autoglm-exporter {esc(__version__)} · <a href='{metrics}'>{metrics}</a> · "
        "<a href='/api/diagnosis'>/api/diagnosis</a> · <a href='/api/captures'>/api/captures</a> (stacks) · "
        "<a href='/-/healthy'>/-/healthy</a> · "
        "<a href='/-/ready'>/-/ready</a> · <a href='/-/log-level'>/-/log-level</a> · "
        f"refreshes every {REFRESH_SECONDS} s</footer></body></html>"
    )
    return "\n".join(parts)


def _verdict(chain: ChainVerdict, several: bool, now: float, first: bool) -> str:
    esc = _shown
    whose = f"{esc(chain.service)}: " if several else ""
    anchor = " id='verdict'" if first else ""
    since = f"<div class='since'>{esc(since_text(chain.healthy, chain.since, now))}</div>"
    verdict = chain.verdict
    if verdict is None:
        return (
            f"<div class='verdict ok'{anchor} data-service='{esc(chain.service)}'>"
            f"<h2>{whose}Healthy: every link of the chain answers</h2>{since}</div>"
        )
    evidence = "".join(f"<li>{esc(line)}</li>" for line in verdict.evidence)
    command = f"<p>Next: <code>{esc(verdict.next_command)}</code></p>" if verdict.next_command else ""
    hurt = "users are hurt" if chain.users_hurt else "users are still served"
    return (
        f"<div class='verdict broken'{anchor} data-service='{esc(chain.service)}'>"
        f"<h2>{whose}{esc(verdict.layer)} / {esc(verdict.reason)}: {esc(verdict.name)}</h2>{since}"
        f"<div>{esc(verdict.summary)} ({hurt})</div><ul>{evidence}</ul>{command}</div>"
    )


def _history(changes: tuple[Change, ...]) -> str:
    if not changes:
        return "<section id='history'><h3>Timeline</h3><p>nothing changed since the start</p></section>"
    esc = _shown
    rows = "".join(
        f"<tr><td>{esc(clock(c.at))}</td><td>{esc(c.kind)}</td><td>{esc(c.name)}</td>"
        f"<td>{esc(f'{c.layer} / {c.reason}' if c.reason else 'ok')}</td>"
        f"<td>{esc(c.summary)}</td></tr>"
        for c in reversed(changes[-HISTORY_SHOWN:])
    )
    return (
        "<section id='history'><h3>Timeline (newest first)</h3><table><tr><th>when</th><th>what</th>"
        f"<th>name</th><th>state</th><th>summary</th></tr>{rows}</table></section>"
    )


def _chain(links: tuple[Link, ...], since: Mapping[str, float | None]) -> str:
    esc = _shown
    boxes = []
    for layer in LAYERS:
        members = [link for link in links if link.layer == layer]
        if not members:
            continue
        states = [link.ok for link in members]
        state = "broken" if False in states else ("unknown" if None in states else "ok")
        items = "".join(
            f"<div class='link {_state(link.ok)}'><span class='mark'>{_MARK[link.ok]}</span>"
            f"<b>{esc(link.name)}</b>: {esc(link.summary)}"
            + (
                f" <i>(since {esc(clock(since[link.name]))})</i>"
                if link.ok is False and link.name in since
                else ""
            )
            + "</div>"
            for link in members
        )
        boxes.append(
            f"<div class='layer {state}' data-layer='{esc(layer)}'><h3>{esc(layer)}</h3>{items}</div>"
        )
    return "<div class='chain'>" + "<div class='arrow'>→</div>".join(boxes) + "</div>"


def _recent_errors(lines: tuple[str, ...]) -> str:
    if not lines:
        return "<section><h3>Last errors</h3><p>none in the watched logs</p></section>"
    items = "".join(f"<li><code>{_shown(line)}</code></li>" for line in lines)
    return f"<section id='errors'><h3>Last errors</h3><ul>{items}</ul></section>"


def _newest_capture(capture: Mapping[str, Any] | None) -> str:
    if not capture:
        return ""
    esc = _shown
    name = esc(str(capture.get("name", "")))
    return (
        "<section id='capture'><h3>Newest stack capture</h3>"
        f"<p><a href='/api/captures/{name}'>{name}</a>: {esc(str(capture.get('service', '')))}, "
        f"{esc(str(capture.get('reason', '')))}: {esc(str(capture.get('summary', '')))}</p></section>"
    )


def _collectors(health: Mapping[str, CollectorHealth]) -> str:
    esc = _shown
    rows = "".join(
        f"<tr><td>{esc(name)}</td><td>{'ok' if h.success else ('stuck' if h.stuck else 'failing')}</td>"
        f"<td>{h.duration * 1000:.1f} ms</td><td>{esc(h.last_error or '')}</td></tr>"
        for name, h in sorted(health.items())
    )
    return (
        "<section><h3>Collectors</h3><table><tr><th>collector</th><th>state</th><th>last run</th>"
        f"<th>last error</th></tr>{rows}</table></section>"
    )

"""What the HTTP probe kinds (http, inference, openai_chat) share: a fresh client per probe, a
bounded read of the answer, and the checks of its status and body."""

from __future__ import annotations

import functools
import json
import os
import re
import ssl
from typing import Any

import httpx

from ...config import ProbeTarget
from ...config.credentials import SecretError, authorization
from ...logs.redact import redact
from .failures import ProbeFailure
from .timing import Timings

MAX_BODY_BYTES = 1024 * 1024
USER_AGENT = "autoglm-exporter-probe"
EXCERPT_CHARS = 120  # of an answer's body, in a failed probe's message


@functools.lru_cache(maxsize=16)
def _cached_trust(ca_file: str | None, changed: float) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def _trust(ca_file: str | None) -> ssl.SSLContext:
    """The CA store to verify servers with. Loading it costs milliseconds of CPU (holding the GIL
    that scrapes need), so it is built once per file version, not per probe."""
    try:
        changed = os.stat(ca_file).st_mtime if ca_file else 0.0
        return _cached_trust(ca_file, changed)
    except (OSError, ssl.SSLError) as exc:
        raise ProbeFailure("config", f"cannot load CA file {ca_file}: {exc}") from None


def open_client(target: ProbeTarget) -> httpx.AsyncClient:
    try:
        credentials = authorization(target)
    except SecretError as exc:
        raise ProbeFailure("config", str(exc)) from None
    headers = {"User-Agent": USER_AGENT, **target.headers}
    if credentials:
        headers["Authorization"] = credentials
    verify: ssl.SSLContext | bool = False if target.tls_insecure_skip_verify else _trust(target.tls_ca_file)
    timeout = httpx.Timeout(target.timeout, connect=target.connect_timeout)
    # A fresh client (and connection) per probe, no retries, no proxies from the environment:
    # we measure what a client on this machine meets, not what a pool remembers.
    return httpx.AsyncClient(headers=headers, timeout=timeout, verify=verify, trust_env=False)


async def send(client: httpx.AsyncClient, request: httpx.Request, timings: Timings) -> tuple[int, bytes]:
    request.extensions["trace"] = timings.trace
    response = await client.send(request, stream=True)
    timings.status = response.status_code
    try:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise ProbeFailure("bad_body", f"answer larger than {MAX_BODY_BYTES} bytes")
        return response.status_code, bytes(body)
    finally:
        await response.aclose()


def status_ok(target: ProbeTarget, status: int) -> bool:
    return status in target.expect_status if target.expect_status else 200 <= status < 300


def check_answer(target: ProbeTarget, status: int, payload: bytes, default_field: str | None = None) -> None:
    if not status_ok(target, status):
        raise ProbeFailure("http_status", f"HTTP {status}{excerpt(payload)}")
    if target.expect_body_regex and not re.search(
        target.expect_body_regex, payload.decode("utf-8", "replace")
    ):
        raise ProbeFailure("bad_body", f"answer does not match expect.body_regex{excerpt(payload)}")
    wants_json = target.module in ("inference", "openai_chat") or target.expect_json_field
    if not wants_json:
        return
    try:
        document = json.loads(payload)
    except ValueError:
        raise ProbeFailure("bad_body", f"answer is not valid JSON{excerpt(payload)}") from None
    field_path = target.expect_json_field or default_field
    if field_path and not _has_field(document, field_path):
        raise ProbeFailure("bad_body", f"answer has no field {field_path}{excerpt(payload)}")


def excerpt(payload: bytes) -> str:
    """': ' and the start of an answer's body on one line, redacted, for a failure's message."""
    text = " ".join(payload[: EXCERPT_CHARS * 4].decode("utf-8", "replace").split())
    if not text:
        return ""
    text = redact(text)  # before shortening: a cut must not leave half a secret
    return ": " + (text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 3] + "...")


def _has_field(document: Any, dotted: str) -> bool:
    node = document
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True

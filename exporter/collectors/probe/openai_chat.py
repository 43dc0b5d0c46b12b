"""The `openai_chat` probe: ask `/v1/chat/completions` for one token, optionally streamed (timing
the first token). Without a configured model it asks `/v1/models` which one is served; a 404 for a
configured model the server does not list is the probe's misconfiguration (`config`), not the
server's fault."""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit, urlunsplit

import httpx

from ...config import ProbeTarget
from .client import MAX_BODY_BYTES, check_answer, excerpt, send, status_ok
from .failures import ProbeFailure
from .timing import Timings


def streams(target: ProbeTarget) -> bool:
    return target.module == "openai_chat" and target.stream


async def probe(
    client: httpx.AsyncClient, target: ProbeTarget, timings: Timings, models: dict[str, str]
) -> tuple[int | None, float | None]:
    """(status, time to the first token when streamed), or ProbeFailure. `models` remembers the
    model discovered per target, across probes."""
    model = target.model or models.get(target.name) or await _discover_model(client, target, timings, models)
    body = dict(target.body) if isinstance(target.body, dict) else {}
    body.setdefault("model", model)
    body.setdefault("messages", [{"role": "user", "content": "Hello"}])
    body.setdefault("max_tokens", 1)
    body["stream"] = target.stream
    request = client.build_request("POST", target.url, json=body)
    try:
        if target.stream:
            return await _stream_first_token(client, request, timings, target)
        status, payload = await send(client, request, timings)
        if status == 404 and not target.model:
            models.pop(target.name, None)  # the served model changed: ask again next time
        check_answer(target, status, payload, default_field="choices.0")
    except ProbeFailure as failure:
        if failure.reason == "http_status" and timings.status == 404 and target.model:
            await _refuse_unserved(client, target, timings)
        raise
    return status, None


async def _refuse_unserved(client: httpx.AsyncClient, target: ProbeTarget, timings: Timings) -> None:
    """A 404 for the model the probe names, which the server's model list lacks: the probe is
    misconfigured (`config`), the server is fine. Returns when the list has it or is not there."""
    try:
        served = await _served_models(client, target, timings)
    except (ProbeFailure, httpx.HTTPError):
        return
    if target.model not in served:
        listed = ", ".join(served[:5]) + (" ..." if len(served) > 5 else "")
        raise ProbeFailure("config", f"the server does not serve model {target.model!r} (it serves {listed})")


async def _discover_model(
    client: httpx.AsyncClient, target: ProbeTarget, timings: Timings, models: dict[str, str]
) -> str:
    model = (await _served_models(client, target, timings))[0]
    models[target.name] = model
    return model


async def _served_models(client: httpx.AsyncClient, target: ProbeTarget, timings: Timings) -> list[str]:
    """The ids GET /v1/models lists (at least one), else ProbeFailure bad_body."""
    parts = urlsplit(target.url)
    prefix = parts.path.split("/chat/completions")[0] or "/v1"
    models_url = urlunsplit((parts.scheme, parts.netloc, prefix + "/models", "", ""))
    response = await client.get(models_url, extensions={"trace": timings.trace})
    try:
        models = [str(model["id"]) for model in response.json()["data"]]
        if not models:
            raise LookupError("no model")
    except (ValueError, LookupError, TypeError):
        answer = f"HTTP {response.status_code}{excerpt(response.content)}"
        raise ProbeFailure("bad_body", f"GET {prefix}/models gave no model ({answer})") from None
    return models


async def _stream_first_token(
    client: httpx.AsyncClient, request: httpx.Request, timings: Timings, target: ProbeTarget
) -> tuple[int | None, float | None]:
    request.extensions["trace"] = timings.trace
    sent = time.monotonic()
    ttft: float | None = None
    response = await client.send(request, stream=True)
    timings.status = response.status_code
    try:
        if not status_ok(target, response.status_code):
            raise ProbeFailure("http_status", f"HTTP {response.status_code}")
        received = 0
        async for line in response.aiter_lines():
            received += len(line)
            if received > MAX_BODY_BYTES:
                raise ProbeFailure("bad_body", f"stream larger than {MAX_BODY_BYTES} bytes")
            data = line[5:].strip() if line.startswith("data:") else ""
            if not data or data == "[DONE]":
                continue
            try:
                chunk = json.loads(data)
            except ValueError:
                raise ProbeFailure("bad_body", "stream chunk is not JSON") from None
            if ttft is None and isinstance(chunk, dict) and chunk.get("choices"):
                ttft = time.monotonic() - sent
        if ttft is None:
            raise ProbeFailure("bad_body", "stream ended without a generated token")
        return response.status_code, ttft
    finally:
        await response.aclose()

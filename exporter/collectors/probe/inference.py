"""The `inference` probe: the seed's `POST /inference` with its JSON body, as a user sends it; the
answer must be JSON."""

from __future__ import annotations

import httpx

from ...config import INFERENCE_BODY, ProbeTarget
from .client import check_answer, send
from .timing import Timings


async def probe(client: httpx.AsyncClient, target: ProbeTarget, timings: Timings) -> int:
    """The answer's status, or ProbeFailure."""
    body = target.body if target.body is not None else INFERENCE_BODY
    status, payload = await send(client, client.build_request("POST", target.url, json=body), timings)
    check_answer(target, status, payload)
    return status

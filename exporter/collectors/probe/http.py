"""The `http` probe: a GET with expectations (status codes, a body regex, a JSON field)."""

from __future__ import annotations

import httpx

from ...config import ProbeTarget
from .client import check_answer, send
from .timing import Timings


async def probe(client: httpx.AsyncClient, target: ProbeTarget, timings: Timings) -> int:
    """The answer's status, or ProbeFailure."""
    status, payload = await send(client, client.build_request("GET", target.url), timings)
    check_answer(target, status, payload)
    return status

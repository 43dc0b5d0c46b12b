"""The `tcp` probe: resolve HOST:PORT and connect, nothing more."""

from __future__ import annotations

import asyncio
import contextlib
import time

from ...base.hostport import parse_host_port
from ...config import ProbeTarget
from .failures import ProbeFailure
from .timing import Timings


async def probe(target: ProbeTarget, timings: Timings) -> None:
    """Returns once connected, else ProbeFailure, TimeoutError or OSError."""
    where = parse_host_port(target.url)
    await timings.resolve(where.host, where.port)
    timings.marks["connection.connect_tcp.started"] = time.monotonic()
    try:
        async with asyncio.timeout(target.connect_timeout):
            _, writer = await asyncio.open_connection(where.host, where.port)
    except TimeoutError:
        raise ProbeFailure("connect_timeout", f"no connection within {target.connect_timeout:g}s") from None
    timings.mark_connected()
    writer.close()
    with contextlib.suppress(OSError):  # a peer that resets on close still accepted the connection
        await writer.wait_closed()

"""`/admin/fault`: read and set a service's fault over HTTP, optionally behind a bearer token.

    GET  /admin/fault                                  -> 200 the current fault
    POST /admin/fault {"fault": "slow", "seconds": 3}  -> 200 the new fault
                                                          400 unknown fault (with the valid ones)
                                                          409 the service needs a restart first
    401 without `Authorization: Bearer TOKEN` when a token is set (--admin-token or DEMO_ADMIN_TOKEN).

The admin path touches nothing a fault blocks (no Redis, no engine, none of the deadlocked locks),
so it keeps answering while the service itself does not. Fault changes are logged to stderr only,
never to the service's own log file: that file should read like the real service's.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from typing import Any

from .faults import FaultError, FaultState
from .web import BadRequest, Handler

log = logging.getLogger("demo.admin")

PATH = "/admin/fault"
Action = Callable[[], dict[str, Any]]


class Admin:
    def __init__(
        self, faults: FaultState, token: str | None, actions: dict[str, Action] | None = None
    ) -> None:
        """`actions`: what to do once a fault is set (start the deadlock, write the OOM line); what
        an action returns is added to the answer."""
        self.faults = faults
        self._token = token or None
        self.actions = actions or {}

    def handles(self, handler: Handler) -> bool:
        return handler.route.startswith("/admin/")

    def handle(self, handler: Handler) -> None:
        try:
            body = handler.read_body() if handler.command == "POST" else b""
        except BadRequest as exc:
            handler.send_json(exc.status, {"error": str(exc)})
            return
        if not self._authorized(handler.headers.get("Authorization", "")):
            handler.send_json(401, {"error": "admin token required"}, {"WWW-Authenticate": "Bearer"})
            return
        if handler.route != PATH:
            handler.send_json(404, {"error": f"no such admin endpoint; use {PATH}"})
        elif handler.command == "GET":
            handler.send_json(200, self.faults.describe())
        else:  # POST: the handlers have no other do_ method
            status, payload = self._set(body)
            handler.send_json(status, payload)

    def _authorized(self, header: str) -> bool:
        if self._token is None:
            return True
        scheme, _, credentials = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode(), self._token.encode()
        )

    def _set(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            request = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return 400, {"error": 'the body is not JSON; send {"fault": NAME, "seconds": N}'}
        if not isinstance(request, dict):
            return 400, {"error": 'send {"fault": NAME, "seconds": N}'}
        name = request.get("fault")
        try:
            fault = self.faults.set(name, request.get("seconds"))
        except FaultError as exc:
            return exc.status, {"error": str(exc), **exc.details, "current": self.faults.describe()}
        answer = self.faults.describe(fault)
        action = self.actions.get(str(name))
        if action is not None:
            answer.update(action())
        if name in self.faults.events:
            log.warning("%s: fault event %s", self.faults.service, name)
        else:
            extra = f" ({fault.seconds:g}s per request)" if fault.name == "slow" else ""
            log.warning("%s: fault set to %s%s", self.faults.service, fault.name, extra)
        return 200, answer

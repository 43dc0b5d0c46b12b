"""Alertmanager's webhook receiver for tests: a real HTTP server on 127.0.0.1 keeping what it is sent."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from .support import BackgroundHTTPServer


class WebhookReceiver(BackgroundHTTPServer):
    """Use as a context manager; `notifications` are the POSTed bodies, `alerts()` their alerts."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with receiver._lock:
                    receiver.notifications.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._serve(Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.notifications)

    def alerts(self) -> list[dict[str, Any]]:
        return [alert for notification in self.received() for alert in notification["alerts"]]

    def find(self, name: str, status: str, **labels: str) -> dict[str, Any] | None:
        """The latest alert sent with this name, status (firing, resolved) and these labels."""
        wanted = {"alertname": name, **labels}
        for alert in reversed(self.alerts()):
            if alert["status"] == status and all(alert["labels"].get(k) == v for k, v in wanted.items()):
                return alert
        return None


def point_webhooks_at(alertmanager_config: dict[str, Any], url: str) -> None:
    """Every webhook receiver of an Alertmanager config posts to `url` instead."""
    for receiver in alertmanager_config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = url

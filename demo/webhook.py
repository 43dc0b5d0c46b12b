"""An Alertmanager webhook receiver that shows what would have paged someone.

Every notification POSTed to it (any path) is printed to stdout as one JSON line and kept; the last
100 are served at `GET /` (newest last), so `docker compose logs webhook` or a browser shows which
alerts fired and resolved, with their labels and summaries. It only records: no retries, no routing.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import deque
from typing import Any

from .web import BadRequest, Handler, Server, serve

log = logging.getLogger("demo.webhook")

KEEP = 100
MAX_NOTIFICATION_BYTES = 1024 * 1024


class Receiver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._notifications: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self.received = 0

    def record(self, payload: dict[str, Any]) -> dict[str, Any]:
        entry = summarize(payload)
        with self._lock:
            self.received += 1
            entry["seq"] = self.received
            self._notifications.append(entry)
            line = json.dumps(entry, sort_keys=True)
            sys.stdout.write(line + "\n")  # under the lock: lines of two notifications never mix
            sys.stdout.flush()
        return entry

    def recent(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._notifications)


def summarize(payload: dict[str, Any]) -> dict[str, Any]:
    """The parts of an Alertmanager notification (webhook format version 4) a person reads."""
    common = _strings(payload.get("commonLabels"))
    group = _strings(payload.get("groupLabels"))
    alerts: list[dict[str, Any]] = []
    names: set[str] = set()
    for alert in payload.get("alerts", []):
        labels = _strings(alert.get("labels"))
        names.add(labels.get("alertname", ""))
        annotations = _strings(alert.get("annotations"))
        alerts.append(
            {
                "status": str(alert.get("status", "")),
                "alertname": labels.get("alertname", ""),
                "labels": labels,
                "summary": annotations.get("summary", ""),
                "annotations": annotations,
                "starts_at": str(alert.get("startsAt", "")),
                "ends_at": str(alert.get("endsAt", "")),
            }
        )
    alertname = common.get("alertname") or group.get("alertname") or ",".join(sorted(names - {""}))
    return {
        "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "receiver": str(payload.get("receiver", "")),
        "status": str(payload.get("status", "")),
        "alertname": alertname,
        "group_labels": group,
        "common_labels": common,
        "summary": _strings(payload.get("commonAnnotations")).get("summary", ""),
        "alerts": alerts,
    }


def _strings(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


class WebhookHandler(Handler):
    server_version = "demo-webhook"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        receiver: Receiver = self.app
        if self.route == "/health":
            self.send_json(200, {"status": "ok"})
        elif self.route == "/":
            self.send_json(200, receiver.recent())
        else:
            self.send_json(404, {"error": "not found; GET / lists the notifications"})

    def do_POST(self) -> None:  # noqa: N802
        receiver: Receiver = self.app
        try:
            payload = self.read_json(MAX_NOTIFICATION_BYTES)
            if not isinstance(payload, dict):
                raise BadRequest(400, "an Alertmanager notification is a JSON object")
            alerts = payload.get("alerts", [])
            if not isinstance(alerts, list) or not all(isinstance(alert, dict) for alert in alerts):
                raise BadRequest(400, "alerts must be a list of objects")
        except BadRequest as exc:
            log.warning("refused a notification: %s", exc)
            self.send_json(exc.status, {"error": str(exc)})
            return
        entry = receiver.record(payload)
        self.send_json(200, {"status": "received", "seq": entry["seq"]})


def run(host: str, port: int) -> int:
    server = Server((host, port), WebhookHandler, Receiver())
    log.info(
        "demo webhook receiver on http://%s:%d: POST notifications, GET / lists them",
        host,
        server.server_address[1],
    )
    return serve(server, "webhook")

"""The long-running exporter: config, collectors on a schedule, the HTTP server, signals, reload."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..collectors import build_collectors
from ..collectors.base import Collector
from ..config import Config, ConfigError, load_config
from ..diagnosis import derive
from ..diagnosis.startup import StartupTracker
from ..forensics import CaptureNotFound
from ..forensics.hangwatch import HangWatch
from ..metrics.spec import Family
from ..web.server import DEFAULT_MAX_REQUESTS, ExporterHTTPServer, ServerHooks, parse_listen_address
from ..web.webconfig import WebConfig
from .runner import CollectorRunner
from .scheduler import CollectorScheduler
from .store import CollectorHealth, Deriver, Store

log = logging.getLogger(__name__)

SCRAPE_SWITCH_INTERVAL = 0.001  # seconds


@dataclass(frozen=True)
class Options:
    config_file: str | None = None
    listen_address: str = ":9877"
    telemetry_path: str = "/metrics"
    web_config_file: str | None = None
    log_level: str = "info"
    log_format: str = "logfmt"
    collector_overrides: Mapping[str, bool] = field(default_factory=dict)
    max_requests: int = DEFAULT_MAX_REQUESTS  # requests in flight before 503; 0: no limit


class Daemon:
    def __init__(self, options: Options, config: Config, web_config: WebConfig | None) -> None:
        self.options = options
        self.hangwatch = HangWatch(config.forensics, on_change=lambda: self.store.touch())
        self.store = Store(deriver=chain_deriver(self.hangwatch))
        self.scheduler = CollectorScheduler()
        self.runners: dict[str, CollectorRunner] = {}
        self.config = config
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        host, port = parse_listen_address(options.listen_address)
        hooks = ServerHooks(
            reload=self.reload,
            capture=self.capture,
            captures=lambda: [capture.to_dict() for capture in self.hangwatch.store.list()],
            capture_file=self._capture_file,
        )
        self.server = ExporterHTTPServer(
            (host, port), self.store, hooks, options.telemetry_path, web_config, options.max_requests
        )
        self.apply(config)

    def apply(self, config: Config) -> None:
        """Schedule the collectors of `config`, keeping runners whose collector did not change."""
        fresh = build_collectors(config, self.options.collector_overrides)
        runners: dict[str, CollectorRunner] = {}
        for collector in fresh:
            old = self.runners.get(collector.name)
            timeout = config.collector(collector.name).timeout
            if old is not None and _same(old.collector, collector):
                old.timeout = timeout
                runners[collector.name] = old
            else:
                runners[collector.name] = CollectorRunner(collector, self.store, timeout)
        self.runners = runners
        self.config = config
        self.hangwatch.reconfigure(config.forensics)
        self.store.set_collectors(runners)
        jobs = [(runner, config.collector(name).interval) for name, runner in runners.items()]
        self.scheduler.start(jobs, config.jitter)
        log.info("collectors scheduled", extra={"collectors": ",".join(runners), "config": config.source})

    def reload(self) -> tuple[bool, str]:
        """Load the config file again; a bad file keeps the running config."""
        with self._reload_lock:
            try:
                config = load_config(self.options.config_file)
            except ConfigError as exc:
                self.store.set_reload_result(False)
                log.error("config reload failed, keeping the previous config", extra={"error": str(exc)})
                return False, str(exc)
            self.apply(config)
            self.store.set_reload_result(True)
            log.info("config reloaded", extra={"config": config.source})
            return True, "config reloaded"

    def capture(self, service: str) -> tuple[int, str]:
        """POST /api/capture?service=NAME: stacks of the service's main process, in the background."""
        if not self.config.forensics.enabled:
            return 404, "stack captures are disabled (forensics.enabled: false)"
        process = self.store.facts().get("process")
        facts = process.services.get(service) if process is not None else None
        if facts is None:
            return 404, f"no service named {service!r}"
        if facts.main_pid is None:
            return 409, f"service {service} has no running process"
        if not self.hangwatch.request(service, facts.main_pid, "api"):
            return 409, f"a capture of {service} is already running"
        return 202, f"capturing the stacks of {service} (pid {facts.main_pid}); see /api/captures"

    def _capture_file(self, name: str) -> bytes | None:
        try:
            return self.hangwatch.store.read_bytes(name)
        except CaptureNotFound:
            return None

    def request_stop(self) -> None:
        self._stop.set()

    def serve(self, install_signals: bool = True) -> int:
        """Serve until SIGTERM/SIGINT (or request_stop); SIGHUP reloads. Returns the exit code."""
        # Collectors run Python in threads beside the HTTP threads; a scrape waiting for the GIL
        # waits up to the switch interval (5 ms by default), which was the p99 of /metrics.
        sys.setswitchinterval(SCRAPE_SWITCH_INTERVAL)
        if install_signals:
            signal.signal(signal.SIGTERM, lambda *_: self._stop.set())
            signal.signal(signal.SIGINT, lambda *_: self._stop.set())
            signal.signal(signal.SIGHUP, lambda *_: self._reload_requested.set())
        self.server.start_background()
        log.info(
            "listening",
            extra={
                "address": self.options.listen_address,
                "scheme": self.server.scheme,
                "version": __version__,
            },
        )
        while not self._stop.wait(0.2):
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                self.reload()
        log.info("stopping")
        self.scheduler.stop()
        self.server.stop()
        return 0


def chain_deriver(hangwatch: HangWatch) -> Deriver:
    """What the store derives after every publish: stack captures when a service keeps failing,
    the verdict, and start-up times (which need memory)."""
    tracker = StartupTracker()

    def derive_all(facts: dict[str, Any], health: dict[str, CollectorHealth]) -> tuple[list[Family], Any]:
        hangwatch.observe(facts)
        facts = {**facts, "forensics": hangwatch.facts()}
        families, diagnosis = derive(facts, health)
        return families + tracker.observe(facts) + hangwatch.families(), diagnosis

    return derive_all


def _same(old: Collector, new: Collector) -> bool:
    return type(old) is type(new) and old.settings == new.settings

"""The long-running exporter: config, collectors on a schedule, the HTTP server, signals, reload."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from .. import __version__
from ..base.deadline import DeadlinePassed, DeadlineWorker, StillBusy
from ..base.stall import STALL
from ..collectors import build_collectors, declarations
from ..collectors.base import Collector
from ..config import Config, ConfigError, load_config
from ..forensics import CaptureNotFound
from ..linux import subprocesses
from ..web.connections import DEFAULT_MAX_CONNECTIONS
from ..web.server import DEFAULT_MAX_REQUESTS, ExporterHTTPServer, ServerHooks, parse_listen_address
from ..web.webconfig import WebConfig, WebConfigError, build_web_config
from .pipeline import Pipeline
from .runner import CollectorRunner
from .scheduler import CollectorScheduler

log = logging.getLogger(__name__)

SCRAPE_SWITCH_INTERVAL = 0.001  # seconds
# A new state seen by a collector declared read_again_soon (or awaited from it) is read again this
# many seconds after the look that saw it began, instead of an interval later, so an instant
# failure (HTTP 500, refused, a process gone, Redis down, a CUDA OOM line) is named in seconds, one
# that took a whole timeout to see (nvidia-smi hung past its deadline) is looked at again at once,
# and one failed request still changes nothing.
READ_AGAIN_AFTER = 2.0  # seconds
# A reload reads its files (config, web config, the files they name) at most this long: a FIFO or
# a hung mount fails the reload, never holds it (or SIGHUP's reloads) forever. The same bound holds
# at start-up and for the commands that read a config (read_at_start).
CONFIG_READ_TIMEOUT = 5.0  # seconds

T = TypeVar("T")


def read_at_start(read: Callable[[], T], what: str) -> T:
    """read() (config files) within CONFIG_READ_TIMEOUT: a file that never ends (a FIFO, a hung
    mount) is a ConfigError that says so, not a command that hangs without a word."""
    try:
        return DeadlineWorker("config-read").run(read, CONFIG_READ_TIMEOUT, lambda: f"reading {what}")
    except DeadlinePassed as exc:
        raise ConfigError(what, [f"{exc}: a FIFO, or a file on a hung mount?"]) from None


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
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # connections held before 503 and close
    allowed_hosts: str | None = None  # --web.allowed-hosts, comma-separated; None: the default guard


@dataclass(frozen=True)
class World:
    """Everything a config makes, built completely before anything running is touched."""

    config: Config
    web_config: WebConfig | None
    runners: dict[str, CollectorRunner]
    timeouts: dict[str, float]
    jobs: list[tuple[CollectorRunner, float]]


class Daemon:
    def __init__(self, options: Options, config: Config, web_config: WebConfig | None) -> None:
        self.options = options
        # Deadlines and hang thresholds count the exporter's awake time from here on (base/stall.py).
        STALL.start()
        pipeline = Pipeline.build(config)
        self.store, self.hangwatch, self.diagnoser = pipeline.store, pipeline.hangwatch, pipeline.diagnoser
        self.scheduler = CollectorScheduler()
        read_again = frozenset(d.name for d in declarations() if d.read_again_soon)
        self.diagnoser.when_unconfirmed(
            lambda sources: self.scheduler.read_again_soon(sources & read_again, READ_AGAIN_AFTER)
        )
        self.runners: dict[str, CollectorRunner] = {}
        self.config = config
        self._reload_lock = threading.Lock()
        # One thread reads the files: a read still hung holds it, and later reloads fail at once
        # (StillBusy) until it returns, so hung reads never pile up threads.
        self._reader = DeadlineWorker("config-read")
        self._stop = threading.Event()
        self._reload_requested = threading.Event()
        host, port = parse_listen_address(options.listen_address)
        hooks = ServerHooks(
            reload=self.reload,
            capture=self.capture,
            captures=lambda: [capture.to_dict() for capture in self.hangwatch.store.list()],
            capture_file=self._capture_file,
        )
        world = self._build(config, web_config)
        self.server = ExporterHTTPServer(
            (host, port),
            self.store,
            hooks,
            options.telemetry_path,
            web_config,
            options.max_requests,
            max_connections=options.max_connections,
            allowed_hosts=options.allowed_hosts,
        )
        self.scheduler.start([], config.jitter)
        self._swap(world)

    def _build(self, config: Config, web_config: WebConfig | None) -> World:
        """The collectors of `config`, keeping the runner (and its state) of every collector whose
        settings did not change; a changed one gets a runner that succeeds the old one (its state
        of unchanged targets, instances and logs goes on). Touches nothing that runs: any
        exception leaves the old world."""
        runners: dict[str, CollectorRunner] = {}
        timeouts: dict[str, float] = {}
        for collector in build_collectors(config, self.options.collector_overrides):
            old = self.runners.get(collector.name)
            timeout = config.collector(collector.name).timeout
            keep = old is not None and _same(old.collector, collector)
            runners[collector.name] = (
                old if old is not None and keep else CollectorRunner(collector, self.store, timeout, old)
            )
            timeouts[collector.name] = timeout
        jobs = [(runner, config.collector(name).interval) for name, runner in runners.items()]
        return World(config, web_config, runners, timeouts, jobs)

    def _swap(self, world: World) -> None:
        """Make `world` the running one, in one step for the schedule."""
        for name, runner in world.runners.items():
            runner.timeout = world.timeouts[name]
        self.store.set_collectors(world.runners)
        # Before the schedule starts the new runners: their first reading is the one after these.
        runs = {name: health.runs for name, health in self.store.health().items()}
        replaced = [name for name, old in self.runners.items() if world.runners.get(name) not in (None, old)]
        self.diagnoser.collectors_replaced({name: runs.get(name, 0) for name in replaced})
        self.scheduler.update(world.jobs, world.config.jitter)
        self.hangwatch.reconfigure(world.config.forensics)
        self.diagnoser.reconfigure(world.config)
        self.server.use_web_config(world.web_config)
        for name, runner in self.runners.items():
            if world.runners.get(name) is not runner:
                runner.retire()
        self.runners, self.config = world.runners, world.config
        log.info(
            "collectors scheduled",
            extra={"collectors": ",".join(world.runners), "config": world.config.source},
        )

    def reload(self) -> tuple[bool, str]:
        """Read the config (and web config) files again and apply them as one transaction: any
        failure, of any kind, keeps the running config collecting and says why."""
        with self._reload_lock:
            try:
                config, web_config = self._reader.run(
                    self._read_files, CONFIG_READ_TIMEOUT, lambda: f"reading {self.options.config_file}"
                )
                world = self._build(config, web_config)
            except (ConfigError, WebConfigError) as exc:
                return self._reload_failed(str(exc))
            except (DeadlinePassed, StillBusy) as exc:
                return self._reload_failed(f"config reload failed: {exc}")
            except Exception as exc:  # whatever it is, the running config must go on
                log.exception("config reload failed unexpectedly")
                return self._reload_failed(f"reload failed: {type(exc).__name__}: {str(exc)[:200]}")
            previous = World(self.config, self.server.web_config, self.runners, {}, [])
            try:
                self._swap(world)
            except Exception as exc:
                log.exception("applying the reloaded config failed, going back to the previous one")
                self._swap(self._build(previous.config, previous.web_config))
                return self._reload_failed(f"reload failed while applying: {type(exc).__name__}")
            self.store.set_reload_result(True)
            log.info("config reloaded", extra={"config": config.source})
            return True, "config reloaded"

    def _read_files(self) -> tuple[Config, WebConfig | None]:
        return load_config(self.options.config_file), build_web_config(self.options.web_config_file)

    def _reload_failed(self, message: str) -> tuple[bool, str]:
        self.store.set_reload_result(False)
        log.error("config reload failed, keeping the previous config", extra={"error": message})
        return False, message

    def capture(self, service: str) -> tuple[int, str]:
        """POST /api/capture?service=NAME: stacks of the service's main process, in the background."""
        if not self.config.forensics.enabled:
            return 404, "stack captures are disabled (forensics.enabled: false)"
        process = self.store.facts().get("process")
        facts = process.services.get(service) if process is not None else None
        if facts is None:
            return 404, f"no service named {service[:64]!r}"
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

    def serve(self, install_signals: bool = True) -> int:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads. Returns the exit code.

        Stopping never waits for what is in flight: collector runs are abandoned in their daemon
        worker threads, commands they started (nvidia-smi, py-spy) are killed with their process
        group, and the server stops accepting."""
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
        reloading: threading.Thread | None = None
        while not self._stop.wait(0.2):
            # A reload runs beside this loop (a config on a hung mount must not delay SIGTERM);
            # SIGHUPs that arrive meanwhile make one more reload after it, not one thread each.
            if self._reload_requested.is_set() and (reloading is None or not reloading.is_alive()):
                self._reload_requested.clear()
                reloading = threading.Thread(target=self.reload, name="reload", daemon=True)
                reloading.start()
        log.info("stopping")
        self.scheduler.stop()
        killed = subprocesses.kill_all()
        self.server.stop()
        log.info("stopped", extra={"commands_killed": killed})
        return 0


def _same(old: Collector, new: Collector) -> bool:
    return type(old) is type(new) and old.settings == new.settings

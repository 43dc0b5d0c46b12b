"""Command line: run (the default), check-config, doctor, version.

Flags follow the Prometheus exporters' style and each can also be set by an environment variable:
AUTOGLM_EXPORTER_ + the flag name upper-cased with dots and dashes as underscores
(--web.listen-address -> AUTOGLM_EXPORTER_WEB_LISTEN_ADDRESS). A flag beats its variable.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from . import __version__
from .collectors import collector_names
from .commands import tools
from .config import ConfigError, json_schema, load_config, parse_duration
from .core.daemon import Daemon, Options, read_at_start
from .web import logsetup
from .web.connections import DEFAULT_MAX_CONNECTIONS
from .web.hosts import AllowedHostsError, HostPolicy
from .web.server import DEFAULT_MAX_REQUESTS, ListenAddressError
from .web.webconfig import WebConfigError, build_web_config

EXIT_OK, EXIT_BROKEN, EXIT_BAD_CONFIG = 0, 1, 2
DEFAULT_LISTEN_ADDRESS = ":9877"
ENV_PREFIX = "AUTOGLM_EXPORTER_"
COMMANDS = (
    "run", "check-config", "config-schema", "doctor", "capture", "profile", "snapshot", "diff", "version",
)  # fmt: skip

log = logging.getLogger(__name__)


class UsageError(Exception):
    pass


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").upper().replace(".", "_").replace("-", "_")


def _env(flag: str, default: str | None) -> str | None:
    return os.environ.get(env_name(flag), default)


def _env_bool(flag: str) -> bool | None:
    value = os.environ.get(env_name(flag))
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"{env_name(flag)}={value!r}: expected true or false")


@dataclass(frozen=True)
class Flag:
    """A daemon flag: its name, the Options field it fills, its default and its help."""

    name: str
    dest: str
    default: str | None
    help: str
    choices: tuple[str, ...] | None = None
    kind: type = str


DAEMON_FLAGS = (
    Flag(
        "config.file", "config_file", None, "YAML config file; without it the defaults watch the seed's setup"
    ),
    Flag("web.listen-address", "listen_address", DEFAULT_LISTEN_ADDRESS, "address to serve on"),
    Flag("web.telemetry-path", "telemetry_path", "/metrics", "path of the metrics page"),
    Flag("web.config.file", "web_config_file", None, "exporter-toolkit web config: TLS and basic auth"),
    Flag(
        "web.max-requests",
        "max_requests",
        str(DEFAULT_MAX_REQUESTS),
        "requests served at once; more are answered 503 (0: no limit)",
        kind=int,
    ),
    Flag(
        "web.max-connections",
        "max_connections",
        str(DEFAULT_MAX_CONNECTIONS),
        "connections held at once (a thread each); more are answered 503 and closed",
        kind=int,
    ),
    Flag(
        "web.allowed-hosts",
        "allowed_hosts",
        None,
        "host names (comma-separated) requests may name, besides IP addresses, localhost and this "
        "machine's name; given, every request is held to them, /metrics included ('*': any). "
        "Unset: only POST/PUT, and only without basic auth (against DNS rebinding)",
    ),
    Flag("log.level", "log_level", "info", "log level", tuple(logsetup.LEVELS)),
    Flag("log.format", "log_format", "logfmt", "log format, to stderr", logsetup.FORMATS),
)


def _daemon_flags() -> argparse.ArgumentParser:
    """The flags shared by `run` and `doctor`; each can also come from its environment variable."""
    parser = argparse.ArgumentParser(add_help=False)
    for flag in DAEMON_FLAGS:
        default = f" (default {flag.default})" if flag.default is not None else ""
        parser.add_argument(
            f"--{flag.name}",
            dest=flag.dest,
            type=flag.kind,
            choices=list(flag.choices) if flag.choices else None,
            default=_env(flag.name, flag.default),
            help=flag.help + default,
        )
    for name in collector_names():
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            f"--collector.{name}",
            dest=f"collector_{name}",
            action="store_true",
            default=None,
            help=f"enable the {name} collector (default: as in the config file)",
        )
        group.add_argument(
            f"--no-collector.{name}",
            dest=f"collector_{name}",
            action="store_false",
            help=f"disable the {name} collector",
        )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoglm-exporter",
        description="Prometheus exporter for an LLM inference service: measures every link of the chain.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    flags = _daemon_flags()
    config_flag = argparse.ArgumentParser(add_help=False)
    config_flag.add_argument("--config.file", dest="config_file", default=_env("config.file", None))
    commands.add_parser("run", parents=[flags], help="run the exporter (the default command)")
    check = commands.add_parser("check-config", help="validate a config file; exit 2 when it is bad")
    check.add_argument("file")
    commands.add_parser(
        "config-schema", help="print the config file's JSON Schema (for editors: completion and checks)"
    )
    doctor = commands.add_parser(
        "doctor", parents=[flags], help="run every collector once and print the chain"
    )
    doctor.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    doctor.add_argument("--no-color", action="store_true", help="plain text even on a terminal")
    doctor.add_argument(
        "--exporter.url",
        dest="exporter_url",
        default=_env("exporter.url", None),
        help="a running exporter to ask since when and what happened before (default: its listen address)",
    )
    capture = commands.add_parser(
        "capture",
        parents=[config_flag],
        help="take py-spy stacks of a service now and say where threads are stuck",
    )
    capture.add_argument("--service", required=True)
    profile = commands.add_parser(
        "profile", parents=[config_flag], help="record a flame graph SVG with py-spy"
    )
    profile.add_argument("--service", required=True)
    profile.add_argument(
        "--duration", type=_seconds, default=30.0, help="how long to record, e.g. 30s (default)"
    )
    profile.add_argument("-o", "--output", default="profile.svg")
    snapshot = commands.add_parser(
        "snapshot",
        parents=[config_flag],
        help="write the service's environment (packages, CUDA, models) as JSON",
    )
    snapshot.add_argument("--service", help="without it: this machine only")
    snapshot.add_argument("--model-dir", action="append", default=[], help="hash the model files in DIR")
    snapshot.add_argument("-o", "--output", required=True)
    difference = commands.add_parser(
        "diff", help="what changed between two snapshots; exit 1 when something did"
    )
    difference.add_argument("before")
    difference.add_argument("after")
    commands.add_parser("version", help="print the version")
    return parser


def _seconds(text: str) -> float:
    value = parse_duration(text)
    if value is None or not 0 < value <= 24 * 3600:
        raise argparse.ArgumentTypeError(f"expected a duration like 30s or 2m, got {text[:40]!r}")
    return value


def options_from(args: argparse.Namespace) -> Options:
    overrides = {}
    for name in collector_names():
        flag_value = getattr(args, f"collector_{name}")
        value = flag_value if flag_value is not None else _env_bool(f"collector.{name}")
        if value is not None:
            overrides[name] = value
    if args.log_level not in logsetup.LEVELS:
        raise UsageError(f"unknown log level {args.log_level!r}")
    if args.log_format not in logsetup.FORMATS:
        raise UsageError(f"unknown log format {args.log_format!r}")
    if (
        not args.telemetry_path.startswith("/")
        or args.telemetry_path.startswith("/-/")
        or args.telemetry_path == "/"
    ):
        raise UsageError(f"--web.telemetry-path {args.telemetry_path!r}: must be a path like /metrics")
    if args.max_requests < 0:
        raise UsageError(f"--web.max-requests {args.max_requests}: must be 0 (no limit) or more")
    if args.max_connections < 1:
        raise UsageError(f"--web.max-connections {args.max_connections}: must be 1 or more")
    try:
        HostPolicy(allowed_hosts=args.allowed_hosts or "")
    except AllowedHostsError as exc:
        raise UsageError(str(exc)) from None
    values = {flag.dest: getattr(args, flag.dest) for flag in DAEMON_FLAGS}
    return Options(**values, collector_overrides=overrides)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "run")  # `autoglm-exporter --flags` means `autoglm-exporter run --flags`
    args = build_parser().parse_args(argv)
    try:
        if args.command == "version":
            print(f"autoglm-exporter {__version__} (python {platform.python_version()})")
            return EXIT_OK
        if args.command == "check-config":
            return _check_config(args.file)
        if args.command == "config-schema":
            print(json_schema())
            return EXIT_OK
        if args.command in ("capture", "profile", "snapshot", "diff"):
            return _tool(args)
        options = options_from(args)
    except UsageError as exc:
        print(f"autoglm-exporter: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    logsetup.configure(options.log_level, options.log_format)
    if args.command == "doctor":
        from .commands.doctor import run_doctor

        color = not args.no_color and sys.stdout.isatty()
        return run_doctor(options, as_json=args.json, color=color, exporter_url=args.exporter_url)
    return _run(options)


def _tool(args: argparse.Namespace) -> int:
    if args.command == "diff":
        return tools.diff(args.before, args.after)
    try:
        config = read_at_start(lambda: load_config(args.config_file), _named(args.config_file))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.command == "capture":
        return tools.capture(config, args.service)
    if args.command == "profile":
        return tools.record_profile(config, args.service, args.duration, args.output)
    return tools.snapshot(config, args.service, args.model_dir, args.output)


def _named(path: str | None) -> str:
    return path if path is not None else "the built-in defaults"


def _check_config(path: str) -> int:
    try:
        config = read_at_start(lambda: load_config(path), _named(path))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_CONFIG
    enabled = [name for name in collector_names() if config.collector(name).enabled]
    services = ", ".join(s.name for s in config.services) or "none"
    print(f"{path}: OK (collectors: {', '.join(enabled) or 'none'}; services: {services})")
    return EXIT_OK


def _run(options: Options) -> int:
    try:
        config, web_config = read_at_start(
            lambda: (load_config(options.config_file), build_web_config(options.web_config_file)),
            _named(options.config_file),
        )
        daemon = Daemon(options, config, web_config)
    except (ConfigError, WebConfigError, ListenAddressError) as exc:
        log.error("cannot start", extra={"error": str(exc)})
        print(exc, file=sys.stderr)
        return EXIT_BAD_CONFIG
    except OSError as exc:
        log.error("cannot listen", extra={"address": options.listen_address, "error": exc.strerror})
        return EXIT_BROKEN
    code = daemon.serve()
    # Threads still in flight (a probe waiting on a server that never answers, a read stuck in
    # the kernel) are abandoned, not waited for: leave now, whatever the interpreter would join.
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())

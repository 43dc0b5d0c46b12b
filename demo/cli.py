"""Command line of the three demo services; each runs in its own process."""

from __future__ import annotations

import argparse
import os

from .servicelog import log_to_stderr


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True, metavar="{engine,api,webhook}")

    def command(name: str, help_text: str, port: int) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--host", default="127.0.0.1", help="address to bind (containers: 0.0.0.0)")
        sub.add_argument("--port", type=int, default=port)
        sub.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
        return sub

    def admin_token(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--admin-token",
            default=os.environ.get("DEMO_ADMIN_TOKEN") or None,
            help="require `Authorization: Bearer TOKEN` on /admin/ (default: $DEMO_ADMIN_TOKEN; "
            "prefer the variable, a command line is readable by every user)",
        )

    engine = command("engine", "a vLLM look-alike with fault injection", 8000)
    engine.add_argument("--model", default="demo-model", help="the served model id")
    engine.add_argument("--token-delay", type=float, default=0.005, help="seconds per generated token")
    admin_token(engine)

    api = command("api", "the Open-AutoGLM-style API: Redis queue, workers, engine", 8080)
    api.add_argument("--engine-url", default="http://127.0.0.1:8000")
    api.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    api.add_argument("--queue", default="autoglm:requests", help="the Redis list the jobs wait in")
    api.add_argument("--log-file", help="the service's log file (appended to)")
    api.add_argument(
        "--trace-file",
        metavar="PATH",
        help="append each request's trace points (JSON lines: received, queued, dequeued, generated, "
        "done or error) for the exporter's `trace: true` logs; default: no trace",
    )
    api.add_argument("--workers", type=int, default=2)
    api.add_argument(
        "--request-timeout", type=float, default=60.0, help="seconds a request waits for its result"
    )
    api.add_argument(
        "--engine-timeout", type=float, default=60.0, help="seconds a worker waits for the engine"
    )
    admin_token(api)

    command("webhook", "an Alertmanager webhook receiver that prints and keeps notifications", 5001)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    log_to_stderr(args.log_level)
    if args.command == "engine":
        from . import engine

        return engine.run(args.host, args.port, args.model, max(0.0, args.token_delay), args.admin_token)
    if args.command == "api":
        from . import api

        if args.workers < 1 or args.request_timeout <= 0 or args.engine_timeout <= 0:
            parser().error("--workers, --request-timeout and --engine-timeout must be positive")
        return api.run(
            args.host,
            args.port,
            args.engine_url,
            args.redis_url,
            args.queue,
            args.log_file,
            args.workers,
            args.request_timeout,
            args.engine_timeout,
            args.admin_token,
            args.trace_file,
        )
    from . import webhook

    return webhook.run(args.host, args.port)

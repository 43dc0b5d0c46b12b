"""What the dashboards share: the selectors every query starts from, the variables, threshold lines
from config.THRESHOLDS, rate helpers, runbook links, and the panels more than one dashboard shows."""

from __future__ import annotations

from .. import config
from ..alerts.alert import runbook_url
from ..config import RATE_WINDOW, prometheus_duration
from ..grafana import (
    NONE,
    Link,
    Panel,
    State,
    Step,
    Target,
    Variable,
    stat,
    up_down,
)

# Rates that recording rules (rules.py) keep are read from them: computed once, the same numbers
# the alerts and the autoscalers see, over the rules' window W.
W = prometheus_duration(RATE_WINDOW)  # the recording rules' names carry the shipped window
INST = 'instance=~"$instance"'  # the selector every query starts from
SVC = f'{INST}, service=~"$service"'

INSTANCE_VAR = Variable("instance", "Instance", "autoglm_exporter_build_info", "instance")
SERVICE_VAR = Variable("service", "Service", f"autoglm_process_up{{{INST}}}", "service")


def line(key: str, color: str = "red") -> tuple[Step, ...]:
    """The threshold named `key` in config.THRESHOLDS, as a panel threshold."""
    return (Step(config.THRESHOLDS[key], color),)


def rate(metric: str, selector: str, by: str, window: str = "$__rate_interval") -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[{window}]))"


def increase(metric: str, selector: str, by: str, window: str = "$__rate_interval") -> str:
    return f"sum by ({by}) (increase({metric}{{{selector}}}[{window}]))"


def runbook(alert: str) -> Link:
    return Link(f"Runbook: {alert}", runbook_url(alert))


# --- panels more than one dashboard shows ---------------------------------------------------------


def redis_up(width: int) -> Panel:
    return stat(
        "Redis up",
        "Red when a Redis instance does not answer PING in time.",
        (Target(f"autoglm_redis_up{{{INST}}}", "{{redis}}"),),
        NONE,
        mapped=up_down(),
        width=width,
    ).with_links((runbook("AutoglmRedisDown"),))


def engine_up(width: int) -> Panel:
    return stat(
        "Engine up",
        "Red when the inference engine's metrics endpoint does not answer.",
        (Target(f"autoglm_engine_up{{{INST}}}", "{{engine}}"),),
        NONE,
        mapped=up_down(),
        width=width,
    ).with_links((runbook("AutoglmEngineDown"),))


def gpu_available(width: int) -> Panel:
    return stat(
        "GPU available",
        "Whether an NVIDIA GPU could be read; a host without one shows a neutral tile, not an error.",
        (Target(f"autoglm_gpu_available{{{INST}}}", "{{instance}}"),),
        NONE,
        # neutral: a CPU-only host is not broken; a GPU host that cannot read its GPU has
        # AutoglmCollectorFailing for the gpu collector
        mapped=(State(0, "no GPU", "blue"), State(1, "available", "green")),
        width=width,
    )

"""Recording rules: what the alerts, the dashboards and the autoscalers read, computed once per
evaluation. Names follow Prometheus' level:metric:operations convention; a name carries the
shipped window (rate5m) even when the end-to-end test scales the window itself down."""

from __future__ import annotations

from dataclasses import dataclass

from . import config
from .config import RATE_WINDOW, Objective, duration, prometheus_duration

# --- which user-facing service an incident of a link of the chain breaks ----------------------------
#
# One series per (instance, kind, dependency, service): `dependency` is a configured service, Redis
# instance or engine (`kind` says which), `service` the user-facing service that breaks when it
# breaks. Edges come from the exporter's autoglm_service_dependency_info (the config's depends_on);
# a service users call (it has client probes), or that no other service depends on, is its own
# incident; a Redis or an engine no service depends on is an incident of its own name. Alerts about
# a link join the same expression (affected_edges(), inline, not this recorded copy) to carry the
# `service` that Alertmanager groups and inhibits by: Prometheus evaluates the recording group on its
# own schedule, so a recorded join lags the scrape it joins, and right after an exporter restart an
# alert that read it named the wrong service. The recorded copies are for dashboards and queries.
AFFECTED = "instance_dependency:autoglm_affected_service:info"
# The same with one service per link: the only service that depends on it, or, for a link several
# services share, the link's own name. For alerts finer than a link (one per queue, per probe
# target): PromQL cannot pair every queue with every service, so a shared link keeps its name.
SOLE = "instance_dependency:autoglm_sole_service:info"

_DEPENDS_ON = "autoglm_service_dependency_info"
# A probe target of a user-facing service: a client probe, joined for its `service` label.
CLIENT_TARGETS = 'autoglm_probe_target_info{layer="client", service!=""}'


@dataclass(frozen=True)
class LinkKind:
    """A kind of link of the chain: the `kind` of autoglm_service_dependency_info, and the label
    that names a link of that kind (service="...", redis="...", engine="...")."""

    name: str
    # The series a link of this kind has from the exporter's first scrape on, the first one per link.
    series: tuple[str, ...]
    # One thing that every node names alike (several nodes' exporters watch the same Redis under
    # the same name): its fault is one incident however many nodes see it. Engines and processes
    # are per node.
    shared: bool = False


LINK_KINDS = {
    kind.name: kind
    for kind in (
        LinkKind("service", ("autoglm_process_up", CLIENT_TARGETS)),
        LinkKind("redis", ("autoglm_redis_up",), shared=True),
        LinkKind("engine", ("autoglm_engine_up",)),
    )
}


def relabel(expr: str, target: str, source: str) -> str:
    """`expr` with label `target` set to the value of label `source`."""
    return f'label_replace({expr}, "{target}", "$1", "{source}", "(.+)")'


def _set(expr: str, label: str, value: str) -> str:
    return f'label_replace({expr}, "{label}", "{value}", "", "")'


def _own_incident(kind: LinkKind) -> str:
    """Redis instances or engines (named by their kind's label, one series each) no service
    depends on, as edges to a service of their own name."""
    label = kind.name
    links = f"group by (instance, job, {label}) ({kind.series[0]})"
    used = relabel(f'group by (instance, dependency) ({_DEPENDS_ON}{{kind="{label}"}})', label, "dependency")
    orphans = f"({links} unless on (instance, {label}) {used})"
    return _set(relabel(relabel(orphans, "dependency", label), "service", label), "kind", label)


def affected_edges(kind: str | None = None) -> str:
    """AFFECTED's expression: every kind of link, or only links of `kind` (service, redis, engine)."""
    depended_on = relabel(
        f'group by (instance, dependency) ({_DEPENDS_ON}{{kind="service"}})', "service", "dependency"
    )
    process, client = LINK_KINDS["service"].series
    services = f"group by (instance, job, service) ({process})"
    independent = f"({services} unless on (instance, service) {depended_on})"
    called = f"group by (instance, job, service) ({client})"
    own = {
        "service": _set(relabel(f"({independent} or {called})", "dependency", "service"), "kind", "service"),
        "redis": _own_incident(LINK_KINDS["redis"]),
        "engine": _own_incident(LINK_KINDS["engine"]),
    }
    kinds = list(own) if kind is None else [kind]
    edges = _DEPENDS_ON if kind is None else f'{_DEPENDS_ON}{{kind="{kind}"}}'
    parts = [edges, *(own[k] for k in kinds)]
    return "group by (instance, job, kind, dependency, service) (" + " or ".join(parts) + ")"


def sole_edges(kind: str | None = None, affected: str | None = None) -> str:
    """SOLE's expression (of links of `kind` only, if given), reading the edges `affected` (the
    inline expression unless given)."""
    affected = f"({affected_edges(kind)})" if affected is None else affected
    shared = f"(count by (instance, kind, dependency) ({affected}) > 1)"
    alone = f"({affected} unless on (instance, kind, dependency) {shared})"
    named = relabel(
        f"group by (instance, job, kind, dependency) ({affected} and on (instance, kind, dependency) "
        f"{shared})",
        "service",
        "dependency",
    )
    return f"{alone} or {named}"


def link_rules() -> list[tuple[str, str]]:
    return [(AFFECTED, affected_edges()), (SOLE, sole_edges(affected=AFFECTED))]


# --- service level objectives ----------------------------------------------------------------------


def per_service(expr: str) -> str:
    """The sum over every client probe target of each service (all instances together)."""
    return f"sum by (service) ({expr} * on (instance, job, target) group_left (service) {CLIENT_TARGETS})"


def le_matcher(bound: float) -> str:
    """A bucket bound as Prometheus stores it: Go clients write 10, Python's client 10.0."""
    if float(bound).is_integer():
        return f'le=~"{int(bound)}(\\\\.0)?"'
    return f'le="{bound:g}"'


def slo_rule_name(objective: Objective, window: float) -> str:
    return f"service:autoglm_{objective.name}:ratio_rate{prometheus_duration(window)}"


def bad_ratio(objective: Objective, window: float) -> str:
    """The share of bad probes of each service over `window` (0-1)."""
    w = duration(window)
    if objective.threshold is None:
        probes = per_service(f"rate(autoglm_probe_request_duration_seconds_count[{w}])")
        # A service whose probes never failed may have no failure series yet: 0, not no data.
        failures = per_service(f"rate(autoglm_probe_failures_total[{w}])")
        return f"({failures} or {probes} * 0) / {probes}"
    histogram = (
        "autoglm_probe_request_duration_seconds"
        if objective is config.LATENCY
        else "autoglm_probe_first_token_seconds"
    )
    probes = per_service(f"rate({histogram}_count[{w}])")
    bound = le_matcher(config.latency_bucket(objective.threshold))
    fast = per_service(f"rate({histogram}_bucket{{{bound}}}[{w}])")
    return f"1 - {fast} / {probes}"


def slo_rules() -> list[tuple[str, str]]:
    return [
        (slo_rule_name(objective, window), bad_ratio(objective, window))
        for objective in config.OBJECTIVES
        for window in config.slo_windows()
    ]


# --- the rest: autoscaling and dashboards -----------------------------------------------------------

# GPU utilization of each GPU that runs a process of a service, labelled with that service.
_GPU_UTIL_BY_SERVICE = (
    "autoglm_gpu_utilization_ratio * on (instance, gpu) group_right ()"
    ' clamp_max(autoglm_gpu_processes{service!="other"} > 0, 1)'
)


# --- a fleet: replicas of a service on several nodes ---------------------------------------------------
#
# A replica is a service on one instance (one exporter per node); it serves when the exporter there
# says its users are not hurt. The exporter stays per node: what the fleet says is computed here.
REPLICAS = "max by (instance, job, service) (autoglm_diagnosis_users_hurt)"


def serving_elsewhere() -> str:
    """Per replica (instance, service): how many OTHER replicas of the service serve. Absent when no
    replica serves, 0 when only this one does (a single node is never "served elsewhere")."""
    serving = f"count by (service) ({REPLICAS} == 0)"
    return f"{serving} - on (service) group_right () ({REPLICAS} == bool 0)"


def fleet_rules() -> list[tuple[str, str]]:
    return [
        ("service:autoglm_replicas:count", f"count by (service) ({REPLICAS})"),
        ("service:autoglm_replicas_hurt:count", f"sum by (service) ({REPLICAS})"),
        (
            "service:autoglm_probe_success:ratio",
            "avg by (service) (autoglm_probe_success"
            f" * on (instance, job, target) group_left (service) {CLIENT_TARGETS})",
        ),
    ]


def rate_rules() -> list[tuple[str, str]]:
    name, w = prometheus_duration(RATE_WINDOW), duration(RATE_WINDOW)
    return [
        # autoscaling: GPU utilization per service, per node and across the cluster
        (
            "instance_service:autoglm_gpu_utilization_ratio:avg",
            f"avg by (instance, service) ({_GPU_UTIL_BY_SERVICE})",
        ),
        ("service:autoglm_gpu_utilization_ratio:avg", f"avg by (service) ({_GPU_UTIL_BY_SERVICE})"),
        # autoscaling: queues (engine waiting requests, Redis queue depth)
        ("engine:autoglm_engine_requests_waiting:sum", "sum by (engine) (autoglm_engine_requests_waiting)"),
        # max, not sum: every node's exporter reads the same shared queue
        ("queue:autoglm_redis_queue_depth:max", "max by (redis, queue) (autoglm_redis_queue_depth)"),
        # the dashboards (mixin/dashboards/) read these rates and ratios
        (
            "instance_gpu:autoglm_gpu_memory_used:ratio",
            "autoglm_gpu_memory_used_bytes / autoglm_gpu_memory_total_bytes",
        ),
        (
            f"instance:autoglm_system_context_switches_per_cpu:rate{name}",
            f"rate(autoglm_system_context_switches_total[{w}]) / on (instance, job) autoglm_system_cpus",
        ),
        (
            f"instance_service:autoglm_process_context_switches:rate{name}",
            f"sum by (instance, job, service, type) (rate(autoglm_process_context_switches_total[{w}]))",
        ),
        (
            f"instance_service:autoglm_process_cpu_seconds:rate{name}",
            f"sum by (instance, job, service) (rate(autoglm_process_cpu_seconds_total[{w}]))",
        ),
        (
            f"instance_service:autoglm_container_cpu_throttled:ratio_rate{name}",
            # clamp_min: a cgroup without a quota has no periods, 0/0 would be NaN
            f"rate(autoglm_container_cpu_throttled_periods_total[{w}])"
            f" / clamp_min(rate(autoglm_container_cpu_periods_total[{w}]), 1e-9)",
        ),
        (
            f"instance_engine:autoglm_engine_generation_tokens:rate{name}",
            f"rate(autoglm_engine_generation_tokens_total[{w}])",
        ),
        (
            f"instance_target:autoglm_probe_failures:rate{name}",
            f"sum by (instance, job, target, reason) (rate(autoglm_probe_failures_total[{w}]))",
        ),
    ]


# --- energy and GPU time per generated token ------------------------------------------------------------

# The GPUs of a node that run a compute process of a configured service, once per such service.
_SERVING_GPUS = 'clamp_max(autoglm_gpu_processes{service!="other"} > 0, 1)'
ENERGY = f"instance_service:autoglm_gpu_energy_joules:rate{prometheus_duration(RATE_WINDOW)}"
GPU_BUSY = f"instance_service:autoglm_gpu_busy_seconds:rate{prometheus_duration(RATE_WINDOW)}"
TOKENS = f"instance_engine:autoglm_engine_generation_tokens:rate{prometheus_duration(RATE_WINDOW)}"


def per_token_rules() -> list[tuple[str, str]]:
    """Joules and GPU-busy seconds per generated token: the GPUs' energy counter (NVML's total
    energy) and utilization over the engines' generation-token counter (vllm:generation_tokens_total,
    re-exported as autoglm_engine_generation_tokens_total). The exporter does not say which GPU an
    engine computes on, so an engine is charged the node's GPUs that run a configured service's
    process, and a service the tokens of the node's engines: exact for one engine per node, the
    fleet's shape. No tokens in the window: no ratio (not infinity)."""
    name, w = prometheus_duration(RATE_WINDOW), duration(RATE_WINDOW)
    energy = f"rate(autoglm_gpu_energy_joules_total[{w}])"
    busy = f"avg_over_time(autoglm_gpu_utilization_ratio[{w}])"
    serving = '(sum by (instance, gpu) (autoglm_gpu_processes{service!="other"}) > 0)'
    generating = f"({TOKENS} > 0)"
    node_tokens = f"sum by (instance, job) {generating}"

    def per_engine(per_gpu: str) -> str:
        node = f"sum by (instance, job) ({per_gpu} and on (instance, gpu) {serving})"
        return f"{node} / on (instance, job) group_right () {generating}"

    def per_service(recorded: str) -> str:
        where = f"group by (instance, job, service) ({recorded})"
        tokens = f"{node_tokens} * on (instance, job) group_right () {where}"
        return f"sum by (service) ({recorded}) / sum by (service) ({tokens})"

    return [
        (
            ENERGY,
            f"sum by (instance, job, service) ({energy} * on (instance, gpu) group_right () {_SERVING_GPUS})",
        ),
        (
            GPU_BUSY,
            f"sum by (instance, job, service) ({busy} * on (instance, gpu) group_right () {_SERVING_GPUS})",
        ),
        (f"instance_engine:autoglm_engine_energy_per_token_joules:ratio_rate{name}", per_engine(energy)),
        (f"instance_engine:autoglm_engine_gpu_seconds_per_token:ratio_rate{name}", per_engine(busy)),
        (f"service:autoglm_energy_per_token_joules:ratio_rate{name}", per_service(ENERGY)),
        (f"service:autoglm_gpu_seconds_per_token:ratio_rate{name}", per_service(GPU_BUSY)),
    ]


def recording_rules() -> list[tuple[str, str]]:
    """The recording group's rules, in evaluation order. The SLO ratios are recorded in the group of
    the burn-rate alerts instead (mixin/alerts/objectives.py), so that an alert reads the ratio
    recorded in the same evaluation, never the one before."""
    return link_rules() + fleet_rules() + rate_rules() + per_token_rules()


# Every recording rule at the shipped windows, for the modules that only need names and expressions.
RECORDING_RULES: list[tuple[str, str]] = recording_rules() + slo_rules()


def recording_group() -> dict:
    return {
        "name": "autoglm.recording",
        "rules": [{"record": name, "expr": expr} for name, expr in recording_rules()],
    }

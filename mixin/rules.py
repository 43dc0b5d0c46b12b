"""Recording rules: what the dashboards and the autoscalers read, computed once per evaluation.

Names follow Prometheus' level:metric:operations convention."""

from .config import RATE_WINDOW

W = RATE_WINDOW

# GPU utilization of each GPU that runs a process of a service, labelled with that service.
_GPU_UTIL_BY_SERVICE = (
    "autoglm_gpu_utilization_ratio * on (instance, gpu) group_right ()"
    ' clamp_max(autoglm_gpu_processes{service!="other"} > 0, 1)'
)

RECORDING_RULES: list[tuple[str, str]] = [
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
    # the dashboards (mixin/dashboards.py) read these rates and ratios
    (
        "instance_gpu:autoglm_gpu_memory_used:ratio",
        "autoglm_gpu_memory_used_bytes / autoglm_gpu_memory_total_bytes",
    ),
    (
        f"instance:autoglm_system_context_switches_per_cpu:rate{W}",
        f"rate(autoglm_system_context_switches_total[{W}]) / on (instance, job) autoglm_system_cpus",
    ),
    (
        f"instance_service:autoglm_process_context_switches:rate{W}",
        f"sum by (instance, job, service, type) (rate(autoglm_process_context_switches_total[{W}]))",
    ),
    (
        f"instance_service:autoglm_process_cpu_seconds:rate{W}",
        f"sum by (instance, job, service) (rate(autoglm_process_cpu_seconds_total[{W}]))",
    ),
    (
        f"instance_service:autoglm_container_cpu_throttled:ratio_rate{W}",
        # clamp_min: a cgroup without a quota has no periods, 0/0 would be NaN
        f"rate(autoglm_container_cpu_throttled_periods_total[{W}])"
        f" / clamp_min(rate(autoglm_container_cpu_periods_total[{W}]), 1e-9)",
    ),
    (
        f"instance_engine:autoglm_engine_generation_tokens:rate{W}",
        f"rate(autoglm_engine_generation_tokens_total[{W}])",
    ),
    (
        f"instance_target:autoglm_probe_failures:rate{W}",
        f"sum by (instance, job, target, reason) (rate(autoglm_probe_failures_total[{W}]))",
    ),
]


def recording_group() -> dict:
    return {
        "name": "autoglm.recording",
        "rules": [{"record": name, "expr": expr} for name, expr in RECORDING_RULES],
    }

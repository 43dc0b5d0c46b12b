"""The autoglm.gpu group: the node's GPUs and the CUDA runtime of each service on them. A GPU's
fault carries the service it breaks when there is one (gpu_service), else it pages for its node."""

from __future__ import annotations

from .. import config
from ..config import CRITICAL_XIDS, FOR, THROTTLE_REASONS, WARNING_XIDS, duration
from ..config import THRESHOLDS as T
from ..rules import affected_edges, relabel, sole_edges
from .alert import COUNT, Alert
from .fanout import fan_out
from .templates import query_list


def _regex(values: tuple) -> str:
    return "|".join(str(v) for v in values)


def _services_on_gpu(window: str) -> str:
    """ " (services on it: a, b)": the services whose processes ran on the alert's GPU within `window`
    (a lost GPU reports none any more), or, when none did, every service the node's exporter
    watches; nothing when the node watches none."""
    on_gpu = (
        'group by (service) (max_over_time(autoglm_gpu_processes{instance=%q,gpu=%q,service!="other"}'
        f"[{window}]) > 0)"
    )
    on_node = "group by (service) (autoglm_process_up{instance=%q})"
    query = f"{on_gpu} or ({on_node} unless on () group ({on_gpu}))"
    args = "$labels.instance $labels.gpu $labels.instance $labels.instance $labels.gpu"
    selector = f"printf `{query}` {args}"
    names = "{{ range $i, $s := . }}{{ if $i }}, {{ end }}{{ $s.Labels.service }}{{ end }}"
    return f'{{{{ with {selector} | query | sortByLabel "service" }}}} (services on it: {names}){{{{ end }}}}'


def gpu_service(expr: str, window: str) -> str:
    """`expr` (per GPU: instance, gpu and more) with the user-facing `service` the GPU's fault
    breaks, so that its page groups with that service's incident: the service whose processes
    computed on the GPU within `window` (a lost GPU reports no process any more), mapped to the one
    service that depends on it (vllm -> open-autoglm); when none did, the node's one user-facing
    service. A GPU whose fault breaks several services, or none known, keeps no `service` and pages
    for its node."""
    used = relabel(
        f'max_over_time(autoglm_gpu_processes{{service!="other"}}[{window}]) > 0', "dependency", "service"
    )
    on_gpu = (
        f"group by (instance, job, gpu, service) (group by (instance, job, gpu, dependency) ({used})"
        f" * on (instance, dependency) group_left (service) ({sole_edges('service')}))"
    )
    node_services = f"group by (instance, service) ({affected_edges('service')})"
    node_sole = f"({node_services} and on (instance) (count by (instance) ({node_services}) == 1))"
    # PromQL shares no subexpression, so each part is written once where it can be: `A or on (instance,
    # gpu) B` adds B only for GPUs A lacks (the same as `A or (B unless on (instance, gpu) A)`, with A
    # once). Each copy of on_gpu reads 10 minutes of every GPU's process series: at 500 nodes the
    # GPU alerts, with on_gpu 8 times each, took 169 s a 10 s evaluation.
    gpus = f"group by (instance, job, gpu) ({expr})"
    per_gpu = f"({on_gpu} or on (instance, gpu) ({gpus} * on (instance) group_left (service) {node_sole}))"
    sole = f"({per_gpu} and on (instance, gpu) (count by (instance, gpu) ({per_gpu}) == 1))"
    # A GPU with no sole service joins a series without `service`: the alert keeps none.
    return f"({expr}) * on (instance, gpu) group_left (service) ({sole} or on (instance, gpu) {gpus})"


def gpu() -> list[Alert]:
    xid_window = duration(config.XID_WINDOW)
    services = _services_on_gpu(xid_window)
    incompatible = "min by (instance, job, service) (autoglm_cuda_compatible) == 0"
    failed_checks = query_list(
        "printf `autoglm_cuda_compatible{instance=%q,service=%q} == 0` $labels.instance $labels.dependency",
        "check",
    )
    return [
        Alert(
            "AutoglmGpuMemoryNearFull",
            "warning",
            f"autoglm_gpu_memory_used_bytes / autoglm_gpu_memory_total_bytes > {T['gpu_memory_used_ratio']}",
            "GPU {{ $labels.gpu }} memory is {{ $value | humanizePercentage }} full",
            "GPU {{ $labels.gpu }} ({{ $labels.name }}) on {{ $labels.instance }} has "
            "{{ $value | humanizePercentage }} of its memory in use: the next large batch risks CUDA out of "
            "memory.",
            FOR["ticket"],
        ),
        Alert(
            "AutoglmGpuIdleWithBacklog",
            "warning",
            f"autoglm_gpu_utilization_ratio < {T['gpu_idle_utilization_ratio']}"
            # only GPUs that hold compute processes: a spare GPU is idle by design
            " and on (instance, gpu) (sum by (instance, gpu) (autoglm_gpu_processes) > 0)"
            " and on (instance) (sum by (instance) (autoglm_engine_requests_waiting) > 0)",
            "GPU {{ $labels.gpu }} is idle while requests wait",
            "GPU {{ $labels.gpu }} on {{ $labels.instance }} holds compute processes but is "
            "{{ $value | humanizePercentage }} busy while requests wait in the engine: the engine is not "
            "feeding the GPU. AutoglmEngineStalled pages for the same incident when tokens stop too.",
            FOR["stall"],
        ),
        Alert(
            "AutoglmGpuLost",
            "critical",
            gpu_service("autoglm_gpu_lost == 1", xid_window),
            "GPU {{ $labels.gpu }} fell off the bus",
            "NVML reports GPU {{ $labels.gpu }} ({{ $labels.uuid }}) on {{ $labels.instance }} lost: every "
            "process on it has failed" + services + ". The node needs a GPU reset or a "
            "reboot.",
            role="node",
        ),
        Alert(
            "AutoglmGpuCriticalXid",
            "critical",
            gpu_service(
                f'increase(autoglm_gpu_xid_errors_total{{xid=~"{_regex(CRITICAL_XIDS)}"}}[{xid_window}]) > 0',
                xid_window,
            ),
            "GPU {{ $labels.gpu }} reported critical XID {{ $labels.xid }}",
            "GPU {{ $labels.gpu }} ({{ $labels.name }}) on {{ $labels.instance }} reported XID "
            "{{ $labels.xid }} "
            "in the last " + xid_window + " (events: " + COUNT + "): a memory or bus fault that "
            "usually needs a GPU reset" + services + ".",
            role="node",
        ),
        Alert(
            "AutoglmGpuXidWarning",
            "warning",
            f'increase(autoglm_gpu_xid_errors_total{{xid=~"{_regex(WARNING_XIDS)}"}}[{xid_window}]) > 0',
            "GPU {{ $labels.gpu }} reported XID {{ $labels.xid }}, a contained error",
            "GPU {{ $labels.gpu }} ({{ $labels.name }}) on {{ $labels.instance }} reported XID "
            "{{ $labels.xid }} in the last " + xid_window + " (events: " + COUNT + "): a contained ECC "
            "error; the GPU recovered and only the process that hit it was stopped" + services + ".",
        ),
        Alert(
            "AutoglmGpuThrottled",
            "warning",
            f'autoglm_gpu_clock_event_reason_active{{reason=~"{_regex(THROTTLE_REASONS)}"}} == 1',
            "GPU {{ $labels.gpu }} clocks are held down: {{ $labels.reason }}",
            "GPU {{ $labels.gpu }} on {{ $labels.instance }} runs slowed by {{ $labels.reason }} (heat or "
            "power): generation is slower than it should be.",
            FOR["ticket"],
        ),
        Alert(
            "AutoglmCudaIncompatible",
            "critical",
            fan_out(incompatible, "service", "service"),
            "{{ $labels.dependency }}'s CUDA runtime does not fit its GPU",
            "The CUDA runtime of {{ $labels.dependency }} on {{ $labels.instance }} fails the "
            + failed_checks
            + "check against its GPU: kernels cannot run (the driver is too old, or the GPU's compute "
            "capability is not built into the runtime), so {{ $labels.service }} cannot generate.",
            role="cause",
        ),
    ]

"""AutoGLM / GPU: NVIDIA GPUs' memory (per service too), utilization, temperature, power, clock
event reasons, XID and ECC errors, CUDA compatibility with each service."""

from __future__ import annotations

from autoglm_exporter.base.thresholds import XID_APPLICATION, XID_CRITICAL, XID_WARNING

from ..grafana import (
    BYTES,
    CELSIUS,
    HERTZ,
    NONE,
    RATIO,
    SHORT,
    WATTS,
    Dashboard,
    Row,
    State,
    Target,
    Variable,
    flag,
    stat,
    state_timeline,
    table,
    timeseries,
    up_down,
)
from .panels import (
    INST,
    INSTANCE_VAR,
    gpu_available,
    increase,
    line,
)

GPU = f'{INST}, gpu=~"$gpu"'
GPU_VAR = Variable("gpu", "GPU", f"autoglm_gpu_info{{{INST}}}", "gpu")


def gpu_overview_row() -> Row:
    return Row(
        "GPUs",
        (
            gpu_available(4),
            stat(
                "GPUs",
                "Number of GPUs found; fewer than installed means one fell off the bus.",
                (Target(f"autoglm_gpu_devices{{{INST}}}", "{{instance}}"),),
                SHORT,
                base_color="blue",
                width=4,
            ),
            stat(
                "GPU lost",
                "Red when NVML reports the GPU lost (fell off the bus): it needs a reset or a reboot.",
                (Target(f"autoglm_gpu_lost{{{GPU}}}", "GPU {{gpu}}"),),
                NONE,
                mapped=flag("ok", "lost"),
                width=4,
            ),
            stat(
                "CUDA compatibility",
                "Red when the service's CUDA runtime does not fit the GPU (compute capability) or driver.",
                (Target(f"autoglm_cuda_compatible{{{GPU}}}", "{{service}} on GPU {{gpu}}: {{check}}"),),
                NONE,
                mapped=up_down("incompatible", "compatible"),
                width=12,
            ),
            table(
                "GPU info",
                "Each GPU's name, driver, highest CUDA version the driver supports, compute capability.",
                Target(f"autoglm_gpu_info{{{GPU}}}"),
                height=5,
            ),
        ),
    )


def gpu_memory_row() -> Row:
    used_ratio = f"instance_gpu:autoglm_gpu_memory_used:ratio{{{GPU}}}"
    return Row(
        "Memory",
        (
            timeseries(
                "Memory used, total and reserved",
                "GPU memory in use against the total and what the driver reserves.",
                (
                    Target(f"autoglm_gpu_memory_used_bytes{{{GPU}}}", "GPU {{gpu}} used"),
                    Target(f"autoglm_gpu_memory_total_bytes{{{GPU}}}", "GPU {{gpu}} total"),
                    Target(f"autoglm_gpu_memory_reserved_bytes{{{GPU}}}", "GPU {{gpu}} reserved"),
                ),
                BYTES,
            ),
            timeseries(
                "Memory used ratio",
                "Share of each GPU's memory in use; above the line allocations may fail with CUDA OOM.",
                (Target(used_ratio, "GPU {{gpu}}"),),
                RATIO,
                steps=line("gpu_memory_used_ratio"),
                high=1,
            ),
            timeseries(
                "Memory per service",
                "GPU memory used by each service's processes (other: processes of no configured service).",
                (Target(f"autoglm_gpu_process_memory_used_bytes{{{GPU}}}", "GPU {{gpu}} {{service}}"),),
                BYTES,
                stack=True,
            ),
            timeseries(
                "Processes per service",
                "Compute processes on each GPU by service; 0 for the engine means it lost its GPU.",
                (Target(f"autoglm_gpu_processes{{{GPU}}}", "GPU {{gpu}} {{service}}"),),
                SHORT,
            ),
        ),
    )


def gpu_utilization_row() -> Row:
    per_service = f"instance_service:autoglm_gpu_utilization_ratio:avg{{{INST}}}"
    return Row(
        "Utilization, heat and power",
        (
            timeseries(
                "Utilization",
                "Share of time a kernel ran (and memory was busy); near 0 while requests wait is a stall.",
                (
                    Target(f"autoglm_gpu_utilization_ratio{{{GPU}}}", "GPU {{gpu}} kernels"),
                    Target(f"autoglm_gpu_memory_utilization_ratio{{{GPU}}}", "GPU {{gpu}} memory"),
                ),
                RATIO,
                high=1,
            ),
            timeseries(
                "Utilization per service",
                "Mean utilization of the GPUs each service runs on; above the line, scale out.",
                (Target(per_service, "{{service}}"),),
                RATIO,
                steps=line("gpu_scale_out_utilization_ratio", "orange"),
                high=1,
            ),
            timeseries(
                "Temperature",
                "GPU die temperature; above the line the GPU slows its clocks to cool down.",
                (Target(f"autoglm_gpu_temperature_celsius{{{GPU}}}", "GPU {{gpu}}"),),
                CELSIUS,
                steps=line("gpu_temperature_celsius"),
                width=8,
            ),
            timeseries(
                "Power draw vs limit",
                "Board power against the enforced limit; drawing at the limit caps the clocks.",
                (
                    Target(f"autoglm_gpu_power_draw_watts{{{GPU}}}", "GPU {{gpu}} draw"),
                    Target(f"autoglm_gpu_power_limit_watts{{{GPU}}}", "GPU {{gpu}} limit"),
                ),
                WATTS,
                width=8,
            ),
            timeseries(
                "Clocks",
                "SM and memory clocks; a drop while busy means something holds them down.",
                (Target(f"autoglm_gpu_clock_hertz{{{GPU}}}", "GPU {{gpu}} {{clock}}"),),
                HERTZ,
                width=8,
            ),
            state_timeline(
                "Clock event reasons active",
                "When a reason (power cap, thermal slowdown...) held the clocks down; idle is harmless.",
                (Target(f"autoglm_gpu_clock_event_reason_active{{{GPU}}} == 1", "GPU {{gpu}} {{reason}}"),),
                mapped=(State(1, "active", "orange"),),
                no_value="no reason held the clocks down",
            ),
        ),
    )


def _listed(numbers: tuple[int, ...]) -> str:
    return ", ".join(str(n) for n in numbers)


def gpu_errors_row() -> Row:
    return Row(
        "Errors",
        (
            timeseries(
                "XID errors",
                f"XID events by number; {_listed(XID_CRITICAL)} page (the GPU needs attention), "
                f"{_listed(XID_WARNING)} warns, {_listed(XID_APPLICATION)} are the application's.",
                (
                    Target(
                        increase("autoglm_gpu_xid_errors_total", GPU, "instance, gpu, xid"),
                        "GPU {{gpu}} XID {{xid}}",
                    ),
                ),
                SHORT,
                bars=True,
            ),
            timeseries(
                "ECC errors",
                "Memory errors corrected and not; uncorrected ones crash the processes on the GPU.",
                (
                    Target(
                        increase("autoglm_gpu_ecc_errors_total", GPU, "instance, gpu, type"),
                        "GPU {{gpu}} {{type}}",
                    ),
                ),
                SHORT,
                bars=True,
            ),
        ),
    )


def dashboard() -> Dashboard:
    return Dashboard(
        "autoglm-gpu",
        "AutoGLM / GPU",
        "NVIDIA GPUs: memory (per service too), utilization, temperature, power, clock event reasons, "
        "XID and ECC errors, CUDA compatibility with each service.",
        (gpu_overview_row(), gpu_memory_row(), gpu_utilization_row(), gpu_errors_row()),
        (INSTANCE_VAR, GPU_VAR),
    )

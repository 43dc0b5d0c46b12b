"""What the GPU collector exports: its metric specs, the NVML functions whose failures it counts,
and which DeviceReading field each per-GPU series shows. The collector (collector.py) fills them."""

from __future__ import annotations

from ...metrics.spec import MetricSpec, counter, gauge, info

# NVML clock-event (formerly throttle) reason bits, nvmlClocksEventReason* in nvml.h.
CLOCK_EVENT_REASONS = (
    ("gpu_idle", 0x1),
    ("applications_clocks_setting", 0x2),
    ("sw_power_cap", 0x4),
    ("hw_slowdown", 0x8),
    ("sync_boost", 0x10),
    ("sw_thermal_slowdown", 0x20),
    ("hw_thermal_slowdown", 0x40),
    ("hw_power_brake_slowdown", 0x80),
    ("display_clock_setting", 0x100),
)


# Functions whose failures are counted in autoglm_gpu_read_errors_total (bounded, all from the start).
READ_FUNCTIONS = (
    "nvmlSystemGetDriverVersion",
    "nvmlSystemGetCudaDriverVersion_v2",
    "nvmlSystemGetCudaDriverVersion",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetName",
    "nvmlDeviceGetCudaComputeCapability",
    "nvmlEventSetCreate",
    "nvmlDeviceGetSupportedEventTypes",
    "nvmlDeviceRegisterEvents",
    "nvmlDeviceGetIndex",
    "nvmlDeviceGetMemoryInfo_v2",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetTemperatureV",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetPerformanceState",
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetCurrentClocksThrottleReasons",
    "nvmlDeviceGetTotalEccErrors",
    "nvmlDeviceGetRemappedRows",
    "nvmlDeviceGetComputeRunningProcesses_v3",
    "nvmlDeviceGetComputeRunningProcesses_v2",
    "nvmlEventSetWait_v2",
    "nvidia-smi",
)
GPU_LABELS = ("gpu", "uuid", "name")

AVAILABLE = gauge(
    "autoglm_gpu_available",
    "1 when at least one NVIDIA GPU could be read (through NVML or nvidia-smi), else 0.",
)
SOURCE = info(
    "autoglm_gpu_source",
    "Where the GPU readings come from: nvml, nvidia_smi (NVML could not start) or none.",
    "source",
)
DEVICES = gauge("autoglm_gpu_devices", "Number of NVIDIA GPUs found.")
GPU_INFO = info(
    "autoglm_gpu",
    "Each GPU with its driver, the highest CUDA version the driver supports and its compute capability.",
    *GPU_LABELS,
    "driver_version",
    "cuda_driver_version",
    "compute_capability",
)
LOST = gauge(
    "autoglm_gpu_lost",
    "1 when NVML reports the GPU is lost (fell off the bus; its other series are absent), else 0.",
    *GPU_LABELS,
)
MEMORY_TOTAL = gauge("autoglm_gpu_memory_total_bytes", "Memory of the GPU.", *GPU_LABELS)
MEMORY_USED = gauge(
    "autoglm_gpu_memory_used_bytes",
    "Memory of the GPU in use, not counting what the driver reserves where it reports that separately.",
    *GPU_LABELS,
)
MEMORY_FREE = gauge("autoglm_gpu_memory_free_bytes", "Memory of the GPU free to allocate.", *GPU_LABELS)
MEMORY_RESERVED = gauge(
    "autoglm_gpu_memory_reserved_bytes",
    "Memory of the GPU the driver reserves for itself (NVML memory info v2 only).",
    *GPU_LABELS,
)
UTILIZATION = gauge(
    "autoglm_gpu_utilization_ratio",
    "Share of the last sample period (1/6 s to 1 s) in which a kernel ran on the GPU (0-1).",
    *GPU_LABELS,
)
MEMORY_UTILIZATION = gauge(
    "autoglm_gpu_memory_utilization_ratio",
    "Share of the last sample period in which GPU memory was read or written (0-1); not memory used.",
    *GPU_LABELS,
)
TEMPERATURE = gauge("autoglm_gpu_temperature_celsius", "Temperature of the GPU die.", *GPU_LABELS)
POWER = gauge("autoglm_gpu_power_draw_watts", "Power the GPU board draws.", *GPU_LABELS)
POWER_LIMIT = gauge(
    "autoglm_gpu_power_limit_watts", "Power limit the driver enforces on the GPU board.", *GPU_LABELS
)
ENERGY = counter(
    "autoglm_gpu_energy_joules", "Energy the GPU used since the driver was last loaded.", *GPU_LABELS
)
CLOCK = gauge(
    "autoglm_gpu_clock_hertz", "Current clock of the GPU by domain: sm or memory.", *GPU_LABELS, "clock"
)
PSTATE = gauge(
    "autoglm_gpu_performance_state",
    "Performance state of the GPU: 0 (P0) is the fastest, 15 (P15) the slowest.",
    *GPU_LABELS,
)
CLOCK_EVENT = gauge(
    "autoglm_gpu_clock_event_reason_active",
    "1 when the reason (formerly a throttle reason) is holding the GPU's clocks down now, else 0.",
    *GPU_LABELS,
    "reason",
)
ECC_ERRORS = counter(
    "autoglm_gpu_ecc_errors",
    "ECC memory errors of the GPU since the driver was last loaded (volatile count), by type.",
    *GPU_LABELS,
    "type",
)
REMAPPED_ROWS = gauge(
    "autoglm_gpu_remapped_rows",
    "Memory rows the GPU remapped over its life, by the kind of error that caused it.",
    *GPU_LABELS,
    "cause",
)
REMAP_PENDING = gauge(
    "autoglm_gpu_row_remapping_pending",
    "1 when a row remapping waits for a GPU reset to take effect, else 0.",
    *GPU_LABELS,
)
REMAP_FAILED = gauge(
    "autoglm_gpu_row_remapping_failed",
    "1 when a row remapping failed (the GPU needs service), else 0.",
    *GPU_LABELS,
)
XID_ERRORS = counter(
    "autoglm_gpu_xid_errors",
    "XID error events NVML reported for the GPU since the exporter started, by XID.",
    *GPU_LABELS,
    "xid",
)
LAST_XID_TIME = gauge(
    "autoglm_gpu_last_xid_timestamp_seconds",
    "When the GPU's last XID event arrived, in seconds since the epoch; 0 when none since start.",
    *GPU_LABELS,
)
LAST_XID = gauge(
    "autoglm_gpu_last_xid", "The GPU's last XID since the exporter started; 0 when none.", *GPU_LABELS
)
PROCESSES = gauge(
    "autoglm_gpu_processes",
    "Compute processes on the GPU, by the configured service they belong to (other: none of them).",
    *GPU_LABELS,
    "service",
)
PROCESS_MEMORY = gauge(
    "autoglm_gpu_process_memory_used_bytes",
    "GPU memory used by the compute processes of each service (other: none of them) on the GPU.",
    *GPU_LABELS,
    "service",
)
VISIBLE_DEVICES = info(
    "autoglm_gpu_service_cuda_visible_devices",
    "CUDA_VISIBLE_DEVICES the service's processes started with; unset, empty (no GPU) or unreadable.",
    "service",
    "cuda_visible_devices",
)
SERVICE_RUNTIME = info(
    "autoglm_cuda_service_runtime",
    "The CUDA runtime the service uses and where that was read (torch, nvidia-cuda-runtime, libcudart).",
    "service",
    "cuda_version",
    "source",
)
COMPATIBLE = gauge(
    "autoglm_cuda_compatible",
    "1 when the service's CUDA runtime fits the GPU (check=compute_capability) or the driver "
    "(check=driver), 0 when not; absent when it cannot be told.",
    "gpu",
    "service",
    "check",
)
READ_ERRORS = counter(
    "autoglm_gpu_read_errors",
    "GPU reads that failed (not counting fields the GPU does not support), by NVML function or nvidia-smi.",
    "function",
)


# A GPU's series that show one DeviceReading field each: (spec, labels after the GPU's, field).
DEVICE_VALUES: tuple[tuple[MetricSpec, tuple[str, ...], str], ...] = (
    (MEMORY_TOTAL, (), "memory_total"),
    (MEMORY_USED, (), "memory_used"),
    (MEMORY_FREE, (), "memory_free"),
    (MEMORY_RESERVED, (), "memory_reserved"),
    (UTILIZATION, (), "utilization"),
    (MEMORY_UTILIZATION, (), "memory_utilization"),
    (TEMPERATURE, (), "temperature"),
    (POWER, (), "power_draw"),
    (POWER_LIMIT, (), "power_limit"),
    (ENERGY, (), "energy"),
    (CLOCK, ("sm",), "sm_clock"),
    (CLOCK, ("memory",), "memory_clock"),
    (PSTATE, (), "pstate"),
    (ECC_ERRORS, ("corrected",), "ecc_corrected"),
    (ECC_ERRORS, ("uncorrected",), "ecc_uncorrected"),
    (REMAPPED_ROWS, ("correctable",), "remapped_correctable"),
    (REMAPPED_ROWS, ("uncorrectable",), "remapped_uncorrectable"),
    (REMAP_PENDING, (), "remap_pending"),
    (REMAP_FAILED, (), "remap_failed"),
)

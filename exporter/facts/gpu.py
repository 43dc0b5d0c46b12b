"""What the GPU collector hands to the verdict: devices, their processes, each service's GPUs and CUDA fit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuDeviceFacts:
    index: int
    uuid: str
    name: str
    compute_capability: str | None  # "9.0"
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    memory_free_bytes: int | None
    memory_reserved_bytes: int | None
    utilization: float | None  # 0-1
    memory_utilization: float | None  # 0-1, memory bandwidth busy
    temperature_celsius: float | None
    power_draw_watts: float | None
    power_limit_watts: float | None
    performance_state: int | None
    clock_event_reasons: tuple[str, ...]  # every active reason, gpu_idle included
    throttle_reasons: tuple[str, ...]  # the active ones that hold the clocks down (THROTTLE_REASONS)
    ecc_uncorrected: int | None
    row_remapping_failed: bool | None
    processes: int  # compute processes on it
    lost: bool
    stuck: bool  # an NVML call about this GPU has not returned (only in GpuStuckError.facts)
    xid_recent: tuple[int, ...]  # XIDs of the last RECENT_XID_SECONDS, oldest first
    last_xid: int | None
    last_xid_time: float | None

    @property
    def memory_used_ratio(self) -> float | None:
        """Share of memory not free (what the driver reserves counts as used)."""
        if not self.memory_total_bytes or self.memory_free_bytes is None:
            return None
        return 1.0 - self.memory_free_bytes / self.memory_total_bytes


@dataclass(frozen=True)
class GpuProcessFacts:
    pid: int
    gpu: int
    used_memory_bytes: int | None  # None: the driver does not say
    service: str | None  # None: no configured service ("other")


@dataclass(frozen=True)
class ServiceGpuFacts:
    name: str
    pids: tuple[int, ...]  # its processes: cmdline/exe matches plus the GPU processes attributed to it
    gpus: tuple[int, ...]  # GPU indexes its processes run on
    gpu_memory_bytes: dict[int, int]  # GPU index -> memory its processes use there
    cuda_visible_devices: tuple[str, ...]  # distinct values over its processes; "unset", "unreadable"
    cuda_runtime: str | None  # "12.4"; None when not found
    cuda_runtime_source: str | None  # torch | nvidia-cuda-runtime | libcudart


@dataclass(frozen=True)
class CompatibilityFacts:
    service: str
    gpu: int
    check: str  # compute_capability | driver
    ok: bool
    sentence: str


@dataclass(frozen=True)
class GpuFacts:
    available: bool
    source: str  # nvml | nvidia_smi | none
    message: str | None  # NO_GPU, or why a source could not be used
    driver_version: str | None
    cuda_driver_version: str | None  # "12.2": the highest CUDA the driver supports
    gpus: tuple[GpuDeviceFacts, ...]
    processes: tuple[GpuProcessFacts, ...]
    services: dict[str, ServiceGpuFacts]
    compatibility: tuple[CompatibilityFacts, ...]
    compatibility_problems: tuple[str, ...]  # one sentence per failing check, "<service>: ..." first
    stuck: bool = False
    stuck_call: str | None = None  # "nvmlDeviceGetPowerUsage on GPU 3"

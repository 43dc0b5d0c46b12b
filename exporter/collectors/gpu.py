"""The GPUs: memory, utilization, health, and which service uses them with which CUDA.

Source. NVML through nvidia-ml-py (`pynvml`, injectable). When NVML cannot start, `nvidia-smi
--query-gpu=... --format=csv,noheader,nounits` under the call timeout (killed and reaped at it);
`gpu.nvml: false` goes straight to nvidia-smi. `autoglm_gpu_source_info` says which one answered.
With neither (no driver, no library, no binary) the collector succeeds with
`autoglm_gpu_available 0`, logs "no NVIDIA GPU / driver found" once, and the facts say so.

What NVML cannot give is absent, never 0 (see exporter/nvml.py: NotSupported, N/A, a missing
function falls back to its older variant). In nvidia-smi output every bracketed value ([N/A],
[Not Supported], [Insufficient Permissions], ...) is absence; anything else that does not parse
fails the run with kind parse_error.

Per cycle each GPU costs a fixed set of NVML calls (`NVML_CALLS_PER_GPU`, fewer once a field is
known to be unsupported, one process-list call among them) plus at least one event-set poll for
the whole cycle. Identity (UUID, name, compute capability) is read once per NVML session.

Hang guard. Every NVML call of a cycle runs in one worker thread (exporter/nvml.py) and the cycle
waits at most `gpu.call_timeout`. Past it collect() raises CollectorError("timeout"): the runner
drops every GPU series (never served stale) and counts the failure. Until the stuck call returns,
each collect() raises CollectorError("skipped_stuck") at once and starts no NVML call. The error
(`GpuStuckError`) carries the facts with `stuck` set, and `last_facts` keeps them.

XID events. NVML's event set is polled with a 0 ms wait each cycle; `autoglm_gpu_xid_errors_total`
counts them by XID since the exporter started (a few common XIDs exist at 0 from the first scrape)
and stays exported for a GPU that is lost or whose other reads fail.

Joins with the configured services (no GPU exporter does these):
- each GPU process (compute processes, from NVML or nvidia-smi) is attributed to the first service
  whose cmdline regex or exe matches it or, failing that, one of its ancestors (the engine's worker
  processes are children of the matched server); others are "other". Pidfile and port rules are
  the process collector's business and are not used here. A pid that this /proc cannot see (a GPU
  process in another pid namespace) is "other".
- `CUDA_VISIBLE_DEVICES` of each service's processes, from /proc/PID/environ (the environment the
  process was started with): "unset" when absent, "unreadable" without permission.
- the CUDA runtime each service uses (exporter/cuda.py) against each GPU it may use (the GPUs its
  processes run on, else those its CUDA_VISIBLE_DEVICES names, else all) and against the driver:
  `autoglm_cuda_compatible{gpu,service,check}` plus a sentence for the verdict.
  CUDA_VISIBLE_DEVICES indexes follow CUDA's order, which is NVML's (PCI bus) order only with
  CUDA_DEVICE_ORDER=PCI_BUS_ID: indexes are matched as given, UUIDs exactly.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .. import cuda, procfs, subprocesses
from ..config import GpuConfig, ServiceConfig
from ..metricspec import Family, MetricSpec, counter, gauge, info
from ..nvml import (
    DRIVER_NOT_LOADED,
    LIBRARY_NOT_FOUND,
    TIMEOUT,
    UNINITIALIZED,
    GpuLost,
    NvmlDeadline,
    NvmlQuery,
    NvmlStuck,
    NvmlWorker,
    SessionLost,
    error_code,
)
from .base import Collector, CollectorError, Result

log = logging.getLogger(__name__)

NO_GPU = "no NVIDIA GPU / driver found"
SOURCES = ("nvml", "nvidia_smi", "none")
OTHER = "other"  # the service label of GPU processes that belong to no configured service

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
# The reasons that mean the clocks are held down (power, heat, hardware), not idle or configured.
THROTTLE_REASONS = frozenset(
    {"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"}
)

XID_EVENT = 0x8  # nvmlEventTypeXidCriticalError
COMMON_XIDS = (13, 31, 43, 48, 63, 64, 74, 79, 94, 95, 119, 120)  # exported at 0 from the first scrape
MAX_XIDS_PER_GPU = 64
MAX_EVENTS_PER_CYCLE = 256
RECENT_XID_SECONDS = 600.0
LOST_REOPEN_SECONDS = 300.0  # with a GPU lost, start NVML again this often to see it come back

# NVML constants (nvml.h), used when the module does not define them.
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_MEMORY_V2 = 0x02000028
NVML_PSTATE_UNKNOWN = 32

# The per-GPU calls of a cycle, by the name they are counted under (one variant each after fallback).
NVML_CALLS_PER_GPU = (
    "memory_info",
    "nvmlDeviceGetUtilizationRates",
    "temperature",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetClockInfo(SM)",
    "nvmlDeviceGetClockInfo(MEM)",
    "nvmlDeviceGetPerformanceState",
    "clock_event_reasons",
    "nvmlDeviceGetTotalEccErrors(corrected)",
    "nvmlDeviceGetTotalEccErrors(uncorrected)",
    "nvmlDeviceGetRemappedRows",
    "compute_processes",
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


# --- facts ----------------------------------------------------------------------------------------


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


class GpuStuckError(CollectorError):
    """A CollectorError (timeout / skipped_stuck) that also carries the facts saying what is stuck."""

    def __init__(self, kind: str, message: str, facts: GpuFacts) -> None:
        super().__init__(kind, message)
        self.facts = facts


# --- readings (internal) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Device:
    """What one GPU is, read once per NVML session."""

    index: int
    uuid: str
    name: str
    compute_capability: str | None
    handle: Any = field(compare=False, repr=False)


@dataclass(frozen=True)
class _DeviceReading:
    index: int
    uuid: str
    name: str
    compute_capability: str | None
    lost: bool = False
    memory_total: int | None = None
    memory_used: int | None = None
    memory_free: int | None = None
    memory_reserved: int | None = None
    utilization: float | None = None
    memory_utilization: float | None = None
    temperature: float | None = None
    power_draw: float | None = None
    power_limit: float | None = None
    energy: float | None = None
    sm_clock: float | None = None
    memory_clock: float | None = None
    pstate: int | None = None
    clock_reasons: int | None = None
    ecc_corrected: int | None = None
    ecc_uncorrected: int | None = None
    remapped_correctable: int | None = None
    remapped_uncorrectable: int | None = None
    remap_pending: bool | None = None
    remap_failed: bool | None = None
    processes: tuple[tuple[int, int | None], ...] = ()  # (pid, used bytes)


@dataclass(frozen=True)
class _Xids:
    counts: dict[int, dict[int, int]]  # gpu index -> xid -> events
    last: dict[int, tuple[int, float]]  # gpu index -> (xid, time)
    recent: tuple[tuple[float, int, int], ...]  # (time, gpu index, xid)
    identity: dict[int, tuple[str, str]]  # gpu index -> (uuid, name)


@dataclass(frozen=True)
class _Reading:
    source: str
    available: bool
    message: str | None
    driver_version: str | None = None
    cuda_driver_version: cuda.CudaVersion | None = None
    devices: tuple[_DeviceReading, ...] = ()


class _XidLog:
    """XID events since start. Written only by the NVML worker; read through snapshot()."""

    def __init__(self) -> None:
        self.counts: dict[int, dict[int, int]] = {}
        self.last: dict[int, tuple[int, float]] = {}
        self.recent: deque[tuple[float, int, int]] = deque(maxlen=256)
        self.identity: dict[int, tuple[str, str]] = {}

    def watch(self, device: _Device) -> None:
        self.identity[device.index] = (device.uuid, device.name)
        counts = self.counts.setdefault(device.index, {})
        for xid in COMMON_XIDS:
            counts.setdefault(xid, 0)

    def record(self, index: int, xid: int, now: float) -> None:
        counts = self.counts.setdefault(index, {})
        if xid in counts or len(counts) < MAX_XIDS_PER_GPU:
            counts[xid] = counts.get(xid, 0) + 1
        self.last[index] = (xid, now)
        self.recent.append((now, index, xid))

    def snapshot(self) -> _Xids:
        return _Xids(
            {gpu: dict(c) for gpu, c in self.counts.items()},
            dict(self.last),
            tuple(self.recent),
            dict(self.identity),
        )


class _NvmlUnavailable(Exception):
    def __init__(self, message: str, no_gpu: bool = False) -> None:
        super().__init__(message)
        self.no_gpu = no_gpu


@dataclass
class _Session:
    """One nvmlInit: the module, its query helper, the GPUs and the XID event set."""

    nvml: Any
    query: NvmlQuery
    driver_version: str | None
    cuda_driver_version: cuda.CudaVersion | None
    devices: list[_Device]
    event_set: Any
    registered: set[int]
    opened_at: float
    lost: set[int] = field(default_factory=set)  # GPUs NVML reported lost during this session

    def close(self) -> None:
        if self.event_set is not None:
            try:
                self.nvml.nvmlEventSetFree(self.event_set)
            except Exception:  # freeing into a broken session: nothing to do about a failure
                log.debug("nvmlEventSetFree failed", exc_info=True)
        _shutdown(self.nvml)


def _shutdown(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:  # shutting down a broken session: nothing to do about a failure
        log.debug("nvmlShutdown failed", exc_info=True)


# --- the collector ------------------------------------------------------------------------------------


class GpuCollector(Collector):
    name = "gpu"
    metrics = (
        AVAILABLE,
        SOURCE,
        DEVICES,
        GPU_INFO,
        LOST,
        MEMORY_TOTAL,
        MEMORY_USED,
        MEMORY_FREE,
        MEMORY_RESERVED,
        UTILIZATION,
        MEMORY_UTILIZATION,
        TEMPERATURE,
        POWER,
        POWER_LIMIT,
        ENERGY,
        CLOCK,
        PSTATE,
        CLOCK_EVENT,
        ECC_ERRORS,
        REMAPPED_ROWS,
        REMAP_PENDING,
        REMAP_FAILED,
        XID_ERRORS,
        LAST_XID_TIME,
        LAST_XID,
        PROCESSES,
        PROCESS_MEMORY,
        VISIBLE_DEVICES,
        SERVICE_RUNTIME,
        COMPATIBLE,
        READ_ERRORS,
    )

    def __init__(
        self,
        config: GpuConfig,
        services: tuple[ServiceConfig, ...],
        proc_root: str = "/proc",
        nvml_module: Any = None,
    ) -> None:
        self.config = config
        self.services = services
        self.proc_root = proc_root
        self.settings = (config, services, proc_root, nvml_module)
        self._nvml_module = nvml_module
        self._worker = NvmlWorker("gpu-nvml")
        self._session: _Session | None = None
        self._query: NvmlQuery | None = None  # the session's, for the stuck message
        self._errors: dict[str, int] = dict.fromkeys(READ_FUNCTIONS, 0)
        self._xids = _XidLog()
        self._procs = _ProcJoin(proc_root, services)
        self._smi_fields: tuple[tuple[str, str], ...] = SMI_FIELDS
        self._smi_unreaped_before: int | None = None  # set while a killed nvidia-smi is not reaped
        self._last_state: tuple[str, bool, str | None] | None = None
        self._last_devices: tuple[_DeviceReading, ...] = ()
        self.last_facts: GpuFacts | None = None

    # --- one run --------------------------------------------------------------------------------

    def collect(self) -> Result:
        reading: _Reading | None = None
        nvml_problem: _NvmlUnavailable | None = None
        if self.config.nvml:
            try:
                reading = self._read_nvml()
            except _NvmlUnavailable as exc:
                nvml_problem = exc
        if reading is None:
            reading = self._read_nvidia_smi(nvml_problem)
        self._log_state(reading)
        if reading.devices:
            self._last_devices = reading.devices
        xids = self._xids.snapshot()  # the worker is idle now: it writes the log only inside a cycle
        facts = self._facts(reading, xids)
        self.last_facts = facts
        return Result(self._families(reading, facts, xids), facts)

    def _log_state(self, reading: _Reading) -> None:
        state = (reading.source, reading.available, reading.message)
        if state == self._last_state:
            return
        self._last_state = state
        if not reading.available:
            log.info(reading.message or NO_GPU, extra={"collector": self.name})
        else:
            log.info(
                "reading GPUs",
                extra={"collector": self.name, "source": reading.source, "gpus": len(reading.devices)},
            )

    # --- NVML -----------------------------------------------------------------------------------

    def _read_nvml(self) -> _Reading:
        try:
            return self._worker.run(self._nvml_cycle, self.config.call_timeout, self._doing)
        except NvmlDeadline as exc:
            raise self._stuck("timeout", f"{exc}; GPU series dropped until it returns", exc.doing) from None
        except NvmlStuck as exc:
            raise self._stuck("skipped_stuck", str(exc), exc.doing) from None

    def _doing(self) -> str:
        query = self._query
        return query.current if query is not None else "nvmlInit"

    def _stuck(self, kind: str, message: str, doing: str) -> GpuStuckError:
        """The error to raise: the facts it carries say which call on which GPU is stuck."""
        match = re.search(r" on GPU (\d+)$", doing)
        stuck_gpu = int(match.group(1)) if match else None
        gpus = tuple(
            _device_facts(
                _DeviceReading(d.index, d.uuid, d.name, d.compute_capability),
                stuck=stuck_gpu is None or d.index == stuck_gpu,
            )
            for d in self._last_devices
        )
        facts = GpuFacts(
            available=bool(gpus),
            source="nvml",
            message=f"NVML is stuck: {message}",
            driver_version=None,
            cuda_driver_version=None,
            gpus=gpus,
            processes=(),
            services={},
            compatibility=(),
            compatibility_problems=(),
            stuck=True,
            stuck_call=doing or None,
        )
        self.last_facts = facts
        return GpuStuckError(kind, f"NVML: {message}", facts)

    def _module(self) -> Any:
        if self._nvml_module is not None:
            return self._nvml_module
        try:
            import pynvml  # nvidia-ml-py
        except ImportError as exc:
            raise _NvmlUnavailable(f"nvidia-ml-py cannot be imported: {exc}") from None
        return pynvml

    def _nvml_cycle(self) -> _Reading:
        """In the worker thread: one cycle of NVML calls, opening NVML first when needed."""
        session = self._session
        if session is not None and self._reopen_due(session):
            session.close()
            session = self._session = None
        if session is None:
            session = self._session = self._open()
        try:
            devices = tuple(self._read_device(session, device) for device in session.devices)
            self._poll_events(session)
        except SessionLost as exc:
            session.close()
            self._session = None
            raise _NvmlUnavailable(f"NVML stopped answering ({exc})") from None
        return _Reading(
            source="nvml",
            available=True,
            message=None,
            driver_version=session.driver_version,
            cuda_driver_version=session.cuda_driver_version,
            devices=devices,
        )

    def _reopen_due(self, session: _Session) -> bool:
        """With a GPU lost, start NVML again now and then: a reset GPU needs new handles."""
        lost = session.lost or any(device.handle is None for device in session.devices)
        return bool(lost) and time.monotonic() - session.opened_at > LOST_REOPEN_SECONDS

    def _open(self) -> _Session:
        nvml = self._module()
        error_class = getattr(nvml, "NVMLError", Exception)
        self._query = None
        try:
            nvml.nvmlInit()
        except error_class as exc:
            code = error_code(exc)
            if code in (LIBRARY_NOT_FOUND, DRIVER_NOT_LOADED):
                raise _NvmlUnavailable(f"{NO_GPU} (NVML: {exc})", no_gpu=True) from None
            raise _NvmlUnavailable(f"NVML cannot start: {exc}") from None
        except OSError as exc:
            raise _NvmlUnavailable(f"{NO_GPU} (NVML: {exc})", no_gpu=True) from None
        query = NvmlQuery(nvml, self._errors)
        self._query = query
        try:
            driver = _text(query.get("nvmlSystemGetDriverVersion"))
            cuda_value = query.first(
                (
                    ("nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion_v2", (), {}),
                    ("nvmlSystemGetCudaDriverVersion", "nvmlSystemGetCudaDriverVersion", (), {}),
                )
            )
            count = query.get("nvmlDeviceGetCount")
            if not count:
                _shutdown(nvml)
                if count == 0:
                    raise _NvmlUnavailable(f"{NO_GPU} (NVML lists no GPU)", no_gpu=True)
                raise _NvmlUnavailable("NVML cannot count the GPUs")
            devices = [self._identify(query, index) for index in range(int(count))]
            event_set, registered = self._register_events(query, devices)
        except SessionLost as exc:
            raise _NvmlUnavailable(f"NVML stopped answering ({exc})") from None
        for device in devices:
            if device.index in registered:
                self._xids.watch(device)
            else:
                self._xids.identity[device.index] = (device.uuid, device.name)
        return _Session(
            nvml,
            query,
            driver,
            cuda.cuda_from_nvml(cuda_value if isinstance(cuda_value, int) else None),
            devices,
            event_set,
            registered,
            time.monotonic(),
        )

    def _identify(self, query: NvmlQuery, index: int) -> _Device:
        try:
            handle = query.get("nvmlDeviceGetHandleByIndex", index, device=index)
            if handle is None:
                return _Device(index, "unknown", "unknown", None, None)
            uuid = _text(query.get("nvmlDeviceGetUUID", handle, device=index)) or "unknown"
            name = _text(query.get("nvmlDeviceGetName", handle, device=index)) or "unknown"
            cc = query.get("nvmlDeviceGetCudaComputeCapability", handle, device=index)
        except GpuLost:
            return _Device(index, "unknown", "unknown", None, None)
        capability = f"{cc[0]}.{cc[1]}" if isinstance(cc, (tuple, list)) and len(cc) == 2 else None
        return _Device(index, uuid, name, capability, handle)

    def _register_events(self, query: NvmlQuery, devices: list[_Device]) -> tuple[Any, set[int]]:
        event_set = query.get("nvmlEventSetCreate")
        registered: set[int] = set()
        if event_set is None:
            return None, registered
        for device in devices:
            if device.handle is None:
                continue
            try:
                supported = query.get("nvmlDeviceGetSupportedEventTypes", device.handle, device=device.index)
                if isinstance(supported, int) and supported & XID_EVENT:
                    answered, _ = query.run(
                        "nvmlDeviceRegisterEvents", device.handle, XID_EVENT, event_set, device=device.index
                    )
                    if answered:
                        registered.add(device.index)
            except GpuLost:
                continue
        return event_set, registered

    def _read_device(self, session: _Session, device: _Device) -> _DeviceReading:
        base = _DeviceReading(device.index, device.uuid, device.name, device.compute_capability)
        if device.handle is None:
            return replace(base, lost=True)
        q, h, i, nvml = session.query, device.handle, device.index, session.nvml
        try:
            memory = q.first(
                (
                    (
                        "nvmlDeviceGetMemoryInfo_v2",
                        "nvmlDeviceGetMemoryInfo",
                        (h,),
                        {"version": getattr(nvml, "nvmlMemory_v2", NVML_MEMORY_V2)},
                    ),
                    ("nvmlDeviceGetMemoryInfo", "nvmlDeviceGetMemoryInfo", (h,), {}),
                ),
                device=i,
            )
            rates = q.get("nvmlDeviceGetUtilizationRates", h, device=i)
            sensor = getattr(nvml, "NVML_TEMPERATURE_GPU", NVML_TEMPERATURE_GPU)
            temperature = q.first(
                (
                    ("nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperatureV", (h, sensor), {}),
                    ("nvmlDeviceGetTemperature", "nvmlDeviceGetTemperature", (h, sensor), {}),
                ),
                device=i,
            )
            power = q.get("nvmlDeviceGetPowerUsage", h, device=i)
            limit = q.get("nvmlDeviceGetEnforcedPowerLimit", h, device=i)
            energy = q.get("nvmlDeviceGetTotalEnergyConsumption", h, device=i)
            sm_clock = q.get(
                "nvmlDeviceGetClockInfo(SM)",
                h,
                getattr(nvml, "NVML_CLOCK_SM", NVML_CLOCK_SM),
                device=i,
                attr="nvmlDeviceGetClockInfo",
            )
            mem_clock = q.get(
                "nvmlDeviceGetClockInfo(MEM)",
                h,
                getattr(nvml, "NVML_CLOCK_MEM", NVML_CLOCK_MEM),
                device=i,
                attr="nvmlDeviceGetClockInfo",
            )
            pstate = q.get("nvmlDeviceGetPerformanceState", h, device=i)
            reasons = q.first(
                (
                    (
                        "nvmlDeviceGetCurrentClocksEventReasons",
                        "nvmlDeviceGetCurrentClocksEventReasons",
                        (h,),
                        {},
                    ),
                    (
                        "nvmlDeviceGetCurrentClocksThrottleReasons",
                        "nvmlDeviceGetCurrentClocksThrottleReasons",
                        (h,),
                        {},
                    ),
                ),
                device=i,
            )
            volatile = getattr(nvml, "NVML_VOLATILE_ECC", NVML_VOLATILE_ECC)
            corrected = q.get(
                "nvmlDeviceGetTotalEccErrors(corrected)",
                h,
                getattr(nvml, "NVML_MEMORY_ERROR_TYPE_CORRECTED", NVML_MEMORY_ERROR_TYPE_CORRECTED),
                volatile,
                device=i,
                attr="nvmlDeviceGetTotalEccErrors",
            )
            uncorrected = q.get(
                "nvmlDeviceGetTotalEccErrors(uncorrected)",
                h,
                getattr(nvml, "NVML_MEMORY_ERROR_TYPE_UNCORRECTED", NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
                volatile,
                device=i,
                attr="nvmlDeviceGetTotalEccErrors",
            )
            remapped = q.get("nvmlDeviceGetRemappedRows", h, device=i)
            processes = q.first(
                (
                    (
                        "nvmlDeviceGetComputeRunningProcesses_v3",
                        "nvmlDeviceGetComputeRunningProcesses_v3",
                        (h,),
                        {},
                    ),
                    (
                        "nvmlDeviceGetComputeRunningProcesses_v2",
                        "nvmlDeviceGetComputeRunningProcesses_v2",
                        (h,),
                        {},
                    ),
                ),
                device=i,
            )
        except GpuLost:
            session.lost.add(i)
            return replace(base, lost=True)
        remap = remapped if isinstance(remapped, (tuple, list)) and len(remapped) == 4 else None
        return replace(
            base,
            memory_total=_int(getattr(memory, "total", None)),
            memory_used=_int(getattr(memory, "used", None)),
            memory_free=_int(getattr(memory, "free", None)),
            memory_reserved=_int(getattr(memory, "reserved", None)),
            utilization=_ratio(getattr(rates, "gpu", None)),
            memory_utilization=_ratio(getattr(rates, "memory", None)),
            temperature=_float(temperature),
            power_draw=_scaled(power, 1e-3),
            power_limit=_scaled(limit, 1e-3),
            energy=_scaled(energy, 1e-3),
            sm_clock=_scaled(sm_clock, 1e6),
            memory_clock=_scaled(mem_clock, 1e6),
            pstate=_pstate(pstate),
            clock_reasons=_int(reasons),
            ecc_corrected=_int(corrected),
            ecc_uncorrected=_int(uncorrected),
            remapped_correctable=_int(remap[0]) if remap else None,
            remapped_uncorrectable=_int(remap[1]) if remap else None,
            remap_pending=bool(remap[2]) if remap else None,
            remap_failed=bool(remap[3]) if remap else None,
            processes=_processes(processes),
        )

    def _poll_events(self, session: _Session) -> None:
        """Drain the XID event set without waiting (0 ms), at most MAX_EVENTS_PER_CYCLE events."""
        if session.event_set is None or not session.registered:
            return
        nvml, query = session.nvml, session.query
        wait = getattr(nvml, "nvmlEventSetWait_v2", None) or getattr(nvml, "nvmlEventSetWait", None)
        if wait is None:
            return
        error_class = getattr(nvml, "NVMLError", Exception)
        for _ in range(MAX_EVENTS_PER_CYCLE):
            query.calls += 1
            query.current = "nvmlEventSetWait_v2"
            try:
                data = wait(session.event_set, 0)
            except error_class as exc:
                code = error_code(exc)
                if code != TIMEOUT:  # TIMEOUT: no event waiting, the normal answer
                    if code in (UNINITIALIZED, DRIVER_NOT_LOADED):
                        raise SessionLost(f"nvmlEventSetWait_v2: {exc}") from None
                    with query.errors_lock:
                        self._errors["nvmlEventSetWait_v2"] += 1
                return
            finally:
                query.current = ""
            if not int(getattr(data, "eventType", 0)) & XID_EVENT:
                continue
            index = self._event_gpu(session, getattr(data, "device", None))
            if index is not None:
                self._xids.record(index, int(getattr(data, "eventData", 0)), time.time())

    def _event_gpu(self, session: _Session, handle: Any) -> int | None:
        for device in session.devices:
            if device.handle is not None and device.handle is handle:
                return device.index
        try:
            index = session.query.get("nvmlDeviceGetIndex", handle)
        except GpuLost:
            return None
        return int(index) if isinstance(index, int) else None

    # --- nvidia-smi -------------------------------------------------------------------------------

    def _read_nvidia_smi(self, nvml_problem: _NvmlUnavailable | None) -> _Reading:
        """The fallback. A missing binary is 'no GPU' unless NVML said something worse."""
        why_not_nvml = str(nvml_problem) if nvml_problem else "NVML disabled (gpu.nvml: false)"
        if self._smi_unreaped_before is not None:
            if subprocesses.unreaped_count() > self._smi_unreaped_before:
                raise CollectorError(
                    "skipped_stuck",
                    "a killed nvidia-smi has not exited yet (uninterruptible sleep: the GPU or driver "
                    "hangs); not starting another",
                )
            self._smi_unreaped_before = None
        deadline = time.monotonic() + self.config.call_timeout
        try:
            output = self._smi(self._smi_fields, deadline)
            if _invalid_field(output):
                if self._smi_fields is SMI_FIELDS_LEGACY:
                    self._count("nvidia-smi")
                    raise CollectorError(
                        "parse_error", f"nvidia-smi rejects the query: {_first_line(output)}"
                    )
                log.info("nvidia-smi is older: using its older field names", extra={"collector": self.name})
                self._smi_fields = SMI_FIELDS_LEGACY
                output = self._smi(self._smi_fields, deadline)
        except FileNotFoundError:
            no_gpu = nvml_problem is None or nvml_problem.no_gpu
            if not no_gpu:
                raise CollectorError(
                    "os_error", f"{why_not_nvml}; nvidia-smi ({self.config.nvidia_smi}) not found"
                ) from None
            message = NO_GPU if nvml_problem is None else str(nvml_problem)
            return _Reading("none", False, message)
        except PermissionError as exc:
            self._count("nvidia-smi")
            raise CollectorError(
                "os_error", f"{why_not_nvml}; cannot run nvidia-smi: {exc.strerror}"
            ) from None
        if output.returncode != 0:
            text = output.text
            if "couldn't communicate with the NVIDIA driver" in text or "No devices were found" in text:
                return _Reading("none", False, f"{NO_GPU} (nvidia-smi: {_first_line(output)})")
            self._count("nvidia-smi")
            raise CollectorError(
                "os_error", f"nvidia-smi exited with {output.returncode}: {_first_line(output)}"
            )
        try:
            driver, devices = parse_smi_gpus(output.stdout, self._smi_fields)
        except ValueError as exc:
            self._count("nvidia-smi")
            raise CollectorError("parse_error", f"nvidia-smi --query-gpu: {exc}") from None
        if not devices:
            return _Reading("none", False, f"{NO_GPU} (nvidia-smi lists no GPU)")
        apps = self._smi_apps(deadline)
        by_uuid: dict[str, list[tuple[int, int | None]]] = {}
        for uuid, pid, used in apps:
            by_uuid.setdefault(uuid, []).append((pid, used))
        devices = tuple(replace(d, processes=tuple(by_uuid.get(d.uuid, ()))) for d in devices)
        return _Reading(
            source="nvidia_smi",
            available=True,
            message=f"reading through nvidia-smi: {why_not_nvml}",
            driver_version=driver,
            cuda_driver_version=cuda.cuda_for_driver(driver),
            devices=devices,
        )

    def _smi(self, fields: tuple[tuple[str, str], ...], deadline: float) -> _SmiOutput:
        query = ",".join(name for _, name in fields)
        return self._run_smi([f"--query-gpu={query}", "--format=csv,noheader,nounits"], deadline)

    def _smi_apps(self, deadline: float) -> list[tuple[str, int, int | None]]:
        output = self._run_smi(
            ["--query-compute-apps=gpu_uuid,pid,used_memory", "--format=csv,noheader,nounits"], deadline
        )
        if output.returncode != 0:
            self._count("nvidia-smi")
            raise CollectorError(
                "os_error",
                f"nvidia-smi --query-compute-apps exited with {output.returncode}: {_first_line(output)}",
            )
        try:
            return parse_smi_apps(output.stdout)
        except ValueError as exc:
            self._count("nvidia-smi")
            raise CollectorError("parse_error", f"nvidia-smi --query-compute-apps: {exc}") from None

    def _run_smi(self, args: list[str], deadline: float) -> _SmiOutput:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CollectorError("timeout", f"nvidia-smi took the whole {self.config.call_timeout:g}s")
        before = subprocesses.unreaped_count()
        try:
            done = subprocesses.run_with_deadline([self.config.nvidia_smi, *args], remaining)
        except subprocesses.CommandTimeout as exc:
            self._count("nvidia-smi")
            if subprocesses.unreaped_count() > before:
                self._smi_unreaped_before = before
                raise CollectorError("timeout", f"{exc}; it has not exited yet (D state)") from None
            raise CollectorError("timeout", str(exc)) from None
        return _SmiOutput(done.returncode, done.stdout, done.stderr)

    def _count(self, function: str) -> None:
        self._errors[function] = self._errors.get(function, 0) + 1

    # --- facts --------------------------------------------------------------------------------------

    def _facts(self, reading: _Reading, xids: _Xids) -> GpuFacts:
        now = time.time()
        gpu_pids = sorted({pid for device in reading.devices for pid, _ in device.processes})
        join = self._procs.join(gpu_pids)
        processes = tuple(
            GpuProcessFacts(pid, device.index, used, join.owner.get(pid))
            for device in reading.devices
            for pid, used in device.processes
        )
        gpus = tuple(_device_facts(device, xids=xids, now=now, stuck=False) for device in reading.devices)
        services: dict[str, ServiceGpuFacts] = {}
        for service in self.services:
            mine = [p for p in processes if p.service == service.name]
            memory: dict[int, int] = {}
            for process in mine:
                memory[process.gpu] = memory.get(process.gpu, 0) + (process.used_memory_bytes or 0)
            runtime = join.runtimes.get(service.name)
            services[service.name] = ServiceGpuFacts(
                name=service.name,
                pids=tuple(join.pids.get(service.name, ())),
                gpus=tuple(sorted({p.gpu for p in mine})),
                gpu_memory_bytes=memory,
                cuda_visible_devices=tuple(join.visible.get(service.name, ())),
                cuda_runtime=str(runtime.version) if runtime else None,
                cuda_runtime_source=runtime.source if runtime else None,
            )
        compatibility = self._compatibility(reading, services, join.runtimes)
        problems: dict[str, None] = {}
        for check in compatibility:
            if not check.ok:
                where = "" if check.check == "driver" else f" on GPU {check.gpu}"
                problems.setdefault(f"{check.service}{where}: {check.sentence}", None)
        return GpuFacts(
            available=reading.available,
            source=reading.source,
            message=reading.message,
            driver_version=reading.driver_version,
            cuda_driver_version=str(reading.cuda_driver_version) if reading.cuda_driver_version else None,
            gpus=gpus,
            processes=processes,
            services=services,
            compatibility=compatibility,
            compatibility_problems=tuple(problems),
        )

    def _compatibility(
        self, reading: _Reading, services: dict[str, ServiceGpuFacts], runtimes: dict[str, cuda.Runtime]
    ) -> tuple[CompatibilityFacts, ...]:
        checks: list[CompatibilityFacts] = []
        for name, service in services.items():
            runtime = runtimes.get(name)
            if runtime is None or not reading.devices:
                continue
            for device in _relevant(reading.devices, service):
                found = [
                    cuda.check_compute_capability(device.compute_capability, runtime.version),
                    cuda.check_driver(reading.cuda_driver_version, runtime.version),
                ]
                for check in found:
                    if check is not None:
                        checks.append(
                            CompatibilityFacts(name, device.index, check.check, check.ok, check.sentence)
                        )
        return tuple(checks)

    # --- metrics ------------------------------------------------------------------------------------

    def _families(self, reading: _Reading, facts: GpuFacts, xids: _Xids) -> list[Family]:
        families = {spec.name: spec.family() for spec in self.metrics}

        def add(spec: MetricSpec, labels: list[str], value: Any) -> None:
            if value is not None:
                families[spec.name].add_metric(labels, value)

        families[AVAILABLE.name].add_metric([], 1 if reading.available else 0)
        families[SOURCE.name].add_metric([], {"source": reading.source})
        families[DEVICES.name].add_metric([], len(reading.devices))
        driver_cuda = facts.cuda_driver_version or ""
        service_names = [s.name for s in self.services]
        usage: dict[tuple[int, str], tuple[int, int]] = {}  # (gpu, service) -> (processes, bytes)
        for process in facts.processes:
            key = (process.gpu, process.service or OTHER)
            count, used = usage.get(key, (0, 0))
            usage[key] = (count + 1, used + (process.used_memory_bytes or 0))
        seen: set[int] = set()
        for d in reading.devices:
            seen.add(d.index)
            gpu = [str(d.index), d.uuid, d.name]
            add(
                GPU_INFO,
                gpu,
                {
                    "driver_version": reading.driver_version or "",
                    "cuda_driver_version": driver_cuda,
                    "compute_capability": d.compute_capability or "",
                },
            )
            add(LOST, gpu, 1 if d.lost else 0)
            self._add_xids(add, gpu, d.index, xids)
            if d.lost:
                continue
            add(MEMORY_TOTAL, gpu, d.memory_total)
            add(MEMORY_USED, gpu, d.memory_used)
            add(MEMORY_FREE, gpu, d.memory_free)
            add(MEMORY_RESERVED, gpu, d.memory_reserved)
            add(UTILIZATION, gpu, d.utilization)
            add(MEMORY_UTILIZATION, gpu, d.memory_utilization)
            add(TEMPERATURE, gpu, d.temperature)
            add(POWER, gpu, d.power_draw)
            add(POWER_LIMIT, gpu, d.power_limit)
            add(ENERGY, gpu, d.energy)
            add(CLOCK, [*gpu, "sm"], d.sm_clock)
            add(CLOCK, [*gpu, "memory"], d.memory_clock)
            add(PSTATE, gpu, d.pstate)
            if d.clock_reasons is not None:
                for reason, bit in CLOCK_EVENT_REASONS:
                    add(CLOCK_EVENT, [*gpu, reason], 1 if d.clock_reasons & bit else 0)
            add(ECC_ERRORS, [*gpu, "corrected"], d.ecc_corrected)
            add(ECC_ERRORS, [*gpu, "uncorrected"], d.ecc_uncorrected)
            add(REMAPPED_ROWS, [*gpu, "correctable"], d.remapped_correctable)
            add(REMAPPED_ROWS, [*gpu, "uncorrectable"], d.remapped_uncorrectable)
            add(REMAP_PENDING, gpu, None if d.remap_pending is None else int(d.remap_pending))
            add(REMAP_FAILED, gpu, None if d.remap_failed is None else int(d.remap_failed))
            for owner in [*service_names, OTHER]:
                count, used = usage.get((d.index, owner), (0, 0))
                add(PROCESSES, [*gpu, owner], count)
                add(PROCESS_MEMORY, [*gpu, owner], used)
        for index, (uuid, name) in sorted(xids.identity.items()):
            if index not in seen:  # a GPU the current source does not list: its XIDs stay visible
                self._add_xids(add, [str(index), uuid, name], index, xids)
        for name, service in facts.services.items():
            for value in service.cuda_visible_devices:
                add(VISIBLE_DEVICES, [name], {"cuda_visible_devices": value})
            if service.cuda_runtime:
                add(
                    SERVICE_RUNTIME,
                    [name],
                    {"cuda_version": service.cuda_runtime, "source": service.cuda_runtime_source or ""},
                )
        for check in facts.compatibility:
            add(COMPATIBLE, [str(check.gpu), check.service, check.check], 1 if check.ok else 0)
        for function, count in self._errors.items():
            add(READ_ERRORS, [function], count)
        return list(families.values())

    @staticmethod
    def _add_xids(
        add: Callable[[MetricSpec, list[str], Any], None], gpu: list[str], index: int, xids: _Xids
    ) -> None:
        """A GPU's XID series, for GPUs whose XID events are watched (present even when it is lost)."""
        if index not in xids.counts:
            return
        for xid, count in sorted(xids.counts.get(index, {}).items()):
            add(XID_ERRORS, [*gpu, str(xid)], count)
        last = xids.last.get(index)
        add(LAST_XID_TIME, gpu, last[1] if last else 0)
        add(LAST_XID, gpu, last[0] if last else 0)


def _relevant(devices: tuple[_DeviceReading, ...], service: ServiceGpuFacts) -> list[_DeviceReading]:
    """The GPUs a service uses: where its processes run, else what CUDA_VISIBLE_DEVICES names, else all."""
    if service.gpus:
        return [d for d in devices if d.index in service.gpus]
    named: set[str] = set()
    for value in service.cuda_visible_devices:
        if value not in ("unset", "unreadable"):
            named |= {part.strip() for part in value.split(",") if part.strip()}
    if not named:
        return list(devices)
    chosen = [
        d
        for d in devices
        if str(d.index) in named
        or any(d.uuid.startswith(n) and n.startswith(("GPU-", "MIG-")) for n in named)
    ]
    return chosen  # an empty list: it names GPUs this machine does not have (the facts show the value)


def _device_facts(
    d: _DeviceReading, xids: _Xids | None = None, now: float = 0.0, stuck: bool = False
) -> GpuDeviceFacts:
    reasons = tuple(
        r for r, bit in CLOCK_EVENT_REASONS if d.clock_reasons is not None and d.clock_reasons & bit
    )
    recent: tuple[int, ...] = ()
    last: tuple[int, float] | None = None
    if xids is not None:
        recent = tuple(x for t, i, x in xids.recent if i == d.index and now - t <= RECENT_XID_SECONDS)
        last = xids.last.get(d.index)
    return GpuDeviceFacts(
        index=d.index,
        uuid=d.uuid,
        name=d.name,
        compute_capability=d.compute_capability,
        memory_total_bytes=d.memory_total,
        memory_used_bytes=d.memory_used,
        memory_free_bytes=d.memory_free,
        memory_reserved_bytes=d.memory_reserved,
        utilization=d.utilization,
        memory_utilization=d.memory_utilization,
        temperature_celsius=d.temperature,
        power_draw_watts=d.power_draw,
        power_limit_watts=d.power_limit,
        performance_state=d.pstate,
        clock_event_reasons=reasons,
        throttle_reasons=tuple(r for r in reasons if r in THROTTLE_REASONS),
        ecc_uncorrected=d.ecc_uncorrected,
        row_remapping_failed=d.remap_failed,
        processes=len(d.processes),
        lost=d.lost,
        stuck=stuck,
        xid_recent=recent,
        last_xid=last[0] if last else None,
        last_xid_time=last[1] if last else None,
    )


# --- value helpers ------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return None if value in (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF) else value


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def _scaled(value: Any, factor: float) -> float | None:
    number = _float(value)
    return None if number is None else number * factor


def _ratio(percent: Any) -> float | None:
    number = _float(percent)
    return None if number is None or not 0 <= number <= 100 else number / 100.0


def _pstate(value: Any) -> int | None:
    number = _int(value)
    return None if number is None or number == NVML_PSTATE_UNKNOWN or not 0 <= number <= 15 else number


def _processes(value: Any) -> tuple[tuple[int, int | None], ...]:
    if not isinstance(value, (list, tuple)):
        return ()
    found: list[tuple[int, int | None]] = []
    for process in value:
        pid = getattr(process, "pid", None)
        if isinstance(pid, int):
            found.append((pid, _int(getattr(process, "usedGpuMemory", None))))
    return tuple(found)


# --- nvidia-smi parsing ----------------------------------------------------------------------------------

# (our field, nvidia-smi query name). The legacy set serves nvidia-smi before R525 or so, which
# rejects the whole query when one name is unknown ("... is not a valid field to query").
SMI_FIELDS: tuple[tuple[str, str], ...] = (
    ("index", "index"),
    ("uuid", "uuid"),
    ("name", "name"),
    ("driver_version", "driver_version"),
    ("compute_cap", "compute_cap"),
    ("pstate", "pstate"),
    ("memory_total", "memory.total"),
    ("memory_used", "memory.used"),
    ("memory_free", "memory.free"),
    ("memory_reserved", "memory.reserved"),
    ("utilization", "utilization.gpu"),
    ("memory_utilization", "utilization.memory"),
    ("temperature", "temperature.gpu"),
    ("power_draw", "power.draw"),
    ("power_limit", "enforced.power.limit"),
    ("sm_clock", "clocks.current.sm"),
    ("memory_clock", "clocks.current.memory"),
    ("clock_reasons", "clocks_event_reasons.active"),
    ("ecc_corrected", "ecc.errors.corrected.volatile.total"),
    ("ecc_uncorrected", "ecc.errors.uncorrected.volatile.total"),
    ("remapped_correctable", "remapped_rows.correctable"),
    ("remapped_uncorrectable", "remapped_rows.uncorrectable"),
    ("remap_pending", "remapped_rows.pending"),
    ("remap_failed", "remapped_rows.failure"),
)
SMI_FIELDS_LEGACY: tuple[tuple[str, str], ...] = (
    ("index", "index"),
    ("uuid", "uuid"),
    ("name", "name"),
    ("driver_version", "driver_version"),
    ("pstate", "pstate"),
    ("memory_total", "memory.total"),
    ("memory_used", "memory.used"),
    ("memory_free", "memory.free"),
    ("utilization", "utilization.gpu"),
    ("memory_utilization", "utilization.memory"),
    ("temperature", "temperature.gpu"),
    ("power_draw", "power.draw"),
    ("power_limit", "enforced.power.limit"),
    ("sm_clock", "clocks.sm"),
    ("memory_clock", "clocks.mem"),
    ("clock_reasons", "clocks_throttle_reasons.active"),
    ("ecc_corrected", "ecc.errors.corrected.volatile.total"),
    ("ecc_uncorrected", "ecc.errors.uncorrected.volatile.total"),
)
MIB = 1024 * 1024


@dataclass(frozen=True)
class _SmiOutput:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return (self.stdout + b"\n" + self.stderr).decode("utf-8", "replace")


def _first_line(output: _SmiOutput) -> str:
    for line in output.text.splitlines():
        if line.strip():
            return line.strip()[:200]
    return "no output"


def _invalid_field(output: _SmiOutput) -> bool:
    return output.returncode != 0 and "is not a valid field to query" in output.text


def _absent(value: str) -> bool:
    """[N/A], [Not Supported], [Insufficient Permissions], [Unknown Error], ... and a bare N/A."""
    return (value.startswith("[") and value.endswith("]")) or value in ("N/A", "")


def _smi_number(field_name: str, value: str) -> float | None:
    if _absent(value):
        return None
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{field_name} is {value[:40]!r}, not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{field_name} is {value[:40]!r}, not a number")
    return number


def _smi_int(field_name: str, value: str, scale: int = 1) -> int | None:
    number = _smi_number(field_name, value)
    return None if number is None else int(round(number * scale))


def _smi_flag(field_name: str, value: str) -> bool | None:
    if _absent(value):
        return None
    lowered = value.lower()
    if lowered in ("yes", "1", "true", "active"):
        return True
    if lowered in ("no", "0", "false", "not active"):
        return False
    raise ValueError(f"{field_name} is {value[:40]!r}, not yes or no")


def _csv_rows(text: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in row]
        for row in csv.reader(io.StringIO(text), skipinitialspace=True)
        if row and any(cell.strip() for cell in row)
    ]


def parse_smi_gpus(
    stdout: bytes, fields: tuple[tuple[str, str], ...] = SMI_FIELDS
) -> tuple[str | None, tuple[_DeviceReading, ...]]:
    """(driver version, one reading per GPU) from --query-gpu CSV; ValueError names what is wrong."""
    text = stdout.decode("utf-8", "replace")
    keys = [key for key, _ in fields]
    devices: list[_DeviceReading] = []
    driver: str | None = None
    for number, row in enumerate(_csv_rows(text), start=1):
        if len(row) != len(keys):
            raise ValueError(
                f"line {number} has {len(row)} fields, expected {len(keys)}: {','.join(row)[:80]!r}"
            )
        value = dict(zip(keys, row, strict=True))
        index = _smi_number("index", value["index"])
        if index is None or index < 0 or index != int(index):
            raise ValueError(f"line {number}: index is {value['index'][:40]!r}")
        uuid = value["uuid"] if not _absent(value["uuid"]) else "unknown"
        name = value["name"] if not _absent(value["name"]) else "unknown"
        if not _absent(value.get("driver_version", "")):
            driver = value["driver_version"]
        cc = value.get("compute_cap", "")
        if cc and not _absent(cc) and cuda.parse_compute_capability(cc) is None:
            raise ValueError(f"compute_cap is {cc[:40]!r}")
        pstate = value.get("pstate", "")
        pstate_number: int | None = None
        if not _absent(pstate):
            match = re.fullmatch(r"P(\d{1,2})", pstate)
            if not match:
                raise ValueError(f"pstate is {pstate[:40]!r}")
            pstate_number = _pstate(int(match.group(1)))
        reasons = value.get("clock_reasons", "")
        reasons_number: int | None = None
        if not _absent(reasons):
            try:
                reasons_number = int(reasons, 16)
            except ValueError:
                raise ValueError(f"clock event reasons are {reasons[:40]!r}") from None
        utilization = _smi_number("utilization.gpu", value["utilization"])
        memory_utilization = _smi_number("utilization.memory", value["memory_utilization"])
        power = _smi_number("power.draw", value["power_draw"])
        limit = _smi_number("enforced.power.limit", value["power_limit"])
        sm_clock = _smi_number("clocks.sm", value["sm_clock"])
        memory_clock = _smi_number("clocks.mem", value["memory_clock"])
        devices.append(
            _DeviceReading(
                index=int(index),
                uuid=uuid,
                name=name,
                compute_capability=cc if cc and not _absent(cc) else None,
                memory_total=_smi_int("memory.total", value["memory_total"], MIB),
                memory_used=_smi_int("memory.used", value["memory_used"], MIB),
                memory_free=_smi_int("memory.free", value["memory_free"], MIB),
                memory_reserved=_smi_int("memory.reserved", value.get("memory_reserved", ""), MIB),
                utilization=_ratio(utilization),
                memory_utilization=_ratio(memory_utilization),
                temperature=_smi_number("temperature.gpu", value["temperature"]),
                power_draw=power,
                power_limit=limit,
                sm_clock=None if sm_clock is None else sm_clock * 1e6,
                memory_clock=None if memory_clock is None else memory_clock * 1e6,
                pstate=pstate_number,
                clock_reasons=reasons_number,
                ecc_corrected=_smi_int("ecc corrected", value["ecc_corrected"]),
                ecc_uncorrected=_smi_int("ecc uncorrected", value["ecc_uncorrected"]),
                remapped_correctable=_smi_int(
                    "remapped_rows.correctable", value.get("remapped_correctable", "")
                ),
                remapped_uncorrectable=_smi_int(
                    "remapped_rows.uncorrectable", value.get("remapped_uncorrectable", "")
                ),
                remap_pending=_smi_flag("remapped_rows.pending", value.get("remap_pending", "")),
                remap_failed=_smi_flag("remapped_rows.failure", value.get("remap_failed", "")),
            )
        )
    if not devices and text.strip() and "No devices were found" not in text:
        raise ValueError(f"no GPU line in {text.strip()[:80]!r}")
    return driver, tuple(devices)


def parse_smi_apps(stdout: bytes) -> list[tuple[str, int, int | None]]:
    """(GPU UUID, pid, used bytes) from --query-compute-apps=gpu_uuid,pid,used_memory CSV."""
    text = stdout.decode("utf-8", "replace")
    if "No running processes found" in text:
        return []
    apps = []
    for number, row in enumerate(_csv_rows(text), start=1):
        if len(row) != 3:
            raise ValueError(f"line {number} has {len(row)} fields, expected 3: {','.join(row)[:80]!r}")
        pid = _smi_number("pid", row[1])
        if pid is None or pid <= 0 or pid != int(pid):
            raise ValueError(f"line {number}: pid is {row[1][:40]!r}")
        apps.append((row[0], int(pid), _smi_int("used_memory", row[2], MIB)))
    return apps


# --- the /proc side of the joins -------------------------------------------------------------------------

PROC_CACHE_SECONDS = 60.0  # a process may rename itself (setproctitle) soon after it starts
MAX_PIDS_PER_SERVICE = 64  # environments read per service and cycle
MAX_RUNTIME_READS = 4  # /proc/PID/maps read per cycle (a big service maps thousands of files)
MAX_ANCESTRY = 32


@dataclass
class _PidInfo:
    read_at: float
    service: str | None  # the service its own cmdline/exe matches
    ppid: int | None = None  # read only when needed (ancestry)
    owner: str | None = None  # the service it or its nearest matched ancestor belongs to
    owner_known: bool = False
    visible: str | None = None  # CUDA_VISIBLE_DEVICES, read only for service processes
    runtime: cuda.Runtime | None = None
    runtime_read_at: float | None = None


@dataclass(frozen=True)
class _Join:
    owner: dict[int, str]  # GPU pid -> service
    pids: dict[str, list[int]]  # service -> its pids
    visible: dict[str, list[str]]  # service -> distinct CUDA_VISIBLE_DEVICES values
    runtimes: dict[str, cuda.Runtime]  # service -> its CUDA runtime


class _ProcJoin:
    """Which service a pid belongs to, its environment and its CUDA runtime, cached per pid."""

    def __init__(self, proc_root: str, services: tuple[ServiceConfig, ...]) -> None:
        self.proc_root = proc_root
        self.services = services
        self._rules = [
            (s.name, re.compile(s.match.cmdline) if s.match.cmdline else None, s.match.exe) for s in services
        ]
        self._need_exe = any(s.match.exe for s in services)
        self._pids: dict[int, _PidInfo] = {}
        self._listing_failed = False

    def join(self, gpu_pids: list[int]) -> _Join:
        if not self.services:
            return _Join({}, {}, {}, {})
        now = time.monotonic()
        try:
            pids = procfs.list_pids(self.proc_root)
        except OSError as exc:
            if not self._listing_failed:
                log.warning("cannot list processes for the GPU joins", extra={"error": str(exc)})
                self._listing_failed = True
            pids = []
        own = os.getpid()
        alive = set(pids)
        for pid in [p for p in self._pids if p not in alive]:
            del self._pids[pid]
        direct: dict[str, list[int]] = {s.name: [] for s in self.services}
        for pid in pids:
            if pid == own:
                continue
            entry = self._info(pid, now)
            if entry is not None and entry.service is not None:
                direct[entry.service].append(pid)
        owner: dict[int, str] = {}
        attributed: dict[str, list[int]] = {s.name: [] for s in self.services}
        for pid in gpu_pids:
            service = self._owner(pid, now)
            if service is not None:
                owner[pid] = service
                attributed[service].append(pid)
        members: dict[str, list[int]] = {}
        visible: dict[str, list[str]] = {}
        runtimes: dict[str, cuda.Runtime] = {}
        reads = [MAX_RUNTIME_READS]
        for name, matched in direct.items():
            matched_set = set(matched)
            on_gpu = [pid for pid in attributed[name] if pid not in matched_set]
            members[name] = sorted(matched + on_gpu)
            # Environments: GPU processes first (they are what CUDA_VISIBLE_DEVICES steered).
            gpu_first = [pid for pid in members[name] if pid in owner] + [
                pid for pid in members[name] if pid not in owner
            ]
            values: dict[str, None] = {}
            for pid in gpu_first[:MAX_PIDS_PER_SERVICE]:
                value = self._visible(pid)
                if value is not None:
                    values.setdefault(value, None)
            visible[name] = list(values)[:4]
            # The runtime: the processes the service's own rule matched first (one of them imports
            # torch), then its GPU processes.
            runtime = self._runtime(matched + on_gpu, now, reads)
            if runtime is not None:
                runtimes[name] = runtime
        return _Join(owner, members, visible, runtimes)

    def _info(self, pid: int, now: float) -> _PidInfo | None:
        entry = self._pids.get(pid)
        if entry is not None and now - entry.read_at < PROC_CACHE_SECONDS:
            return entry
        try:
            cmdline = procfs.read_cmdline(self.proc_root, pid)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            self._pids.pop(pid, None)
            return None
        exe = procfs.read_exe(self.proc_root, pid) if self._need_exe else None
        service = None
        for name, pattern, rule_exe in self._rules:
            if (pattern is not None and cmdline and pattern.search(cmdline)) or (
                rule_exe and exe == rule_exe
            ):
                service = name
                break
        if entry is not None and entry.service == service:
            entry.read_at = now  # same process (most likely): keep what was read about it
            entry.owner_known = False  # but look at its ancestry again (a parent may have died)
            return entry
        entry = _PidInfo(now, service)
        self._pids[pid] = entry
        return entry

    def _owner(self, pid: int, now: float) -> str | None:
        """The service of the process or of its nearest matched ancestor, remembered per pid."""
        first = self._info(pid, now)
        if first is None:
            return None
        if not first.owner_known:
            first.owner = self._walk(pid, now)
            first.owner_known = True
        return first.owner

    def _walk(self, pid: int, now: float) -> str | None:
        current: int | None = pid
        for _ in range(MAX_ANCESTRY):
            if current is None or current <= 1:
                return None
            entry = self._info(current, now)
            if entry is None:
                return None
            if entry.service is not None:
                return entry.service
            if entry.ppid is None:
                try:
                    stat = procfs.parse_pid_stat(procfs.read_text(f"{self.proc_root}/{current}/stat"))
                except (OSError, procfs.ProcParseError):
                    return None
                entry.ppid = stat.ppid
            current = entry.ppid
        return None

    def _visible(self, pid: int) -> str | None:
        entry = self._pids.get(pid)
        if entry is not None and entry.visible is not None:
            return entry.visible
        try:
            with open(f"{self.proc_root}/{pid}/environ", "rb") as handle:
                raw = handle.read(1024 * 1024)
        except PermissionError:
            value = "unreadable"
        except OSError:
            return None
        else:
            value = "unset"
            for item in raw.split(b"\0"):
                if item.startswith(b"CUDA_VISIBLE_DEVICES="):
                    value = item.split(b"=", 1)[1].decode("utf-8", "replace")[:64] or "empty"
                    break
        if entry is not None:
            entry.visible = value
        return value

    def _runtime(self, pids: list[int], now: float, reads: list[int]) -> cuda.Runtime | None:
        for pid in pids:
            entry = self._pids.get(pid)
            if entry is None:
                continue
            if entry.runtime is not None:
                return entry.runtime
            if entry.runtime_read_at is not None and now - entry.runtime_read_at < PROC_CACHE_SECONDS:
                continue
            if reads[0] <= 0:
                continue
            reads[0] -= 1
            entry.runtime_read_at = now
            try:
                entry.runtime = cuda.find_runtime(self.proc_root, pid)
            except OSError:
                entry.runtime = None
            if entry.runtime is not None:
                return entry.runtime
        return None

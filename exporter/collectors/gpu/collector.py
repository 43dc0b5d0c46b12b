"""The GPUs: memory, utilization, health, and which service uses them with which CUDA.

Source. NVML through nvidia-ml-py (`pynvml`, injectable). When NVML cannot start, `nvidia-smi
--query-gpu=... --format=csv,noheader,nounits` under the call timeout (killed and reaped at it);
`gpu.nvml: false` goes straight to nvidia-smi. `autoglm_gpu_source_info` says which one answered.
With neither (no driver, no library, no binary) the collector succeeds with
`autoglm_gpu_available 0`, logs "no NVIDIA GPU / driver found" once, and the facts say so.

What NVML cannot give is absent, never 0 (see nvml.py: NotSupported, N/A, a missing
function falls back to its older variant). In nvidia-smi output every bracketed value ([N/A],
[Not Supported], [Insufficient Permissions], ...) is absence; anything else that does not parse
fails the run with kind parse_error.

Per cycle each GPU costs a fixed set of NVML calls (`NVML_CALLS_PER_GPU`, fewer once a field is
known to be unsupported, one process-list call among them) plus at least one event-set poll for
the whole cycle. Identity (UUID, name, compute capability) is read once per NVML session.

Hang guard. Every NVML call of a cycle runs in one DeadlineWorker thread (base/deadline.py) and
the cycle waits at most `gpu.call_timeout`. Past it collect() raises CollectorError("timeout"): the runner
drops every GPU series (never served stale) and counts the failure. Until the stuck call returns,
each collect() raises CollectorError("skipped_stuck") at once and starts no NVML call. The error
(`GpuStuckError`) carries the facts with `stuck` set, and `last_facts` keeps them.

XID events. NVML's event set is polled with a 0 ms wait each cycle; `autoglm_gpu_xid_errors_total`
counts them by XID since the exporter started (a few common XIDs exist at 0 from the first scrape)
and stays exported for a GPU that is lost or whose other reads fail.

Joins with the configured services (no GPU exporter does these):
- each GPU process (compute processes, from NVML or nvidia-smi) is attributed to the first service
  it belongs to or, failing that, the service of its nearest ancestor (the engine's worker
  processes are children of the matched server); others are "other". Which processes belong to a
  service comes from the ServiceMatcher every collector shares (linux/processes.py: command
  line, executable, pidfile and port rules), so a service means the same processes here as for
  the process collector. A pid that this /proc cannot see (a GPU process in another pid
  namespace) is "other".
- `CUDA_VISIBLE_DEVICES` of each service's processes, from /proc/PID/environ (the environment the
  process was started with): "unset" when absent, "unreadable" without permission.
- the CUDA runtime each service uses (cuda.py) against each GPU it may use (the GPUs its
  processes run on, else those its CUDA_VISIBLE_DEVICES names, else all) and against the driver:
  `autoglm_cuda_compatible{gpu,service,check}` plus a sentence for the verdict.
  CUDA_VISIBLE_DEVICES indexes follow CUDA's order, which is NVML's (PCI bus) order only with
  CUDA_DEVICE_ORDER=PCI_BUS_ID: indexes are matched as given, UUIDs exactly.

Where the parts live (in this package): nvmlreader.py reads NVML (sessions, the per-GPU calls,
the XID event set) and smi.py runs and parses nvidia-smi, both into the records of reading.py;
xids.py keeps the XID counts and join.py does the /proc joins. This module turns a reading into
the facts and the metric families.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from ...base.deadline import DeadlinePassed, StillBusy
from ...base.thresholds import GPU_THROTTLE_REASONS, RECENT_XID_SECONDS
from ...config import GpuConfig, ServiceConfig
from ...facts.gpu import CompatibilityFacts, GpuDeviceFacts, GpuFacts, GpuProcessFacts, ServiceGpuFacts
from ...linux.processes import ProcfsUnreadable, ServiceMatcher
from ...metrics.spec import Families, Family, MetricSpec, counter, gauge, info
from ..base import Collector, CollectorError, Result
from . import cuda
from .join import NO_JOIN, ProcJoin, ServiceJoin, gpus_used_by
from .nvmlreader import NVML_CALLS_PER_GPU as NVML_CALLS_PER_GPU
from .nvmlreader import NoGpu, NvmlReader, NvmlUnavailable
from .reading import NO_GPU as NO_GPU
from .reading import DeviceReading, GpuReading
from .smi import NvidiaSmi, SmiError
from .xids import COMMON_XIDS as COMMON_XIDS
from .xids import XidLog, XidSnapshot

log = logging.getLogger(__name__)

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
# The reasons that mean the clocks are held down (heat, hardware), not idle, configured or capped.
THROTTLE_REASONS = frozenset(GPU_THROTTLE_REASONS)


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

_Add = Callable[[MetricSpec, list[str], Any], None]  # Families.add


# --- facts ----------------------------------------------------------------------------------------


class GpuStuckError(CollectorError):
    """A CollectorError (timeout / skipped_stuck) that also carries the facts saying what is stuck."""

    def __init__(self, kind: str, message: str, facts: GpuFacts) -> None:
        super().__init__(kind, message)
        self.facts = facts


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
        matcher: ServiceMatcher | None = None,
    ) -> None:
        self.config = config
        self.services = services
        self.proc_root = proc_root
        self.settings = (config, services, proc_root, nvml_module)
        self._errors: dict[str, int] = dict.fromkeys(READ_FUNCTIONS, 0)
        self._xids = XidLog()
        self._nvml = NvmlReader(nvml_module, self._errors, self._xids)
        self._smi = NvidiaSmi(config, self._errors)
        self.matcher = matcher or ServiceMatcher(services, proc_root)
        self._procs = ProcJoin(proc_root, services)
        self._proc_unreadable = False
        self._last_state: tuple[str, bool, str | None] | None = None
        self._last_devices: tuple[DeviceReading, ...] = ()
        self.last_facts: GpuFacts | None = None

    # --- one run --------------------------------------------------------------------------------

    def collect(self) -> Result:
        reading: GpuReading | None = None
        nvml_problem: NvmlUnavailable | None = None
        if self.config.nvml:
            try:
                reading = self._read_nvml()
            except NvmlUnavailable as exc:
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

    def _log_state(self, reading: GpuReading) -> None:
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

    def _read_nvml(self) -> GpuReading:
        """One NVML cycle (nvmlreader.py) under the hang guard."""
        try:
            return self._nvml.read(self.config.call_timeout)
        except DeadlinePassed as exc:
            raise self._stuck("timeout", f"{exc}; GPU series dropped until it returns", exc.doing) from None
        except StillBusy as exc:
            raise self._stuck("skipped_stuck", str(exc), exc.doing) from None

    def _stuck(self, kind: str, message: str, doing: str) -> GpuStuckError:
        """The error to raise: the facts it carries say which call on which GPU is stuck."""
        match = re.search(r" on GPU (\d+)$", doing)
        stuck_gpu = int(match.group(1)) if match else None
        gpus = tuple(
            _device_facts(
                DeviceReading(d.index, d.uuid, d.name, d.compute_capability),
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

    # --- nvidia-smi -------------------------------------------------------------------------------

    def _read_nvidia_smi(self, nvml_problem: NvmlUnavailable | None) -> GpuReading:
        """The fallback (smi.py); its failures are this run's CollectorError."""
        try:
            return self._smi.read(
                None if nvml_problem is None else str(nvml_problem),
                nvml_problem is None or isinstance(nvml_problem, NoGpu),
            )
        except SmiError as exc:
            raise CollectorError(exc.kind, str(exc)) from None

    # --- facts --------------------------------------------------------------------------------------

    def _facts(self, reading: GpuReading, xids: XidSnapshot) -> GpuFacts:
        now = time.time()
        gpu_pids = sorted({pid for device in reading.devices for pid, _ in device.processes})
        join = self._join(gpu_pids)
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

    def _join(self, gpu_pids: list[int]) -> ServiceJoin:
        """The GPU processes joined with the services; none when /proc cannot be listed (said once)."""
        if not self.services:
            return NO_JOIN
        try:
            membership = self.matcher.current()
        except ProcfsUnreadable as exc:
            if not self._proc_unreadable:
                log.warning("cannot list processes for the GPU joins", extra={"error": str(exc)})
                self._proc_unreadable = True
            return NO_JOIN
        self._proc_unreadable = False
        return self._procs.join(membership, gpu_pids)

    def _compatibility(
        self, reading: GpuReading, services: dict[str, ServiceGpuFacts], runtimes: dict[str, cuda.Runtime]
    ) -> tuple[CompatibilityFacts, ...]:
        checks: list[CompatibilityFacts] = []
        for name, service in services.items():
            runtime = runtimes.get(name)
            if runtime is None or not reading.devices:
                continue
            for device in gpus_used_by(reading.devices, service.gpus, service.cuda_visible_devices):
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

    def _families(self, reading: GpuReading, facts: GpuFacts, xids: XidSnapshot) -> list[Family]:
        families = Families(self.metrics)
        add = families.add

        add(AVAILABLE, [], 1 if reading.available else 0)
        add(SOURCE, [], {"source": reading.source})
        add(DEVICES, [], len(reading.devices))
        usage = _usage(facts.processes)
        for d in reading.devices:
            gpu = [str(d.index), d.uuid, d.name]
            identity = {
                "driver_version": reading.driver_version or "",
                "cuda_driver_version": facts.cuda_driver_version or "",
                "compute_capability": d.compute_capability or "",
            }
            add(GPU_INFO, gpu, identity)
            add(LOST, gpu, 1 if d.lost else 0)
            self._add_xids(add, gpu, d.index, xids)
            if not d.lost:
                self._add_readings(add, gpu, d, usage)
        listed = {d.index for d in reading.devices}
        for index, (uuid, name) in sorted(xids.identity.items()):
            if index not in listed:  # a GPU the current source does not list: its XIDs stay visible
                self._add_xids(add, [str(index), uuid, name], index, xids)
        _add_services(add, facts)
        for function, count in self._errors.items():
            add(READ_ERRORS, [function], count)
        return families.list()

    def _add_readings(
        self, add: _Add, gpu: list[str], d: DeviceReading, usage: dict[tuple[int, str], tuple[int, int]]
    ) -> None:
        """What a GPU that is not lost reads: its values, clock reasons, and each owner's processes."""
        for spec, labels, field_name in DEVICE_VALUES:
            value = getattr(d, field_name)
            add(spec, [*gpu, *labels], int(value) if isinstance(value, bool) else value)
        if d.clock_reasons is not None:
            for reason, bit in CLOCK_EVENT_REASONS:
                add(CLOCK_EVENT, [*gpu, reason], 1 if d.clock_reasons & bit else 0)
        for owner in [*(s.name for s in self.services), OTHER]:
            count, used = usage.get((d.index, owner), (0, 0))
            add(PROCESSES, [*gpu, owner], count)
            add(PROCESS_MEMORY, [*gpu, owner], used)

    @staticmethod
    def _add_xids(add: _Add, gpu: list[str], index: int, xids: XidSnapshot) -> None:
        """A GPU's XID series, for GPUs whose XID events are watched (present even when it is lost)."""
        if index not in xids.counts:
            return
        for xid, count in sorted(xids.counts.get(index, {}).items()):
            add(XID_ERRORS, [*gpu, str(xid)], count)
        last = xids.last.get(index)
        add(LAST_XID_TIME, gpu, last[1] if last else 0)
        add(LAST_XID, gpu, last[0] if last else 0)


def _usage(processes: tuple[GpuProcessFacts, ...]) -> dict[tuple[int, str], tuple[int, int]]:
    """(GPU, service or other) -> (processes, GPU memory they use)."""
    usage: dict[tuple[int, str], tuple[int, int]] = {}
    for process in processes:
        key = (process.gpu, process.service or OTHER)
        count, used = usage.get(key, (0, 0))
        usage[key] = (count + 1, used + (process.used_memory_bytes or 0))
    return usage


def _add_services(add: _Add, facts: GpuFacts) -> None:
    """Each service's CUDA_VISIBLE_DEVICES and runtime, and how that runtime fits each GPU."""
    for name, service in facts.services.items():
        for value in service.cuda_visible_devices:
            add(VISIBLE_DEVICES, [name], {"cuda_visible_devices": value})
        if service.cuda_runtime:
            runtime = {"cuda_version": service.cuda_runtime, "source": service.cuda_runtime_source or ""}
            add(SERVICE_RUNTIME, [name], runtime)
    for check in facts.compatibility:
        add(COMPATIBLE, [str(check.gpu), check.service, check.check], 1 if check.ok else 0)


def _device_facts(
    d: DeviceReading, xids: XidSnapshot | None = None, now: float = 0.0, stuck: bool = False
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

"""Reading the GPUs through NVML: sessions, the per-GPU calls of a cycle, and the XID event set.

`NvmlReader` owns one NVML session at a time (nvmlInit, identity of each GPU read once, the XID
event set) and runs every call of a cycle in one DeadlineWorker (base/deadline.py), so a wedged
driver can hang that thread but never the caller: past the deadline the cycle fails with
DeadlinePassed, and until the stuck call returns every cycle fails at once with StillBusy,
starting no NVML call and no thread. What the calls return becomes a GpuReading
(reading.py); what cannot be read is absent. A session that stops answering is closed
and the reader says NVML is unavailable (the collector then tries nvidia-smi); with a GPU lost,
the session is opened again now and then to see it come back.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ...base.deadline import DeadlineWorker
from . import cuda
from .nvml import (
    DRIVER_NOT_LOADED,
    LIBRARY_NOT_FOUND,
    TIMEOUT,
    UNINITIALIZED,
    GpuLost,
    NvmlQuery,
    SessionLost,
    error_code,
)
from .reading import (
    NO_GPU,
    DeviceReading,
    GpuReading,
    performance_state,
    ratio_from_percent,
    reported_float,
    reported_int,
)
from .xids import XidLog

log = logging.getLogger(__name__)

XID_EVENT = 0x8  # nvmlEventTypeXidCriticalError
MAX_EVENTS_PER_CYCLE = 256
LOST_REOPEN_SECONDS = 300.0  # with a GPU lost, start NVML again this often to see it come back

# NVML constants (nvml.h), used when the module does not define them.
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_MEMORY_V2 = 0x02000028

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


class NvmlUnavailable(Exception):
    """NVML cannot be used this cycle."""


class NoGpu(NvmlUnavailable):
    """NVML cannot be used because there is no GPU or no driver (not a fault to report)."""


@dataclass(frozen=True)
class _Device:
    """What one GPU is, read once per NVML session."""

    index: int
    uuid: str
    name: str
    compute_capability: str | None
    handle: Any = field(compare=False, repr=False)


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


class NvmlReader:
    """One cycle of NVML reads under a deadline, opening NVML first when needed.

    `errors` (function -> failed calls) and `xids` are shared with the caller, which exports them.
    """

    def __init__(self, nvml_module: Any, errors: dict[str, int], xids: XidLog) -> None:
        self._nvml_module = nvml_module
        self._errors = errors
        self._xids = xids
        self._worker = DeadlineWorker("gpu-nvml")
        self._session: _Session | None = None
        self._query: NvmlQuery | None = None  # the session's, for the stuck message

    def read(self, timeout: float) -> GpuReading:
        """The cycle in the worker thread. DeadlinePassed past timeout, StillBusy while a call hangs,
        NvmlUnavailable when NVML cannot be used."""
        return self._worker.run(self._cycle, timeout, self.doing)

    def doing(self) -> str:
        """The NVML call in flight ("nvmlDeviceGetPowerUsage on GPU 3"), for the stuck message."""
        query = self._query
        return query.current if query is not None else "nvmlInit"

    def _module(self) -> Any:
        if self._nvml_module is not None:
            return self._nvml_module
        try:
            import pynvml  # nvidia-ml-py
        except ImportError as exc:
            raise NvmlUnavailable(f"nvidia-ml-py cannot be imported: {exc}") from None
        return pynvml

    def _cycle(self) -> GpuReading:
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
            raise NvmlUnavailable(f"NVML stopped answering ({exc})") from None
        return GpuReading(
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
                raise NoGpu(f"{NO_GPU} (NVML: {exc})") from None
            raise NvmlUnavailable(f"NVML cannot start: {exc}") from None
        except OSError as exc:
            raise NoGpu(f"{NO_GPU} (NVML: {exc})") from None
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
                    raise NoGpu(f"{NO_GPU} (NVML lists no GPU)")
                raise NvmlUnavailable("NVML cannot count the GPUs")
            devices = [self._identify(query, index) for index in range(int(count))]
            event_set, registered = self._register_events(query, devices)
        except SessionLost as exc:
            raise NvmlUnavailable(f"NVML stopped answering ({exc})") from None
        for device in devices:
            if device.index in registered:
                self._xids.watch(device.index, device.uuid, device.name)
            else:
                self._xids.identify(device.index, device.uuid, device.name)
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

    def _read_device(self, session: _Session, device: _Device) -> DeviceReading:
        base = DeviceReading(device.index, device.uuid, device.name, device.compute_capability)
        if device.handle is None:
            return replace(base, lost=True)
        try:
            answers = _DeviceCalls(session.query, session.nvml, device).run()
        except GpuLost:
            session.lost.add(device.index)
            return replace(base, lost=True)
        return _reading(base, answers)

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


class _DeviceCalls:
    """The per-GPU calls of one cycle (NVML_CALLS_PER_GPU), each under the name it is counted as."""

    def __init__(self, query: NvmlQuery, nvml: Any, device: _Device) -> None:
        self.query, self.nvml, self.handle, self.index = query, nvml, device.handle, device.index

    def run(self) -> dict[str, Any]:
        """What each call answered (None: absent), by the field it feeds."""
        sensor = self._constant("NVML_TEMPERATURE_GPU", NVML_TEMPERATURE_GPU)
        volatile = self._constant("NVML_VOLATILE_ECC", NVML_VOLATILE_ECC)
        return {
            "memory": self._memory(),
            "rates": self._get("nvmlDeviceGetUtilizationRates"),
            "temperature": self._first(
                "nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperature", args=(sensor,)
            ),
            "power": self._get("nvmlDeviceGetPowerUsage"),
            "limit": self._get("nvmlDeviceGetEnforcedPowerLimit"),
            "energy": self._get("nvmlDeviceGetTotalEnergyConsumption"),
            "sm_clock": self._clock("SM", self._constant("NVML_CLOCK_SM", NVML_CLOCK_SM)),
            "memory_clock": self._clock("MEM", self._constant("NVML_CLOCK_MEM", NVML_CLOCK_MEM)),
            "pstate": self._get("nvmlDeviceGetPerformanceState"),
            "reasons": self._first(
                "nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"
            ),
            "corrected": self._ecc("corrected", NVML_MEMORY_ERROR_TYPE_CORRECTED, volatile),
            "uncorrected": self._ecc("uncorrected", NVML_MEMORY_ERROR_TYPE_UNCORRECTED, volatile),
            "remapped": self._get("nvmlDeviceGetRemappedRows"),
            "processes": self._first(
                "nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2"
            ),
        }

    def _constant(self, name: str, default: int) -> Any:
        """An nvml.h constant as the module defines it, else its documented value."""
        return getattr(self.nvml, name, default)

    def _get(self, name: str, *args: Any, attr: str | None = None) -> Any:
        return self.query.get(name, self.handle, *args, device=self.index, attr=attr)

    def _first(self, *names: str, args: tuple[Any, ...] = ()) -> Any:
        """The first of these functions (newest first) that this driver and binding answer."""
        return self.query.first([(name, name, (self.handle, *args), {}) for name in names], device=self.index)

    def _memory(self) -> Any:
        """Memory info v2 (it knows what the driver reserves), else v1: one function, two versions."""
        version = self._constant("nvmlMemory_v2", NVML_MEMORY_V2)
        options = [
            ("nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetMemoryInfo", (self.handle,), {"version": version}),
            ("nvmlDeviceGetMemoryInfo", "nvmlDeviceGetMemoryInfo", (self.handle,), {}),
        ]
        return self.query.first(options, device=self.index)

    def _clock(self, domain: str, clock: Any) -> Any:
        return self._get(f"nvmlDeviceGetClockInfo({domain})", clock, attr="nvmlDeviceGetClockInfo")

    def _ecc(self, kind: str, default_type: int, volatile: Any) -> Any:
        error_type = self._constant(f"NVML_MEMORY_ERROR_TYPE_{kind.upper()}", default_type)
        return self._get(
            f"nvmlDeviceGetTotalEccErrors({kind})", error_type, volatile, attr="nvmlDeviceGetTotalEccErrors"
        )


def _reading(base: DeviceReading, answers: dict[str, Any]) -> DeviceReading:
    """A GPU's reading from what its calls answered, in base units."""
    memory, rates, remapped = answers["memory"], answers["rates"], answers["remapped"]
    remap = remapped if isinstance(remapped, (tuple, list)) and len(remapped) == 4 else None
    return replace(
        base,
        memory_total=reported_int(getattr(memory, "total", None)),
        memory_used=reported_int(getattr(memory, "used", None)),
        memory_free=reported_int(getattr(memory, "free", None)),
        memory_reserved=reported_int(getattr(memory, "reserved", None)),
        utilization=ratio_from_percent(getattr(rates, "gpu", None)),
        memory_utilization=ratio_from_percent(getattr(rates, "memory", None)),
        temperature=reported_float(answers["temperature"]),
        power_draw=_scaled(answers["power"], 1e-3),
        power_limit=_scaled(answers["limit"], 1e-3),
        energy=_scaled(answers["energy"], 1e-3),
        sm_clock=_scaled(answers["sm_clock"], 1e6),
        memory_clock=_scaled(answers["memory_clock"], 1e6),
        pstate=performance_state(answers["pstate"]),
        clock_reasons=reported_int(answers["reasons"]),
        ecc_corrected=reported_int(answers["corrected"]),
        ecc_uncorrected=reported_int(answers["uncorrected"]),
        remapped_correctable=reported_int(remap[0]) if remap else None,
        remapped_uncorrectable=reported_int(remap[1]) if remap else None,
        remap_pending=bool(remap[2]) if remap else None,
        remap_failed=bool(remap[3]) if remap else None,
        processes=_processes(answers["processes"]),
    )


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _scaled(value: Any, factor: float) -> float | None:
    number = reported_float(value)
    return None if number is None else number * factor


def _processes(value: Any) -> tuple[tuple[int, int | None], ...]:
    if not isinstance(value, (list, tuple)):
        return ()
    found: list[tuple[int, int | None]] = []
    for process in value:
        pid = getattr(process, "pid", None)
        if isinstance(pid, int):
            found.append((pid, reported_int(getattr(process, "usedGpuMemory", None))))
    return tuple(found)

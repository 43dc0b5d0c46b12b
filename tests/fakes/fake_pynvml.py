"""A fake `pynvml` (nvidia-ml-py) at its boundary, driven by a Scenario.

Same function names, argument shapes and return types as nvidia-ml-py 12.5xx-13.x:
strings for versions, UUIDs and names; ints in NVML's units (bytes, percent, mW, mJ, MHz, degrees C);
objects with the structure fields (`total/free/used[/reserved]`, `gpu/memory`, `pid/usedGpuMemory`,
`device/eventType/eventData`); a (major, minor) tuple for the compute capability; a 4-tuple for
remapped rows. Errors are raised as `NVMLError(code)`, which, as in nvidia-ml-py, becomes the
matching `NVMLError_<Name>` subclass (NVMLError_NotSupported, NVMLError_GpuIsLost, ...).

A Scenario says what the GPUs report, which calls are missing from the driver (FunctionNotFound)
or from the binding (no such attribute), which fail with which error on which GPU, which block
until `release()`, and which XID events are waiting. Every call is counted in `calls`.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

NVML_SUCCESS = 0
ERRORS = {
    "UNINITIALIZED": 1,
    "INVALID_ARGUMENT": 2,
    "NOT_SUPPORTED": 3,
    "NO_PERMISSION": 4,
    "ALREADY_INITIALIZED": 5,
    "NOT_FOUND": 6,
    "INSUFFICIENT_SIZE": 7,
    "INSUFFICIENT_POWER": 8,
    "DRIVER_NOT_LOADED": 9,
    "TIMEOUT": 10,
    "IRQ_ISSUE": 11,
    "LIBRARY_NOT_FOUND": 12,
    "FUNCTION_NOT_FOUND": 13,
    "CORRUPTED_INFOROM": 14,
    "GPU_IS_LOST": 15,
    "RESET_REQUIRED": 16,
    "OPERATING_SYSTEM": 17,
    "LIB_RM_VERSION_MISMATCH": 18,
    "IN_USE": 19,
    "MEMORY": 20,
    "NO_DATA": 21,
    "ARGUMENT_VERSION_MISMATCH": 25,
    "UNKNOWN": 999,
}
globals().update({f"NVML_ERROR_{name}": code for name, code in ERRORS.items()})
NOT_SUPPORTED = ERRORS["NOT_SUPPORTED"]
FUNCTION_NOT_FOUND = ERRORS["FUNCTION_NOT_FOUND"]
GPU_IS_LOST = ERRORS["GPU_IS_LOST"]
TIMEOUT = ERRORS["TIMEOUT"]
LIBRARY_NOT_FOUND = ERRORS["LIBRARY_NOT_FOUND"]
DRIVER_NOT_LOADED = ERRORS["DRIVER_NOT_LOADED"]
UNKNOWN = ERRORS["UNKNOWN"]
NO_PERMISSION = ERRORS["NO_PERMISSION"]

CONSTANTS = {
    "NVML_TEMPERATURE_GPU": 0,
    "NVML_CLOCK_GRAPHICS": 0,
    "NVML_CLOCK_SM": 1,
    "NVML_CLOCK_MEM": 2,
    "NVML_MEMORY_ERROR_TYPE_CORRECTED": 0,
    "NVML_MEMORY_ERROR_TYPE_UNCORRECTED": 1,
    "NVML_VOLATILE_ECC": 0,
    "NVML_AGGREGATE_ECC": 1,
    "NVML_PSTATE_UNKNOWN": 32,
    "nvmlMemory_v2": 0x02000028,
    "nvmlTemperature_v1": 0x0100000C,
    "nvmlEventTypeXidCriticalError": 0x8,
    "nvmlEventTypeSingleBitEccError": 0x1,
    "nvmlEventTypeDoubleBitEccError": 0x2,
}
XID_EVENT = 0x8


class NVMLError(Exception):
    _valClassMapping: dict[int, type[NVMLError]] = {}

    def __new__(cls, value: int) -> NVMLError:  # noqa: PYI034 - mirrors nvidia-ml-py
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        for name, code in ERRORS.items():
            if code == self.value:
                return name.replace("_", " ").title()
        return f"NVML Error with code {self.value}"


def _make_error_classes() -> dict[str, type[NVMLError]]:
    made = {}
    for name, code in ERRORS.items():
        class_name = "NVMLError_" + "".join(part.capitalize() for part in name.split("_"))

        def new(cls: type[NVMLError], *args: Any, _code: int = code) -> NVMLError:
            obj = Exception.__new__(cls)
            obj.value = _code
            return obj

        def init(self: NVMLError, *args: Any, _code: int = code) -> None:
            Exception.__init__(self, _code)
            self.value = _code

        made[class_name] = type(class_name, (NVMLError,), {"__new__": new, "__init__": init})
        NVMLError._valClassMapping[code] = made[class_name]
    return made


ERROR_CLASSES = _make_error_classes()
globals().update(ERROR_CLASSES)


# --- what the GPUs report --------------------------------------------------------------------------


@dataclass
class FakeProcess:
    pid: int
    usedGpuMemory: int | None  # noqa: N815 - nvidia-ml-py's field name
    gpuInstanceId: int = 0xFFFFFFFF  # noqa: N815
    computeInstanceId: int = 0xFFFFFFFF  # noqa: N815


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    compute_capability: tuple[int, int] = (9, 0)
    memory_total: int = 81559 * 1024 * 1024
    memory_reserved: int = 512 * 1024 * 1024
    memory_used: int = 40000 * 1024 * 1024
    utilization_gpu: int = 87
    utilization_memory: int = 41
    temperature: int = 61
    power_mw: int = 312_450
    power_limit_mw: int = 700_000
    energy_mj: int = 123_456_789
    sm_clock_mhz: int = 1980
    mem_clock_mhz: int = 2619
    pstate: int = 0
    clock_reasons: int = 0x4  # sw_power_cap
    ecc_corrected: int = 3
    ecc_uncorrected: int = 0
    remapped: tuple[int, int, int, int] = (2, 0, 0, 0)
    processes: list[FakeProcess] = field(default_factory=list)
    supported_events: int = 0x8 | 0x1 | 0x2
    lost: bool = False
    not_supported: set[str] = field(default_factory=set)  # function names that answer NotSupported
    errors: dict[str, int] = field(default_factory=dict)  # function name -> NVML error code


@dataclass
class Scenario:
    gpus: list[FakeGpu]
    driver_version: str = "550.54.15"
    cuda_driver_version: int = 12040
    init_error: int | None = None  # nvmlInit raises NVMLError(code)
    missing: set[str] = field(default_factory=set)  # C functions the driver lacks: FunctionNotFound
    binding_lacks: set[str] = field(default_factory=set)  # attributes this "nvidia-ml-py" does not have
    block: set[tuple[str, int | None]] = field(default_factory=set)  # (function, gpu index or None)


def gpu_uuid(index: int) -> str:
    return f"GPU-{index:08x}-1111-2222-3333-{index:012x}"


def eight_gpus(processes_per_gpu: int = 2, first_pid: int = 10_000) -> Scenario:
    """8 H100s, each with `processes_per_gpu` compute processes of 1 GiB."""
    gpus = []
    pid = first_pid
    for index in range(8):
        processes = []
        for _ in range(processes_per_gpu):
            processes.append(FakeProcess(pid, 1024**3))
            pid += 1
        gpus.append(FakeGpu(gpu_uuid(index), processes=processes))
    return Scenario(gpus)


@dataclass(frozen=True, eq=False)
class FakeHandle:
    index: int


@dataclass
class _Memory:
    total: int
    free: int
    used: int
    reserved: int | None = None
    version: int | None = None


@dataclass
class _Utilization:
    gpu: int
    memory: int


@dataclass
class _EventData:
    device: Any
    eventType: int  # noqa: N815
    eventData: int  # noqa: N815
    gpuInstanceId: int = 0xFFFFFFFF  # noqa: N815
    computeInstanceId: int = 0xFFFFFFFF  # noqa: N815


class FakeNvml:
    """Stands in for the pynvml module: pass it as GpuCollector(nvml_module=...)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.calls: Counter[str] = Counter()
        self.initialised = 0
        self.blocked_now: list[str] = []
        self._release = threading.Event()
        self._handles = [FakeHandle(i) for i in range(len(scenario.gpus))]
        self._event_sets: dict[int, set[int]] = {}  # event set id -> registered gpu indexes
        self._events: deque[tuple[int, int]] = deque()  # (gpu index, xid)
        self.NVMLError = NVMLError
        for name, value in {**CONSTANTS, **ERROR_CLASSES}.items():
            setattr(self, name, value)

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("nvml") and name in object.__getattribute__(self, "scenario").binding_lacks:
            raise AttributeError(name)
        return object.__getattribute__(self, name)

    # --- scenario control -----------------------------------------------------------------------

    def push_xid(self, gpu: int, xid: int) -> None:
        self._events.append((gpu, xid))

    def release(self) -> None:
        """Let every blocked call return (and stop blocking)."""
        self.scenario.block.clear()
        self._release.set()

    def total_calls(self) -> int:
        return sum(self.calls.values())

    # --- plumbing ---------------------------------------------------------------------------------

    def _enter(self, name: str, handle: Any = None) -> FakeGpu | None:
        self.calls[name] += 1
        gpu = None
        index = None
        if handle is not None:
            if not isinstance(handle, FakeHandle):
                raise NVMLError(ERRORS["INVALID_ARGUMENT"])
            index = handle.index
            gpu = self.scenario.gpus[index]
        if (name, index) in self.scenario.block or (name, None) in self.scenario.block:
            self.blocked_now.append(name)
            self._release.wait()
        if name in self.scenario.missing:
            raise NVMLError(FUNCTION_NOT_FOUND)
        if name not in ("nvmlInit", "nvmlShutdown") and not self.initialised:
            raise NVMLError(ERRORS["UNINITIALIZED"])
        if gpu is not None:
            if gpu.lost:
                raise NVMLError(GPU_IS_LOST)
            if name in gpu.not_supported:
                raise NVMLError(NOT_SUPPORTED)
            if name in gpu.errors:
                raise NVMLError(gpu.errors[name])
        return gpu

    # --- the pynvml API used by the collector ---------------------------------------------------

    def nvmlInit(self) -> None:  # noqa: N802 - nvidia-ml-py's names
        self._enter("nvmlInit")
        if self.scenario.init_error is not None:
            raise NVMLError(self.scenario.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:  # noqa: N802
        self._enter("nvmlShutdown")
        if not self.initialised:
            raise NVMLError(ERRORS["UNINITIALIZED"])
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:  # noqa: N802
        self._enter("nvmlSystemGetDriverVersion")
        return self.scenario.driver_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:  # noqa: N802
        self._enter("nvmlSystemGetCudaDriverVersion")
        return self.scenario.cuda_driver_version

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:  # noqa: N802
        self._enter("nvmlSystemGetCudaDriverVersion_v2")
        return self.scenario.cuda_driver_version

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        self._enter("nvmlDeviceGetCount")
        return len(self.scenario.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:  # noqa: N802
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self._handles):
            raise NVMLError(ERRORS["INVALID_ARGUMENT"])
        if self.scenario.gpus[index].lost:
            raise NVMLError(GPU_IS_LOST)
        return self._handles[index]

    def nvmlDeviceGetIndex(self, handle: FakeHandle) -> int:  # noqa: N802
        self._enter("nvmlDeviceGetIndex", handle)
        return handle.index

    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str:  # noqa: N802
        return self._gpu("nvmlDeviceGetUUID", handle).uuid

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str:  # noqa: N802
        return self._gpu("nvmlDeviceGetName", handle).name

    def nvmlDeviceGetCudaComputeCapability(self, handle: FakeHandle) -> tuple[int, int]:  # noqa: N802
        return self._gpu("nvmlDeviceGetCudaComputeCapability", handle).compute_capability

    def nvmlDeviceGetMemoryInfo(self, handle: FakeHandle, version: int | None = None) -> _Memory:  # noqa: N802
        if version:
            gpu = self._gpu("nvmlDeviceGetMemoryInfo_v2", handle)
            if version != CONSTANTS["nvmlMemory_v2"]:
                raise NVMLError(ERRORS["ARGUMENT_VERSION_MISMATCH"])
            free = gpu.memory_total - gpu.memory_reserved - gpu.memory_used
            return _Memory(gpu.memory_total, free, gpu.memory_used, gpu.memory_reserved, version)
        gpu = self._gpu("nvmlDeviceGetMemoryInfo", handle)
        used = gpu.memory_used + gpu.memory_reserved  # v1 counts the reserved memory as used
        return _Memory(gpu.memory_total, gpu.memory_total - used, used)

    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle) -> _Utilization:  # noqa: N802
        gpu = self._gpu("nvmlDeviceGetUtilizationRates", handle)
        return _Utilization(gpu.utilization_gpu, gpu.utilization_memory)

    def nvmlDeviceGetTemperature(self, handle: FakeHandle, sensor: int) -> int:  # noqa: N802
        gpu = self._gpu("nvmlDeviceGetTemperature", handle)
        self._check_int(sensor)
        return gpu.temperature

    def nvmlDeviceGetTemperatureV(  # noqa: N802
        self, handle: FakeHandle, sensor: int, version: int = CONSTANTS["nvmlTemperature_v1"]
    ) -> int:
        gpu = self._gpu("nvmlDeviceGetTemperatureV", handle)
        self._check_int(sensor)
        return gpu.temperature

    def nvmlDeviceGetPowerUsage(self, handle: FakeHandle) -> int:  # noqa: N802
        return self._gpu("nvmlDeviceGetPowerUsage", handle).power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: FakeHandle) -> int:  # noqa: N802
        return self._gpu("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeHandle) -> int:  # noqa: N802
        return self._gpu("nvmlDeviceGetTotalEnergyConsumption", handle).energy_mj

    def nvmlDeviceGetClockInfo(self, handle: FakeHandle, type: int) -> int:  # noqa: N802, A002
        gpu = self._gpu("nvmlDeviceGetClockInfo", handle)
        self._check_int(type)
        return {1: gpu.sm_clock_mhz, 2: gpu.mem_clock_mhz}.get(type, gpu.sm_clock_mhz)

    def nvmlDeviceGetPerformanceState(self, handle: FakeHandle) -> int:  # noqa: N802
        return self._gpu("nvmlDeviceGetPerformanceState", handle).pstate

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: FakeHandle) -> int:  # noqa: N802
        return self._gpu("nvmlDeviceGetCurrentClocksEventReasons", handle).clock_reasons

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: FakeHandle) -> int:  # noqa: N802
        return self._gpu("nvmlDeviceGetCurrentClocksThrottleReasons", handle).clock_reasons

    def nvmlDeviceGetTotalEccErrors(self, handle: FakeHandle, errorType: int, counterType: int) -> int:  # noqa: N802, N803
        gpu = self._gpu("nvmlDeviceGetTotalEccErrors", handle)
        self._check_int(errorType)
        self._check_int(counterType)
        return gpu.ecc_uncorrected if errorType == 1 else gpu.ecc_corrected

    def nvmlDeviceGetRemappedRows(self, device: FakeHandle) -> tuple[int, int, int, int]:  # noqa: N802
        return self._gpu("nvmlDeviceGetRemappedRows", device).remapped

    def nvmlDeviceGetComputeRunningProcesses_v3(self, handle: FakeHandle) -> list[FakeProcess]:  # noqa: N802
        return list(self._gpu("nvmlDeviceGetComputeRunningProcesses_v3", handle).processes)

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: FakeHandle) -> list[FakeProcess]:  # noqa: N802
        return list(self._gpu("nvmlDeviceGetComputeRunningProcesses_v2", handle).processes)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeHandle) -> list[FakeProcess]:  # noqa: N802
        return self.nvmlDeviceGetComputeRunningProcesses_v3(handle)

    def nvmlEventSetCreate(self) -> int:  # noqa: N802
        self._enter("nvmlEventSetCreate")
        event_set = len(self._event_sets) + 1
        self._event_sets[event_set] = set()
        return event_set

    def nvmlDeviceGetSupportedEventTypes(self, handle: FakeHandle) -> int:  # noqa: N802
        return self._gpu("nvmlDeviceGetSupportedEventTypes", handle).supported_events

    def nvmlDeviceRegisterEvents(self, handle: FakeHandle, eventTypes: int, eventSet: int) -> None:  # noqa: N802, N803
        gpu = self._gpu("nvmlDeviceRegisterEvents", handle)
        if eventSet not in self._event_sets or eventTypes & ~gpu.supported_events:
            raise NVMLError(NOT_SUPPORTED)
        self._event_sets[eventSet].add(handle.index)

    def nvmlEventSetWait_v2(self, eventSet: int, timeoutms: int) -> _EventData:  # noqa: N802, N803
        self._enter("nvmlEventSetWait_v2")
        registered = self._event_sets.get(eventSet)
        if registered is None:
            raise NVMLError(ERRORS["INVALID_ARGUMENT"])
        for _ in range(len(self._events)):
            gpu, xid = self._events.popleft()
            if gpu in registered:
                return _EventData(self._handles[gpu], XID_EVENT, xid)
        raise NVMLError(TIMEOUT)

    def nvmlEventSetWait(self, eventSet: int, timeoutms: int) -> _EventData:  # noqa: N802, N803
        return self.nvmlEventSetWait_v2(eventSet, timeoutms)

    def nvmlEventSetFree(self, eventSet: int) -> None:  # noqa: N802, N803
        self._enter("nvmlEventSetFree")
        self._event_sets.pop(eventSet, None)

    def _gpu(self, name: str, handle: Any) -> FakeGpu:
        gpu = self._enter(name, handle)
        assert gpu is not None
        return gpu

    @staticmethod
    def _check_int(value: Any) -> None:
        if not isinstance(value, int):
            raise NVMLError(ERRORS["INVALID_ARGUMENT"])

"""NVML access: one query helper that turns "not there" into absence.

`NvmlQuery` wraps every call into the pynvml module (nvidia-ml-py, or a fake with the same names):

- NotSupported, NotFound, NoData and NVML's "value not available" sentinels (all ones) are absence:
  the caller gets None and exports no series. A (GPU, function) found NotSupported is not asked
  again while the NVML session lasts: it will not become supported without a driver reload.
- FunctionNotFound (an older driver lacks the function) or a binding that lacks it is logged once
  and remembered; `first()` then falls back to the next variant (process list v3 -> v2, memory
  info v2 -> v1), and later cycles call the variant that works straight away.
- GpuIsLost raises `GpuLost` (the caller marks the GPU lost and stops reading it this cycle);
  Uninitialized / DriverNotLoaded raise `SessionLost` (the caller re-initialises NVML next cycle).
- Any other NVML error on one field is counted by function, logged once per function and error,
  and only that field is absent: the rest of the cycle goes on.

The hang guard is not here: nvmlreader.py runs every NVML call of a cycle in one
base/deadline.py DeadlineWorker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# NVML return codes (nvml.h); pynvml's NVMLError carries one in `.value`.
UNINITIALIZED = 1
NOT_SUPPORTED = 3
NO_PERMISSION = 4
NOT_FOUND = 6
DRIVER_NOT_LOADED = 9
TIMEOUT = 10
LIBRARY_NOT_FOUND = 12
FUNCTION_NOT_FOUND = 13
GPU_IS_LOST = 15
NO_DATA = 21
ARGUMENT_VERSION_MISMATCH = 25

ABSENT = frozenset({NOT_SUPPORTED, NOT_FOUND, NO_DATA})
MISSING = frozenset({FUNCTION_NOT_FOUND, ARGUMENT_VERSION_MISMATCH})
SESSION_GONE = frozenset({UNINITIALIZED, DRIVER_NOT_LOADED})
NOT_AVAILABLE = frozenset({0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF})  # NVML_VALUE_NOT_AVAILABLE_uint / _ulonglong


class GpuLost(Exception):
    """NVML says the GPU is lost (fell off the bus); the GPU's other reads are pointless."""


class SessionLost(Exception):
    """NVML is no longer initialised (driver unloaded or reset): start it again next cycle."""


def error_code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


@dataclass
class NvmlQuery:
    """Every NVML call goes through here; see the module docstring for what each error becomes."""

    nvml: Any
    errors: dict[str, int] = field(default_factory=dict)  # function -> failed calls (shared, counted)
    errors_lock: threading.Lock = field(default_factory=threading.Lock)
    calls: int = 0
    current: str = ""  # the call in flight, for the message when it hangs
    missing: set[str] = field(default_factory=set)
    unsupported: set[tuple[int | None, str]] = field(default_factory=set)
    _logged: set[tuple[str, int | None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._error_class: type[BaseException] = getattr(self.nvml, "NVMLError", Exception)

    def run(
        self, name: str, *args: Any, device: int | None = None, attr: str | None = None, **kwargs: Any
    ) -> tuple[bool, Any]:
        """(True, value) when the call answered, (False, None) when the value is absent."""
        if name in self.missing or (device, name) in self.unsupported:
            return False, None
        function = getattr(self.nvml, attr or name, None)
        if function is None:
            self._mark_missing(name, "not in this nvidia-ml-py")
            return False, None
        self.calls += 1
        self.current = name if device is None else f"{name} on GPU {device}"
        try:
            value = function(*args, **kwargs)
        except TypeError as exc:  # an older binding without the versioned parameter
            self._mark_missing(name, f"binding does not accept these arguments ({exc})")
            return False, None
        except self._error_class as exc:
            code = error_code(exc)
            if code in ABSENT:
                if code == NOT_SUPPORTED:
                    self.unsupported.add((device, name))
                return False, None
            if code in MISSING:
                self._mark_missing(name, str(exc))
                return False, None
            if code == GPU_IS_LOST:
                raise GpuLost(self.current) from None
            if code in SESSION_GONE:
                raise SessionLost(f"{self.current}: {exc}") from None
            self._count_error(name, code, exc)
            return False, None
        finally:
            self.current = ""
        if isinstance(value, int) and not isinstance(value, bool) and value in NOT_AVAILABLE:
            return False, None
        return True, value

    def get(
        self, name: str, *args: Any, device: int | None = None, attr: str | None = None, **kwargs: Any
    ) -> Any:
        """The value, or None when it is absent (not supported, not available, or it failed)."""
        return self.run(name, *args, device=device, attr=attr, **kwargs)[1]

    def first(
        self, options: Sequence[tuple[str, str, tuple[Any, ...], dict[str, Any]]], device: int | None = None
    ) -> Any:
        """The first variant that answers: (name, pynvml attribute, args, kwargs) each. A variant the
        driver lacks, or one this GPU does not support, falls through to the next one."""
        for name, attr, args, kwargs in options:
            if name in self.missing or (device, name) in self.unsupported:
                continue
            answered, value = self.run(name, *args, device=device, attr=attr, **kwargs)
            if answered:
                return value
            if name not in self.missing and (device, name) not in self.unsupported:
                return None  # it failed for another reason: the older variant would not do better
        return None

    def _mark_missing(self, name: str, why: str) -> None:
        if name not in self.missing:
            self.missing.add(name)
            log.info("NVML function not available, using an older one", extra={"function": name, "why": why})

    def _count_error(self, name: str, code: int | None, exc: BaseException) -> None:
        function = name.split("(", 1)[0]  # "nvmlDeviceGetClockInfo(SM)" counts as nvmlDeviceGetClockInfo
        with self.errors_lock:
            self.errors[function] = self.errors.get(function, 0) + 1
        if (name, code) not in self._logged:
            self._logged.add((name, code))
            if code == NO_PERMISSION:
                log.info("NVML call not permitted; the field stays absent", extra={"function": name})
            else:
                log.warning("NVML call failed", extra={"function": name, "error": str(exc)})

"""What one GPU cycle read, whichever source answered (NVML or nvidia-smi).

Both readers (nvmlreader.py, smi.py) fill the same records, so the collector
turns either into the same facts and metric families. Absence is None, never 0: the value helpers
here map the sentinels both sources use for "not available" to None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import cuda

NO_GPU = "no NVIDIA GPU / driver found"

NVML_PSTATE_UNKNOWN = 32  # nvml.h


@dataclass(frozen=True)
class DeviceReading:
    """One GPU's values from one cycle; None where the source did not say."""

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
class GpuReading:
    """One cycle: which source answered, whether it found GPUs, and what it read from each."""

    source: str
    available: bool
    message: str | None
    driver_version: str | None = None
    cuda_driver_version: cuda.CudaVersion | None = None
    devices: tuple[DeviceReading, ...] = ()


def reported_int(value: Any) -> int | None:
    """An integer reading; None for a non-integer or NVML's "not available" sentinels (all ones)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return None if value in (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF) else value


def reported_float(value: Any) -> float | None:
    """A numeric reading as a float; None for a non-number, NaN or infinity."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def ratio_from_percent(percent: Any) -> float | None:
    """0-100 as 0-1; None outside that range."""
    number = reported_float(percent)
    return None if number is None or not 0 <= number <= 100 else number / 100.0


def performance_state(value: Any) -> int | None:
    """P0-P15 as 0-15; None for NVML's "unknown" state or anything out of range."""
    number = reported_int(value)
    return None if number is None or number == NVML_PSTATE_UNKNOWN or not 0 <= number <= 15 else number

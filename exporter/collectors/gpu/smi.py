"""Reading the GPUs through nvidia-smi, the fallback when NVML cannot start or is turned off.

`NvidiaSmi` runs `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` (and
`--query-compute-apps` for the processes) under the call timeout through run_with_deadline: killed
and reaped at the deadline, and not started again while a killed one has not exited. An nvidia-smi
that rejects the current field names gets the older set. The parsers turn its CSV into the same
GpuReading the NVML reader gives (reading.py): every bracketed value ([N/A],
[Not Supported], [Insufficient Permissions], ...) is absence; anything else that does not parse is
a ValueError, which the reader reports as kind parse_error.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import time
from dataclasses import dataclass, replace

from ...config import GpuConfig
from ...linux import subprocesses
from . import cuda
from .reading import NO_GPU, DeviceReading, GpuReading, performance_state, ratio_from_percent

log = logging.getLogger(__name__)


class SmiError(Exception):
    """nvidia-smi could not be read; `kind` is the collector error kind (collectors/base.py) it is."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class NvidiaSmi:
    """Runs nvidia-smi for one cycle's reading; failed runs count under "nvidia-smi" in `errors`."""

    def __init__(self, config: GpuConfig, errors: dict[str, int]) -> None:
        self.config = config
        self._errors = errors
        self._fields: tuple[tuple[str, str], ...] = SMI_FIELDS
        self._unreaped_before: int | None = None  # set while a killed nvidia-smi is not reaped

    def read(self, nvml_problem: str | None, nvml_found_no_gpu: bool) -> GpuReading:
        """The fallback. A missing binary is 'no GPU' unless NVML said something worse.

        `nvml_problem` is why NVML could not be used (None: it is turned off); `nvml_found_no_gpu`
        when that was because there is no GPU or driver. SmiError when nvidia-smi fails.
        """
        why_not_nvml = nvml_problem if nvml_problem is not None else "NVML disabled (gpu.nvml: false)"
        if self._unreaped_before is not None:
            if subprocesses.unreaped_count() > self._unreaped_before:
                raise SmiError(
                    "skipped_stuck",
                    "a killed nvidia-smi has not exited yet (uninterruptible sleep: the GPU or driver "
                    "hangs); not starting another",
                )
            self._unreaped_before = None
        deadline = time.monotonic() + self.config.call_timeout
        try:
            output = self._query_gpus(self._fields, deadline)
            if _invalid_field(output):
                if self._fields is SMI_FIELDS_LEGACY:
                    self._count()
                    raise SmiError("parse_error", f"nvidia-smi rejects the query: {_first_line(output)}")
                log.info("nvidia-smi is older: using its older field names", extra={"collector": "gpu"})
                self._fields = SMI_FIELDS_LEGACY
                output = self._query_gpus(self._fields, deadline)
        except FileNotFoundError:
            no_gpu = nvml_problem is None or nvml_found_no_gpu
            if not no_gpu:
                raise SmiError(
                    "os_error", f"{why_not_nvml}; nvidia-smi ({self.config.nvidia_smi}) not found"
                ) from None
            message = NO_GPU if nvml_problem is None else nvml_problem
            return GpuReading("none", False, message)
        except PermissionError as exc:
            self._count()
            raise SmiError("os_error", f"{why_not_nvml}; cannot run nvidia-smi: {exc.strerror}") from None
        if output.returncode != 0:
            text = output.text
            if "couldn't communicate with the NVIDIA driver" in text or "No devices were found" in text:
                return GpuReading("none", False, f"{NO_GPU} (nvidia-smi: {_first_line(output)})")
            self._count()
            raise SmiError("os_error", f"nvidia-smi exited with {output.returncode}: {_first_line(output)}")
        try:
            driver, devices = parse_smi_gpus(output.stdout, self._fields)
        except ValueError as exc:
            self._count()
            raise SmiError("parse_error", f"nvidia-smi --query-gpu: {exc}") from None
        if not devices:
            return GpuReading("none", False, f"{NO_GPU} (nvidia-smi lists no GPU)")
        apps = self._query_apps(deadline)
        by_uuid: dict[str, list[tuple[int, int | None]]] = {}
        for uuid, pid, used in apps:
            by_uuid.setdefault(uuid, []).append((pid, used))
        devices = tuple(replace(d, processes=tuple(by_uuid.get(d.uuid, ()))) for d in devices)
        return GpuReading(
            source="nvidia_smi",
            available=True,
            message=f"reading through nvidia-smi: {why_not_nvml}",
            driver_version=driver,
            cuda_driver_version=cuda.cuda_for_driver(driver),
            devices=devices,
        )

    def _query_gpus(self, fields: tuple[tuple[str, str], ...], deadline: float) -> SmiOutput:
        query = ",".join(name for _, name in fields)
        return self._run([f"--query-gpu={query}", "--format=csv,noheader,nounits"], deadline)

    def _query_apps(self, deadline: float) -> list[tuple[str, int, int | None]]:
        output = self._run(
            ["--query-compute-apps=gpu_uuid,pid,used_memory", "--format=csv,noheader,nounits"], deadline
        )
        if output.returncode != 0:
            self._count()
            raise SmiError(
                "os_error",
                f"nvidia-smi --query-compute-apps exited with {output.returncode}: {_first_line(output)}",
            )
        try:
            return parse_smi_apps(output.stdout)
        except ValueError as exc:
            self._count()
            raise SmiError("parse_error", f"nvidia-smi --query-compute-apps: {exc}") from None

    def _run(self, args: list[str], deadline: float) -> SmiOutput:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SmiError("timeout", f"nvidia-smi took the whole {self.config.call_timeout:g}s")
        before = subprocesses.unreaped_count()
        try:
            done = subprocesses.run_with_deadline([self.config.nvidia_smi, *args], remaining)
        except subprocesses.CommandTimeout as exc:
            self._count()
            if subprocesses.unreaped_count() > before:
                self._unreaped_before = before
                raise SmiError("timeout", f"{exc}; it has not exited yet (D state)") from None
            raise SmiError("timeout", str(exc)) from None
        return SmiOutput(done.returncode, done.stdout, done.stderr)

    def _count(self) -> None:
        self._errors["nvidia-smi"] = self._errors.get("nvidia-smi", 0) + 1


# --- its output ----------------------------------------------------------------------------------------

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
class SmiOutput:
    """What one nvidia-smi run returned."""

    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return (self.stdout + b"\n" + self.stderr).decode("utf-8", "replace")


def _first_line(output: SmiOutput) -> str:
    for line in output.text.splitlines():
        if line.strip():
            return line.strip()[:200]
    return "no output"


def _invalid_field(output: SmiOutput) -> bool:
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
) -> tuple[str | None, tuple[DeviceReading, ...]]:
    """(driver version, one reading per GPU) from --query-gpu CSV; ValueError names what is wrong."""
    text = stdout.decode("utf-8", "replace")
    keys = [key for key, _ in fields]
    devices: list[DeviceReading] = []
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
            pstate_number = performance_state(int(match.group(1)))
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
            DeviceReading(
                index=int(index),
                uuid=uuid,
                name=name,
                compute_capability=cc if cc and not _absent(cc) else None,
                memory_total=_smi_int("memory.total", value["memory_total"], MIB),
                memory_used=_smi_int("memory.used", value["memory_used"], MIB),
                memory_free=_smi_int("memory.free", value["memory_free"], MIB),
                memory_reserved=_smi_int("memory.reserved", value.get("memory_reserved", ""), MIB),
                utilization=ratio_from_percent(utilization),
                memory_utilization=ratio_from_percent(memory_utilization),
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

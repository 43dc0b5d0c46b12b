"""CUDA compatibility: the GPU, the driver and the service's CUDA runtime, and why they do not fit.

Three versions decide whether a service's CUDA code can run (seed 2.1):

- the GPU's compute capability (CC) needs a CUDA release at least as new as the one that first
  knew it (`CC_MIN_CUDA`), and a new CUDA may have dropped old CCs (`RUNTIME_MIN_CC`: CUDA 13.0
  removed Maxwell, Pascal and Volta, CUDA 12.0 removed Kepler);
- the driver supports CUDA up to the version it reports (nvmlSystemGetCudaDriverVersion). A runtime
  of the same major but a newer minor starts only through CUDA minor version compatibility (driver
  at least the major's `MINOR_COMPAT_MIN_DRIVER`), and then PTX that must be compiled by the driver
  (Triton's kernels, anything built for a newer architecture) fails: we report it as incompatible,
  with the driver the runtime really wants (`TOOLKIT_MIN_DRIVER`, the release notes' table);
- a runtime of a newer major than the driver does not start at all.

The service's runtime is read from the files its processes mapped (/proc/PID/maps): torch's
version.py (`cuda = '12.4'`, what torch was built with) wins over the nvidia-cuda-runtime wheel's
version, which wins over a libcudart file name (`libcudart.so.12.4.127`, or only the major from
`libcudart.so.12`). Files are read through /proc/PID/root so a service in a container is read in
its own filesystem. A process that has not loaded CUDA yet may still map a site-packages directory
(any compiled extension does), where torch's version.py is found all the same.

The tables come from NVIDIA's CUDA Toolkit release notes ("CUDA Toolkit and Corresponding Driver
Versions", Linux x86_64; "Minimum Required Driver Version for CUDA Minor Version Compatibility")
and the CUDA programming guide's compute capability list.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

# Compute capability -> the first CUDA release that can build for it.
CC_MIN_CUDA: dict[tuple[int, int], tuple[int, int]] = {
    (6, 0): (8, 0),
    (6, 1): (8, 0),
    (7, 0): (9, 0),
    (7, 5): (10, 0),
    (8, 0): (11, 0),
    (8, 6): (11, 1),
    (8, 7): (11, 4),
    (8, 9): (11, 8),
    (9, 0): (11, 8),
    (10, 0): (12, 8),
    (10, 1): (12, 8),  # Thor before CUDA 13.0 renumbered it 11.0
    (10, 3): (12, 9),
    (11, 0): (13, 0),
    (12, 0): (12, 8),
    (12, 1): (12, 9),
}

# From this CUDA major on, GPUs below this compute capability are no longer supported.
RUNTIME_MIN_CC: tuple[tuple[int, tuple[int, int]], ...] = (
    (13, (7, 5)),  # CUDA 13.0 removed Maxwell, Pascal and Volta
    (12, (5, 0)),  # CUDA 12.0 removed Kepler
    (11, (3, 5)),
)

# Each CUDA release (its GA) and the Linux x86_64 driver it needs for full support.
TOOLKIT_MIN_DRIVER: tuple[tuple[tuple[int, int], str], ...] = (
    ((8, 0), "375.26"),
    ((9, 0), "384.81"),
    ((9, 1), "390.46"),
    ((9, 2), "396.26"),
    ((10, 0), "410.48"),
    ((10, 1), "418.39"),
    ((10, 2), "440.33"),
    ((11, 0), "450.36.06"),
    ((11, 1), "455.23"),
    ((11, 2), "460.27.03"),
    ((11, 3), "465.19.01"),
    ((11, 4), "470.42.01"),
    ((11, 5), "495.29.05"),
    ((11, 6), "510.39.01"),
    ((11, 7), "515.43.04"),
    ((11, 8), "520.61.05"),
    ((12, 0), "525.60.13"),
    ((12, 1), "530.30.02"),
    ((12, 2), "535.54.03"),
    ((12, 3), "545.23.06"),
    ((12, 4), "550.54.14"),
    ((12, 5), "555.42.02"),
    ((12, 6), "560.28.03"),
    ((12, 8), "570.26"),
    ((12, 9), "575.51.03"),
    ((13, 0), "580.65.06"),
    ((13, 1), "590.44.01"),
    ((13, 2), "595.45.04"),
)

# The least driver with which any runtime of the major starts (minor version compatibility).
MINOR_COMPAT_MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}

MAX_MAPS_BYTES = 8 * 1024 * 1024  # a big service maps thousands of files; enough for all of them

_SITE_DIR = re.compile(r"(/\S*?/(?:site|dist)-packages)/")
_LIBCUDART = re.compile(r"/libcudart\.so\.(\d+)(?:\.(\d+))?(?:\.\d+)*$")
_CUDA_DIR = re.compile(r"/cuda-(\d+)\.(\d+)/")
_TORCH_CUDA = re.compile(r"^cuda\s*(?::[^=]*)?=\s*['\"](\d+)\.(\d+)", re.M)
_TORCH_VERSION = re.compile(r"^__version__\s*(?::[^=]*)?=\s*['\"]([^'\"]+)", re.M)
_RUNTIME_WHEEL = re.compile(r"^nvidia_cuda_runtime(?:_cu\d+)?-(\d+)\.(\d+)[^/]*\.dist-info$")


@dataclass(frozen=True)
class CudaVersion:
    major: int
    minor: int | None = None  # None when only the major is known (libcudart.so.12)

    def __str__(self) -> str:
        return f"{self.major}" if self.minor is None else f"{self.major}.{self.minor}"


@dataclass(frozen=True)
class Runtime:
    """The CUDA runtime a process uses and where that was read."""

    version: CudaVersion
    source: str  # torch | nvidia-cuda-runtime | libcudart
    detail: str  # the file it was read from, or the torch version


@dataclass(frozen=True)
class Check:
    check: str  # compute_capability | driver
    ok: bool
    sentence: str  # why, in words a human acts on


def parse_cuda_version(text: str) -> CudaVersion | None:
    """'12.4' or '12.4.127' -> 12.4; None for anything else."""
    match = re.fullmatch(r"\s*(\d+)(?:\.(\d+))?(?:\.\d+)*\s*", text or "")
    if not match:
        return None
    return CudaVersion(int(match.group(1)), int(match.group(2)) if match.group(2) is not None else None)


def cuda_from_nvml(value: int | None) -> CudaVersion | None:
    """nvmlSystemGetCudaDriverVersion's integer (major * 1000 + minor * 10) as a version."""
    if value is None or value <= 0:
        return None
    return CudaVersion(value // 1000, (value % 1000) // 10)


def parse_driver_version(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)*)\s*", text)
    return tuple(int(part) for part in match.group(1).split(".")) if match else None


def cuda_for_driver(driver_version: str | None) -> CudaVersion | None:
    """The newest CUDA release a driver fully supports, from TOOLKIT_MIN_DRIVER (for nvidia-smi,
    which does not report the driver's CUDA version in its query fields)."""
    driver = parse_driver_version(driver_version)
    if driver is None:
        return None
    best = None
    for version, minimum in TOOLKIT_MIN_DRIVER:
        if driver >= (parse_driver_version(minimum) or ()):
            best = version
    return CudaVersion(*best) if best else None


def parse_compute_capability(text: str | None) -> tuple[int, int] | None:
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def _cc_text(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"


def _min_cuda_for_cc(cc: tuple[int, int]) -> tuple[int, int] | None:
    """The table's entry, else the nearest lower entry of the same major (6.2 -> 6.1's)."""
    if cc in CC_MIN_CUDA:
        return CC_MIN_CUDA[cc]
    lower = [known for known in CC_MIN_CUDA if known[0] == cc[0] and known < cc]
    return CC_MIN_CUDA[max(lower)] if lower else None


def check_compute_capability(cc_text: str | None, runtime: CudaVersion) -> Check | None:
    """Can a runtime of this version build for / run on this GPU? None when we cannot tell."""
    cc = parse_compute_capability(cc_text)
    if cc is None:
        return None
    for major, least in RUNTIME_MIN_CC:
        if runtime.major >= major:
            if cc < least:
                return Check(
                    "compute_capability",
                    False,
                    f"GPU compute capability {_cc_text(cc)} is not supported by CUDA {runtime.major}.x "
                    f"(it needs {_cc_text(least)} or newer); the service is built for CUDA {runtime}",
                )
            break
    needed = _min_cuda_for_cc(cc)
    if needed is None:
        if cc > max(CC_MIN_CUDA):
            return None  # newer than the table: we cannot tell
        needed = (0, 0)
    if runtime.minor is None and runtime.major == needed[0]:
        return None  # CUDA 12.x against a CC introduced in 12.8: the minor decides, and is unknown
    if (runtime.major, runtime.minor or 0) >= needed:
        return Check(
            "compute_capability",
            True,
            f"GPU compute capability {_cc_text(cc)} is supported by CUDA {runtime}",
        )
    return Check(
        "compute_capability",
        False,
        f"GPU compute capability {_cc_text(cc)} needs CUDA {needed[0]}.{needed[1]} or newer, "
        f"service is built for {runtime}",
    )


def check_driver(driver_cuda: CudaVersion | None, runtime: CudaVersion) -> Check | None:
    """Does the driver support the service's runtime? None when the driver's CUDA is unknown."""
    if driver_cuda is None or driver_cuda.minor is None:
        return None
    if runtime.major > driver_cuda.major:
        least = MINOR_COMPAT_MIN_DRIVER.get(runtime.major)
        need = f": CUDA {runtime.major}.x needs a driver >= {least}" if least else ""
        return Check(
            "driver",
            False,
            f"driver supports CUDA {driver_cuda}, service is built for {runtime}{need}",
        )
    if runtime.major == driver_cuda.major and runtime.minor is not None and runtime.minor > driver_cuda.minor:
        wanted = dict(TOOLKIT_MIN_DRIVER).get((runtime.major, runtime.minor))
        need = f"; CUDA {runtime} wants a driver >= {wanted}" if wanted else ""
        return Check(
            "driver",
            False,
            f"driver supports CUDA {driver_cuda}, service is built for {runtime} (it starts only through "
            f"minor version compatibility, where kernels the driver must compile, such as Triton's, "
            f"fail{need})",
        )
    return Check("driver", True, f"driver supports CUDA {driver_cuda}, service is built for {runtime}")


# --- the service's runtime -------------------------------------------------------------------------


def mapped_paths(maps_text: str) -> list[str]:
    """The distinct file paths of a /proc/PID/maps text, in order of first appearance."""
    seen: dict[str, None] = {}
    for line in maps_text.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            path = parts[5].removesuffix(" (deleted)")
            seen.setdefault(path, None)
    return list(seen)


def find_runtime(proc_root: str, pid: int) -> Runtime | None:
    """The CUDA runtime of one process; None when its maps show none. OSError propagates."""
    with open(f"{proc_root}/{pid}/maps", "rb") as handle:
        maps_text = handle.read(MAX_MAPS_BYTES).decode("utf-8", "replace")
    return runtime_from_paths(mapped_paths(maps_text), f"{proc_root}/{pid}/root")


def runtime_from_paths(paths: list[str], root: str) -> Runtime | None:
    """Decide from mapped paths, reading files under `root` (the process's /proc/PID/root)."""
    sites: dict[str, None] = {}
    for path in paths:
        match = _SITE_DIR.search(path)
        if match:
            sites.setdefault(match.group(1), None)
    for site in sites:
        found = _torch_runtime(root, site)
        if found:
            return found
    for site in sites:
        found = _wheel_runtime(root, site)
        if found:
            return found
    fallback: Runtime | None = None
    for path in paths:
        match = _LIBCUDART.search(path)
        if match:
            minor = int(match.group(2)) if match.group(2) is not None else None
            runtime = Runtime(CudaVersion(int(match.group(1)), minor), "libcudart", path)
            if minor is not None:
                return runtime
            directory = _CUDA_DIR.search(path)
            if directory and int(directory.group(1)) == runtime.version.major:
                return Runtime(
                    CudaVersion(int(directory.group(1)), int(directory.group(2))), "libcudart", path
                )
            fallback = fallback or runtime
    return fallback


def _read_small(root: str, path: str, limit: int = 65536) -> str | None:
    """A file as the process sees it (through its root), else as we see it; None when unreadable."""
    for candidate in (f"{root}{path}", path):
        try:
            with open(candidate, "rb") as handle:
                return handle.read(limit).decode("utf-8", "replace")
        except OSError:
            continue
    return None


def _list_dir(root: str, path: str) -> list[str]:
    for candidate in (f"{root}{path}", path):
        try:
            return os.listdir(candidate)
        except OSError:
            continue
    return []


def _torch_runtime(root: str, site: str) -> Runtime | None:
    text = _read_small(root, f"{site}/torch/version.py")
    if not text:
        return None
    cuda = _TORCH_CUDA.search(text)
    if not cuda:
        return None  # a CPU build of torch says cuda = None
    version = _TORCH_VERSION.search(text)
    detail = f"torch {version.group(1)}" if version else f"{site}/torch/version.py"
    return Runtime(CudaVersion(int(cuda.group(1)), int(cuda.group(2))), "torch", detail)


def _wheel_runtime(root: str, site: str) -> Runtime | None:
    best: tuple[int, int] | None = None
    for name in _list_dir(root, site):
        if name.startswith("nvidia_cuda_runtime"):
            match = _RUNTIME_WHEEL.match(name)
            if match:
                version = (int(match.group(1)), int(match.group(2)))
                best = max(best, version) if best else version
    if best is None:
        return None
    return Runtime(CudaVersion(*best), "nvidia-cuda-runtime", f"{site}/nvidia_cuda_runtime")

"""CUDA compatibility: the tables, the checks and their sentences, and finding a service's runtime."""

from __future__ import annotations

import pytest

from autoglm_exporter.collectors.gpu.collector import cuda
from autoglm_exporter.collectors.gpu.cuda import CudaVersion, Runtime

from .fakes.proc import FakeProc

SITE = "/opt/venv/lib/python3.11/site-packages"


def v(text: str) -> CudaVersion:
    parsed = cuda.parse_cuda_version(text)
    assert parsed is not None
    return parsed


# --- versions ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(12020, "12.2"), (12040, "12.4"), (13000, "13.0"), (11080, "11.8"), (0, None), (None, None)],
)
def test_nvml_cuda_driver_version(raw, expected) -> None:
    version = cuda.cuda_from_nvml(raw)
    assert (str(version) if version else None) == expected


@pytest.mark.parametrize(
    ("driver", "expected"),
    [
        ("535.104.05", "12.2"),
        ("550.54.14", "12.4"),
        ("550.54.13", "12.3"),
        ("570.26", "12.8"),  # there is no CUDA 12.7
        ("575.51.03", "12.9"),
        ("580.65.06", "13.0"),
        ("595.45.04", "13.2"),
        ("450.80.02", "11.0"),
        ("400.1", "9.2"),
        ("300.1", None),
        ("not a version", None),
        (None, None),
    ],
)
def test_cuda_for_driver_follows_the_release_notes(driver, expected) -> None:
    version = cuda.cuda_for_driver(driver)
    assert (str(version) if version else None) == expected


def test_parse_cuda_version() -> None:
    assert cuda.parse_cuda_version("12.4.127") == CudaVersion(12, 4)
    assert cuda.parse_cuda_version("12") == CudaVersion(12, None)
    assert str(CudaVersion(12, None)) == "12"
    assert cuda.parse_cuda_version("cu124") is None


def test_the_tables_are_ordered_and_consistent() -> None:
    releases = [release for release, _ in cuda.TOOLKIT_MIN_DRIVER]
    drivers = [cuda.parse_driver_version(driver) for _, driver in cuda.TOOLKIT_MIN_DRIVER]
    assert releases == sorted(releases) and len(set(releases)) == len(releases)
    assert drivers == sorted(drivers)
    known = set(releases)
    for cc, release in cuda.CC_MIN_CUDA.items():
        assert release in known, (cc, release)
    # The minimums.
    for cc, release in {
        (6, 0): (8, 0),
        (7, 0): (9, 0),
        (7, 5): (10, 0),
        (8, 0): (11, 0),
        (8, 6): (11, 1),
        (8, 9): (11, 8),
        (9, 0): (11, 8),
        (10, 0): (12, 8),
        (12, 0): (12, 8),
    }.items():
        assert cuda.CC_MIN_CUDA[cc] == release
    for major, driver in cuda.MINOR_COMPAT_MIN_DRIVER.items():
        least = cuda.parse_driver_version(driver)
        first_minor = cuda.parse_driver_version(dict(cuda.TOOLKIT_MIN_DRIVER)[(major, 1)])
        assert least is not None and first_minor is not None and least <= first_minor


# --- the checks ----------------------------------------------------------------------------------------------


def test_a_driver_older_than_the_runtime_is_named_with_both_versions() -> None:
    check = cuda.check_driver(v("12.2"), v("12.4"))
    assert check is not None and not check.ok
    assert check.sentence.startswith("driver supports CUDA 12.2, service is built for 12.4")
    assert "minor version compatibility" in check.sentence and ">= 550.54.14" in check.sentence


def test_a_runtime_of_a_newer_major_needs_that_majors_driver() -> None:
    check = cuda.check_driver(v("12.8"), v("13.0"))
    assert check is not None and not check.ok
    assert check.sentence == (
        "driver supports CUDA 12.8, service is built for 13.0: CUDA 13.x needs a driver >= 580.65.06"
    )


@pytest.mark.parametrize(
    ("driver", "runtime"), [("12.4", "12.4"), ("12.4", "12.1"), ("13.0", "12.8"), ("12.2", "12")]
)
def test_a_driver_at_least_as_new_as_the_runtime_fits(driver, runtime) -> None:
    check = cuda.check_driver(v(driver), v(runtime))
    assert check is not None and check.ok
    assert check.sentence == f"driver supports CUDA {driver}, service is built for {runtime}"


def test_an_unknown_driver_cuda_is_no_verdict() -> None:
    assert cuda.check_driver(None, v("12.4")) is None


@pytest.mark.parametrize(
    ("cc", "runtime", "ok", "sentence"),
    [
        (
            "9.0",
            "11.7",
            False,
            "GPU compute capability 9.0 needs CUDA 11.8 or newer, service is built for 11.7",
        ),
        ("9.0", "11.8", True, "GPU compute capability 9.0 is supported by CUDA 11.8"),
        (
            "12.0",
            "12.4",
            False,
            "GPU compute capability 12.0 needs CUDA 12.8 or newer, service is built for 12.4",
        ),
        ("10.0", "12.8", True, "GPU compute capability 10.0 is supported by CUDA 12.8"),
        (
            "8.6",
            "11.0",
            False,
            "GPU compute capability 8.6 needs CUDA 11.1 or newer, service is built for 11.0",
        ),
        ("8.6", "12", True, "GPU compute capability 8.6 is supported by CUDA 12"),
        ("6.2", "8.0", True, "GPU compute capability 6.2 is supported by CUDA 8.0"),  # 6.1's entry
        ("5.2", "12.1", True, "GPU compute capability 5.2 is supported by CUDA 12.1"),
        (
            "7.0",
            "13.0",
            False,
            "GPU compute capability 7.0 is not supported by CUDA 13.x (it needs 7.5 or newer); "
            "the service is built for CUDA 13.0",
        ),
        (
            "3.7",
            "12.1",
            False,
            "GPU compute capability 3.7 is not supported by CUDA 12.x (it needs 5.0 or newer); "
            "the service is built for CUDA 12.1",
        ),
    ],
)
def test_compute_capability_against_the_runtime(cc, runtime, ok, sentence) -> None:
    check = cuda.check_compute_capability(cc, v(runtime))
    assert check is not None
    assert (check.check, check.ok, check.sentence) == ("compute_capability", ok, sentence)


@pytest.mark.parametrize(
    ("cc", "runtime"), [("10.0", "12"), ("99.0", "12.4"), ("", "12.4"), ("nine", "12.4")]
)
def test_compute_capability_cases_we_cannot_decide(cc, runtime) -> None:
    assert cuda.check_compute_capability(cc, v(runtime)) is None


# --- the service's runtime -------------------------------------------------------------------------------------


def test_torch_version_py_wins(tmp_path) -> None:
    proc = FakeProc(tmp_path)
    proc.add(
        10,
        ["python"],
        maps=[
            f"{SITE}/torch/lib/libtorch_cuda.so",
            f"{SITE}/nvidia/cuda_runtime/lib/libcudart.so.12",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
        ],
        files={
            f"{SITE}/torch/version.py": "__version__ = '2.5.1+cu124'\ncuda: Optional[str] = '12.4'\n",
            f"{SITE}/nvidia_cuda_runtime_cu12-12.6.77.dist-info/METADATA": "",
        },
    )
    assert cuda.find_runtime(proc.path, 10) == Runtime(CudaVersion(12, 4), "torch", "torch 2.5.1+cu124")


def test_a_cpu_torch_falls_through_to_the_runtime_wheel(tmp_path) -> None:
    proc = FakeProc(tmp_path)
    proc.add(
        10,
        ["python"],
        maps=[f"{SITE}/numpy/core/_multiarray_umath.so"],
        files={
            f"{SITE}/torch/version.py": "__version__ = '2.5.1+cpu'\ncuda = None\n",
            f"{SITE}/nvidia_cuda_runtime_cu12-12.1.105.dist-info/METADATA": "",
        },
    )
    runtime = cuda.find_runtime(proc.path, 10)
    assert runtime is not None
    assert (str(runtime.version), runtime.source) == ("12.1", "nvidia-cuda-runtime")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/usr/local/cuda/lib64/libcudart.so.11.8.89", "11.8"),
        ("/usr/local/cuda-12.4/targets/x86_64-linux/lib/libcudart.so.12", "12.4"),
        ("/opt/conda/lib/libcudart.so.12", "12"),
        ("/opt/conda/lib/libcudart.so.12.1.105 (deleted)", "12.1"),
    ],
)
def test_libcudart_in_the_maps(tmp_path, path, expected) -> None:
    proc = FakeProc(tmp_path)
    proc.add(10, ["server"], maps=["/usr/lib/x86_64-linux-gnu/libc.so.6", path])
    runtime = cuda.find_runtime(proc.path, 10)
    assert runtime is not None
    assert (str(runtime.version), runtime.source) == (expected, "libcudart")


def test_no_cuda_in_the_maps_is_none_and_a_gone_process_raises(tmp_path) -> None:
    proc = FakeProc(tmp_path)
    proc.add(10, ["server"], maps=["/usr/lib/x86_64-linux-gnu/libc.so.6"])
    assert cuda.find_runtime(proc.path, 10) is None
    with pytest.raises(FileNotFoundError):
        cuda.find_runtime(proc.path, 11)

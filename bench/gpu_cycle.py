"""GPU cycle cost: NVML calls and time per cycle for 8 GPUs x 64 processes, on a fake NVML.

Ours: GpuCollector.collect() against the test suite's fake pynvml (tests/fakes/fake_pynvml.py) with
8 GPUs of 64 compute processes each, over a fake /proc tree where those 512 processes are workers of
one configured service (each attributed through its parent, as vLLM's engine processes are), a
second service that uses no GPU, CUDA_VISIBLE_DEVICES in their environments and torch's
version.py to find. Everything a real cycle does runs: the NVML worker thread and its deadline,
the joins, the CUDA checks, the metric families.
Peer: the same NVML calls made directly on the same fake in a plain loop, in this process and run:
what the calls themselves cost here. Ours minus the peer is our own overhead.
Targets: a warm cycle makes exactly 14 NVML calls per GPU plus one event-set poll, one of them the
process list; our own overhead is at most 5 ms per GPU.
Also printed: the cold cycle (opening NVML, reading every /proc entry once).
--quick: 2 GPUs x 8 processes, 10 cycles.
"""

import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import _common as c

from autoglm_exporter.collectors.gpu.collector import NVML_CALLS_PER_GPU, GpuCollector
from autoglm_exporter.config import GpuConfig, ProcessMatch, ServiceConfig
from tests.fakes.fake_pynvml import FakeNvml, NVMLError, Scenario, eight_gpus
from tests.fakes.proc import FakeProc

TARGET_MS_PER_GPU = 5.0
SITE = "/opt/venv/lib/python3.11/site-packages"
SERVER_PID = 5000
FIRST_WORKER_PID = 10_000


@dataclass(frozen=True)
class Settings:
    gpus: int
    processes_per_gpu: int
    cycles: int


FULL = Settings(gpus=8, processes_per_gpu=64, cycles=300)
QUICK = Settings(gpus=2, processes_per_gpu=8, cycles=10)


def build_proc(root: Path, settings: Settings) -> FakeProc:
    proc = FakeProc(root)
    visible = {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(settings.gpus)), "PATH": "/usr/bin"}
    proc.add(
        SERVER_PID,
        ["python3", "-m", "vllm.entrypoints.openai.api_server", "--tensor-parallel-size", "8"],
        environ=visible,
        maps=[f"{SITE}/torch/lib/libtorch_cuda.so", "/usr/lib/x86_64-linux-gnu/libc.so.6"],
        files={f"{SITE}/torch/version.py": "__version__ = '2.5.1+cu124'\ncuda = '12.4'\n"},
    )
    for offset in range(settings.gpus * settings.processes_per_gpu):
        proc.add(FIRST_WORKER_PID + offset, ["VLLM::Worker"], ppid=SERVER_PID, environ=visible)
    proc.add(6000, ["python", "/srv/open_autoglm/server.py"], environ={"CUDA_VISIBLE_DEVICES": "0"})
    return proc


def scenario(settings: Settings) -> Scenario:
    """The first `gpus` of the fake's eight H100s, each with its compute processes."""
    return Scenario(eight_gpus(settings.processes_per_gpu, first_pid=FIRST_WORKER_PID).gpus[: settings.gpus])


def peer_cycle(fake: FakeNvml, handles: list[object], event_set: int) -> None:
    """The same 14 calls per GPU and the event poll, straight on the fake."""
    for handle in handles:
        fake.nvmlDeviceGetMemoryInfo(handle, version=fake.nvmlMemory_v2)
        fake.nvmlDeviceGetUtilizationRates(handle)
        fake.nvmlDeviceGetTemperatureV(handle, 0)
        fake.nvmlDeviceGetPowerUsage(handle)
        fake.nvmlDeviceGetEnforcedPowerLimit(handle)
        fake.nvmlDeviceGetTotalEnergyConsumption(handle)
        fake.nvmlDeviceGetClockInfo(handle, 1)
        fake.nvmlDeviceGetClockInfo(handle, 2)
        fake.nvmlDeviceGetPerformanceState(handle)
        fake.nvmlDeviceGetCurrentClocksEventReasons(handle)
        fake.nvmlDeviceGetTotalEccErrors(handle, 0, 0)
        fake.nvmlDeviceGetTotalEccErrors(handle, 1, 0)
        fake.nvmlDeviceGetRemappedRows(handle)
        fake.nvmlDeviceGetComputeRunningProcesses_v3(handle)
    with contextlib.suppress(NVMLError):  # Timeout: no event waiting
        fake.nvmlEventSetWait_v2(event_set, 0)


def timed(run: Callable[[], object], cycles: int) -> list[float]:
    times = []
    for _ in range(cycles):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    args = c.arguments(__doc__).parse_args()
    settings = QUICK if args.quick else FULL
    gpus, per_gpu = settings.gpus, settings.processes_per_gpu
    c.banner(f"gpu_cycle: {gpus} fake GPUs x {per_gpu} processes, {settings.cycles} cycles", args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        proc = build_proc(Path(tmp) / "proc", settings)
        services = (
            ServiceConfig("vllm", ProcessMatch(cmdline=r"vllm\.entrypoints")),
            ServiceConfig("open-autoglm", ProcessMatch(cmdline=r"open_autoglm")),
        )
        fake = FakeNvml(scenario(settings))
        collector = GpuCollector(GpuConfig(call_timeout=5.0), services, proc.path, fake)

        started = time.perf_counter()
        result = collector.collect()
        cold = time.perf_counter() - started
        facts = result.facts
        attributed = sum(1 for p in facts.processes if p.service == "vllm")

        fake.calls.clear()
        collector.collect()
        calls = fake.total_calls()
        process_lists = fake.calls["nvmlDeviceGetComputeRunningProcesses_v3"]

        ours = timed(collector.collect, settings.cycles)

        peer_fake = FakeNvml(scenario(settings))
        peer_fake.nvmlInit()
        handles = [peer_fake.nvmlDeviceGetHandleByIndex(i) for i in range(gpus)]
        event_set = peer_fake.nvmlEventSetCreate()
        for handle in handles:
            peer_fake.nvmlDeviceRegisterEvents(handle, 0x8, event_set)
        peer = timed(lambda: peer_cycle(peer_fake, handles, event_set), settings.cycles)

    ours_ms = statistics.mean(ours) * 1000
    ours_p99 = sorted(ours)[max(0, int(len(ours) * 0.99) - 1)] * 1000
    peer_ms = statistics.mean(peer) * 1000
    overhead_per_gpu = (ours_ms - peer_ms) / gpus
    expected_calls = len(NVML_CALLS_PER_GPU) * gpus + 1
    print(f"processes on GPUs: {len(facts.processes)}, attributed to vllm through their parent: {attributed}")
    print(f"cuda checks: {len(facts.compatibility)}, problems: {list(facts.compatibility_problems)}")
    print(
        f"NVML calls per warm cycle: {calls} (expected {expected_calls}); process-list calls: {process_lists}"
    )
    print(f"cold cycle (open NVML, read /proc once): {cold * 1000:8.2f} ms")
    print(f"ours (warm cycle, mean / p99):           {ours_ms:8.2f} ms / {ours_p99:.2f} ms")
    print(f"peer (the same NVML calls, bare):        {peer_ms:8.2f} ms")
    print(f"our own overhead: {ours_ms - peer_ms:.2f} ms per cycle = {overhead_per_gpu:.3f} ms per GPU")
    ok = (
        calls == expected_calls
        and process_lists == gpus
        and attributed == gpus * per_gpu
        and overhead_per_gpu <= TARGET_MS_PER_GPU
    )
    print(
        c.verdict(
            "gpu_cycle",
            ok,
            f"{calls} NVML calls per cycle, {overhead_per_gpu:.3f} ms of our own overhead per GPU "
            f"(target <= {TARGET_MS_PER_GPU:g} ms)",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

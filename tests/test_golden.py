"""The golden exposition: every collector over recorded fixtures, one /metrics page, checked in.

node_exporter's end-to-end test is the model: fixtures in, the whole page out, compared with a file
in the repository and linted by promtool. Here the collectors run once each, as the daemon runs
them (build_collectors, a CollectorRunner each, the Store with the daemon's deriver), against

- a /proc and /sys tree assembled from recorded fixtures (tests/fixtures/proc: a host and the
  open-autoglm process; tests/fixtures/cgroup/v2: cgroups) and the overlay in
  tests/fixtures/golden/proc (vLLM's API server in a Kubernetes pod, with two GPU workers);
- the fake NVML of tests/fakes: two H100s, one vLLM worker on each;
- a real redis-server whose queues hold a known number of items;
- real HTTP servers on 127.0.0.1: the Open-AutoGLM API, an OpenAI-compatible engine, and vLLM's
  /metrics page twice, as vLLM 0.11.0 writes it (tests/fixtures/golden/vllm-0.11.0.metrics) and as
  the real vLLM 0.32.0 (CPU build, tiny model, under load) served it (vllm-0.32.0.metrics): users
  run both, and the page shows what the engine collector reads from each.

The rendered page must equal tests/fixtures/golden/metrics.prom once normalised, and
`promtool check metrics` must print nothing for it (the page as rendered, not normalised).

Normalised (NORMALISED_VALUES, NORMALISED_LABELS below): what depends on when, where and how fast
the test runs (timestamps, durations, the exporter's and Python's versions) becomes a placeholder
written in angle brackets (`<timestamp>`, `<duration>`, `<version>`): the line stays, so the series
still has to exist. Families are sorted by name and samples within a family by name and labels,
so a diff shows what changed and nothing else.

After a deliberate change (a new metric, a renamed label):

    UPDATE_GOLDEN=1 pytest tests/test_golden.py

rewrites metrics.prom; read the diff, then commit it with the change. A value that changes from run
to run fails the test with the lines that differ: add a rule to NORMALISED_VALUES.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import shutil
import string
from collections.abc import Callable, Iterator
from pathlib import Path

from autoglm_exporter.collectors import build_collectors
from autoglm_exporter.collectors.gpu.collector import GpuCollector
from autoglm_exporter.config import Config, load_config
from autoglm_exporter.core.pipeline import Pipeline
from autoglm_exporter.core.runner import CollectorRunner

from . import faultservers as fs
from .conftest import FIXTURES, RedisServer, assert_promtool_clean, require_binary
from .fakes.fake_pynvml import FakeGpu, FakeNvml, FakeProcess, Scenario, gpu_uuid

GOLDEN = FIXTURES / "golden"
GOLDEN_PAGE = GOLDEN / "metrics.prom"
VLLM_PAGE = GOLDEN / "vllm-0.11.0.metrics"
VLLM_0_32_PAGE = GOLDEN / "vllm-0.32.0.metrics"  # recorded: tests/test_vllm_contract.py keeps it true
MODEL = "zai-org/AutoGLM-Phone-9B"
HEADER = "# Written by UPDATE_GOLDEN=1 pytest tests/test_golden.py (normalised and sorted: see that file).\n"
SECRET = "hf_golden_fixture_secret"  # in the vLLM processes' environment (overlay): never on the page

# Sample names whose values depend on the run, and what they become.
NORMALISED_VALUES: tuple[tuple[str, str], ...] = (
    (r".*_timestamp_seconds", "<timestamp>"),
    (r"autoglm_exporter_collector_duration_seconds", "<duration>"),
    (r"autoglm_probe_.*_seconds(_sum)?", "<duration>"),  # the probes time real servers
    (r"autoglm_probe_.*_seconds_bucket", "<count>"),  # which bucket a probe's duration fell in
    (r"autoglm_redis_ping_duration_seconds", "<duration>"),
    (r"autoglm_redis_(connected_clients|memory_used_bytes)", "<redis>"),  # the server's own state
    (r"autoglm_service_startup_seconds", "<duration>"),  # from the recorded start time to now
    (
        r"process_.*|autoglm_exporter_(threads|stalled_seconds_total)",
        "<exporter process>",
    ),  # this test's own process
)
# Label values that depend on the run: (label name, the part of its value that does, placeholder).
NORMALISED_LABELS: tuple[tuple[str, str, str], ...] = (
    ("version", ".*", "<version>"),
    ("python_version", ".*", "<version>"),
    ("url", r"127\.0\.0\.1:\d+", "127.0.0.1:<port>"),  # the test's servers listen on free ports
)


# --- the world the collectors read ------------------------------------------------------------------


def assemble_root(root: Path) -> Path:
    """The recorded trees, then the golden overlay on top (a file of the overlay wins)."""
    layers = (
        (FIXTURES / "proc", root / "proc"),
        (FIXTURES / "cgroup" / "v2" / "proc", root / "proc"),
        (FIXTURES / "cgroup" / "v2" / "sys", root / "sys"),
        (GOLDEN / "proc", root / "proc"),
    )
    for source, target in layers:
        for path in sorted(source.rglob("*")):
            destination = target / path.relative_to(source)
            if path.is_dir() and not path.is_symlink():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            if destination.is_symlink() or destination.exists():
                destination.unlink()
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination, follow_symlinks=False)
    return root


def two_h100s() -> FakeNvml:
    """The fake NVML: vLLM's two tensor-parallel workers (pids 4250, 4251 in the overlay) on two
    H100s at full clocks, with a driver new enough for the CUDA 12.8 build of torch they load."""
    gpus = [
        FakeGpu(gpu_uuid(index), clock_reasons=0, processes=[FakeProcess(pid, 71 * 1024**3)])
        for index, pid in enumerate((4250, 4251))
    ]
    return FakeNvml(Scenario(gpus, driver_version="570.124.06", cuda_driver_version=12080))


@contextlib.contextmanager
def golden_world(directory: Path, redis: RedisServer) -> Iterator[Config]:
    """Everything the config names, started; yields the config that points at it."""
    client = redis.client()
    client.rpush("autoglm:requests", *[f"request-{n}" for n in range(7)])
    for n in range(5):
        client.xadd("autoglm:events", {"n": str(n)})
    client.xgroup_create("autoglm:events", "workers", id="0")
    client.xreadgroup("workers", "worker-1", {"autoglm:events": ">"}, count=2)  # 2 pending
    client.zadd("autoglm:scheduled", {"a": 1, "b": 2, "c": 3})
    logs = directory / "logs"
    logs.mkdir(parents=True)
    (logs / "error.log").write_text("INFO started\n")  # history: read from its end
    (logs / "trace.log").write_text("")
    page = VLLM_PAGE.read_bytes()
    page_0_32 = VLLM_0_32_PAGE.read_bytes()
    with (
        fs.FaultServer(fs.answer(200, '{"text": "Hi"}')) as api,
        fs.FaultServer(fs.openai(MODEL)) as chat,
        fs.FaultServer(fs.answer(200, page, "text/plain; version=0.0.4; charset=utf-8")) as engine,
        fs.FaultServer(fs.answer(200, page_0_32, "text/plain; version=0.0.4; charset=utf-8")) as engine_0_32,
    ):
        values = {
            "ROOT": str(assemble_root(directory / "root")),
            "REDIS": str(redis.port),
            "API": str(api.port),
            "CHAT": str(chat.port),
            "ENGINE": str(engine.port),
            "ENGINE_0_32": str(engine_0_32.port),
            "LOGS": str(logs),
            "CAPTURES": str(directory / "captures"),
        }
        config = directory / "config.yml"
        config.write_text(string.Template((GOLDEN / "config.yml").read_text()).substitute(values))
        yield load_config(str(config))


def render_once(config: Config) -> bytes:
    """Each collector once through its runner into a store with the daemon's deriver; the page."""
    store = Pipeline.build(config).store
    fake_gpu = GpuCollector(config.gpu, config.services, config.proc_root, two_h100s())
    collectors = [fake_gpu if c.name == "gpu" else c for c in build_collectors(config)]
    store.set_collectors(c.name for c in collectors)
    for collector in collectors:
        assert CollectorRunner(collector, store, config.collector(collector.name).timeout).run_once(), (
            collector.name,
            store.health()[collector.name].last_error,
        )
    # The verdict confirms a change over several readings: let it settle on these facts.
    for _ in range(config.diagnosis.confirm_readings + 1):
        store.touch()
    return store.render()[0]


# --- normalising and comparing --------------------------------------------------------------------

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{.*\})? (?P<value>\S+)$")


def normalise(page: str) -> str:
    """Placeholders for run-dependent values; families sorted by name, samples by name and labels."""
    families: dict[str, list[str]] = {}
    current: list[str] = []
    for line in page.splitlines():
        if line.startswith("# HELP "):
            current = families.setdefault(line.split()[2], [])
            current.append(line)
        elif line.startswith("#"):
            current.append(line)
        elif line:
            current.append(_normalise_sample(line))
    blocks = []
    for name in sorted(families):
        lines = families[name]
        comments = [line for line in lines if line.startswith("#")]
        blocks.append("\n".join(comments + sorted(line for line in lines if not line.startswith("#"))))
    return HEADER + "\n".join(blocks) + "\n"


def _normalise_sample(line: str) -> str:
    match = _SAMPLE.match(line)
    assert match, f"not a sample line: {line!r}"
    name, labels, value = match["name"], match["labels"] or "", match["value"]
    for label, part, placeholder in NORMALISED_LABELS:
        labels = _replace_in_label(labels, label, part, placeholder)
    for pattern, placeholder in NORMALISED_VALUES:
        if re.fullmatch(pattern, name):
            value = placeholder
            break
    return f"{name}{labels} {value}"


def _replace_in_label(labels: str, label: str, part: str, placeholder: str) -> str:
    def replace(found: re.Match[str]) -> str:
        return f'{found[1]}{label}="{re.sub(part, placeholder, found[2], count=1)}"'

    return re.sub(rf'([{{,]){label}="([^"]*)"', replace, labels)


def test_the_page_matches_the_golden_file(tmp_path: Path, redis_server: Callable[..., RedisServer]) -> None:
    require_binary("promtool")
    with golden_world(tmp_path / "first", redis_server()) as config:
        page = render_once(config)
    assert_promtool_clean(page)
    text = page.decode()
    assert SECRET not in text
    normalised = normalise(text)
    # A second world from scratch (other ports, other folders, later): what differs is not normalised.
    with golden_world(tmp_path / "second", redis_server()) as config:
        again = normalise(render_once(config).decode())
    unstable = sorted(set(normalised.splitlines()) ^ set(again.splitlines()))
    assert not unstable, "values that differ between two runs; normalise them:\n" + "\n".join(unstable)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN_PAGE.write_text(normalised)
    expected = GOLDEN_PAGE.read_text() if GOLDEN_PAGE.exists() else ""
    assert normalised == expected, (
        "the page differs from tests/fixtures/golden/metrics.prom; after a deliberate change run "
        "UPDATE_GOLDEN=1 pytest tests/test_golden.py and commit the file. Diff:\n"
        + _diff(expected, normalised)
    )


def _diff(expected: str, actual: str) -> str:
    lines = difflib.unified_diff(
        expected.splitlines(), actual.splitlines(), "metrics.prom", "this run", lineterm="", n=1
    )
    return "\n".join(list(lines)[:200])


def test_normalising_keeps_every_series_and_sorts_families_and_samples() -> None:
    page = (
        "# HELP autoglm_probe_success S.\n# TYPE autoglm_probe_success gauge\n"
        'autoglm_probe_success{target="b"} 1.0\nautoglm_probe_success{target="a"} 0.0\n'
        "# HELP autoglm_exporter_build_info I.\n# TYPE autoglm_exporter_build_info gauge\n"
        'autoglm_exporter_build_info{python_version="3.11.7",version="0.1.0"} 1.0\n'
        "# HELP autoglm_probe_target_info T.\n# TYPE autoglm_probe_target_info gauge\n"
        'autoglm_probe_target_info{target="a",url="http://127.0.0.1:40531/v1"} 1.0\n'
        "# HELP autoglm_exporter_collector_last_success_timestamp_seconds L.\n"
        "# TYPE autoglm_exporter_collector_last_success_timestamp_seconds gauge\n"
        'autoglm_exporter_collector_last_success_timestamp_seconds{collector="probe"} 1.7e+09\n'
    )
    assert normalise(page) == HEADER + (
        "# HELP autoglm_exporter_build_info I.\n# TYPE autoglm_exporter_build_info gauge\n"
        'autoglm_exporter_build_info{python_version="<version>",version="<version>"} 1.0\n'
        "# HELP autoglm_exporter_collector_last_success_timestamp_seconds L.\n"
        "# TYPE autoglm_exporter_collector_last_success_timestamp_seconds gauge\n"
        'autoglm_exporter_collector_last_success_timestamp_seconds{collector="probe"} <timestamp>\n'
        "# HELP autoglm_probe_success S.\n# TYPE autoglm_probe_success gauge\n"
        'autoglm_probe_success{target="a"} 0.0\nautoglm_probe_success{target="b"} 1.0\n'
        "# HELP autoglm_probe_target_info T.\n# TYPE autoglm_probe_target_info gauge\n"
        'autoglm_probe_target_info{target="a",url="http://127.0.0.1:<port>/v1"} 1.0\n'
    )

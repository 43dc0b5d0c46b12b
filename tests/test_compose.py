"""docker-compose.yml and what it mounts, checked with the real tools (there is no Docker engine here).

The compose files are validated against the compose-spec schema, every host path they mount and
every build they name must exist, both Dockerfiles must pass hadolint, the Prometheus and
Alertmanager configs must pass promtool/amtool, and then they are run for real: an Alertmanager
with deploy/alertmanager/alertmanager.yml routes and inhibits posted alerts (its webhook pointed at
a server in this test), and a Prometheus with deploy/prometheus/prometheus.yml loads the repository's
alerts/ through the path docker-compose.yml mounts them at and scrapes an exporter running
deploy/compose/exporter.yml. Container paths are mapped to host paths through the compose file's
own bind mounts, so a mount and the config that reads through it cannot drift apart.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest
import yaml

from autoglm_exporter import __version__
from autoglm_exporter.cli import DEFAULT_LISTEN_ADDRESS, build_parser
from demo.cli import parser as demo_parser
from mixin.config import EXPORTER_JOB

from .alertreceiver import WebhookReceiver, point_webhooks_at
from .conftest import REPO, check_config, free_port, require_binary, stop_process, wait_until
from .support import START_WITHIN, wait_http_ok

COMPOSE = REPO / "docker-compose.yml"
GPU_OVERRIDE = REPO / "deploy/compose/gpu.yml"
COMPOSE_FILES = (COMPOSE, GPU_OVERRIDE)
EXPORTER_CONFIG = REPO / "deploy/compose/exporter.yml"
PROMETHEUS_CONFIG = REPO / "deploy/prometheus/prometheus.yml"
ALERTMANAGER_CONFIG = REPO / "deploy/alertmanager/alertmanager.yml"
GRAFANA_DATASOURCES = REPO / "deploy/grafana/provisioning/datasources/prometheus.yml"
GRAFANA_DASHBOARDS = REPO / "deploy/grafana/provisioning/dashboards/autoglm.yml"
DOCKERFILES = (REPO / "Dockerfile", REPO / "demo/Dockerfile")

# Host paths outside the repository that the stack may mount, and why. Anything else (the Docker
# socket, /, /etc) must be argued for here first.
HOST_PATHS = {
    "/proc": "the host's processes, read-only (paths.proc)",
    "/sys": "the host's cgroups, read-only (paths.sys)",
    "/var/log/open-autoglm": "the service's log directory (AUTOGLM_LOG_DIR's default)",
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


# --- reading the compose files as Docker would --------------------------------------------------------


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with every variable unset: the defaults the files ship with."""
    return _VARIABLE.sub(lambda m: m.group(2) or "", value)


def merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value) if key in base else value
        return merged
    return override


def compose(*files: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in files:
        merged = merge(merged, load(path))
    return merged


def service(name: str, *files: Path) -> dict[str, Any]:
    return compose(*(files or (COMPOSE,)))["services"][name]


@dataclass(frozen=True)
class Mount:
    kind: str  # bind | volume
    source: str
    target: str
    read_only: bool


def mounts(spec: dict[str, Any]) -> list[Mount]:
    """The service's volumes, short ("SRC:DST[:ro]") or long syntax, variables at their defaults."""
    result = []
    for entry in spec.get("volumes", []):
        if isinstance(entry, str):
            source, target, *mode = interpolate(entry).split(":")
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            result.append(Mount(kind, source, target, "ro" in ",".join(mode).split(",")))
        else:
            source = interpolate(str(entry.get("source", "")))
            result.append(Mount(entry["type"], source, entry["target"], bool(entry.get("read_only"))))
    return result


def host_source(mount: Mount) -> Path:
    """A bind mount's host path; relative ones are relative to the project directory (the repo)."""
    return Path(mount.source) if mount.source.startswith("/") else (REPO / mount.source).resolve()


def host_path(spec: dict[str, Any], container_path: str) -> Path:
    """The host path behind a path inside the service's container, through its bind mounts."""
    binds = sorted((m for m in mounts(spec) if m.kind == "bind"), key=lambda m: -len(m.target))
    for mount in binds:
        target = mount.target.rstrip("/")
        if container_path == target or container_path.startswith(target + "/"):
            rest = container_path[len(target) :].lstrip("/")
            return host_source(mount) / rest if rest else host_source(mount)
    raise AssertionError(f"{container_path} is in no bind mount of the service: {binds}")


def mount_at(spec: dict[str, Any], target: str) -> Mount:
    found = [m for m in mounts(spec) if m.target.rstrip("/") == target.rstrip("/")]
    assert len(found) == 1, f"expected one mount at {target}, got {found}"
    return found[0]


def flags(command: list[str]) -> dict[str, str]:
    """--name=value arguments of a command list."""
    return dict(interpolate(arg)[2:].split("=", 1) for arg in command if arg.startswith("--") and "=" in arg)


def venv_tool(name: str) -> str:
    """A tool from the test extras, next to this interpreter (.venv/bin) or on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else require_binary(name)


def alert_rule_files() -> list[Path]:
    files = sorted((REPO / "alerts").glob("*.rules.yml"))
    assert files, "alerts/ holds no *.rules.yml: generate them (make mixin) before this test"
    return files


# --- processes and a webhook receiver ------------------------------------------------------------------


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start real servers with their output in tmp_path; all are stopped after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, *command: str) -> subprocess.Popen[bytes]:
        with open(tmp_path / f"{name}.log", "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        started.append(process)
        return process

    yield start
    for process in started:
        stop_process(process, timeout=10)


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """An Alertmanager webhook receiver on 127.0.0.1."""
    with WebhookReceiver() as receiver:
        yield receiver


# --- the compose files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_compose_file_follows_the_compose_spec(path: Path) -> None:
    checked = subprocess.run(
        [venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "version" not in load(path), "the compose spec has no version key"


def test_every_mounted_path_and_build_exists() -> None:
    declared_volumes = set(load(COMPOSE).get("volumes") or {})
    for path in COMPOSE_FILES:
        for name, spec in load(path)["services"].items():
            for mount in mounts(spec):
                where = f"{path.name}: {name}: {mount}"
                if mount.kind == "volume":
                    assert mount.source in declared_volumes, f"{where}: undeclared named volume"
                    continue
                if mount.source.startswith("/"):
                    assert mount.source in HOST_PATHS, f"{where}: unexpected host path"
                    if mount.source in ("/proc", "/sys"):
                        assert mount.read_only, f"{where}: the host's {mount.source} must be read-only"
                    continue
                source = host_source(mount)
                assert source.is_relative_to(REPO) and source.exists(), f"{where}: {source} does not exist"
                # Docker makes a missing file source into an empty directory: a file target needs a file.
                wants_file = bool(PurePosixPath(mount.target).suffix)
                assert source.is_file() == wants_file, f"{where}: file/directory mismatch"
            build = spec.get("build")
            if build is not None:
                context = REPO / (build if isinstance(build, str) else build.get("context", "."))
                dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
                assert context.is_dir(), f"{name}: build context {context} is missing"
                assert (context / dockerfile).is_file(), f"{name}: {context / dockerfile} is missing"


def test_services_and_profiles() -> None:
    services = load(COMPOSE)["services"]
    always = {name for name, spec in services.items() if not spec.get("profiles")}
    demo = {name for name, spec in services.items() if "demo" in spec.get("profiles", [])}
    assert always == {"exporter", "prometheus", "alertmanager", "grafana"}
    assert demo == {"demo-engine", "demo-api", "webhook", "redis"}
    for name, spec in services.items():
        active = set(spec.get("profiles") or []) or {"default"}
        for needed in spec.get("depends_on") or []:
            needed_profiles = set(services[needed].get("profiles") or []) or {"default"}
            assert "default" in needed_profiles or active <= needed_profiles, f"{name} needs {needed}"
        if "build" not in spec:  # pulled images: an exact version, never latest or a moving major
            tag = spec["image"].rsplit(":", 1)[-1]
            assert re.fullmatch(r"v?\d+\.\d+\.\d+(-alpine)?", tag), f"{name}: pin an exact tag, not {tag}"
        assert spec.get("restart") == "unless-stopped", name
        if name != "exporter":  # the exporter's HEALTHCHECK is in its image
            assert spec.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_exporter_service_sees_the_host() -> None:
    spec = service("exporter")
    assert spec["pid"] == "host"
    assert spec["network_mode"] == "host"
    assert "SYS_PTRACE" in spec["cap_add"]
    assert not spec.get("privileged"), "SYS_PTRACE is all py-spy needs"
    config = load(EXPORTER_CONFIG)
    proc = mount_at(spec, config["paths"]["proc"])
    assert (proc.kind, proc.source, proc.read_only) == ("bind", "/proc", True)
    sys_mount = mount_at(spec, config["paths"]["sys"])
    assert (sys_mount.source, sys_mount.read_only) == ("/sys", True)
    assert spec["cgroup"] == "host", "/proc/PID/cgroup must name host paths"
    # What the exporter reads and writes inside the container lies on the right mounts.
    for log in config["logs"]:
        log_dir = mount_at(spec, str(PurePosixPath(log["path"]).parent))
        assert log_dir.read_only and log_dir.source in HOST_PATHS
    captures = mount_at(spec, config["forensics"]["directory"])
    assert captures.kind == "volume" and not captures.read_only
    # The command's flags are the CLI's, and the config it names is the file mounted there.
    args = build_parser().parse_args(spec["command"])
    assert args.command == "run"
    assert host_path(spec, args.config_file) == EXPORTER_CONFIG


def test_gpu_reservation_is_an_override() -> None:
    """Without NVIDIA's runtime `docker compose up` must start, so the base file reserves no GPU."""
    assert "deploy" not in service("exporter")
    devices = service("exporter", COMPOSE, GPU_OVERRIDE)["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert set(load(GPU_OVERRIDE)["services"]) == {"exporter"}
    header = COMPOSE.read_text().split("\nname:", 1)[0]
    assert "-f docker-compose.yml -f deploy/compose/gpu.yml" in header
    assert "COMPOSE_FILE=docker-compose.yml:deploy/compose/gpu.yml" in header


def test_no_secret_is_written_inline() -> None:
    grafana = service("grafana")["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    for name, spec in load(COMPOSE)["services"].items():
        environment = spec.get("environment") or {}
        assert isinstance(environment, dict), f"{name}: use the mapping form of environment"
        for key, value in environment.items():
            if re.search(r"PASSWORD|TOKEN|SECRET|API_KEY", key):
                assert re.fullmatch(r"\$\{\w+(:-[^}]*)?\}", str(value)), f"{name}: {key} must be ${{VAR}}"
    assert "GRAFANA_ADMIN_PASSWORD" in grafana["GF_SECURITY_ADMIN_PASSWORD"]


def demo_args(name: str) -> Any:
    """A demo service's compose command, parsed by the demo's own command line."""
    return demo_parser().parse_args([interpolate(arg) for arg in service(name)["command"]])


def test_demo_is_wired_like_the_real_service() -> None:
    """The demo sits where the exporter's config looks: same ports, Redis, queue and log file."""
    config = load(EXPORTER_CONFIG)
    api, engine = demo_args("demo-api"), demo_args("demo-engine")
    assert (api.command, engine.command, demo_args("webhook").command) == ("api", "engine", "webhook")
    assert api.log_file in {log["path"] for log in config["logs"] if not log.get("trace")}
    assert api.trace_file in {log["path"] for log in config["logs"] if log.get("trace")}
    assert PurePosixPath(api.trace_file).parent == PurePosixPath(api.log_file).parent  # one mount
    log_dir = str(PurePosixPath(api.log_file).parent)
    assert mount_at(service("demo-api"), log_dir).source == mount_at(service("exporter"), log_dir).source
    assert not mount_at(service("demo-api"), log_dir).read_only
    redis = config["redis"][0]
    assert api.redis_url == f"redis://{redis['address']}/0"
    assert api.queue in {queue["key"] for queue in redis["queues"]}
    redis_command = service("redis")["command"]
    assert redis_command[redis_command.index("--port") + 1] == redis["address"].rsplit(":", 1)[1]
    ports = {s["name"]: s["match"]["port"] for s in config["services"]}
    assert (api.port, engine.port) == (ports["open-autoglm"], ports["vllm"])
    assert api.engine_url == f"http://127.0.0.1:{ports['vllm']}"
    for name in ("demo-engine", "demo-api", "redis"):
        assert service(name)["network_mode"] == "host", f"{name} must sit on the host's loopback"
    # Each demo process's command line (the image's ENTRYPOINT, then the compose command) is matched
    # by its service's rule and by no other.
    entrypoint = json.loads(dict(_instructions(REPO / "demo/Dockerfile"))["ENTRYPOINT"])
    rules = {s["name"]: re.compile(s["match"]["cmdline"]) for s in config["services"]}
    for name, expected in (("demo-api", "open-autoglm"), ("demo-engine", "vllm")):
        cmdline = " ".join(["/usr/local/bin/" + entrypoint[0], *entrypoint[1:], *service(name)["command"]])
        assert {s for s, rule in rules.items() if rule.search(cmdline)} == {expected}, cmdline


# --- the images ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_passes_hadolint(path: Path) -> None:
    checked = subprocess.run([venv_tool("hadolint"), str(path)], capture_output=True, text=True, timeout=60)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", ""), checked


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_exporter_image_runs_the_daemon() -> None:
    instructions = _instructions(REPO / "Dockerfile")
    last = {name: arg for name, arg in instructions}  # the runtime stage's
    port = DEFAULT_LISTEN_ADDRESS.rsplit(":", 1)[1]
    assert last["EXPOSE"] == port
    assert json.loads(last["ENTRYPOINT"]) == ["autoglm-exporter"]
    args = build_parser().parse_args(json.loads(last["CMD"]))
    assert (args.command, args.config_file) == ("run", "/etc/autoglm-exporter/config.yml")
    assert f"http://127.0.0.1:{port}/-/healthy" in last["HEALTHCHECK"]
    assert "python" in last["HEALTHCHECK"], "slim has no curl: the healthcheck must use python"
    assert not any(name == "USER" for name, _ in instructions), "runs as root: see the Dockerfile"
    assert any(name == "FROM" and arg.startswith("python:3.12-slim") for name, arg in instructions)
    assert all(
        f"org.opencontainers.image.{label}=" in last["LABEL"] for label in ("title", "source", "licenses")
    )
    assert last["ARG"] == f"VERSION={__version__}", "the image's version label follows the package"
    # The build context keeps what the image copies and nothing heavy.
    ignore = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line[:1] not in ("#", "")]
    copied = [arg.split()[:-1] for name, arg in instructions if name == "COPY" and "--from" not in arg]
    for source in (item for sources in copied for item in sources):
        assert f"!{source}" in ignore, f".dockerignore leaves {source} out of the build context"
    assert ignore[0] == "*"


# --- Prometheus ------------------------------------------------------------------------------------------


def _prometheus_config_for_this_host(tmp_path: Path, targets: dict[str, str], alertmanager: str) -> Path:
    """deploy/prometheus/prometheus.yml written elsewhere: its rule files (relative to the shipped
    file) made absolute, its targets moved (job name -> target)."""
    config = load(PROMETHEUS_CONFIG)
    config["rule_files"] = [str(PROMETHEUS_CONFIG.parent / pattern) for pattern in config["rule_files"]]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _resolved(base: PurePosixPath, pattern: str) -> PurePosixPath:
    """A rule_files entry as Prometheus resolves it: relative to the config file's directory."""
    parts: list[str] = []
    for part in (base / pattern).parts:
        if part == "..":
            parts.pop()
        else:
            parts.append(part)
    return PurePosixPath(*parts)


def test_prometheus_config_finds_the_rules_in_the_container_and_in_the_repository() -> None:
    spec = service("prometheus")
    config = load(PROMETHEUS_CONFIG)
    container_config = PurePosixPath(flags(spec["command"])["config.file"])
    assert host_path(spec, str(container_config)) == PROMETHEUS_CONFIG
    for pattern in config["rule_files"]:
        assert not pattern.startswith("/"), (
            "an absolute path exists in the container or on the host, not both"
        )
        in_container = _resolved(container_config.parent, pattern)
        assert host_path(spec, str(in_container)) == REPO / "alerts/*.rules.yml", pattern
        assert (PROMETHEUS_CONFIG.parent / pattern).resolve() == (REPO / "alerts/*.rules.yml").resolve()


def test_promtool_check_config_from_the_repository_finds_every_rule_file() -> None:
    """What a user runs before `docker compose up`: the shipped file, unchanged, from the repository."""
    checked = subprocess.run(
        [require_binary("promtool"), "check", "config", str(PROMETHEUS_CONFIG.relative_to(REPO))],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    found = re.search(r"SUCCESS: (\d+) rule files found", output)
    assert found and int(found.group(1)) == len(alert_rule_files()) >= 2, output
    for rules in alert_rule_files():
        assert f"Checking {rules.relative_to(REPO)}" in output, output
        assert "SUCCESS" in output.split(f"Checking {rules.relative_to(REPO)}", 1)[1].split("Checking", 1)[0]


def test_prometheus_scrapes_the_exporter_the_engine_and_the_paging_path_on_the_hosts_loopback() -> None:
    spec = service("prometheus")
    config = load(PROMETHEUS_CONFIG)
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    port = DEFAULT_LISTEN_ADDRESS.rsplit(":", 1)[1]
    assert targets[EXPORTER_JOB] == [f"127.0.0.1:{port}"]
    exporter_command = flags(service("exporter")["command"])
    assert exporter_command["web.listen-address"] == f"127.0.0.1:{port}"
    engine = load(EXPORTER_CONFIG)["engines"][0]["metrics_url"]
    assert targets["vllm"] == [engine.split("//", 1)[1].split("/", 1)[0]], "the engine the exporter reads"
    assert set(targets) == {EXPORTER_JOB, "vllm", "prometheus", "alertmanager"}
    assert spec["network_mode"] == "host" and "ports" not in spec and "extra_hosts" not in spec
    assert flags(spec["command"])["web.listen-address"] == "127.0.0.1:9090"
    assert targets["prometheus"] == ["127.0.0.1:9090"]
    published = [p for p in service("alertmanager")["ports"] if p.endswith(":9093:9093")]
    assert published and interpolate(published[0]).startswith("127.0.0.1:")
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9093"]
    assert targets["alertmanager"] == ["127.0.0.1:9093"]
    assert "--web.enable-lifecycle" in spec["command"]
    assert "storage.tsdb.retention.time" in flags(spec["command"])


@pytest.mark.slow
def test_real_prometheus_scrapes_the_compose_exporter(tmp_path: Path, spawn, start_exporter) -> None:
    """Prometheus with the compose config (targets on 127.0.0.1) loads the real alerts and finds the
    exporter, which runs deploy/compose/exporter.yml with its container paths made local."""
    exporter_spec = service("exporter")
    config = load(EXPORTER_CONFIG)
    # The container's paths, mapped through the compose mounts; the log directory and the captures
    # volume become directories of this test.
    config["paths"] = {key: str(host_path(exporter_spec, value)) for key, value in config["paths"].items()}
    assert config["paths"] == {"proc": "/proc", "sys": "/sys"}
    for log in config["logs"]:
        log["path"] = str(tmp_path / PurePosixPath(log["path"]).name)
    config["forensics"]["directory"] = str(tmp_path / "captures")
    # The service's ports move to free ones, so the test never probes what this machine runs.
    moved = {port: free_port() for port in (8080, 8000, 6379)}
    text = yaml.safe_dump(config, sort_keys=False)
    for old, new in moved.items():
        text = re.sub(rf"(?<=[: ]){old}\b", str(new), text)
    local_config = tmp_path / "exporter.yml"
    local_config.write_text(text)
    exporter = start_exporter("run", f"--config.file={local_config}", wait_ready=False)
    wait_until(lambda: exporter.get("/metrics").status_code == 200, timeout=START_WITHIN)

    port = free_port()
    prometheus_config = _prometheus_config_for_this_host(
        tmp_path,
        {
            EXPORTER_JOB: f"127.0.0.1:{exporter.port}",
            "vllm": "127.0.0.1:1",
            "prometheus": f"127.0.0.1:{port}",
            "alertmanager": "127.0.0.1:1",
        },
        "127.0.0.1:1",
    )
    command = flags(service("prometheus")["command"])
    command.update({"config.file": str(prometheus_config), "storage.tsdb.path": str(tmp_path / "tsdb")})
    command["web.listen-address"] = f"127.0.0.1:{port}"
    argv = [f"--{name}={value}" for name, value in command.items()]
    argv += [arg for arg in service("prometheus")["command"] if "=" not in arg]
    process = spawn("prometheus", require_binary("prometheus"), *argv)
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(f"{url}/-/ready", process, tmp_path / "prometheus.log")

    groups = httpx.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert {Path(group["file"]).resolve() for group in groups} == {p.resolve() for p in alert_rule_files()}
    assert sum(len(group["rules"]) for group in groups) > 0
    assert any(rule["type"] == "alerting" for group in groups for rule in group["rules"])

    def exporter_up() -> bool:
        active = httpx.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        ours = [t for t in active if t["labels"]["job"] == EXPORTER_JOB]
        assert len(ours) <= 1, active
        return bool(ours) and ours[0]["health"] == "up"  # discovery, then the first scrape

    wait_until(exporter_up, timeout=30, interval=0.5)  # the first scrape comes within one interval
    query = httpx.get(f"{url}/api/v1/query", params={"query": f'up{{job="{EXPORTER_JOB}"}}'}, timeout=5)
    assert [r["value"][1] for r in query.json()["data"]["result"]] == ["1"]


# --- Alertmanager ----------------------------------------------------------------------------------------


def test_alertmanager_config_passes_amtool(tmp_path: Path) -> None:
    amtool = require_binary("amtool")
    checked = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER_CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The commented PagerDuty and Slack receivers are valid once uncommented, and read files.
    text = re.sub(
        r"(?m)^    # (?=(pagerduty_configs|slack_configs|  ))", "    ", ALERTMANAGER_CONFIG.read_text()
    )
    uncommented = tmp_path / "alertmanager.yml"
    uncommented.write_text(text)
    receivers = {r["name"]: r for r in load(uncommented)["receivers"]}
    assert receivers["page"]["pagerduty_configs"][0]["routing_key_file"].startswith("/etc/alertmanager/")
    assert receivers["ticket"]["slack_configs"][0]["api_url_file"].startswith("/etc/alertmanager/")
    checked = subprocess.run(
        [amtool, "check-config", str(uncommented)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Out of the box every receiver is the demo's webhook service, resolved notifications included
    # (but the Watchdog's, which never resolves).
    config = load(ALERTMANAGER_CONFIG)
    hooks = [
        hook for r in config["receivers"] if r["name"] != "watchdog" for hook in r.get("webhook_configs", [])
    ]
    assert hooks and all(hook["send_resolved"] for hook in hooks)
    hooks += [hook for r in config["receivers"] if r["name"] == "watchdog" for hook in r["webhook_configs"]]
    assert {hook["url"] for hook in hooks} == {f"http://webhook:{demo_args('webhook').port}/"}
    assert flags(service("alertmanager")["command"])["cluster.listen-address"] == ""
    assert host_path(service("alertmanager"), flags(service("alertmanager")["command"])["config.file"]) == (
        ALERTMANAGER_CONFIG
    )


def _alert(name: str, severity: str, instance: str | None, **labels: str) -> dict[str, Any]:
    common = {"alertname": name, "severity": severity, "job": EXPORTER_JOB}
    if instance:
        common["instance"] = instance
    return {"labels": common | labels, "annotations": {"summary": f"{name} (test)"}}


def _key(labels: dict[str, str]) -> tuple[str, str, str]:
    return labels["alertname"], labels.get("instance", ""), labels.get("service", "")


def _seconds(duration: str) -> float:
    return float(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


def _quick(config: dict[str, Any], wait: str = "1s") -> None:
    """The shipped routes with their waits shortened (the routing and inhibition unchanged)."""
    for route in [config["route"], *config["route"]["routes"]]:
        route["group_wait"], route["group_interval"] = wait, "1m"


def test_alertmanager_config_is_the_mixins() -> None:
    """The committed file is the routing and inhibition mixin/alertmanager.py generates from the
    alerts' names and roles (the drift test checks the text; this, what Alertmanager reads)."""
    from mixin import alertmanager

    assert load(ALERTMANAGER_CONFIG) == alertmanager.routing()
    critical = [
        r for r in load(ALERTMANAGER_CONFIG)["route"]["routes"] if 'severity="critical"' in r["matchers"]
    ]
    # a cause: one group per cause and service; the symptoms no cause explains: one per service
    assert critical[0]["group_by"] == ["service", "alertname"] and 'service=~".+"' in critical[0]["matchers"]
    assert critical[1]["group_by"] == ["service"] and 'service=~".+"' in critical[1]["matchers"]
    for rule in load(ALERTMANAGER_CONFIG)["inhibit_rules"]:
        for label in rule["equal"]:
            assert f'{label}=~".+"' in rule["source_matchers"], "an empty label must never match"


@pytest.mark.slow
def test_real_alertmanager_routes_pages_and_inhibits(tmp_path: Path, spawn, webhook) -> None:
    config = load(ALERTMANAGER_CONFIG)
    point_webhooks_at(config, webhook.url)
    _quick(config)
    local = tmp_path / "alertmanager.yml"
    local.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    process = spawn(
        "alertmanager",
        require_binary("prometheus-alertmanager"),
        f"--config.file={local}",
        f"--storage.path={tmp_path / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    )
    url = f"http://127.0.0.1:{port}"
    wait_http_ok(f"{url}/-/ready", process, tmp_path / "alertmanager.log")

    redis = {"service": "open-autoglm", "redis": "redis", "kind": "redis", "dependency": "redis"}
    alerts = [
        # Redis down, seen by the exporters of two nodes: one notification, its symptoms silenced
        _alert("AutoglmRedisDown", "critical", "host-a:9877", **redis),
        _alert("AutoglmRedisDown", "critical", "host-c:9877", **redis),
        _alert(
            "AutoglmServiceNotAnswering",
            "critical",
            "host-a:9877",
            service="open-autoglm",
            target="inference",
        ),
        _alert("AutoglmChainBroken", "critical", "host-c:9877", service="open-autoglm"),
        _alert(
            "AutoglmAvailabilityBudgetBurn", "critical", None, service="open-autoglm", long="1h", short="5m"
        ),
        # another service on the same node is another incident
        _alert("AutoglmServiceNotAnswering", "critical", "host-a:9877", service="batch-api", target="batch"),
        # no service on either side: an empty label is no match
        _alert("AutoglmPortTaken", "critical", "host-d:9877", port="8080"),
        _alert("AutoglmChainDegraded", "warning", "host-d:9877"),
        # the exporter of host-b is down: whatever else host-b says is silenced
        _alert("AutoglmExporterDown", "critical", "host-b:9877"),
        _alert("AutoglmRedisDown", "critical", "host-b:9877", service="cache", redis="cache"),
        # no exporter target at all (absent()): silences nothing, not even alerts without an instance
        _alert("AutoglmExporterDown", "critical", None),
        _alert("AutoglmWatchdog", "info", None),
    ]
    posted = httpx.post(f"{url}/api/v2/alerts", json=alerts, timeout=5)
    assert posted.status_code == 200, posted.text

    def states() -> dict[tuple[str, str, str], str] | None:
        """(alertname, instance, service) -> active | suppressed, once every alert is processed."""
        listed = httpx.get(f"{url}/api/v2/alerts", timeout=5).json()
        found = {_key(a["labels"]): a["status"]["state"] for a in listed}
        return found if len(found) == len(alerts) and "unprocessed" not in found.values() else None

    expected = {
        ("AutoglmRedisDown", "host-a:9877", "open-autoglm"): "active",
        ("AutoglmRedisDown", "host-c:9877", "open-autoglm"): "active",
        ("AutoglmServiceNotAnswering", "host-a:9877", "open-autoglm"): "suppressed",
        ("AutoglmChainBroken", "host-c:9877", "open-autoglm"): "suppressed",
        ("AutoglmAvailabilityBudgetBurn", "", "open-autoglm"): "suppressed",
        ("AutoglmServiceNotAnswering", "host-a:9877", "batch-api"): "active",
        ("AutoglmPortTaken", "host-d:9877", ""): "active",
        ("AutoglmChainDegraded", "host-d:9877", ""): "active",
        ("AutoglmExporterDown", "host-b:9877", ""): "active",
        ("AutoglmRedisDown", "host-b:9877", "cache"): "suppressed",
        ("AutoglmExporterDown", "", ""): "active",
        ("AutoglmWatchdog", "", ""): "active",
    }
    try:
        wait_until(lambda: states() == expected, timeout=10, interval=0.2)
    except AssertionError:
        raise AssertionError(f"alert states {states()} != {expected}") from None

    def by_receiver(name: str) -> list[dict[str, Any]]:
        return [n for n in webhook.received() if n["receiver"] == name]

    # pages: one per cause and service, however many exporters saw it; symptoms per service; the
    # rest per instance
    wait_until(lambda: len(by_receiver("page")) >= 5, timeout=20, interval=0.2)
    time.sleep(1.5)  # a second flush of the same groups would come now; none may
    pages = by_receiver("page")
    groups = {tuple(sorted(n["groupLabels"].items())): n for n in pages}
    assert len(groups) == len(pages), "one notification per group"
    assert set(groups) == {
        (("alertname", "AutoglmRedisDown"), ("service", "open-autoglm")),
        (("service", "batch-api"),),
        (("instance", "host-d:9877"),),
        (("instance", "host-b:9877"),),
        (),
    }
    incident = groups[(("alertname", "AutoglmRedisDown"), ("service", "open-autoglm"))]
    assert sorted(a["labels"]["instance"] for a in incident["alerts"]) == ["host-a:9877", "host-c:9877"]
    assert {a["labels"]["alertname"] for a in incident["alerts"]} == {"AutoglmRedisDown"}
    wait_until(lambda: by_receiver("watchdog"), timeout=10, interval=0.2)
    assert [a["labels"]["alertname"] for n in by_receiver("watchdog") for a in n["alerts"]] == [
        "AutoglmWatchdog"
    ]


# --- Grafana -------------------------------------------------------------------------------------------


def test_grafana_provisioning_matches_the_mounts() -> None:
    spec = service("grafana")
    datasources = load(GRAFANA_DATASOURCES)
    assert datasources["apiVersion"] == 1
    [prometheus] = datasources["datasources"]
    assert (prometheus["type"], prometheus["uid"], prometheus["isDefault"]) == (
        "prometheus",
        "prometheus",
        True,
    )
    assert prometheus["url"] == "http://" + flags(service("prometheus")["command"])["web.listen-address"]
    assert spec["network_mode"] == service("prometheus")["network_mode"] == "host"
    assert spec["environment"]["GF_SERVER_HTTP_ADDR"] == "${AUTOGLM_BIND_ADDRESS:-127.0.0.1}"
    scrape_interval = load(PROMETHEUS_CONFIG)["global"]["scrape_interval"]
    assert prometheus["jsonData"]["timeInterval"] == scrape_interval, "$__rate_interval needs it"

    providers = load(GRAFANA_DASHBOARDS)
    [provider] = providers["providers"]
    assert (provider["type"], provider["folder"]) == ("file", "AutoGLM")
    dashboards = mount_at(spec, provider["options"]["path"])
    assert host_source(dashboards) == REPO / "dashboards" and dashboards.read_only
    for path in (GRAFANA_DATASOURCES, GRAFANA_DASHBOARDS):
        container = f"/etc/grafana/provisioning/{path.parent.name}/{path.name}"
        assert host_path(spec, container) == path, f"{path} is not where Grafana reads provisioning"


def test_compose_exporter_config_passes_check_config() -> None:
    checked = check_config(EXPORTER_CONFIG)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK" in checked.stdout

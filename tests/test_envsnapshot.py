"""Environment snapshots of real processes in real virtual environments, and their diffs.

Each test makes its venvs with `python -m venv --without-pip` (about 0.1 s, offline) and installs
distributions the way an installer leaves them: a NAME-VERSION.dist-info directory with METADATA,
INSTALLER and RECORD next to the module. `packaging` is copied in where a test needs dependency
conflicts computed; pip itself (the dev environment's, with --python) checks our conflicts.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import pytest

from autoglm_exporter.snapshot import diff_snapshots, drift_components, hashcache, take_snapshot
from autoglm_exporter.snapshot import take as envsnapshot

SLEEPER = "import sys, time; print('up', flush=True); time.sleep(60)"


class Venv:
    def __init__(self, root: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=60)
        self.root = root
        self.python = root / "bin" / "python"
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        self.site = root / "lib" / version / "site-packages"
        assert self.site.is_dir()

    def install(self, name: str, version: str, *requires: str) -> None:
        """Install a one-module distribution as an installer would leave it."""
        module = name.replace("-", "_")
        info = self.site / f"{module}-{version}.dist-info"
        info.mkdir()
        (self.site / f"{module}.py").write_text(f"VERSION = {version!r}\n")
        lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        lines += [f"Requires-Dist: {requirement}" for requirement in requires]
        (info / "METADATA").write_text("\n".join(lines) + "\n")
        (info / "INSTALLER").write_text("pip\n")
        record = [f"{module}.py", f"{info.name}/METADATA", f"{info.name}/INSTALLER"]
        rows = [
            f"{path},sha256={_record_hash(self.site / path)},{(self.site / path).stat().st_size}"
            for path in record
        ]
        (info / "RECORD").write_text("\n".join([*rows, f"{info.name}/RECORD,,"]) + "\n")

    def remove(self, name: str) -> None:
        """Uninstall as pip does: delete every file its RECORD lists."""
        info = next(self.site.glob(f"{name.replace('-', '_')}-*.dist-info"))
        for row in (info / "RECORD").read_text().splitlines():
            (self.site / row.split(",")[0]).unlink()
        info.rmdir()

    def add_packaging(self) -> None:
        """Give the venv the `packaging` library (copied from the dev environment)."""
        dist = metadata.distribution("packaging")
        for file in dist.files or []:
            source = Path(str(dist.locate_file(file)))
            if "__pycache__" in file.parts or not source.is_file():
                continue
            target = self.site / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


def _record_hash(path: Path) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start a sleeping process with a given interpreter, argv[0] and environment; killed after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        python: Path, env: dict[str, str] | None = None, argv0: str | None = None, cwd: Path | None = None
    ):
        child = subprocess.Popen(
            [argv0 or str(python), "-c", SLEEPER],
            executable=str(python),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
            cwd=cwd,
            stdout=subprocess.PIPE,
        )
        started.append(child)
        assert child.stdout is not None and child.stdout.readline().strip() == b"up"
        return child

    yield start
    for child in started:
        child.kill()
        child.wait(5)
        if child.stdout:
            child.stdout.close()


# --- the service part ---------------------------------------------------------------------------


def test_snapshot_reads_the_services_venv_not_the_base_interpreter(tmp_path: Path, spawn) -> None:
    venv = Venv(tmp_path / "venv")
    venv.install("tiny-a", "1.0")
    venv.install("Tiny_B", "2.0.1")
    child = spawn(venv.python)
    service = take_snapshot(child.pid)["service"]
    assert service["pid"] == child.pid
    assert service["executable"] == str(venv.python)  # the venv's, although /proc/PID/exe is the base's
    assert service["exe"] == os.path.realpath(venv.python)
    assert service["python"] == {
        "version": "{}.{}.{}".format(*sys.version_info[:3]),
        "implementation": sys.implementation.name,
        "prefix": str(venv.root),
        "base_prefix": sys.base_prefix,
    }
    assert service["packages"] == {"tiny-a": "1.0", "tiny-b": "2.0.1"}  # nothing of the dev env
    assert service["conflicts"] is None  # no `packaging` in that venv: unknown, not "none"
    assert any("packaging is not importable" in error for error in service["errors"])


def test_installing_upgrading_and_removing_between_snapshots_is_named(tmp_path: Path, spawn) -> None:
    venv = Venv(tmp_path / "venv")
    venv.install("torch", "2.3.1")
    venv.install("flash-attn", "2.5.8")
    child = spawn(venv.python)
    before = take_snapshot(child.pid)
    venv.remove("torch")
    venv.install("torch", "2.4.0")
    venv.remove("flash-attn")
    venv.install("xformers", "0.0.27")
    after = take_snapshot(child.pid)  # the same running process: its environment changed under it
    assert diff_snapshots(before, after) == [
        "package flash-attn removed (was 2.5.8)",
        "torch 2.3.1 → 2.4.0",
        "package xformers added (0.0.27)",
    ]
    assert drift_components(before, after) == {
        "packages": True,
        "python": False,
        "model_files": False,
        "env": False,
        "gpu_driver": False,
        "conflicts": False,
    }
    assert diff_snapshots(after, after) == []


def test_dependency_conflicts_are_what_pip_check_reports(tmp_path: Path, spawn) -> None:
    venv = Venv(tmp_path / "venv")
    venv.add_packaging()
    venv.install("tiny-a", "1.0")
    venv.install("needs-missing", "1.0", "Absent.Dep>=1", 'other-thing; extra == "gpu"')
    venv.install("needs-newer", "3.1", "tiny-a>=2", 'never-needed; python_version < "3"')
    venv.install("content", "0.1", "tiny-a<2")
    child = spawn(venv.python)
    before = take_snapshot(child.pid)
    conflicts = before["service"]["conflicts"]
    assert conflicts == [
        "needs-missing 1.0 requires absent-dep, which is not installed.",
        "needs-newer 3.1 has requirement tiny-a>=2, but you have tiny-a 1.0.",
    ]
    pip = Path(sys.executable).parent / "pip"
    checked = subprocess.run(
        [str(pip), "--python", str(venv.python), "check"], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 1
    assert sorted(checked.stdout.splitlines()) == conflicts

    venv.install("absent-dep", "1.5")
    after = take_snapshot(child.pid)
    assert diff_snapshots(before, after) == [
        "package absent-dep added (1.5)",
        "dependency conflict resolved: needs-missing 1.0 requires absent-dep, which is not installed.",
    ]
    venv.remove("tiny-a")
    venv.install("tiny-a", "2.0")
    later = take_snapshot(child.pid)
    assert diff_snapshots(after, later) == [
        "tiny-a 1.0 → 2.0",
        "new dependency conflict: content 0.1 has requirement tiny-a<2, but you have tiny-a 2.0.",
        "dependency conflict resolved: needs-newer 3.1 has requirement tiny-a>=2, but you have tiny-a 1.0.",
    ]
    assert drift_components(after, later)["conflicts"] and drift_components(after, later)["packages"]


def test_env_allow_list_never_leaks_secrets(tmp_path: Path, spawn) -> None:
    venv = Venv(tmp_path / "venv")
    secrets = {
        "API_TOKEN": "tok-4f8a9c1d2e3b",
        "VLLM_API_KEY": "key-9d8c7b6a5f4e",
        "VLLM_SECRET_SAUCE": "sauce-1a2b3c4d",
        "VLLM_AUTH_HEADER": "Bearer b-77aa88bb",
        "HF_TOKEN": "hf_abcdefghijklmnopqrstuvwx",
        "DB_PASSWORD": "hunter2hunter2",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
    }
    env = {
        **secrets,
        "CUDA_VISIBLE_DEVICES": "0,1",
        "VLLM_USE_V1": "1",
        "HF_HOME": "/data/hf",
        "VLLM_RPC_BASE_URL": "https://svc:pw-55cc66dd@rpc.internal/v1",
        "HOME": str(tmp_path),
    }
    first = take_snapshot(spawn(venv.python, env=env).pid)
    assert first["service"]["env"] == {
        "CUDA_VISIBLE_DEVICES": "0,1",
        "HF_HOME": "/data/hf",
        "VLLM_RPC_BASE_URL": "https://svc:***@rpc.internal/v1",
        "VLLM_USE_V1": "1",
    }
    text = json.dumps(first)
    for name, value in secrets.items():
        assert value not in text and name not in text
    assert "pw-55cc66dd" not in text

    second = take_snapshot(
        spawn(venv.python, env={**env, "CUDA_VISIBLE_DEVICES": "0", "VLLM_USE_V1": ""}).pid
    )
    lines = diff_snapshots(first, second)
    assert lines[0].startswith("service pid ")
    assert lines[1:] == ["CUDA_VISIBLE_DEVICES 0,1 → 0", 'VLLM_USE_V1 1 → ""']
    assert drift_components(first, second)["env"]


def test_a_secret_in_an_allowed_variable_is_masked_in_the_snapshot_and_in_any_diff(
    tmp_path: Path, spawn
) -> None:
    venv = Venv(tmp_path / "venv")
    env = {"VLLM_EXTRA_ARGS": "--port 8000 --api-key=Zq7hunter2secret"}
    snapshot = take_snapshot(spawn(venv.python, env=env).pid)
    assert snapshot["service"]["env"] == {"VLLM_EXTRA_ARGS": "--port 8000 --api-key=***"}
    assert "Zq7hunter2secret" not in json.dumps(snapshot)
    # A baseline file written before it was masked (an older exporter, a hand edit) shows no secret.
    old = json.loads(json.dumps(snapshot))
    old["service"]["env"]["VLLM_EXTRA_ARGS"] = "--api-key=Zq7hunter2secret"
    assert diff_snapshots(old, snapshot) == ["VLLM_EXTRA_ARGS --api-key=*** → --port 8000 --api-key=***"]


def test_the_probe_runs_in_old_interpreters_without_anything_of_ours() -> None:
    """What runs in the service's Python: syntax Python 3.5 reads, and only the standard library."""
    tree = ast.parse(envsnapshot.PROBE_SOURCE, feature_version=(3, 5))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import: the service's Python has no package around it"
            imported.add((node.module or "").split(".")[0])
    assert imported and imported <= sys.stdlib_module_names


def test_interpreter_found_through_path_like_python_finds_itself(tmp_path: Path, spawn) -> None:
    venv = Venv(tmp_path / "venv")
    venv.install("only-in-venv", "1.0")
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    env = {"PATH": f"{venv.root / 'bin'}:/usr/bin:/bin"}
    child = spawn(venv.python, env=env, argv0="python", cwd=elsewhere)
    service = take_snapshot(child.pid)["service"]
    assert service["executable"] == str(venv.root / "bin" / "python")
    assert service["packages"] == {"only-in-venv": "1.0"}


def test_a_process_that_is_not_python_is_not_run(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([shutil.which("sleep") or "/bin/sleep", "60"])
    try:
        service = take_snapshot(sleeper.pid)["service"]
    finally:
        sleeper.kill()
        sleeper.wait(5)
    assert service["python"] is None and service["packages"] is None
    assert service["executable"] is None
    assert any("not a Python interpreter" in error for error in service["errors"])


# --- the machine part ---------------------------------------------------------------------------


def test_machine_snapshot_without_a_service_and_gpu_drift() -> None:
    gpu = {"driver_version": "535.104.05", "cuda_driver_version": "12.2", "names": ["NVIDIA H100 80GB HBM3"]}
    before = take_snapshot(None, gpu_info=gpu)
    assert before["version"] == envsnapshot.SNAPSHOT_VERSION
    assert before["service"] is None and before["gpu"] == gpu and before["model_dirs"] == {}
    after = take_snapshot(
        None, gpu_info={**gpu, "driver_version": "550.54.14", "cuda_driver_version": "12.4"}
    )
    assert diff_snapshots(before, after) == ["GPU driver 535.104.05 → 550.54.14", "CUDA driver 12.2 → 12.4"]
    components = drift_components(before, after)
    assert components["gpu_driver"] and sum(components.values()) == 1
    assert diff_snapshots(before, take_snapshot(None)) == []  # GPUs unknown: nothing to compare


# --- model files --------------------------------------------------------------------------------


def _model_dir(tmp_path: Path) -> Path:
    model = tmp_path / "glm-4-9b"
    (model / "tokenizer").mkdir(parents=True)
    (model / "model-00001-of-00002.safetensors").write_bytes(os.urandom(6 * 1024 * 1024 + 17))
    (model / "config.json").write_text('{"num_layers": 40}\n')
    (model / "tokenizer" / "tokenizer.json").write_text('{"vocab": {}}\n')
    (model / ".cache" / "huggingface").mkdir(parents=True)
    (model / ".cache" / "huggingface" / "download.lock").write_text("x")
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "abc123").write_bytes(b"second shard" * 1000)
    os.symlink(blobs / "abc123", model / "model-00002-of-00002.safetensors")  # the HF cache's layout
    os.symlink(model, model / "tokenizer" / "loop")  # a directory link back up: followed once only
    os.symlink(tmp_path / "nowhere", model / "dangling.bin")
    return model


def test_model_files_are_hashed_correctly_and_read_once(tmp_path: Path, monkeypatch) -> None:
    model = _model_dir(tmp_path)
    cache = hashcache.HashCache(chunk_size=64 * 1024)
    first = take_snapshot(None, model_dirs=[str(model)], hash_cache=cache)
    files = first["model_dirs"][str(model)]["files"]
    assert sorted(files) == [
        "config.json",
        "dangling.bin",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "tokenizer/tokenizer.json",
    ]  # hidden .cache skipped, the loop not walked again
    for name in ("config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        content = (model / name).read_bytes()
        assert files[name] == {
            "size": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
            "error": None,
        }
    assert files["dangling.bin"] == {"size": None, "sha256": None, "error": "broken symlink"}
    assert cache.files_read == 4

    def no_reading(*args, **kwargs):
        raise AssertionError("a cached file was read again")

    monkeypatch.setattr(hashcache.HashCache, "_read", no_reading)
    started = time.monotonic()
    second = take_snapshot(None, model_dirs=[str(model)], hash_cache=cache)
    assert time.monotonic() - started < 1.0
    assert second["model_dirs"] == first["model_dirs"]
    monkeypatch.undo()

    shard = model / "model-00001-of-00002.safetensors"
    old_digest = files[shard.name]["sha256"]
    size = shard.stat().st_size
    shard.write_bytes(os.urandom(size))  # same size, new content, new mtime
    (model / "config.json").unlink()
    (model / "generation_config.json").write_text("{}\n")
    third = take_snapshot(None, model_dirs=[str(model)], hash_cache=cache)
    new_digest = third["model_dirs"][str(model)]["files"][shard.name]["sha256"]
    assert new_digest == hashlib.sha256(shard.read_bytes()).hexdigest()
    assert cache.files_read == 4 + 2
    assert diff_snapshots(first, third) == [
        "model file config.json removed",
        "model file generation_config.json added (3 bytes)",
        f"model file {shard.name} changed (sha256 {old_digest[:12]}… → {new_digest[:12]}…)",
    ]
    assert drift_components(first, third)["model_files"]


def test_hashing_stops_at_the_deadline_and_goes_on_next_time(tmp_path: Path) -> None:
    model = _model_dir(tmp_path)
    cache = hashcache.HashCache()
    hurried = take_snapshot(None, model_dirs=[str(model)], hash_cache=cache, timeout=0)
    files = hurried["model_dirs"][str(model)]["files"]
    assert files["config.json"]["sha256"] is None
    assert files["config.json"]["error"] == "not hashed: snapshot deadline"
    assert files["config.json"]["size"] == (model / "config.json").stat().st_size
    complete = take_snapshot(None, model_dirs=[str(model)], hash_cache=cache)
    assert complete["model_dirs"][str(model)]["files"]["config.json"]["sha256"]
    assert diff_snapshots(hurried, complete) == []  # an unknown digest is not a change


def test_hash_cache_reads_in_bounded_chunks_saves_and_stays_bounded(tmp_path: Path, monkeypatch) -> None:
    data = os.urandom(300_000)
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    reads: list[int] = []
    real_open = open

    class Counting:
        def __init__(self, handle) -> None:
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.handle.close()

        def fileno(self) -> int:
            return self.handle.fileno()

        def readinto(self, buffer) -> int:
            reads.append(len(buffer))
            return self.handle.readinto(buffer)

    monkeypatch.setattr(hashcache, "open", lambda *a, **k: Counting(real_open(*a, **k)), raising=False)
    cache = hashcache.HashCache(chunk_size=65536, max_entries=2)
    hashed = cache.sha256(str(path))
    assert (hashed.sha256, hashed.size, hashed.cached) == (hashlib.sha256(data).hexdigest(), len(data), False)
    assert set(reads) == {65536} and len(reads) == 6  # 5 chunks and the empty read at the end
    assert cache.sha256(str(path)).cached
    monkeypatch.undo()

    assert cache.sha256(str(path), deadline=time.monotonic() - 1).cached  # known: no read, no deadline
    other = tmp_path / "other.bin"
    other.write_bytes(b"x" * 10)
    with pytest.raises(hashcache.HashDeadline):
        cache.sha256(str(other), deadline=time.monotonic() - 1)
    assert len(cache) == 1  # nothing remembered for an unfinished read

    saved = tmp_path / "hashes.json"
    cache.save(str(saved))
    fresh = hashcache.HashCache()
    assert fresh.load(str(saved)) == 1
    assert fresh.sha256(str(path)).cached and fresh.files_read == 0
    assert fresh.load(str(tmp_path / "missing.json")) == 0
    for index in range(3):
        extra = tmp_path / f"extra{index}"
        extra.write_bytes(bytes([index]))
        cache.sha256(str(extra))
    assert len(cache) == 2  # least recently used entries went first


# --- diffs and files ----------------------------------------------------------------------------


def _snapshot(**service) -> dict:
    base = {
        "pid": 100,
        "exe": "/usr/bin/python3.11",
        "executable": "/srv/venv/bin/python",
        "python": {
            "version": "3.11.7",
            "implementation": "cpython",
            "prefix": "/srv/venv",
            "base_prefix": "/usr",
        },
        "packages": {"flash-attn": "2.5.8", "torch": "2.3.1", "vllm": "0.5.3"},
        "conflicts": [],
        "env": {"CUDA_VISIBLE_DEVICES": "0,1"},
        "errors": [],
    }
    base.update(service)
    return {
        "version": 1,
        "taken_at": 0.0,
        "machine": {"hostname": "gpu-01", "kernel": "6.5.0"},
        "gpu": None,
        "service": base,
        "model_dirs": {},
    }


def test_diff_wording_and_order() -> None:
    before = _snapshot()
    after = _snapshot(
        python={
            "version": "3.11.9",
            "implementation": "cpython",
            "prefix": "/srv/venv",
            "base_prefix": "/usr",
        },
        packages={"torch": "2.4.0", "vllm": "0.5.3", "xformers": "0.0.27"},
        conflicts=["vllm 0.5.3 has requirement torch==2.3.1, but you have torch 2.4.0."],
        env={"CUDA_VISIBLE_DEVICES": "0"},
    )
    assert diff_snapshots(before, after) == [
        "python 3.11.7 → 3.11.9",
        "package flash-attn removed (was 2.5.8)",
        "torch 2.3.1 → 2.4.0",
        "package xformers added (0.0.27)",
        "new dependency conflict: vllm 0.5.3 has requirement torch==2.3.1, but you have torch 2.4.0.",
        "CUDA_VISIBLE_DEVICES 0,1 → 0",
    ]
    assert drift_components(before, after) == {
        "packages": True,
        "python": True,
        "model_files": False,
        "env": True,
        "gpu_driver": False,
        "conflicts": True,
    }
    unknown = _snapshot(packages=None, conflicts=None)
    assert diff_snapshots(before, unknown) == [
        "packages not compared: unknown in the second snapshot",
        "dependency conflicts not compared: unknown in the second snapshot",
    ]
    assert not any(drift_components(before, unknown).values())


def test_snapshot_files_round_trip_and_reject_newer_versions(tmp_path: Path) -> None:
    snapshot = take_snapshot(None, gpu_info={"driver_version": "550.54.14"})
    path = tmp_path / "snap.json"
    envsnapshot.write_snapshot(snapshot, str(path))
    assert envsnapshot.read_snapshot(str(path)) == snapshot
    path.write_text(json.dumps({**snapshot, "version": envsnapshot.SNAPSHOT_VERSION + 1}))
    with pytest.raises(ValueError, match="newer"):
        envsnapshot.read_snapshot(str(path))
    with pytest.raises(ValueError, match="not an environment snapshot"):
        diff_snapshots({}, snapshot)


def test_purelib_layout_matches_what_the_tests_assume(tmp_path: Path) -> None:
    # The helper builds site-packages paths by hand; make sure that is where the venv looks.
    venv = Venv(tmp_path / "venv")
    purelib = subprocess.run(
        [str(venv.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    assert Path(purelib) == venv.site
    assert sysconfig.get_paths()["purelib"] != purelib

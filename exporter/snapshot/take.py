"""Taking an environment snapshot: the service's environment as one JSON-able dict, and its file.

A snapshot holds what makes "it worked yesterday" reproducible (seed 2.2, 2.4):

- the service's Python: version, the interpreter it runs, its environment (sys.prefix), its
  installed distributions and their versions, and the dependency conflicts `pip check` would
  report. They are read by running the service's OWN interpreter on probe.py (its
  importlib.metadata, its sys.path), under a deadline. /proc/PID/exe names the real binary, which
  for a virtual environment is the base interpreter outside it, so the interpreter is found the
  way Python finds itself: from argv[0] (against the process's cwd and PATH), accepted only when
  it is the very file the process runs;
- a few environment variables of the process, by allow-list only (CUDA_VISIBLE_DEVICES, ...,
  VLLM_*), never a name that looks like a secret, values passed through the log redactor;
- sha256 and size of model files under the given directories (cached by size and mtime, see
  hashcache), hidden files and directories skipped, symlinked directories followed once;
- what the caller knows of the GPUs (driver, CUDA driver version, names): `gpu_info`.

diff.py says what changed between two snapshots.

The service's interpreter runs with the exporter's privileges: it imports its site-packages' .pth
files. Run snapshots as the service's user where that matters.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import time
from collections.abc import Iterable
from importlib import resources
from typing import Any

from ..linux.subprocesses import CommandTimeout, run_with_deadline
from ..logs.redact import redact
from . import hashcache

SNAPSHOT_VERSION = 1

ENV_ALLOWED = (
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "CUDA_HOME",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "HF_HOME",
    "TRANSFORMERS_CACHE",
)
ENV_ALLOWED_PREFIXES = ("VLLM_",)
ENV_DENIED_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH")
# What the service's interpreter needs to see the sys.path the service sees.
PROBE_ENV_FROM_SERVICE = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONUSERBASE",
    "PYTHONNOUSERSITE",
    "HOME",
    "LD_LIBRARY_PATH",
)
MAX_MODEL_FILES = 10_000  # per snapshot: a wrong --model-dir (/) must not walk the disk

_PYTHON_NAME = re.compile(r"(python|pypy)[0-9.]*[a-z]?(-dbg)?")
# The program the service's interpreter runs, as text for `-c`: run by path, its directory (ours)
# would come first on that interpreter's sys.path.
PROBE_SOURCE = resources.files(__package__).joinpath("probe.py").read_text(encoding="utf-8")

# --- taking a snapshot ----------------------------------------------------------------------


def take_snapshot(
    pid: int | None,
    proc_root: str = "/proc",
    model_dirs: Iterable[str] = (),
    gpu_info: dict[str, Any] | None = None,
    timeout: float = 60.0,
    hash_cache: hashcache.HashCache | None = None,
) -> dict[str, Any]:
    """A plain JSON-able snapshot; pid None snapshots the machine without a service part.

    `timeout` bounds the whole snapshot: the service's interpreter and the hashing. Files not
    hashed by then are recorded without a digest (and the cache makes the next snapshot go on
    where this one stopped). `gpu_info` is stored as given; the diff words these keys:
    {"driver_version": "550.54.14", "cuda_driver_version": "12.4", "names": ["NVIDIA H100 ..."]}.
    `hash_cache` defaults to the process-wide hashcache.DEFAULT_CACHE.
    """
    deadline = time.monotonic() + timeout
    cache = hash_cache if hash_cache is not None else hashcache.DEFAULT_CACHE
    snapshot: dict[str, Any] = {
        "version": SNAPSHOT_VERSION,
        "taken_at": time.time(),
        "machine": {"hostname": socket.gethostname(), "kernel": os.uname().release},
        "gpu": json.loads(json.dumps(gpu_info)) if gpu_info is not None else None,
        "service": _service(proc_root, pid, deadline) if pid is not None else None,
        "model_dirs": {},
    }
    budget = [MAX_MODEL_FILES]
    for directory in model_dirs:
        path = os.path.abspath(directory)
        snapshot["model_dirs"][path] = _model_dir(path, cache, deadline, budget)
    return snapshot


def env_allowed(name: str) -> bool:
    """Whether an environment variable may go into a snapshot (never one that looks secret)."""
    upper = name.upper()
    if any(word in upper for word in ENV_DENIED_WORDS):
        return False
    return name in ENV_ALLOWED or name.startswith(ENV_ALLOWED_PREFIXES)


def _service(proc_root: str, pid: int, deadline: float) -> dict[str, Any]:
    service: dict[str, Any] = {
        "pid": pid,
        "exe": None,
        "executable": None,
        "python": None,
        "packages": None,
        "conflicts": None,
        "env": None,
        "errors": [],
    }
    errors: list[str] = service["errors"]
    environ = _read_environ(proc_root, pid)
    if environ is None:
        errors.append("cannot read the process's environment")
    else:
        service["env"] = {name: redact(value) for name, value in sorted(environ.items()) if env_allowed(name)}
    interpreter, exe, problem = _interpreter(proc_root, pid, environ)
    service["exe"], service["executable"] = exe, interpreter
    if problem:
        errors.append(problem)
    if interpreter is not None:
        answer, failure = _run_probe(interpreter, environ, deadline)
        if answer is None:
            errors.append(failure)
        else:
            service.update(_from_probe(answer))
            errors.extend(str(error) for error in answer.get("errors") or [])
    return service


def _run_probe(
    interpreter: str, environ: dict[str, str] | None, deadline: float
) -> tuple[dict[str, Any] | None, str]:
    """(what probe.py printed, "") or (None, why there is no answer), within the deadline."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return None, "no time left to run the service's Python"
    try:
        argv = [interpreter, "-B", "-c", PROBE_SOURCE]
        completed = run_with_deadline(argv, remaining, env=_probe_env(environ))
    except CommandTimeout:
        return None, f"the service's Python did not answer within {remaining:.0f}s"
    except OSError as exc:
        return None, f"cannot run {interpreter}: {exc.strerror or exc}"
    try:
        answer = json.loads(completed.stdout)
        if completed.returncode != 0 or not isinstance(answer, dict):
            raise ValueError
    except ValueError:
        tail = completed.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        return None, f"the service's Python failed (exit {completed.returncode}): {redact(tail[0])[:300]}"
    return answer, ""


def _from_probe(answer: dict[str, Any]) -> dict[str, Any]:
    """The service part's python, packages and conflicts from the probe's answer, as plain types."""
    python = {key: str(answer.get(key)) for key in ("version", "implementation", "prefix", "base_prefix")}
    found: dict[str, Any] = {"python": python}
    packages = answer.get("packages")
    if isinstance(packages, dict):
        found["packages"] = {str(name): str(version) for name, version in sorted(packages.items())}
    conflicts = answer.get("conflicts")
    if isinstance(conflicts, list):
        found["conflicts"] = sorted(str(conflict) for conflict in conflicts)
    return found


def _read_environ(proc_root: str, pid: int) -> dict[str, str] | None:
    try:
        with open(f"{proc_root}/{pid}/environ", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    environ = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep and name:
            environ[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return environ


def _interpreter(
    proc_root: str, pid: int, environ: dict[str, str] | None
) -> tuple[str | None, str | None, str | None]:
    """(interpreter to run, /proc/PID/exe target, problem): the path the service was started as
    when it is the same file as the one running, so that a virtual environment is kept."""
    exe_link = f"{proc_root}/{pid}/exe"
    try:
        exe = os.readlink(exe_link)
        running = os.stat(exe_link)
    except OSError as exc:
        return None, None, f"cannot read the process's executable: {exc.strerror}"
    name = os.path.basename(exe.removesuffix(" (deleted)"))
    if not _PYTHON_NAME.fullmatch(name):
        return None, exe, f"the process runs {name}, not a Python interpreter"
    try:
        with open(f"{proc_root}/{pid}/cmdline", "rb") as handle:
            argv0 = handle.read().split(b"\0", 1)[0].decode("utf-8", "replace")
    except OSError:
        argv0 = ""
    try:
        cwd = os.readlink(f"{proc_root}/{pid}/cwd")
    except OSError:
        cwd = "/"
    candidates = []
    if "/" in argv0:
        candidates.append(os.path.join(cwd, argv0))
    elif argv0:
        for directory in (environ or {}).get("PATH", "").split(":"):
            candidates.append(os.path.join(cwd, directory or ".", argv0))
    candidates.append(exe)
    for candidate in candidates:
        try:
            seen = os.stat(candidate)
        except OSError:
            continue
        if (seen.st_dev, seen.st_ino) == (running.st_dev, running.st_ino):
            return os.path.normpath(candidate), exe, None
    if exe.endswith(" (deleted)"):
        return None, exe, f"the interpreter {name} was replaced on disk after the service started"
    return None, exe, "the service's interpreter is not reachable from here (another mount namespace?)"


def _probe_env(environ: dict[str, str] | None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "PYTHONIOENCODING": "utf-8",
        "PYTHONSAFEPATH": "1",
    }
    for name in PROBE_ENV_FROM_SERVICE:
        if environ and name in environ:
            env[name] = environ[name]
    return env


def _model_dir(
    directory: str, cache: hashcache.HashCache, deadline: float, budget: list[int]
) -> dict[str, Any]:
    result: dict[str, Any] = {"files": {}, "truncated": False, "error": None}
    if not os.path.isdir(directory):
        result["error"] = "not a directory"
        return result
    files: dict[str, dict[str, Any]] = result["files"]
    visited: set[tuple[int, int]] = set()
    for root, dirs, names in os.walk(directory, followlinks=True):
        try:
            here = os.stat(root)
        except OSError:
            dirs[:] = []
            continue
        if (here.st_dev, here.st_ino) in visited:  # a symlink loop, or a directory seen already
            dirs[:] = []
            continue
        visited.add((here.st_dev, here.st_ino))
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            if budget[0] <= 0:
                result["truncated"] = True
                return result
            path = os.path.join(root, name)
            relative = os.path.relpath(path, directory).replace(os.sep, "/")
            entry = _model_file(path, cache, deadline)
            if entry is not None:
                budget[0] -= 1
                files[relative] = entry
    return result


def _model_file(path: str, cache: hashcache.HashCache, deadline: float) -> dict[str, Any] | None:
    try:
        info = os.stat(path)
    except OSError as exc:
        broken = os.path.islink(path)
        return {"size": None, "sha256": None, "error": "broken symlink" if broken else exc.strerror}
    if not stat.S_ISREG(info.st_mode):
        return None  # a socket, fifo or device has no content to hash
    entry: dict[str, Any] = {"size": info.st_size, "sha256": None, "error": None}
    if time.monotonic() > deadline:
        entry["error"] = "not hashed: snapshot deadline"
        return entry
    try:
        hashed = cache.sha256(path, deadline)
    except hashcache.HashDeadline:
        entry["error"] = "not hashed: snapshot deadline"
    except hashcache.FileChanged:
        entry["error"] = "changed while hashed"
    except OSError as exc:
        entry["error"] = exc.strerror or str(exc)
    else:
        entry["sha256"], entry["size"] = hashed.sha256, hashed.size
    return entry


# --- files ---------------------------------------------------------------------------------------


def write_snapshot(snapshot: dict[str, Any], path: str) -> None:
    temporary = f"{path}.tmp.{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(snapshot, handle, indent=1, sort_keys=True)
        handle.write("\n")
    os.replace(temporary, path)


def read_snapshot(path: str) -> dict[str, Any]:
    """Load a snapshot file; ValueError when it is not one this version understands."""
    with open(path, encoding="utf-8") as handle:
        snapshot = json.load(handle)
    check_snapshot(snapshot)
    return snapshot


def check_snapshot(snapshot: Any) -> None:
    """ValueError unless it is a snapshot this version understands."""
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("version"), int):
        raise ValueError("not an environment snapshot (no version)")
    if snapshot["version"] > SNAPSHOT_VERSION:
        raise ValueError(f"snapshot version {snapshot['version']} is newer than this exporter understands")

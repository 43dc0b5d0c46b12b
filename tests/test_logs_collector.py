"""The logs collector against real files: error patterns, facts, trace histograms, exposition."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from autoglm_exporter.collectors import logs as logs_module
from autoglm_exporter.collectors.base import Result
from autoglm_exporter.collectors.logs import (
    BUILTIN_KEYWORDS,
    BUILTIN_PATTERNS,
    MAX_MATCH_LINE,
    MAX_OPEN_REQUESTS,
    MAX_STAGES,
    LogsCollector,
)
from autoglm_exporter.config import LogConfig, LogPattern
from autoglm_exporter.facts.logs import LogFacts, LogMatch, LogsFacts
from autoglm_exporter.logs.redact import redact

from .conftest import assert_promtool_clean, registry_of, wait_until

# Lines as PyTorch, transformers, vLLM, NCCL, the kernel, systemd and the shell print them.
MATCHING = {
    "cuda_oom": [
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of "
        "79.15 GiB of which 3.69 MiB is free. Including non-PyTorch memory, this process has 79.13 GiB memory in use.",
        "RuntimeError: CUDA out of memory. Tried to allocate 92.00 MiB (GPU 0; 1.96 GiB total capacity; 1.46 GiB "
        "already allocated; 16.38 MiB free; 1.51 GiB reserved in total by PyTorch)",
        "ERROR 11-18 18:07:28 engine.py:366] raise torch.cuda.OutOfMemoryError",
        "RuntimeError: CUDA error: out of memory",
        "torch.AcceleratorError: CUDA error: out of memory",
        "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "ERROR 11-18 18:07:28 engine.py:366] ValueError: No available memory for the cache blocks. Try increasing "
        "`gpu_memory_utilization` when initializing the engine.",
    ],
    "model_load_failure": [
        "OSError: Can't load the model for 'THUDM/glm-4-9b-chat'. If you were trying to load it from "
        "'https://huggingface.co/models', make sure you don't have a local directory with the same name.",
        "OSError: Can't load tokenizer for '/models/glm-4'.",
        "OSError: Error no file named pytorch_model.bin, model.safetensors, tf_model.h5, model.ckpt.index or "
        "flax_model.msgpack found in directory /models/glm-4.",
        "OSError: /models/glm-4 does not appear to have a file named pytorch_model.bin, model.safetensors.",
        "OSError: glm/x is not a local folder and is not a valid model identifier listed on 'https://huggingface.co/models'",
        "RuntimeError: Error(s) in loading state_dict for ChatGLMForConditionalGeneration:",
        "ValueError: Model architectures ['ChatGLMModel'] are not supported for now. Supported architectures: "
        "['AquilaModel', 'LlamaForCausalLM']",
        "ValueError: Model architectures ['LlamaForCausalLM'] failed to be inspected. Please check the logs for more details.",
        "safetensors_rust.SafetensorError: Error while deserializing header: HeaderTooLarge",
        "ValueError: The checkpoint you are trying to load has model type `glm4` but Transformers does not recognize "
        "this architecture.",
        "(APIServer pid=1518045) RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
    ],
    "config_not_found": [
        "FileNotFoundError: [Errno 2] No such file or directory: '/etc/open-autoglm/config.yaml'",
        "OSError: [Errno 2] No such file or directory: 'configs/inference.yml'",
        "ERROR open-autoglm: config file not found: /etc/open-autoglm/settings.toml",
        "Error: configuration file /opt/app/app.conf does not exist",
        "fatal: cannot open config file '/etc/open-autoglm/server.ini'",
    ],
    "nccl_error": [
        "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:1333, "
        "unhandled system error (run with NCCL_DEBUG=INFO for details), NCCL version 2.18.1",
        "ncclSystemError: System call (e.g. socket, malloc) or external library call failed or device error.",
        "ncclUnhandledCudaError: Call to CUDA function failed.",
        "node1:39964:40075 [0] misc/socket.cc:483 NCCL WARN socketStartConnect: Connect to 10.0.0.2<45763> failed : "
        "Software caused connection abort",
        "[rank0]:[E321 02:07:08.408271257 ProcessGroupNCCL.cpp:607] [Rank 0] Watchdog caught collective operation "
        "timeout: WorkNCCL(SeqNum=1580, OpType=ALLREDUCE, NumelIn=466119168, NumelOut=466119168, Timeout(ms)=600000) "
        "ran for 600060 milliseconds before timing out.",
    ],
    "python_traceback": [
        "Traceback (most recent call last):",
        "ERROR 10-26 11:35:32 registry.py:267] Traceback (most recent call last):",
    ],
    "oom_killed": [
        "[ 4563.079551] Out of memory: Killed process 2592 (python3) total-vm:71652316kB, anon-rss:63478592kB, "
        "file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:124884kB oom_score_adj:0",
        "May  1 21:13:06 dev kernel: Out of memory: Kill process 2592 (python) score 914 or sacrifice child",
        "[ 812.331] Memory cgroup out of memory: Killed process 4321 (vllm) total-vm:9142312kB, anon-rss:8123456kB",
        "[ 4563.079900] oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,"
        "task_memcg=/system.slice/open-autoglm.service,task=python3,pid=2592,uid=0",
        "open-autoglm.service: A process of this unit has been killed by the OOM killer.",
        "open-autoglm.service: Failed with result 'oom-kill'.",
        "Killed",
        "start.sh[812]: Killed",
        "run.sh: line 12:  2592 Killed                  python3 -m open_autoglm.server",
    ],
}

# Close to a pattern, but not what it is about.
NEAR_MISSES = {
    "cuda_oom": [
        "INFO 06-01 22:03:16 [gpu_worker.py:227] Memory profiling takes 5.2 seconds; total_gpu_memory (79.15GiB) x "
        "gpu_memory_utilization (0.90) = 71.24GiB",
        'Exception in thread "main" java.lang.OutOfMemoryError: Java heap space',
    ],
    "model_load_failure": [
        "INFO 06-01 22:03:30 [default_loader.py:272] Loading weights took 3.21 seconds",
        "INFO 06-01 22:03:31 [gpu_model_runner.py:1624] Model loading took 14.99 GiB and 5.1 seconds",
        "INFO 06-01 22:03:08 [core.py:58] Starting to load model /models/glm-4-9b-chat...",
    ],
    "config_not_found": [
        "FileNotFoundError: [Errno 2] No such file or directory: '/data/images/cat_001.png'",
        "INFO loaded config file /etc/open-autoglm/config.yaml",
    ],
    "nccl_error": [
        "node1:39964:39964 [0] NCCL INFO Bootstrap : Using eth0:10.0.0.1<0>",
        "NCCL version 2.18.1+cuda12.1",
    ],
    "python_traceback": [
        "Exception raised from checkTimeout at ../torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:609 "
        "(most recent call first):",
        "printing the traceback of request 12",
    ],
    "oom_killed": [
        "INFO Killed 3 idle keep-alive connections",
        "job 17 status: killed",
        "Setting oom_score_adj of the worker to 500",
        "Out of memory: the cache is full",
    ],
}


def append(path: Path, *lines: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))


def started(path: Path, name: str = "error", **kwargs) -> LogsCollector:
    """A collector on one log, past its first run (which skips the file's history)."""
    if not path.exists():
        path.write_text("")
    collector = LogsCollector((LogConfig(name, str(path), service="open-autoglm", **kwargs),))
    collector.collect()
    return collector


def facts_of(result: Result, name: str = "error") -> LogFacts:
    assert isinstance(result.facts, LogsFacts)
    return result.facts.logs[name]


# --- the built-in patterns ---------------------------------------------------------------------


def test_every_built_in_pattern_has_samples_and_keywords() -> None:
    assert set(MATCHING) == set(BUILTIN_PATTERNS) == set(NEAR_MISSES) == set(BUILTIN_KEYWORDS)


@pytest.mark.parametrize(
    ("pattern", "line"), [(name, line) for name, lines in MATCHING.items() for line in lines]
)
def test_a_realistic_line_matches_its_pattern_and_no_other_error_class(
    tmp_path: Path, pattern: str, line: str
) -> None:
    collector = started(tmp_path / "error.log")
    append(tmp_path / "error.log", line)
    facts = facts_of(collector.collect())
    assert facts.new_matches[pattern] == 1
    # The keyword prefilter is only a shortcut: the regex alone agrees.
    assert re.search(BUILTIN_PATTERNS[pattern], line, re.IGNORECASE)
    assert any(keyword in line.lower() for keyword in BUILTIN_KEYWORDS[pattern])
    others = {name for name, count in facts.new_matches.items() if count and name != pattern}
    # A Python exception about a missing file is not a traceback line; an OOM is not a load failure.
    assert others <= {"model_load_failure", "config_not_found"} - {pattern}, others


@pytest.mark.parametrize(
    ("pattern", "line"), [(name, line) for name, lines in NEAR_MISSES.items() for line in lines]
)
def test_a_near_miss_does_not_match(tmp_path: Path, pattern: str, line: str) -> None:
    collector = started(tmp_path / "error.log")
    append(tmp_path / "error.log", line)
    facts = facts_of(collector.collect())
    assert facts.new_matches[pattern] == 0
    assert not re.search(BUILTIN_PATTERNS[pattern], line, re.IGNORECASE)


# --- counting ------------------------------------------------------------------------------------


def test_every_series_exists_from_the_first_scrape_even_without_the_file(tmp_path: Path) -> None:
    collector = LogsCollector((LogConfig("error", str(tmp_path / "missing.log")),))
    result = collector.collect()
    registry = registry_of(result)
    for pattern in BUILTIN_PATTERNS:
        assert (
            registry.get_sample_value("autoglm_log_errors_total", {"log": "error", "pattern": pattern}) == 0
        )
        labels = {"log": "error", "pattern": pattern}
        assert registry.get_sample_value("autoglm_log_last_match_timestamp_seconds", labels) == 0
    assert registry.get_sample_value("autoglm_log_lines_total", {"log": "error"}) == 0
    assert registry.get_sample_value("autoglm_log_truncated_lines_total", {"log": "error"}) == 0
    assert registry.get_sample_value("autoglm_log_file_present", {"log": "error"}) == 0
    assert registry.get_sample_value("autoglm_log_info", {"log": "error", "service": ""}) == 1
    facts = facts_of(result)
    assert facts == LogFacts(
        name="error",
        path=str(tmp_path / "missing.log"),
        service=None,
        present=False,
        error=None,
        counts=dict.fromkeys(BUILTIN_PATTERNS, 0),
        new_matches=dict.fromkeys(BUILTIN_PATTERNS, 0),
        recent=(),
    )


def test_history_before_start_is_not_counted(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    log.write_text(
        "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\nTraceback (most recent call last):\n"
    )
    collector = LogsCollector((LogConfig("error", str(log)),))
    first = collector.collect()
    assert facts_of(first).counts["cuda_oom"] == 0
    assert facts_of(first).present
    assert registry_of(first).get_sample_value("autoglm_log_file_present", {"log": "error"}) == 1
    append(log, "RuntimeError: CUDA out of memory. Tried to allocate 4.00 GiB")
    second = collector.collect()
    assert facts_of(second).counts["cuda_oom"] == 1
    assert registry_of(second).get_sample_value("autoglm_log_lines_total", {"log": "error"}) == 1


def test_counts_accumulate_and_new_matches_are_per_run(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    collector = started(log)
    append(
        log,
        "torch.OutOfMemoryError: CUDA out of memory.",
        "INFO fine",
        "RuntimeError: CUDA error: out of memory",
    )
    before = time.time()
    first = collector.collect()
    after = time.time()
    assert facts_of(first).new_matches["cuda_oom"] == 2
    assert facts_of(first).counts["cuda_oom"] == 2
    stamp = registry_of(first).get_sample_value(
        "autoglm_log_last_match_timestamp_seconds", {"log": "error", "pattern": "cuda_oom"}
    )
    assert stamp is not None and before <= stamp <= after
    append(log, "Traceback (most recent call last):")
    second = collector.collect()
    assert facts_of(second).new_matches == {**dict.fromkeys(BUILTIN_PATTERNS, 0), "python_traceback": 1}
    assert facts_of(second).counts["cuda_oom"] == 2
    registry = registry_of(second)
    assert registry.get_sample_value("autoglm_log_errors_total", {"log": "error", "pattern": "cuda_oom"}) == 2
    assert registry.get_sample_value("autoglm_log_lines_total", {"log": "error"}) == 4
    third = collector.collect()
    assert sum(facts_of(third).new_matches.values()) == 0
    assert facts_of(third).counts == facts_of(second).counts


def test_user_patterns_are_added_and_replace_a_built_in_of_the_same_name(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    patterns = (
        LogPattern("redis_down", r"redis\.exceptions\.ConnectionError"),
        LogPattern("cuda_oom", r"MY_SERVICE_OOM"),
    )
    collector = started(log, patterns=patterns)
    append(
        log,
        "redis.exceptions.ConnectionError: Error 111 connecting to 127.0.0.1:6379. Connection refused.",
        "torch.OutOfMemoryError: CUDA out of memory.",
        "MY_SERVICE_OOM gpu=0",
        "my_service_oom gpu=0",  # user patterns are used as written: case matters
    )
    result = collector.collect()
    facts = facts_of(result)
    assert facts.new_matches["redis_down"] == 1
    assert facts.new_matches["cuda_oom"] == 1
    assert set(facts.counts) == set(BUILTIN_PATTERNS) | {"redis_down"}
    registry = registry_of(result)
    assert (
        registry.get_sample_value("autoglm_log_errors_total", {"log": "error", "pattern": "redis_down"}) == 1
    )


def test_recent_matches_are_the_last_ten_newest_last_redacted_and_bounded(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    collector = started(log)
    append(log, *[f"Traceback (most recent call last): #{i}" for i in range(12)])
    collector.collect()
    script = "<script>alert(1)</script>"
    append(
        log,
        f"ERROR {script} CUDA out of memory; password=hunter2 Authorization: Bearer abcDEF0123456789xyz",
        "NCCL error in: x " + "y" * 2000 + " token=sk-proj-AbCdEf1234567890abcdefGHIJ",
    )
    before = time.time()
    facts = facts_of(collector.collect())
    assert len(facts.recent) == 10
    assert [m.pattern for m in facts.recent[-2:]] == ["cuda_oom", "nccl_error"]
    assert facts.recent[0] == LogMatch(
        facts.recent[0].timestamp, "python_traceback", "Traceback (most recent call last): #4"
    )
    oom = facts.recent[-2]
    assert oom.line == f"ERROR {script} CUDA out of memory; password=*** Authorization: Bearer ***"
    assert script in oom.line  # kept verbatim: escaping is the page's job
    assert before <= oom.timestamp <= time.time()
    long = facts.recent[-1]
    assert len(long.line) == MAX_MATCH_LINE and long.line.endswith("…")
    assert "hunter2" not in "".join(m.line for m in facts.recent)
    assert "AbCdEf1234567890" not in "".join(m.line for m in facts.recent)


def test_a_secret_at_the_cut_is_redacted_before_the_cut(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    collector = started(log)
    # Cut first, "sk-proj-Zq9" would be shown: too short to be recognised as a key any more.
    line = (
        "Traceback (most recent call last): "
        + "." * (MAX_MATCH_LINE - 12 - 35)
        + "sk-proj-Zq9XyW1234567890abcdefGHIJ"
    )
    append(log, line)
    shown = facts_of(collector.collect()).recent[-1].line
    assert "Zq9" not in shown
    assert shown.endswith(".sk-***")


def test_long_lines_are_cut_and_counted(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    collector = started(log, max_line_bytes=256)
    append(log, "CUDA out of memory " + "z" * 1000, "short")
    result = collector.collect()
    registry = registry_of(result)
    assert registry.get_sample_value("autoglm_log_truncated_lines_total", {"log": "error"}) == 1
    assert registry.get_sample_value("autoglm_log_lines_total", {"log": "error"}) == 2
    assert facts_of(result).recent[-1].line.endswith("…[truncated]")


def test_rotation_truncation_and_deletion_through_the_collector(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    collector = started(log)
    append(log, "Traceback (most recent call last):")
    log.rename(tmp_path / "error.log.1")
    append(log, "Traceback (most recent call last):")
    assert facts_of(collector.collect()).new_matches["python_traceback"] == 2
    with open(log, "r+") as handle:
        handle.truncate(0)
    append(log, "ERROR 10-26 11:35:32 registry.py:267] Traceback (most recent call last):")
    assert facts_of(collector.collect()).new_matches["python_traceback"] == 1
    log.unlink()
    result = collector.collect()
    assert not facts_of(result).present
    assert registry_of(result).get_sample_value("autoglm_log_file_present", {"log": "error"}) == 0
    assert facts_of(result).counts["python_traceback"] == 3


def test_an_unreadable_path_is_reported_in_the_facts(tmp_path: Path) -> None:
    collector = LogsCollector((LogConfig("error", str(tmp_path)),))
    result = collector.collect()
    facts = facts_of(result)
    assert facts.error == f"{tmp_path} is a directory, not a log file"
    assert not facts.present  # a directory at the path is no log file
    assert registry_of(result).get_sample_value("autoglm_log_file_present", {"log": "error"}) == 0


_APPENDER = """
import sys, time
path, count = sys.argv[1], int(sys.argv[2])
with open(path, "a", buffering=1) as log:
    for i in range(count):
        log.write(f"INFO request {i} done\\n")
        if i % 10 == 0:
            log.write("torch.OutOfMemoryError: CUDA out of memory. Tried to allo")
            log.flush()
            time.sleep(0.001)
            log.write(f"cate {i} MiB\\n")
print("done", flush=True)
"""


def test_a_separate_process_appending_while_we_collect(tmp_path: Path, child_processes) -> None:
    log = tmp_path / "error.log"
    collector = started(log)
    writer = child_processes(_APPENDER, str(log), "500")
    total = {"cuda_oom": 0, "runs": 0}

    def finished() -> bool:
        facts = facts_of(collector.collect())
        total["cuda_oom"] += facts.new_matches["cuda_oom"]
        total["runs"] += 1
        return writer.poll() is not None

    wait_until(finished, timeout=30, interval=0.002)
    facts = facts_of(collector.collect())
    total["cuda_oom"] += facts.new_matches["cuda_oom"]
    assert total["cuda_oom"] == facts.counts["cuda_oom"] == 50
    assert all(
        m.line.startswith("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate ")
        for m in facts.recent
    )
    assert collector.collect().families  # still fine afterwards


# --- trace points ----------------------------------------------------------------------------------


def trace_lines(*points: dict) -> list[str]:
    return [json.dumps(point) for point in points]


def histogram(registry: CollectorRegistry, stage: str, log: str = "trace") -> dict[str, float | None]:
    labels = {"log": log, "stage": stage}
    values: dict[str, float | None] = {
        le: registry.get_sample_value("autoglm_trace_stage_duration_seconds_bucket", {**labels, "le": le})
        for le in ("0.005", "0.01", "0.05", "0.1", "0.5", "1.0", "120.0", "+Inf")
    }
    values["count"] = registry.get_sample_value("autoglm_trace_stage_duration_seconds_count", labels)
    values["sum"] = registry.get_sample_value("autoglm_trace_stage_duration_seconds_sum", labels)
    return values


def test_trace_stage_durations_for_a_known_sequence(tmp_path: Path) -> None:
    log = tmp_path / "trace.log"
    log.write_text(json.dumps({"ts": 1.0, "stage": "received", "request_id": "history"}) + "\n")
    collector = LogsCollector((LogConfig("trace", str(log), trace=True),))
    collector.collect()
    # Exact binary fractions, so bucket edges are exact: 1/256 s, 1/32 s, 0.5 s, 1 s, 130 s.
    append(
        log,
        *trace_lines(
            {"ts": 100.0, "stage": "received", "request_id": "a"},
            {"ts": 200.0, "stage": "received", "request_id": 7},
            {"ts": 100.00390625, "stage": "tokenized", "request_id": "a"},
            {"ts": "1970-01-01T00:03:20.031250Z", "stage": "tokenized", "request_id": 7},
            {"ts": 100.50390625, "stage": "generated", "request_id": "a"},
            {"ts": "1970-01-01T08:05:30.03125+08:00", "stage": "generated", "request_id": 7},
            {"ts": 101.50390625, "stage": "done", "request_id": "a"},
            {"ts": 500.0, "stage": "received", "request_id": "a"},  # after done: a new request, a new clock
            {"ts": 500.25, "stage": "tokenized", "request_id": "a"},
            {"ts": 2.0, "stage": "tokenized", "request_id": "history"},  # its start was history: no clock
        ),
    )
    result = collector.collect()
    registry = registry_of(result)
    assert histogram(registry, "tokenized") == {
        "0.005": 1, "0.01": 1, "0.05": 2, "0.1": 2, "0.5": 3, "1.0": 3, "120.0": 3, "+Inf": 3,
        "count": 3, "sum": 0.00390625 + 0.03125 + 0.25,
    }  # fmt: skip
    assert histogram(registry, "generated") == {
        "0.005": 0, "0.01": 0, "0.05": 0, "0.1": 0, "0.5": 1, "1.0": 1, "120.0": 1, "+Inf": 2,
        "count": 2, "sum": 130.5,
    }  # fmt: skip
    assert histogram(registry, "done")["1.0"] == 1 and histogram(registry, "done")["0.5"] == 0
    assert histogram(registry, "done")["sum"] == 1.0
    assert histogram(registry, "received")["count"] is None  # the first point only starts the clock
    assert registry.get_sample_value("autoglm_trace_invalid_lines_total", {"log": "trace"}) == 0
    # A trace log is not an error log: no error pattern series, no matches.
    assert (
        registry.get_sample_value("autoglm_log_errors_total", {"log": "trace", "pattern": "cuda_oom"}) is None
    )
    assert facts_of(result, "trace").counts == {} and facts_of(result, "trace").recent == ()
    assert registry.get_sample_value("autoglm_log_lines_total", {"log": "trace"}) == 10


def test_trace_logs_are_not_matched_against_error_patterns(tmp_path: Path) -> None:
    log = tmp_path / "trace.log"
    collector = started(log, "trace", trace=True)
    append(
        log,
        json.dumps({"ts": 1, "stage": "CUDA out of memory", "request_id": "x"}),
        "Traceback (most recent call last):",
    )
    facts = facts_of(collector.collect(), "trace")
    assert facts.new_matches == {} and facts.recent == ()


def test_invalid_trace_lines_are_counted(tmp_path: Path) -> None:
    log = tmp_path / "trace.log"
    collector = started(log, "trace", trace=True)
    append(
        log,
        "not json at all",
        "[1, 2, 3]",
        json.dumps({"stage": "x", "request_id": "r"}),  # no ts
        json.dumps({"ts": "yesterday", "stage": "x", "request_id": "r"}),
        json.dumps({"ts": True, "stage": "x", "request_id": "r"}),
        json.dumps({"ts": 1, "stage": "", "request_id": "r"}),
        json.dumps({"ts": 1, "stage": "x", "request_id": None}),
        json.dumps({"ts": 1, "stage": "x", "request_id": "r" * 300}),
        '{"ts": 1, "stage": "x", "request_id": "r"',  # cut short
        json.dumps({"ts": 10, "stage": "received", "request_id": "r"}),
        json.dumps({"ts": 9, "stage": "tokenized", "request_id": "r"}),  # earlier than its previous point
        "",  # a blank line is nothing, not an error
    )
    registry = registry_of(collector.collect())
    assert registry.get_sample_value("autoglm_trace_invalid_lines_total", {"log": "trace"}) == 10
    assert histogram(registry, "tokenized")["count"] is None


def test_stage_labels_are_bounded(tmp_path: Path) -> None:
    log = tmp_path / "trace.log"
    collector = started(log, "trace", trace=True)
    points = [{"ts": 0.0, "stage": "received", "request_id": "r"}]
    points += [
        {"ts": float(i + 1), "stage": f"stage_{i:02d}", "request_id": "r"} for i in range(MAX_STAGES + 8)
    ]
    points.append({"ts": 1000.0, "stage": "s" * 100, "request_id": "r"})  # a name too long for a label
    append(log, *trace_lines(*points))
    result = collector.collect()
    stages = {
        sample.labels["stage"]
        for family in result.families
        if family.name == "autoglm_trace_stage_duration_seconds"
        for sample in family.samples
    }
    assert len(stages) == MAX_STAGES + 1
    assert "other" in stages and "stage_00" in stages and f"stage_{MAX_STAGES - 1:02d}" in stages
    assert f"stage_{MAX_STAGES:02d}" not in stages
    assert histogram(registry_of(result), "other")["count"] == 9


def test_open_requests_are_bounded_oldest_forgotten_first(tmp_path: Path) -> None:
    log = tmp_path / "trace.log"
    collector = started(log, "trace", trace=True)
    append(
        log,
        *trace_lines(
            *(
                {"ts": float(i), "stage": "received", "request_id": f"r{i}"}
                for i in range(MAX_OPEN_REQUESTS + 1)
            )
        ),
    )
    collector.collect()
    append(
        log,
        *trace_lines(
            {"ts": 20000.0, "stage": "tokenized", "request_id": "r1"},  # still open: 19999 s
            {"ts": 20000.0, "stage": "tokenized", "request_id": "r0"},  # forgotten: starts a new clock
        ),
    )
    registry = registry_of(collector.collect())
    assert histogram(registry, "tokenized")["count"] == 1
    assert histogram(registry, "tokenized")["sum"] == 19999.0
    state = collector._states["trace"].trace
    assert state is not None and len(state.open) == MAX_OPEN_REQUESTS


def test_bounds_are_the_documented_ones() -> None:
    assert MAX_OPEN_REQUESTS == 10_000 and MAX_STAGES == 32
    assert logs_module.TRACE_BUCKETS[0] == 0.005 and logs_module.TRACE_BUCKETS[-1] == 120.0


# --- exposition --------------------------------------------------------------------------------------


def test_promtool_finds_nothing_to_lint(tmp_path: Path) -> None:
    error_log, trace_log = tmp_path / "error.log", tmp_path / "trace.log"
    error_log.write_text("")
    trace_log.write_text("")
    collector = LogsCollector(
        (
            LogConfig(
                "error", str(error_log), service="open-autoglm", patterns=(LogPattern("custom", "boom"),)
            ),
            LogConfig("trace", str(trace_log), trace=True),
            LogConfig("missing", str(tmp_path / "missing.log")),
        )
    )
    collector.collect()
    append(error_log, "torch.OutOfMemoryError: CUDA out of memory.", 'boom "quoted" \\ back\\slash')
    append(
        trace_log,
        *trace_lines(
            {"ts": 1.0, "stage": "received", "request_id": "a"},
            {"ts": 1.2, "stage": 'we"ird\nstage', "request_id": "a"},
        ),
        "bad",
    )
    exposition = generate_latest(registry_of(collector.collect()))
    assert b"autoglm_trace_stage_duration_seconds_count{" in exposition
    assert b"autoglm_log_errors_total{" in exposition
    assert_promtool_clean(exposition)


# --- redaction ---------------------------------------------------------------------------------------

REDACTED = [
    # key = value, key: value, quoted or not, the key kept
    ("password=hunter2 user=bob", "password=*** user=bob"),
    ("login failed passwd: hunter2", "login failed passwd: ***"),
    ("PWD=hunter2", "PWD=***"),
    ('DB_PASSWORD="p@ss word" next', 'DB_PASSWORD="***" next'),
    ("secret = 'abc def'", "secret = '***'"),
    ("client_secret=abc&grant_type=client_credentials", "client_secret=***&grant_type=client_credentials"),
    ("GET /v1/models?access_token=eyJabc123&x=1", "GET /v1/models?access_token=***&x=1"),
    ("token: 5f4dcc3b5aa765d61d8327deb882cf99", "token: ***"),
    ("HF_TOKEN=hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh", "HF_TOKEN=***"),
    ("api_key=abc123 apikey=def456 api-key=ghi789", "api_key=*** apikey=*** api-key=***"),
    ("X-Api-Key: 0123456789abcdef", "X-Api-Key: ***"),
    ("access_key=AKIAIOSFODNN7EXAMPLE", "access_key=***"),
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "aws_secret_access_key=***"),
    ("authorization=abc", "authorization=***"),
    # JSON and Python reprs
    ('{"password": "s3cr\\"et", "user": "x"}', '{"password": "***", "user": "x"}'),
    ('{"api_key":"sk-abc","model":"glm-4"}', '{"api_key":"***","model":"glm-4"}'),
    ("{'token': 'abc123', 'n': 1}", "{'token': '***', 'n': 1}"),
    ('{"password": "cut off by the line lim', '{"password": "***'),
    # HTTP authorization schemes
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "Authorization: Bearer ***"),
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
    ('curl -H "Authorization: Bearer abcdef123456" http://x', 'curl -H "Authorization: Bearer ***" http://x'),
    ("upstream sent Bearer abcDEF123456ghi back", "upstream sent Bearer *** back"),
    ("proxy header Basic dXNlcjpwYXNzd29yZA==.", "proxy header Basic ***."),
    # credentials in URLs
    ("connecting to redis://:topsecret@127.0.0.1:6379/0", "connecting to redis://:***@127.0.0.1:6379/0"),
    ("postgresql://admin:p%40ss@db:5432/app", "postgresql://admin:***@db:5432/app"),
    ("https://user:pa55@word@example.com/x", "https://user:***@example.com/x"),
    # well-known key formats
    ("using key sk-proj-AbCdEf1234567890abcdefGHIJ now", "using key sk-*** now"),
    ("sk-1234567890abcdefghijklmnopqrstuvwxyzABCDEFGH", "sk-***"),
    ("HF hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh here", "HF hf_*** here"),
    ("aws AKIAIOSFODNN7EXAMPLE key", "aws AKIA*** key"),
    # long opaque tokens
    ("session 4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a end", "session *** end"),
    ("cookie=ZXlKaGJHY2lPaUpJVXpJMU5pSjkuZXlKemRXSWlPaUl4SW4w; path=/", "cookie=***; path=/"),
    ("ghp_16C7e42F292c6912E7710c838347Ae178B4a expired", "*** expired"),
]

UNCHANGED = [
    "CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of 79.15 GiB of which 3.69 MiB is free.",
    '  File "/usr/local/lib/python3.10/dist-packages/vllm/model_executor/models/registry.py", line 429, in _run',
    "/data/models/glm-4-9b-chat/checkpoint-1000/tokenizer_config.json",
    "/root/.cache/huggingface/hub/models--THUDM--glm-4-9b-chat/snapshots/main/config.json",
    "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:1333",
    "tokenizer='/mnt/models', skip_tokenizer_init=False, tokenizer_mode=auto, max_tokens=50, max_num_batched_tokens=2048",
    "eos_token='</s>' bos_token=<s> pad_token_id=0 num_tokens: 128 prompt_tokens=12",
    "request 550e8400-e29b-41d4-a716-446655440000 failed after 3 retries",
    "POST http://localhost:8080/inference 500 Internal Server Error",
    "missing Bearer token.",
    "Basic auth failed for user admin",
    "Invalid password",
    "the password is required",
    "password=",
    "password=***",
    'password: ""',
    "risk-assessment-framework-for-enterprises",
    "<script>alert(1)</script> & <b>bold</b>",
    "",
    "MemoryError: 0x7f3b6d41df86 in libc10.so",
    "INFO 06-01 22:03:16 [config.py:793] This model supports multiple tasks: {'classify', 'embed', 'generate'}.",
]


@pytest.mark.parametrize(("line", "expected"), REDACTED)
def test_redact_hides_secrets_and_keeps_their_names(line: str, expected: str) -> None:
    assert redact(line) == expected
    assert redact(expected) == expected  # idempotent


@pytest.mark.parametrize("line", UNCHANGED)
def test_redact_leaves_ordinary_text_alone(line: str) -> None:
    assert redact(line) == line


def test_redact_never_leaves_a_piece_of_the_secret() -> None:
    secrets = ["hunter2", "topsecret", "AbCdEf1234567890", "dXNlcjpwYXNz", "wJalrXUtnFEMI", "IOSFODNN7"]
    line = (
        "password=hunter2 redis://:topsecret@h sk-proj-AbCdEf1234567890abcdefGHIJ Authorization: Basic dXNlcjpwYXNz "
        'aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY" AKIAIOSFODNN7EXAMPLE'
    )
    shown = redact(line)
    assert not [secret for secret in secrets if secret in shown], shown


def test_redact_is_fast_on_long_hostile_lines() -> None:
    for line in ("a_" * 4096, "password=" * 900, "x" * 8192, "Bearer " * 1100, "=" * 8192, "/a1" * 2730):
        started_at = time.perf_counter()
        redact(line)
        assert time.perf_counter() - started_at < 0.5, line[:20]

"""Redis: is each configured instance answering, how busy is it, and how deep are its queues.

Per instance and run: a PING (timed on an already open connection, so the number is the round
trip and not the TCP and AUTH handshake), INFO clients, INFO memory, and the depth of every
configured queue, all but the PING in one pipelined round trip:

    list            LLEN key
    stream          XLEN key
    zset            ZCARD key
    stream_pending  XPENDING key group  (the summary's count of delivered, unacknowledged entries)

A key that does not exist is depth 0: an empty queue is often deleted by Redis, and a missing
series would read as "unknown" exactly when the queue is healthiest. A key of the wrong type or a
consumer group that does not exist gives no depth and read_ok 0 instead.

One client is kept per instance between runs, without retries (a retry would hide a timeout
behind several). The password is read at each run (a rotated file is picked up without a reload);
a changed password replaces the client. When an instance cannot be read its up is 0 and its other
gauges and depths are absent (unknown is not 0), read_ok is 0 for each queue, and
autoglm_redis_failures_total counts the run under one bounded reason:

    connect_refused  nothing listens at the address
    timeout          no complete answer within the instance's timeout (the whole run of the
                     instance, connection to last reply: a server that trickles its replies a
                     byte at a time is cut off at the timeout, never holds the run)
    auth             the server refused the credentials (wrong or missing password, ACL)
    auth_config      the password's environment variable or file could not be read
    error            anything else (reset, DNS, a protocol error, the server still loading)

Passwords never appear in metrics, facts, logs or messages. Instances are read one after another:
with several unreachable instances a run can take the sum of their timeouts.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections import Counter
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    NoPermissionError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ..base.deadline import WATCHDOG
from ..base.hostport import HostPortError, parse_host_port
from ..config import RedisConfig, RedisQueue
from ..config.credentials import SecretError, read_secret
from ..facts.redis import RedisFacts, RedisInstanceFacts
from ..metrics.spec import Families, Family, counter, gauge
from .base import Collector, Result
from .errors import ReasonedFailure, refused, short_message
from .failurelog import FailureLog

log = logging.getLogger(__name__)

FAILURE_REASONS = ("connect_refused", "timeout", "auth", "auth_config", "error")

UP = gauge("autoglm_redis_up", "1 when the Redis instance answered PING in time, else 0.", "redis")
PING_DURATION = gauge(
    "autoglm_redis_ping_duration_seconds",
    "Round-trip time of a PING to the Redis instance on an open connection.",
    "redis",
)
CONNECTED_CLIENTS = gauge(
    "autoglm_redis_connected_clients", "Client connections open on the Redis instance.", "redis"
)
BLOCKED_CLIENTS = gauge(
    "autoglm_redis_blocked_clients",
    "Clients of the Redis instance blocked in a command such as BLPOP or XREADGROUP.",
    "redis",
)
MEMORY_USED = gauge(
    "autoglm_redis_memory_used_bytes", "Memory the Redis instance has allocated for its data.", "redis"
)
MEMORY_MAX = gauge(
    "autoglm_redis_memory_max_bytes",
    "Memory limit of the Redis instance (maxmemory), 0 when it has none.",
    "redis",
)
QUEUE_DEPTH = gauge(
    "autoglm_redis_queue_depth",
    "Items in the queue (list length, stream length, sorted set size or a group's pending entries),"
    " 0 when the key does not exist.",
    "redis",
    "queue",
    "type",
)
QUEUE_READ_OK = gauge(
    "autoglm_redis_queue_read_ok",
    "1 when the queue's depth was read in the last run, 0 on a wrong key type, a missing consumer"
    " group or an unreachable instance.",
    "redis",
    "queue",
)
FAILURES = counter(
    "autoglm_redis_failures",
    "Runs in which the Redis instance could not be read, by reason.",
    "redis",
    "reason",
)


class _Down(ReasonedFailure):
    """The instance could not be read, for one of FAILURES' reasons."""


class RedisCollector(Collector[RedisFacts]):
    name = "redis"
    metrics = (
        UP,
        PING_DURATION,
        CONNECTED_CLIENTS,
        BLOCKED_CLIENTS,
        MEMORY_USED,
        MEMORY_MAX,
        QUEUE_DEPTH,
        QUEUE_READ_OK,
        FAILURES,
    )
    items_attribute = "instances"
    state_per_item = ("_clients", "_failures", "_depths", "_failure_log")

    def __init__(self, instances: tuple[RedisConfig, ...]) -> None:
        self.instances = instances
        self.settings = (instances,)
        self._queues = {i.name: queue_names(i.queues) for i in instances}
        self._clients: dict[str, tuple[str, redis.Redis]] = {}  # name -> (credentials digest, client)
        self._failures = {i.name: dict.fromkeys(FAILURE_REASONS, 0) for i in instances}
        self._depths: dict[str, dict[str, int]] = {i.name: {} for i in instances}  # the previous run's
        self._failure_log = FailureLog(
            log, "redis", "redis instance cannot be read", "redis instance answers again"
        )

    def collect(self) -> Result[RedisFacts]:
        facts = {instance.name: self._read(instance) for instance in self.instances}
        return Result(self._families(facts), RedisFacts(facts))

    # --- reading one instance -------------------------------------------------------------------

    def _read(self, instance: RedisConfig) -> RedisInstanceFacts:
        password: str | None = None
        try:
            try:
                password = read_secret(instance.password)
            except SecretError as exc:
                self._drop_client(instance.name)
                raise _Down("auth_config", str(exc)) from None
            facts = self._query(instance, self._client(instance, password))
        except _Down as down:
            return self._down(instance, down.reason, _redact(str(down), password))
        self._failure_log.ok(instance.name)
        return facts

    def _query(self, instance: RedisConfig, client: redis.Redis) -> RedisInstanceFacts:
        queues = self._queues[instance.name]
        # redis-py's socket timeout bounds each read, not their sum: at the instance's timeout the
        # connection is closed under the reads still waiting, which then fail at once.
        cut_off: list[bool] = []

        def cut() -> None:
            cut_off.append(True)
            _disconnect(client)

        watch = WATCHDOG.watch(time.monotonic() + instance.timeout, cut)
        try:
            client.ping()  # opens the connection and authenticates: not part of the timing
            started = time.perf_counter()
            client.ping()
            ping = time.perf_counter() - started
            pipe = client.pipeline(transaction=False)
            pipe.info("clients")
            pipe.info("memory")
            for _, queue in queues:
                _queue_commands(pipe, queue)
            replies = iter(pipe.execute(raise_on_error=False))
        except Exception as exc:
            _disconnect(client)  # start clean: a reply may still be on its way
            if cut_off:  # whatever the read cut short raised (redis-py's parser loses its buffer)
                raise _Down("timeout", f"no complete answer within {instance.timeout:g}s") from None
            if not isinstance(exc, RedisError | OSError | ValueError):
                raise
            raise _Down(_classify(exc), short_message(exc)) from None
        finally:
            WATCHDOG.cancel(watch)
        clients, memory = next(replies), next(replies)
        depths: dict[str, int | None] = {}
        errors: dict[str, str] = {}
        for name, queue in queues:
            depth, error = _queue_depth(queue, replies)
            depths[name] = depth
            if error is not None:
                errors[name] = error
        previous = self._depths[instance.name]
        growth = {n: d - previous.get(n, d) for n, d in depths.items() if d is not None}
        self._depths[instance.name] = {n: d for n, d in depths.items() if d is not None}
        return RedisInstanceFacts(
            name=instance.name,
            address=instance.address,
            up=True,
            ping_seconds=ping,
            connected_clients=_info_int(clients, "connected_clients"),
            blocked_clients=_info_int(clients, "blocked_clients"),
            memory_used=_info_int(memory, "used_memory"),
            memory_max=_info_int(memory, "maxmemory"),
            queues=depths,
            queue_growth=growth,
            queue_errors=errors,
        )

    def _down(self, instance: RedisConfig, reason: str, message: str) -> RedisInstanceFacts:
        self._failures[instance.name][reason] += 1
        self._depths[instance.name] = {}
        self._failure_log.failed(instance.name, reason, message)
        unknown: dict[str, int | None] = {name: None for name, _ in self._queues[instance.name]}
        return RedisInstanceFacts(
            instance.name, instance.address, up=False, failure=reason, error=message, queues=unknown
        )

    def _client(self, instance: RedisConfig, password: str | None) -> redis.Redis:
        digest = hashlib.sha256(repr((instance.username, password)).encode()).hexdigest()
        cached = self._clients.get(instance.name)
        if cached is not None and cached[0] == digest:
            return cached[1]
        self._drop_client(instance.name)
        try:
            where = parse_host_port(instance.address)
        except HostPortError as exc:
            raise _Down("error", f"bad address {instance.address!r}, expected HOST:PORT ({exc})") from None
        client = redis.Redis(
            host=where.host,
            port=where.port,
            db=instance.db,
            username=instance.username,
            password=password,
            socket_timeout=instance.timeout,
            socket_connect_timeout=instance.timeout,
            retry=Retry(NoBackoff(), 0),
            protocol=2,
            health_check_interval=0,
            # No client_name: CLIENT SETNAME at connect would fail for a least-privilege ACL user.
        )
        self._clients[instance.name] = (digest, client)
        return client

    def _drop_client(self, name: str) -> None:
        cached = self._clients.pop(name, None)
        if cached is not None:
            with contextlib.suppress(RedisError, OSError):
                cached[1].close()

    # --- metrics ----------------------------------------------------------------------------------

    def _families(self, instances: dict[str, RedisInstanceFacts]) -> list[Family]:
        families = Families(self.metrics)
        add = families.add

        for name, facts in instances.items():
            add(UP, [name], 1 if facts.up else 0)
            for reason in FAILURE_REASONS:
                add(FAILURES, [name, reason], self._failures[name][reason])
            for queue_name, queue in self._queues[name]:
                depth = facts.queues.get(queue_name)
                add(QUEUE_READ_OK, [name, queue_name], 0 if depth is None else 1)
                add(QUEUE_DEPTH, [name, queue_name, queue.type], depth)
            if facts.up:
                add(PING_DURATION, [name], facts.ping_seconds)
                add(CONNECTED_CLIENTS, [name], facts.connected_clients)
                add(BLOCKED_CLIENTS, [name], facts.blocked_clients)
                add(MEMORY_USED, [name], facts.memory_used)
                add(MEMORY_MAX, [name], facts.memory_max)
        return families.list()


def _disconnect(client: redis.Redis) -> None:
    with contextlib.suppress(RedisError, OSError):
        client.connection_pool.disconnect()


def queue_names(queues: tuple[RedisQueue, ...]) -> tuple[tuple[str, RedisQueue], ...]:
    """(name, queue) for each configured queue; the name is the `queue` label and the facts' key.

    The name is the key. A stream_pending queue whose key is configured more than once (the
    stream's length and its group's pending entries, or several groups) is named KEY:GROUP so the
    series stay apart; an exact repeat is read once.
    """
    repeated = Counter(queue.key for queue in queues)
    named: dict[str, RedisQueue] = {}
    for queue in queues:
        name = queue.key
        if repeated[queue.key] > 1 and queue.type == "stream_pending":
            name = f"{queue.key}:{queue.group}"
        named.setdefault(name, queue)
    return tuple(named.items())


def _queue_commands(pipe: Any, queue: RedisQueue) -> None:
    if queue.type == "stream":
        pipe.xlen(queue.key)
    elif queue.type == "zset":
        pipe.zcard(queue.key)
    elif queue.type == "stream_pending":
        pipe.exists(queue.key)  # XPENDING answers NOGROUP for a missing key and a missing group alike
        pipe.xpending(queue.key, queue.group)
    else:
        pipe.llen(queue.key)


def _queue_depth(queue: RedisQueue, replies: Any) -> tuple[int | None, str | None]:
    """The depth from this queue's replies (consumed from the iterator), or None and why."""
    if queue.type == "stream_pending":
        exists, pending = next(replies), next(replies)
        if exists == 0:
            return 0, None
        reply = pending
        if isinstance(pending, dict):
            reply = pending.get("pending")
        elif isinstance(pending, list | tuple) and pending:
            reply = pending[0]
    else:
        reply = next(replies)
    if isinstance(reply, Exception):
        return None, short_message(reply)
    if isinstance(reply, int) and not isinstance(reply, bool):
        return reply, None
    return None, f"unexpected reply of type {type(reply).__name__}"


def _info_int(info: Any, key: str) -> int | None:
    if not isinstance(info, dict):
        return None
    value = info.get(key)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return None


def _classify(exc: BaseException) -> str:
    if isinstance(exc, AuthenticationError | AuthenticationWrongNumberOfArgsError | NoPermissionError):
        return "auth"
    if isinstance(exc, ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
        return "auth"
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, RedisConnectionError | OSError) and refused(exc):
        return "connect_refused"
    return "error"


def _redact(text: str, secret: str | None) -> str:
    if secret:
        text = text.replace(secret, "<redacted>")
    return text

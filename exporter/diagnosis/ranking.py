"""How the verdict picks the cause among broken links: the most specific link that broke first.

Broken links fall into groups, and the first group with a broken link names the cause:

1. what is wrong with the service or what it depends on: its threads (stacks), a worker process
   of it stuck or dead (vLLM's engine core), a refusal the
   process explains (dead, not listening, wrong port), its process, port, log errors, its
   cgroup or GPU, Redis, the engine, a stalled engine or queue, pressure on the machine that is
   the service's own. Within the group the link that broke FIRST wins; on a tie, the more
   specific one. Of two links about the same thing (the same subject) the more specific one
   wins whenever it came: stacks that show a spinning thread say more than the service's busy
   CPU, an engine stalled with requests waiting says more than its generation probe failing.
2. the network path when nothing about the process explains it (refused, timeout, DNS, TLS);
3. the user's symptom alone (no answer, reset, HTTP error, a bad answer): what the service itself
   did, so pressure on the machine from other work never outranks it (a busy host makes a
   service slow; it does not make it answer 500 or hang on accept);
4. the exporter's own collectors (a hung nvidia-smi, a failing read);
5. the machine as a whole (CPU busy, memory low, context switches, threads blocked on I/O): the
   verdict when nothing else is broken; beside another cause it is evidence ("the machine (cpu
   saturated): ..."). A collector stuck in a call of its own while the machine is saturated
   counts here, as its evidence: a starved machine makes every run slow (a flood of requests on
   the real vLLM made the exporter's runs pass their deadlines), and the saturation, which broke
   first, is what the person paged must hear. A killed command past its deadline (nvidia-smi)
   stays in group 4: a hung GPU tool hangs on an idle machine too.

The user's failing probe, when it is not the cause itself, is listed as its symptom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .model import LAYERS, SAME_FAULT, Link

# Specificity: how much a broken link says about why, most first.
STACKS = 8  # where the service's threads are stuck
CRASH_LOOP = 7  # the service's process keeps being replaced: what any refusal or absence of it means
EXPLAINED_REFUSAL = 6  # the user's refusal, explained by the process of the same moment
STALLED = 5  # what the service needs is stuck with work waiting (engine, queue, idle GPUs)
SERVICE = 4  # a fact about the service or what it depends on
NETWORK = 3  # the path to it
HOST = 2  # the whole machine
SYMPTOM = 1  # what the user's request met
EXPORTER = 0  # the exporter's own health

_GROUP = {
    STACKS: 0,
    CRASH_LOOP: 0,
    EXPLAINED_REFUSAL: 0,
    STALLED: 0,
    SERVICE: 0,
    NETWORK: 1,
    SYMPTOM: 2,
    EXPORTER: 3,
    HOST: 4,
}
_HOST_WIDE = frozenset({"memory_low", "cpu_saturated", "context_switch_storm", "io_blocked"})
_EXPLAINED_REFUSALS = frozenset({"process_dead", "not_listening", "wrong_port"})


@dataclass(frozen=True)
class Broken:
    link: Link
    since: float | None  # when it broke; None: before the exporter started


@dataclass(frozen=True)
class Pick:
    cause: Link  # with the symptom and what changed in its evidence
    since: float | None  # when the cause or its symptom broke, whichever first
    symptom: Link | None  # the user's failing probe it explains


def specificity(link: Link) -> int:
    if link.layer == "stall" and link.reason in ("threads_blocked", "cpu_bound_loop", "worker_stuck"):
        return STACKS  # where the service's threads are stuck, or which of its processes is
    if link.layer == "stall":
        return STALLED
    if link.layer == "service" and link.reason == "worker_died":
        return STACKS  # which of its processes died: what its refusals and its exit then mean
    if link.layer == "service" and link.reason == "restarting":
        return CRASH_LOOP
    if link.layer == "network":
        return EXPLAINED_REFUSAL if link.reason in _EXPLAINED_REFUSALS else NETWORK
    if link.layer == "client":
        return SYMPTOM
    if link.layer == "exporter":
        return EXPORTER
    if link.layer == "resources" and link.reason in _HOST_WIDE and link.subject is None:
        return HOST
    return SERVICE


def pick(broken: Sequence[Broken]) -> Pick | None:
    """The cause among the broken links of one chain; None when none is broken."""
    candidates = _most_specific_about_each(_absorb(broken))
    if not candidates:
        return None
    saturated = any(specificity(b.link) == HOST for b in candidates)
    best = min(candidates, key=lambda b: _rank(b, saturated))
    symptoms = [b for b in candidates if _is_users_probe(b.link) and b is not best]
    symptom = (
        min(symptoms, key=lambda b: _time(b.since)) if symptoms and not _is_users_probe(best.link) else None
    )
    host = [b.link for b in candidates if specificity(b.link) == HOST and b is not best]
    starved = [b.link for b in candidates if saturated and _stuck(b.link) and b is not best]
    evidence = (
        best.link.evidence
        + tuple(f"the machine ({(link.reason or '').replace('_', ' ')}): {link.summary}" for link in host[:2])
        + tuple(f"{link.name}, on the saturated machine: {link.summary}" for link in starved[:2])
    )
    if symptom is None:
        return Pick(replace(best.link, evidence=evidence), best.since, None)
    evidence += (f"symptom: {symptom.link.name}: {symptom.link.summary}",)
    since = min(best.since, symptom.since, key=_time)
    return Pick(replace(best.link, evidence=evidence), since, symptom.link)


def refines(candidate: Link, current: Pick) -> bool:
    """Whether `candidate` says more about the same symptom than the current cause: then it
    replaces it at once, without waiting for more readings (not_answering -> threads_blocked)."""
    concerned = {current.cause.subject} | ({current.symptom.subject} if current.symptom else set())
    about_it = (
        candidate.subject is not None
        and candidate.subject in concerned
        and specificity(candidate) > specificity(current.cause)
    )
    # The users' symptom alone names no cause: a fault in the service's chain (what it depends on,
    # its process) that was seen once explains it (Redis down behind the service's 500s), as a
    # refusal is explained by the process reading; else whichever confirmed first was named.
    explains = specificity(current.cause) == SYMPTOM and _GROUP[specificity(candidate)] == 0
    return about_it or explains


def _absorb(broken: Sequence[Broken]) -> list[Broken]:
    """Merge the two sides of one fault into the user's side, which keeps the earlier onset."""
    kept = list(broken)
    for service_side in broken:
        merged_into = (
            SAME_FAULT.get(service_side.link.reason) if service_side.link.layer == "service" else None
        )
        if not merged_into:
            continue
        for i, user_side in enumerate(kept):
            link = user_side.link
            if (
                link.layer == "network"
                and link.reason in merged_into
                and link.subject == service_side.link.subject
            ):
                kept[i] = Broken(link, min(user_side.since, service_side.since, key=_time))
                kept.remove(service_side)
                break
    return kept


def _most_specific_about_each(broken: list[Broken]) -> list[Broken]:
    """Drop a link when a more specific one of the same group speaks of the same subject."""

    def outdone(b: Broken) -> bool:
        level = specificity(b.link)
        return b.link.subject is not None and any(
            other.link.subject == b.link.subject
            and specificity(other.link) > level
            and _GROUP[specificity(other.link)] == _GROUP[level]
            for other in broken
        )

    return [b for b in broken if not outdone(b)]


def _rank(b: Broken, saturated: bool) -> tuple[int, float, int, int, str]:
    level = specificity(b.link)
    group = _GROUP[HOST] if saturated and _stuck(b.link) else _GROUP[level]
    return (group, _time(b.since), -level, LAYERS.index(b.link.layer), b.link.name)


def _stuck(link: Link) -> bool:
    """A collector stuck in a call of its own (not a command killed at its deadline)."""
    return link.layer == "exporter" and link.reason == "collector_stuck"


def _time(since: float | None) -> float:
    return -math.inf if since is None else since


def _is_users_probe(link: Link) -> bool:
    return link.layer in ("client", "network")

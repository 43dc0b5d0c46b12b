"""Which links make up whose chain: one chain per user-facing service.

The user-facing services are those of the client probes (a target without a service is its own
chain). A chain is made of its service and, through `depends_on`, every Redis instance, engine and
service it needs; an engine and the service it runs in count as one. A link belongs to a chain
when it is about one of its members, about nothing in particular (the machine, the exporter), or
about something no chain claims (nobody said who needs it, so it may be anyone's).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..config import Config
from .model import Link

DEFAULT_CHAIN = "default"  # the chain's name when nothing names a service


@dataclass(frozen=True)
class Chains:
    members: Mapping[str, frozenset[str]]  # service -> the names its chain is made of
    claimed: frozenset[str] = frozenset()  # every name some chain is made of

    @classmethod
    def of(cls, members: Mapping[str, frozenset[str]]) -> Chains:
        return cls(members, frozenset().union(*members.values()) if members else frozenset())

    def holds(self, service: str, link: Link) -> bool:
        subject = link.subject
        return subject is None or subject in self.members[service] or subject not in self.claimed


def chains_of(config: Config) -> Chains:
    users = [t.service or t.name for t in config.targets if t.layer == "client"]
    services = list(dict.fromkeys(users)) or [s.name for s in config.services] or [DEFAULT_CHAIN]
    needs: dict[str, set[str]] = {s.name: set(s.depends_on) for s in config.services}
    for engine in config.engines:
        if engine.service:  # the engine and the service it runs in stand for each other
            needs.setdefault(engine.name, set()).add(engine.service)
            needs.setdefault(engine.service, set()).add(engine.name)
    return Chains.of({service: _closure(service, needs) for service in services})


def chains_named(services: Iterable[str]) -> Chains:
    """Chains without a config (a bare diagnosis): each holds every link."""
    names = list(dict.fromkeys(services)) or [DEFAULT_CHAIN]
    return Chains({name: frozenset({name}) for name in names})


def _closure(service: str, needs: Mapping[str, set[str]]) -> frozenset[str]:
    found = {service}
    todo = [service]
    while todo:
        for name in needs.get(todo.pop(), ()):
            if name not in found:
                found.add(name)
                todo.append(name)
    return frozenset(found)

"""The `service` label of an alert about a link of the chain: the user-facing service(s) the link
breaks (rules.AFFECTED says which), so that Alertmanager groups and inhibits by it. A Redis or an
engine gets it from the services that depend on it; a link nobody depends on is its own incident."""

from __future__ import annotations

from ..rules import LINK_KINDS, affected_edges, relabel, sole_edges


def _unmapped(expr: str, kind: str, label: str) -> str:
    """`expr` labelled as a link that is its own incident, named after it (as rules.AFFECTED
    does for a link no service depends on), for when the mapping has no entry."""
    named = relabel(f"({expr})", "dependency", label)
    if label != "service":
        named = relabel(named, "service", label)
    return f'label_replace({named}, "kind", "{kind}", "", "")'


def _linked(kind: str, label: str) -> str:
    """The links of `kind` (named by `label`) that rules.affected_edges maps to a service: a
    dependency of a service, or a link of its own. A cheap stand-in for grouping the edges again."""
    depended_on = relabel(
        f'group by (instance, dependency) (autoglm_service_dependency_info{{kind="{kind}"}})',
        label,
        "dependency",
    )
    sources = [depended_on, *LINK_KINDS[kind].series]
    return "(" + " or ".join(f"group by (instance, {label}) ({source})" for source in sources) + ")"


def fan_out(expr: str, kind: str, label: str, keep: tuple[str, ...] = ()) -> str:
    """`expr` (one series per instance and link, the link named by `label`) once for every service
    the link breaks, with `service`, `kind` and `dependency` (the link) and the link's own `label`
    and `keep` labels. Without the recording rule (only this file loaded) the bare `expr`.

    A shared kind of link (rules.LinkKind.shared) seen from a node where no service depends on it
    is an incident of its own name only while no node where a service does depend on it sees the
    same: one fault of a shared Redis is one incident, the service's, however many nodes watch it."""
    carried = ", ".join(name for name in (label, *keep) if name != "service")

    def joined(edges: str) -> str:
        return (
            f"({edges}) * on (instance, dependency) group_left ({carried})"
            f" {relabel(f'({expr})', 'dependency', label)}"
        )

    alone = f"{_unmapped(expr, kind, label)} unless on (instance, {label}) {_linked(kind, label)}"
    every = f"{joined(affected_edges(kind))} or {alone}"
    if not LINK_KINDS[kind].shared:
        return every
    edges = f'autoglm_service_dependency_info{{kind="{kind}"}}'
    depended_on = joined(f"group by (instance, job, kind, dependency, service) ({edges})")
    return f"{depended_on} or (({every}) unless on ({label}) {depended_on})"


def sole_service(expr: str, kind: str, label: str) -> str:
    """`expr` (several series per link: per queue, per probe target) with the `service` its link
    breaks, when only one service depends on it; a link several services share lends its own name."""
    edges = f"({sole_edges(kind)})"
    joined = (
        f"{relabel(f'({expr})', 'dependency', label)} * on (instance, dependency) group_left (service, kind)"
        f" {edges}"
    )
    return (
        f"({joined}) or {_unmapped(expr, kind, label)} unless on (instance, {label}) {_linked(kind, label)}"
    )


# A log's service, for the log alerts: autoglm_log_info{log, service} (a log without a service
# gives alerts without one: a CUDA OOM there is a cause for its whole instance).
LOG_SERVICE = 'autoglm_log_info{service!=""}'


def log_service(expr: str) -> str:
    """`expr` (per log) with the service the log belongs to, mapped to the service it breaks."""
    with_service = f"({expr}) * on (instance, log) group_left (service) {LOG_SERVICE}"
    without = f"(({expr}) unless on (instance, log) {LOG_SERVICE})"
    return f"{sole_service(with_service, 'service', 'service')} or {without}"

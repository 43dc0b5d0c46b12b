"""Environment drift (seed 2.2, 2.4): did the service's packages, Python, env or model files change?

Every few minutes (the collector's interval defaults to 5 min: it runs the service's own
interpreter to list its packages) each service's main process is snapshotted and compared with
its baseline: a snapshot file named in the config, or else the first snapshot the exporter took.
"It broke after an upgrade" then shows up as drift beside the verdict.
"""

from __future__ import annotations

from typing import Any

from ..config import EnvironmentConfig, ServiceConfig
from ..facts.environment import EnvironmentFacts, ServiceEnvironment
from ..linux.processes import ProcfsUnreadable, ServiceMatcher
from ..metrics.spec import Families, Family, gauge
from ..snapshot import DRIFT_COMPONENTS, diff_snapshots, drift_components, read_snapshot, take_snapshot
from .base import Collector, CollectorError, Result

DRIFT = gauge(
    "autoglm_environment_drift",
    "1 when this part of the service's environment differs from its baseline snapshot: packages, python, "
    "model_files, env, gpu_driver, conflicts.",
    "service",
    "component",
)
CONFLICTS = gauge(
    "autoglm_environment_dependency_conflicts",
    "Dependency conflicts in the service's Python environment, as pip check reports them.",
    "service",
)
BASELINE_TIME = gauge(
    "autoglm_environment_baseline_timestamp_seconds",
    "When the service's baseline snapshot was taken, in seconds since the epoch.",
    "service",
)

SNAPSHOT_TIMEOUT = 60.0
MAX_CHANGES = 20


class EnvironmentCollector(Collector):
    name = "environment"
    metrics = (DRIFT, CONFLICTS, BASELINE_TIME)
    items_attribute = "services"
    state_per_item = ("_baselines",)  # the first snapshot of a service stays its baseline

    def __init__(
        self,
        services: tuple[ServiceConfig, ...],
        config: EnvironmentConfig,
        proc_root: str = "/proc",
        matcher: ServiceMatcher | None = None,
    ) -> None:
        self.services = services
        self.config = config
        self.proc_root = proc_root
        self.settings = (services, config, proc_root)
        self.matcher = matcher or ServiceMatcher(services, proc_root)
        self._baselines: dict[str, dict[str, Any]] = {}

    def collect(self) -> Result:
        try:
            membership = self.matcher.current()
        except ProcfsUnreadable as exc:
            raise CollectorError("os_error", str(exc)) from exc
        facts = {s.name: self._compare(s.name, membership.main_pid(s.name)) for s in self.services}
        return Result(self._families(facts), EnvironmentFacts(facts))

    def _compare(self, name: str, pid: int | None) -> ServiceEnvironment:
        if pid is None:
            return ServiceEnvironment(name, None, error="no process")
        snapshot = take_snapshot(pid, self.proc_root, self.config.model_dirs, timeout=SNAPSHOT_TIMEOUT)
        try:
            baseline = self._baseline(name, snapshot)
        except (OSError, ValueError) as exc:
            return ServiceEnvironment(name, pid, error=f"cannot read baseline: {exc}")
        drift = drift_components(baseline, snapshot)
        conflicts = (snapshot.get("service") or {}).get("conflicts")
        return ServiceEnvironment(
            name,
            pid,
            tuple(component for component, changed in drift.items() if changed),
            tuple(diff_snapshots(baseline, snapshot)[:MAX_CHANGES]),
            len(conflicts) if conflicts is not None else None,
            baseline.get("taken_at"),
        )

    def _baseline(self, name: str, snapshot: dict[str, Any]) -> dict[str, Any]:
        if name not in self._baselines:
            path = self.config.baselines.get(name)
            self._baselines[name] = read_snapshot(path) if path else snapshot
        return self._baselines[name]

    def _families(self, services: dict[str, ServiceEnvironment]) -> list[Family]:
        families = Families(self.metrics)
        add = families.add

        for name, env in services.items():
            if env.baseline_taken_at is None:
                continue  # no snapshot this time: drift unknown, not 0
            for component in DRIFT_COMPONENTS:
                add(DRIFT, [name, component], 1 if component in env.drifted else 0)
            add(CONFLICTS, [name], env.conflicts)
            add(BASELINE_TIME, [name], env.baseline_taken_at)
        return families.list()

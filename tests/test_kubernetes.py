"""deploy/kubernetes: every manifest against its schema (strict: an unknown field fails), the pieces
agreeing with each other, with the exporter's own CLI and config, and with the mixin that generates
half of them (mixin/kubernetes.py).

Validators: core kinds with kubernetes-validate's JSON schemas of one Kubernetes version; the
Prometheus Operator's and KEDA's kinds with the pydantic models cloudcoil generates from their CRDs'
OpenAPI schemas (an object must survive a round trip through its model unchanged, so a field the
CRD does not know fails too); prometheus-adapter's config, which has no published schema, by a
structural check below and promtool.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from autoglm_exporter import __version__
from autoglm_exporter.cli import build_parser
from autoglm_exporter.config import parse_config
from mixin import kubernetes as k8s
from mixin.config import EXPORTER_JOB, THRESHOLDS
from mixin.rules import RECORDING_RULES

from .conftest import REPO, check_config, require_binary

DEPLOY = REPO / "deploy" / "kubernetes"
DOCS = REPO / "docs" / "kubernetes.md"
# The oldest Kubernetes the manifests are for (runtimeClassName, autoscaling/v2 and the pod
# security labels are older). Strict: fields the schema does not know are errors.
KUBERNETES_VERSION = "1.30.0"
CORE_KINDS = {
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "DaemonSet"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
}
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}
KEDA_METRIC_TYPES = ("AverageValue", "Value", "Utilization")  # checked by KEDA's webhook, not its CRD
RECORDED = {name for name, _ in RECORDING_RULES}
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

MANIFESTS = sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")
KUSTOMIZATIONS = sorted(DEPLOY.rglob("kustomization.yaml"))


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def load(path: Path) -> dict[str, Any]:
    """The one object a manifest file holds."""
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(documents) == 1, f"{_rel(path)}: one object per file, found {len(documents)}"
    return documents[0]


def manifest(name: str) -> dict[str, Any]:
    return load(DEPLOY / name)


def kind_of(document: dict[str, Any]) -> tuple[str, str]:
    return document.get("apiVersion", ""), document.get("kind", "")


@pytest.fixture(scope="module")
def crd_models() -> dict[tuple[str, str], Any]:
    """The pydantic models of the CRDs (cloudcoil-models-prometheus-operator, cloudcoil-models-keda)."""
    try:
        from cloudcoil.models.keda import v1alpha1 as keda
        from cloudcoil.models.prometheus_operator import v1 as monitoring
        from cloudcoil.models.prometheus_operator import v1alpha1 as monitoring_alpha
    except ImportError as exc:
        pytest.fail(f"{exc}: the CRD schemas are not installed, run `make test` (the test extras)")
    return {
        ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
        ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring.PrometheusRule,
        ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
        ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig"): monitoring_alpha.AlertmanagerConfig,
    }


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Where two JSON-like values differ, as paths: what a round trip through a model lost."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        for key in sorted(set(expected) | set(actual), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in actual:
                found.append(f"{where}: not in the schema (dropped)")
            elif key not in expected:
                found.append(f"{where}: added")
            else:
                found += differences(expected[key], actual[key], where)
        return found
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in differences(e, a, f"{path}[{i}]")
        ]
    if expected != actual or type(expected) is not type(actual):
        return [f"{path}: {expected!r} became {actual!r}"]
    return []


def check_custom_resource(model: Any, document: dict[str, Any]) -> list[str]:
    """Validate against the CRD's model; return what the schema does not know (empty: valid)."""
    parsed = model.model_validate(document)  # raises on a wrong type, pattern, missing field
    return differences(document, parsed.model_dump(mode="json", by_alias=True, exclude_unset=True))


def promtool_check_rules(tmp_path: Path, groups: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return subprocess.run(
        [require_binary("promtool"), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )


# --- schemas ------------------------------------------------------------------------------------


def test_every_manifest_has_a_validator() -> None:
    kinds = {kind_of(load(path)) for path in MANIFESTS}
    assert kinds <= CORE_KINDS | CUSTOM_KINDS, f"no validator for {kinds - CORE_KINDS - CUSTOM_KINDS}"
    assert kinds == CORE_KINDS | CUSTOM_KINDS, f"no manifest of {(CORE_KINDS | CUSTOM_KINDS) - kinds}"


@pytest.mark.parametrize("path", [p for p in MANIFESTS if kind_of(load(p)) in CORE_KINDS], ids=_rel)
def test_core_manifest_is_valid_kubernetes(path: Path) -> None:
    try:
        kubernetes_validate.validate(load(path), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{_rel(path)}: {where}: {exc.message}")
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(f"{_rel(path)}: {exc.message}")


@pytest.mark.parametrize("path", [p for p in MANIFESTS if kind_of(load(p)) in CUSTOM_KINDS], ids=_rel)
def test_custom_resource_matches_its_crd_schema(path: Path, crd_models: dict[tuple[str, str], Any]) -> None:
    document = load(path)
    unknown = check_custom_resource(crd_models[kind_of(document)], document)
    assert not unknown, f"{_rel(path)} does not match the CRD: {unknown}"


def test_the_validators_reject_what_a_cluster_would(crd_models: dict[tuple[str, str], Any]) -> None:
    """Not vacuous: a misspelt field or a wrong type fails each validator."""
    daemonset = manifest("daemonset.yaml")
    daemonset["spec"]["template"]["spec"]["hostPid"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="hostPid"):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSION, strict=True)

    monitor = manifest("servicemonitor.yaml")
    monitor["spec"]["endpoints"][0]["intervall"] = "10s"
    model = crd_models[kind_of(monitor)]
    assert check_custom_resource(model, monitor) == [
        "spec.endpoints[0].intervall: not in the schema (dropped)"
    ]
    monitor = manifest("servicemonitor.yaml")
    monitor["spec"]["endpoints"][0]["interval"] = "10 seconds"
    with pytest.raises(ValueError, match="interval"):
        check_custom_resource(model, monitor)

    scaled = load(REPO / k8s.KEDA_FILE)
    scaled["spec"]["triggers"][0]["metadata"]["threshold"] = 0.7  # KEDA wants strings
    with pytest.raises(ValueError, match="threshold"):
        check_custom_resource(crd_models[kind_of(scaled)], scaled)


# --- the generated half ---------------------------------------------------------------------------


def test_generated_manifests_are_committed() -> None:
    files = k8s.generated_files()
    assert set(files) == {
        k8s.PROMETHEUS_RULE_FILE,
        k8s.ALERTMANAGER_CONFIG_FILE,
        k8s.KEDA_FILE,
        k8s.ADAPTER_CONFIG_FILE,
        k8s.HPA_FILE,
    }
    for path, content in sorted(files.items()):
        committed = REPO / path
        assert committed.is_file(), f"{path} is missing: run make mixin"
        assert committed.read_text() == content, f"{path} differs from what mixin/ generates: run make mixin"
        assert content.startswith("# Generated by `python -m mixin`"), path


def test_prometheus_rule_holds_every_rule_group_and_promtool_accepts_them(tmp_path: Path) -> None:
    from mixin.alerts import rule_groups

    rule = load(REPO / k8s.PROMETHEUS_RULE_FILE)
    assert rule["metadata"]["name"] == EXPORTER_JOB
    assert rule["spec"]["groups"] == rule_groups()
    names = [r.get("record") for g in rule["spec"]["groups"] for r in g["rules"]]
    assert set(names) >= RECORDED, "every recording rule is in the PrometheusRule"
    assert any("alert" in r for g in rule["spec"]["groups"] for r in g["rules"])
    checked = promtool_check_rules(tmp_path, rule["spec"]["groups"])
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alertmanager_config_routes_and_inhibits_as_the_compose_alertmanager() -> None:
    """Kubernetes users get the same one-incident-one-page routing as docker-compose's Alertmanager."""
    from mixin.alertmanager import routing

    crd = load(REPO / k8s.ALERTMANAGER_CONFIG_FILE)
    assert crd["metadata"]["namespace"] == k8s.NAMESPACE
    assert k8s.PROMETHEUS_SELECTOR_LABELS.items() <= crd["metadata"]["labels"].items()
    plain = routing()

    def matchers(entries: list[dict[str, str]]) -> list[str]:
        return [f'{m["name"]}{m["matchType"]}"{m["value"]}"' for m in entries]

    route = crd["spec"]["route"]
    assert matchers(route["matchers"]) == ['alertname=~"Autoglm.+"'], "only this project's alerts"
    assert [
        (r["receiver"], matchers(r["matchers"]), r["groupBy"], r["groupWait"]) for r in route["routes"]
    ] == [(r["receiver"], r["matchers"], r["group_by"], r["group_wait"]) for r in plain["route"]["routes"]]
    assert [
        (matchers(i["sourceMatch"]), matchers(i["targetMatch"]), i["equal"])
        for i in crd["spec"]["inhibitRules"]
    ] == [(i["source_matchers"], i["target_matchers"], i["equal"]) for i in plain["inhibit_rules"]]
    assert {r["name"] for r in crd["spec"]["receivers"]} == {r["name"] for r in plain["receivers"]}


def test_helpers_of_the_generator() -> None:
    assert k8s.quantity(0.70) == "700m"
    assert k8s.quantity(5) == "5"
    with pytest.raises(ValueError, match="milli"):
        k8s.quantity(0.7005)
    with pytest.raises(ValueError, match="records no"):
        k8s.recorded("service:autoglm_no_such_rule:avg")


# --- the exporter's pod -------------------------------------------------------------------------


def _container(daemonset: dict[str, Any]) -> dict[str, Any]:
    containers = daemonset["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["exporter"]
    return containers[0]


def _mounts(daemonset: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """mountPath -> (the mount, its volume)."""
    volumes = {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in _container(daemonset)["volumeMounts"]}


def _flag(args: list[str]) -> Any:
    parsed = build_parser().parse_args(args)
    assert parsed.command == "run"
    return parsed


def test_exporter_config_passes_check_config(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(manifest("configmap.yaml")["data"]["config.yml"])
    checked = check_config(config)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert ": OK" in checked.stdout


def test_exporter_config_finds_what_the_daemonset_mounts() -> None:
    daemonset, configmap = manifest("daemonset.yaml"), manifest("configmap.yaml")
    mounts = _mounts(daemonset)
    # --config.file is the ConfigMap's key, where the ConfigMap is mounted
    config_file = _flag(_container(daemonset)["args"]).config_file
    mount, volume = mounts[str(Path(config_file).parent)]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert Path(config_file).name in configmap["data"]
    config = parse_config(configmap["data"][Path(config_file).name], "configmap.yaml")
    # the host's /proc, read-only, where paths.proc says
    mount, volume = mounts[config.proc_root]
    assert config.proc_root == "/host/proc"
    assert volume["hostPath"]["path"] == "/proc" and mount["readOnly"] is True
    # the host's cgroup tree where paths.sys says
    mount, volume = mounts[f"{config.sys_root}/fs/cgroup"]
    assert volume["hostPath"]["path"] == "/sys/fs/cgroup" and mount["readOnly"] is True
    # stack captures in the emptyDir
    mount, volume = mounts[config.forensics.directory]
    assert "emptyDir" in volume and not mount.get("readOnly")
    # port matching would look at the exporter's own network namespace only (see daemonset.yaml)
    assert all(service.match.port is None for service in config.services)
    assert all(service.match.cmdline for service in config.services)
    # the example points at in-cluster Services, never at the exporter pod's own loopback
    urls = [t.url for t in config.targets] + [e.metrics_url for e in config.engines]
    assert urls and all(".svc:" in url for url in urls), urls
    assert all(".svc:" in r.address for r in config.redis)


def test_daemonset_runs_one_exporter_per_gpu_node_with_what_it_needs() -> None:
    daemonset = manifest("daemonset.yaml")
    pod = daemonset["spec"]["template"]["spec"]
    container = _container(daemonset)
    assert pod["hostPID"] is True
    assert pod.get("hostNetwork", False) is False
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == manifest("serviceaccount.yaml")["metadata"]["name"]

    security = container["securityContext"]
    assert "SYS_PTRACE" in security["capabilities"]["add"]
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsUser"] == 0, "added capabilities are effective for root only"

    image, tag = container["image"].rsplit(":", 1)
    assert image == "ghcr.io/autoglm/autoglm-exporter" and tag == __version__
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    # what `kubectl exec ... autoglm-exporter doctor` reads: the daemon's own file
    assert env["AUTOGLM_EXPORTER_CONFIG_FILE"]["value"] == _flag(container["args"]).config_file
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
    claimed = set(resources["requests"]) | set(resources["limits"])
    assert "nvidia.com/gpu" not in claimed, "claiming a GPU would take it away from inference"


def test_daemonset_listens_and_is_probed_on_the_metrics_port() -> None:
    daemonset = manifest("daemonset.yaml")
    container = _container(daemonset)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9877}
    listen = _flag(container["args"]).listen_address
    assert listen.rsplit(":", 1)[1] == "9877"
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "metrics"}
    annotations = daemonset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    assert annotations["prometheus.io/path"] == "/metrics"


# --- how Prometheus finds it --------------------------------------------------------------------


def test_service_servicemonitor_and_daemonset_select_each_other() -> None:
    daemonset, service, monitor = (
        manifest(n) for n in ("daemonset.yaml", "service.yaml", "servicemonitor.yaml")
    )
    pod_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert "namespaceSelector" not in monitor["spec"], "the ServiceMonitor selects its own namespace"
    assert {o["metadata"]["namespace"] for o in (daemonset, service, monitor)} == {k8s.NAMESPACE}

    (port,) = service["spec"]["ports"]
    container_port = next(p for p in _container(daemonset)["ports"] if p["name"] == port["targetPort"])
    assert port["port"] == container_port["containerPort"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"] == "metrics"
    # job="autoglm-exporter", what the alerts select, from the Service's label
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == EXPORTER_JOB


def test_servicemonitor_scrapes_every_10s_and_labels_the_node() -> None:
    (endpoint,) = manifest("servicemonitor.yaml")["spec"]["endpoints"]
    assert endpoint["interval"] == "10s"
    relabel = {
        (tuple(r.get("sourceLabels", ())), r.get("targetLabel"), r["action"]) for r in endpoint["relabelings"]
    }
    assert (("__meta_kubernetes_pod_node_name",), "node", "replace") in relabel
    assert (("__meta_kubernetes_pod_node_name",), "instance", "replace") in relabel
    # without it the operator's service="autoglm-exporter" renames ours to exported_service
    assert {"action": "labeldrop", "regex": "service"} in endpoint["relabelings"]


def test_prometheus_selects_the_servicemonitor_and_the_rules() -> None:
    selector = k8s.PROMETHEUS_SELECTOR_LABELS
    assert selector.items() <= manifest("servicemonitor.yaml")["metadata"]["labels"].items()
    assert selector.items() <= load(REPO / k8s.PROMETHEUS_RULE_FILE)["metadata"]["labels"].items()


# --- autoscaling --------------------------------------------------------------------------------


def _recording_rules_in(query: str) -> set[str]:
    return {name for name in METRIC_NAME.findall(query) if ":" in name}


def test_keda_scales_out_on_recording_rules_at_the_mixin_thresholds() -> None:
    scaled = load(REPO / k8s.KEDA_FILE)
    triggers = {t["name"]: t for t in scaled["spec"]["triggers"]}
    assert set(triggers) == {"gpu-utilization", "engine-queue"}
    gpu, queue = triggers["gpu-utilization"], triggers["engine-queue"]
    for trigger in triggers.values():
        assert trigger["type"] == "prometheus"
        assert trigger["metricType"] in KEDA_METRIC_TYPES
        assert trigger["metadata"]["serverAddress"].startswith(("http://", "https://"))
        rules = _recording_rules_in(trigger["metadata"]["query"])
        assert rules and rules <= RECORDED, f"{rules - RECORDED} not recorded by mixin/rules.py"
    assert float(gpu["metadata"]["threshold"]) == THRESHOLDS["gpu_scale_out_utilization_ratio"] == 0.70
    assert gpu["metadata"]["query"] == 'service:autoglm_gpu_utilization_ratio:avg{service="open-autoglm"}'
    assert gpu["metricType"] == "Value", "the utilization is already an average over the service's GPUs"
    assert float(queue["metadata"]["threshold"]) == THRESHOLDS["engine_queue_scale_out"]
    assert _recording_rules_in(queue["metadata"]["query"]) == {"engine:autoglm_engine_requests_waiting:sum"}
    assert queue["metricType"] == "AverageValue", "waiting requests are shared out over the replicas"


def test_hpa_reads_what_prometheus_adapter_serves() -> None:
    configmap = load(REPO / k8s.ADAPTER_CONFIG_FILE)
    adapter = yaml.safe_load(configmap["data"]["config.yaml"])
    assert set(adapter) == {"externalRules"}
    served = {}
    for rule in adapter["externalRules"]:
        assert set(rule) <= {"seriesQuery", "seriesFilters", "resources", "name", "metricsQuery"}, rule
        (series,) = _recording_rules_in(rule["seriesQuery"])
        assert series in RECORDED
        assert re.fullmatch(rule["name"]["matches"], series)
        assert ":" not in rule["name"]["as"], "external metric names are URL path segments"
        # the recording rules aggregate away the namespace: the HPA's must not be added
        assert rule["resources"] == {"namespaced": False}
        assert "<<.Series>>" in rule["metricsQuery"] and "<<.LabelMatchers>>" in rule["metricsQuery"]
        served[rule["name"]["as"]] = series

    hpa = load(REPO / k8s.HPA_FILE)
    thresholds = {
        "service:autoglm_gpu_utilization_ratio:avg": THRESHOLDS["gpu_scale_out_utilization_ratio"],
        "engine:autoglm_engine_requests_waiting:sum": THRESHOLDS["engine_queue_scale_out"],
    }
    assert {m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"]} == set(served)
    for metric in hpa["spec"]["metrics"]:
        external = metric["external"]
        series = served[external["metric"]["name"]]
        expr = dict(RECORDING_RULES)[series]
        for label in external["metric"]["selector"]["matchLabels"]:
            assert f"by ({label})" in expr, f"{series} has no label {label}"
        target = external["target"]
        value = target.get("value") or target.get("averageValue")
        number = int(value[:-1]) / 1000 if value.endswith("m") else float(value)
        assert number == thresholds[series]
    assert {m["external"]["target"]["type"] for m in hpa["spec"]["metrics"]} == {"Value", "AverageValue"}


def test_keda_and_the_hpa_are_alternatives_for_the_same_deployment() -> None:
    scaled, hpa = load(REPO / k8s.KEDA_FILE), load(REPO / k8s.HPA_FILE)
    assert scaled["metadata"]["namespace"] == hpa["metadata"]["namespace"]
    assert scaled["spec"]["scaleTargetRef"] == hpa["spec"]["scaleTargetRef"]
    assert scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["spec"]["behavior"]
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (
        hpa["spec"]["minReplicas"],
        hpa["spec"]["maxReplicas"],
    )
    # different kustomizations: applying both would put two HPAs on one Deployment
    assert Path(k8s.KEDA_FILE).parent != Path(k8s.HPA_FILE).parent


def test_autoscaling_queries_are_valid_promql(tmp_path: Path) -> None:
    scaled = load(REPO / k8s.KEDA_FILE)
    adapter = yaml.safe_load(load(REPO / k8s.ADAPTER_CONFIG_FILE)["data"]["config.yaml"])
    queries = [t["metadata"]["query"] for t in scaled["spec"]["triggers"]]
    for rule in adapter["externalRules"]:
        (series,) = _recording_rules_in(rule["seriesQuery"])
        queries.append(rule["seriesQuery"])
        # what the adapter sends for an HPA selecting service="open-autoglm"
        queries.append(
            rule["metricsQuery"].replace("<<.Series>>", series).replace("<<.LabelMatchers>>", 'a="b"')
        )
    group = {
        "name": "autoscaling",
        "rules": [{"record": f"test:q{i}:x", "expr": q} for i, q in enumerate(queries)],
    }
    checked = promtool_check_rules(tmp_path, [group])
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --- kustomize ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=_rel)
def test_kustomization_lists_every_manifest_of_its_directory(kustomization: Path) -> None:
    config = yaml.safe_load(kustomization.read_text())
    assert config["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and config["kind"] == "Kustomization"
    listed = config["resources"]
    assert len(listed) == len(set(listed)), "listed twice"
    missing = [name for name in listed if not (kustomization.parent / name).is_file()]
    assert not missing, f"listed but missing: {missing}"
    present = {p.name for p in kustomization.parent.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == present, f"not listed: {present - set(listed)}"


def test_the_core_kustomization_puts_everything_in_one_namespace() -> None:
    config = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert config["namespace"] == k8s.NAMESPACE
    assert manifest("namespace.yaml")["metadata"]["name"] == k8s.NAMESPACE
    for name in config["resources"]:
        document = manifest(name)
        if document["kind"] != "Namespace":  # the same without kustomize: kubectl apply -f
            assert document["metadata"]["namespace"] == k8s.NAMESPACE, name
    assert "autoscaling" not in " ".join(config["resources"]), "autoscaling is opt-in, one of two"


# --- docs/kubernetes.md -------------------------------------------------------------------------


def test_the_examples_in_the_docs_are_valid(tmp_path: Path, crd_models: dict[tuple[str, str], Any]) -> None:
    """Every YAML block of docs/kubernetes.md is a Kubernetes object or a Prometheus config."""
    blocks = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.S)]
    objects = [b for b in blocks if "kind" in b]
    configs = [b for b in blocks if "remote_write" in b]
    assert len(objects) + len(configs) == len(blocks) and objects and len(configs) == 3
    for document in objects:
        if kind_of(document) in crd_models:
            assert not check_custom_resource(crd_models[kind_of(document)], document)
        else:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    promtool = require_binary("promtool")
    for index, config in enumerate(configs):
        path = tmp_path / f"prometheus-{index}.yml"
        path.write_text(yaml.safe_dump(config))
        checked = subprocess.run(
            [promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "kubectl apply -k deploy/kubernetes" in DOCS.read_text().split("```")[1], "the first step"

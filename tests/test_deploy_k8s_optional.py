"""The optional Kubernetes parts (``deploy/k8s/optional``) and the example overlay,
checked without a cluster.

* The Component and each of its parts build on the base with ``kubectl kustomize``
  (schema validation of every object: ``test_deploy_manifests.py``).
* The Prometheus Operator's objects, which ``kubernetes-validate`` has no schema
  for, are checked field by field against the operator's API, and the rules the
  operator gets pass ``promtool`` and the same unit tests as ``alerts.yml``.
* The generated copies (PrometheusRule, dashboards) equal their sources.
* The NetworkPolicies are evaluated for the traffic each service needs and the
  traffic it must not get.
* The autoscalers use a metric the consumers export, within the partition count.
* Every connection setting ``deploy/k8s/README.md`` shows is accepted by the
  services' settings.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from pydantic import ValidationError
from pymongo.uri_parser import parse_uri

from happ_common.settings import InfraSettings
from happ_devtools import k8s_monitoring
from tests.test_deploy_manifests import (
    EXAMPLE,
    K8S,
    NAMESPACE,
    PROMETHEUS,
    ROOT,
    SERVICES,
    Doc,
    alert_rules,
    config_env,
    container_of,
    find,
    generated,
    known_env_vars,
    kustomize,
    labels_of,
    load_yaml,
    overlay,
    promtool,
    run,
)

OPTIONAL = K8S / "optional"
PARTS = ("monitoring", "network-policies", "autoscaling")
README = K8S / "README.md"
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    where = tmp_path_factory.mktemp("full")
    return overlay(where, components=[os.path.relpath(OPTIONAL, where)])


# -- the Component -------------------------------------------------------------------


def test_optional_is_a_component_of_components() -> None:
    top = load_yaml(OPTIONAL / "kustomization.yaml")
    assert top["kind"] == "Component"
    assert top["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert top["components"] == list(PARTS)
    for part in PARTS:
        assert load_yaml(OPTIONAL / part / "kustomization.yaml")["kind"] == "Component", part


@pytest.mark.parametrize(
    ("part", "kinds"),
    [
        ("monitoring", {"ServiceMonitor", "PrometheusRule", "ConfigMap"}),
        ("network-policies", {"NetworkPolicy"}),
        ("autoscaling", {"HorizontalPodAutoscaler"}),
    ],
)
def test_each_part_builds_alone_on_the_base(tmp_path: Path, part: str, kinds: set[str]) -> None:
    base = {(d["kind"], d["metadata"]["name"]) for d in kustomize(K8S)}
    docs = overlay(tmp_path, components=[os.path.relpath(OPTIONAL / part, tmp_path)])
    added = {(d["kind"], d["metadata"]["name"]) for d in docs} - base
    assert {kind for kind, _ in added} == kinds
    for d in docs:
        assert d["metadata"].get("namespace", NAMESPACE) == NAMESPACE
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "happ"


def test_full_component_is_the_sum_of_its_parts(tmp_path: Path, full: list[Doc]) -> None:
    parts = overlay(tmp_path, components=[os.path.relpath(OPTIONAL / p, tmp_path) for p in PARTS])
    assert sorted(map(json.dumps, full)) == sorted(map(json.dumps, parts))


# -- Prometheus Operator objects ---------------------------------------------------------

SERVICEMONITOR_SPEC = {
    "attachMetadata", "endpoints", "jobLabel", "keepDroppedTargets", "labelLimit",
    "labelNameLengthLimit", "labelValueLengthLimit", "namespaceSelector",
    "podTargetLabels", "sampleLimit", "scrapeClass", "scrapeProtocols", "selector",
    "targetLabels", "targetLimit",
}  # fmt: skip
SERVICEMONITOR_ENDPOINT = {
    "authorization", "basicAuth", "bearerTokenFile", "bearerTokenSecret", "enableHttp2",
    "filterRunning", "followRedirects", "honorLabels", "honorTimestamps", "interval",
    "metricRelabelings", "oauth2", "params", "path", "port", "proxyUrl", "relabelings",
    "scheme", "scrapeTimeout", "targetPort", "tlsConfig", "trackTimestampsStaleness",
}  # fmt: skip
RULE_GROUP = {"name", "interval", "rules", "partial_response_strategy", "limit", "query_offset"}
RULE = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}


def string_map(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def operator_problems(d: Doc) -> list[str]:
    """What the Prometheus Operator's CRD schema (monitoring.coreos.com/v1) would
    refuse in the fields HAPP uses: unknown fields, wrong types, bad durations."""
    found: list[str] = []
    where = f"{d['kind']}/{d['metadata']['name']}"
    if d.get("apiVersion") != "monitoring.coreos.com/v1":
        found.append(f"{where}: apiVersion {d.get('apiVersion')}")
    if not string_map(d["metadata"].get("labels", {})):
        found.append(f"{where}: labels must be strings")
    spec = d["spec"]
    if d["kind"] == "ServiceMonitor":
        found += [f"{where}: unknown spec.{k}" for k in set(spec) - SERVICEMONITOR_SPEC]
        if not isinstance(spec.get("jobLabel", ""), str):
            found.append(f"{where}: jobLabel must be a string")
        if not string_map(spec["selector"].get("matchLabels")):
            found.append(f"{where}: selector.matchLabels must map strings to strings")
        if set(spec.get("namespaceSelector", {})) - {"any", "matchNames"}:
            found.append(f"{where}: namespaceSelector takes any and matchNames")
        for i, ep in enumerate(spec["endpoints"]):
            found += [
                f"{where}: unknown endpoints[{i}].{k}" for k in set(ep) - SERVICEMONITOR_ENDPOINT
            ]
            if not isinstance(ep.get("port"), str):
                found.append(f"{where}: endpoints[{i}].port must be a port name")
            if not str(ep.get("path", "/")).startswith("/"):
                found.append(f"{where}: endpoints[{i}].path must start with /")
            if not DURATION.match(str(ep.get("interval", "30s"))):
                found.append(f"{where}: endpoints[{i}].interval is not a duration")
            if not isinstance(ep.get("honorLabels", False), bool):
                found.append(f"{where}: endpoints[{i}].honorLabels must be a boolean")
    elif d["kind"] == "PrometheusRule":
        found += [f"{where}: unknown spec.{k}" for k in set(spec) - {"groups"}]
        for group in spec["groups"]:
            found += [f"{where}: unknown group field {k}" for k in set(group) - RULE_GROUP]
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                found += [f"{where}: {name}: unknown field {k}" for k in set(rule) - RULE]
                if ("alert" in rule) == ("record" in rule):
                    found.append(f"{where}: {name}: exactly one of alert and record")
                if not isinstance(rule.get("expr"), str):
                    found.append(f"{where}: {name}: expr must be a string")
                if "for" in rule and not DURATION.match(str(rule["for"])):
                    found.append(f"{where}: {name}: for is not a duration")
                for key in ("labels", "annotations"):
                    if not string_map(rule.get(key, {})):
                        found.append(f"{where}: {name}: {key} must map strings to strings")
    else:
        found.append(f"{where}: not an operator kind")
    return found


def test_operator_objects_have_the_operators_shape(full: list[Doc]) -> None:
    objects = [d for d in full if d["kind"] in ("ServiceMonitor", "PrometheusRule")]
    assert {d["kind"] for d in objects} == {"ServiceMonitor", "PrometheusRule"}
    problems = [p for d in objects for p in operator_problems(d)]
    assert not problems, "\n".join(problems)


def test_operator_shape_check_catches_mistakes(full: list[Doc]) -> None:
    monitor = find(full, "ServiceMonitor", "happ")
    misspelt = copy.deepcopy(monitor)
    misspelt["spec"]["endpoints"][0]["honorLabel"] = True
    bad_interval = copy.deepcopy(monitor)
    bad_interval["spec"]["endpoints"][0]["interval"] = "15"
    rule = find(full, "PrometheusRule", "happ")
    numeric_label = copy.deepcopy(rule)
    numeric_label["spec"]["groups"][0]["rules"][0]["labels"]["severity"] = 2
    for bad in (misspelt, bad_interval, numeric_label):
        assert operator_problems(bad), bad["kind"]


def test_prometheus_rule_is_alerts_yml(full: list[Doc], tmp_path: Path) -> None:
    assert not k8s_monitoring.problems(ROOT), (
        f"run `{k8s_monitoring.COMMAND}`: {k8s_monitoring.problems(ROOT)}"
    )
    rule = find(full, "PrometheusRule", "happ")
    alerts = load_yaml(PROMETHEUS / "alerts.yml")
    assert rule["spec"]["groups"] == alerts["groups"]
    # What the operator hands Prometheus passes the same checks and unit tests.
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path / "alerts_test.yml")
    run([promtool(), "check", "rules", "alerts.yml"], cwd=tmp_path)
    run([promtool(), "test", "rules", "alerts_test.yml"], cwd=tmp_path)


def copy_monitoring_sources(root: Path) -> None:
    for rel in (
        k8s_monitoring.ALERTS,
        k8s_monitoring.KUSTOMIZATION,
        k8s_monitoring.PROMETHEUS_RULE,
        *(p.relative_to(ROOT) for p in (ROOT / k8s_monitoring.DASHBOARDS).glob("*.json")),
        *(p.relative_to(ROOT) for p in (ROOT / k8s_monitoring.DASHBOARD_COPIES).glob("*")),
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, root / rel)


def test_generator_reports_and_repairs_drift(tmp_path: Path) -> None:
    copy_monitoring_sources(tmp_path)
    assert k8s_monitoring.problems(tmp_path) == []
    alerts = tmp_path / k8s_monitoring.ALERTS
    alerts.write_text(alerts.read_text().replace("for: 2m", "for: 3m", 1))
    stale = tmp_path / k8s_monitoring.DASHBOARD_COPIES / "gone.json"
    stale.write_text("{}")
    assert k8s_monitoring.main(["--check", "--root", str(tmp_path)]) == 1
    found = " ".join(k8s_monitoring.problems(tmp_path))
    assert "prometheusrule.yaml differs" in found and "gone.json has no source" in found
    assert k8s_monitoring.main(["--root", str(tmp_path)]) == 0
    assert not stale.exists()
    rule = yaml.safe_load((tmp_path / k8s_monitoring.PROMETHEUS_RULE).read_text())
    assert rule["spec"]["groups"][0]["rules"][0]["for"] == "3m"
    # A new dashboard is copied, but must be listed in the kustomization by hand.
    (tmp_path / k8s_monitoring.DASHBOARDS / "extra.json").write_text('{"uid": "x"}')
    assert k8s_monitoring.main(["--root", str(tmp_path)]) == 1
    assert "configMapGenerator lists" in " ".join(k8s_monitoring.problems(tmp_path))


def test_dashboard_configmap_carries_the_dashboards(full: list[Doc]) -> None:
    # No hash suffix: a renamed copy would leave the old one as a duplicate dashboard.
    config = find(full, "ConfigMap", "happ-grafana-dashboards")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    sources = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
    assert sorted(config["data"]) == [p.name for p in sources]
    for path in sources:
        assert json.loads(config["data"][path.name]) == json.loads(path.read_text())
    # `kubectl apply` (client side) keeps the whole object in an annotation of at
    # most 256 KiB.
    assert len(json.dumps(config)) < 256 * 1024


# -- network policies ------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """A pod (namespace set) or an address outside the cluster (namespace None)."""

    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    ip: str = "203.0.113.7"
    ports: Mapping[str, int] = field(default_factory=dict)


def selects(selector: Doc, labels: Mapping[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if (op == "In" and value not in expr["values"]) or (
            op == "NotIn" and value in expr["values"]
        ):
            return False
        if (op == "Exists") != (value is not None) and op in ("Exists", "DoesNotExist"):
            return False
    return True


def peer_matches(rule_peer: Doc, peer: Peer, policy_namespace: str) -> bool:
    if "ipBlock" in rule_peer:
        # Pods' own addresses are matched by selectors (ipBlock on pod IPs is
        # left to each CNI by the API), so only outside addresses here.
        if peer.namespace is not None:
            return False
        block, address = rule_peer["ipBlock"], ipaddress.ip_address(peer.ip)
        network = ipaddress.ip_network(block["cidr"])
        if address.version != network.version or address not in network:
            return False
        return not any(address in ipaddress.ip_network(e) for e in block.get("except", []))
    if peer.namespace is None:
        return False
    namespace_selector = rule_peer.get("namespaceSelector")
    if namespace_selector is None:
        namespace_ok = peer.namespace == policy_namespace
    else:
        namespace_ok = selects(namespace_selector, {"kubernetes.io/metadata.name": peer.namespace})
    return namespace_ok and selects(rule_peer.get("podSelector", {}), peer.labels)


def port_matches(ports: list[Doc], port: int, protocol: str, named: Mapping[str, int]) -> bool:
    if not ports:
        return True
    for p in ports:
        if p.get("protocol", "TCP") != protocol:
            continue
        if "port" not in p:
            return True
        first: int | str = p["port"]
        if isinstance(first, str):
            if named.get(first) == port:
                return True
        elif first <= port <= int(p.get("endPort", first)):
            return True
    return False


@dataclass(frozen=True)
class Pod:
    labels: Mapping[str, str]
    ports: Mapping[str, int]


def admitted(
    policies: list[Doc], pod: Pod, peer: Peer, port: int, *, inbound: bool, protocol: str = "TCP"
) -> bool:
    """Whether the NetworkPolicies let this traffic through (pod ← peer when inbound,
    pod → peer otherwise), by the API's rules: a pod selected by no policy of a
    direction is open in it; otherwise any rule of any selecting policy admits."""
    kind, key, peers_key = ("Ingress", "ingress", "from") if inbound else ("Egress", "egress", "to")
    selecting = [
        p
        for p in policies
        if kind in p["spec"]["policyTypes"] and selects(p["spec"]["podSelector"], pod.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            peers = rule.get(peers_key)
            namespace = policy["metadata"]["namespace"]
            if peers is not None and not any(peer_matches(p, peer, namespace) for p in peers):
                continue
            named = pod.ports if inbound else peer.ports
            if port_matches(rule.get("ports", []), port, protocol, named):
                return True
    return False


def pods(docs: Iterable[Doc]) -> dict[str, Pod]:
    found = {}
    for d in docs:
        if d["kind"] == "Deployment":
            template = d["spec"]["template"]
            ports = {p["name"]: p["containerPort"] for p in container_of(d)["ports"]}
            found[d["metadata"]["name"]] = Pod(template["metadata"]["labels"], ports)
    return found


def test_network_policies_admit_what_each_service_needs_and_nothing_else(
    full: list[Doc],
) -> None:
    policies = [d for d in full if d["kind"] == "NetworkPolicy"]
    every = pods(full)
    assert set(every) == {f"happ-{n}" for n in SERVICES}

    def inbound(to: str, peer: Peer, port: int) -> bool:
        return admitted(policies, every[to], peer, port, inbound=True)

    def outbound(frm: str, peer: Peer, port: int, protocol: str = "TCP") -> bool:
        return admitted(policies, every[frm], peer, port, inbound=False, protocol=protocol)

    internet = Peer(ip="198.51.100.20")
    shop = Peer("shop", {"app": "shop"})
    neighbour = Peer(NAMESPACE, {"app": "debug"})
    controller = Peer("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
    prometheus = Peer("monitoring", {"app.kubernetes.io/name": "prometheus"})

    # Webhooks: from anywhere, on the ingress' port only.
    for peer in (internet, shop, controller):
        assert inbound("happ-ingress", peer, 8080)
        assert not inbound("happ-ingress", peer, 9000)
    # Admin: inside the namespace and the ingress controller only.
    assert inbound("happ-admin", neighbour, 8081)
    assert inbound("happ-admin", controller, 8081)
    assert not inbound("happ-admin", shop, 8081)
    assert not inbound("happ-admin", internet, 8081)
    # Workers: nothing but the metrics scrape.
    for worker, port in (("happ-assistant", 8082), ("happ-delivery", 8083)):
        for peer in (internet, shop, neighbour, controller):
            assert not inbound(worker, peer, port), (worker, peer)
    for name, port in SERVICES.items():
        assert inbound(f"happ-{name}", prometheus, port), name
        assert not inbound(f"happ-{name}", prometheus, port + 1000), name

    dns = Peer("kube-system", {"k8s-app": "kube-dns"})
    kafka = Peer("kafka", {"strimzi.io/kind": "Kafka"})
    mongodb = Peer("mongodb", {"app": "mongodb"})
    msk = Peer(ip="10.0.3.17")  # a managed Kafka in the VPC
    atlas = Peer(ip="203.0.113.40")
    for name in SERVICES:
        pod = f"happ-{name}"
        assert outbound(pod, dns, 53, "UDP") and outbound(pod, dns, 53, "TCP"), name
        for peer, port in ((kafka, 9092), (kafka, 9093), (msk, 9096), (mongodb, 27017)):
            assert outbound(pod, peer, port), (name, peer, port)
        assert outbound(pod, atlas, 27017), name
        assert not outbound(pod, shop, 5432), name
        assert not outbound(pod, Peer(ip="10.0.3.18"), 22), name
    # The LLM: the assistant only.
    openai = Peer(ip="162.159.140.245")
    assert outbound("happ-assistant", openai, 443)
    assert not outbound("happ-ingress", openai, 443)
    # Integrators' endpoints, any port, public addresses only: delivery and admin.
    for name in ("happ-delivery", "happ-admin"):
        assert outbound(name, Peer(ip="198.51.100.20"), 8443)
        assert outbound(name, Peer(ip="2001:db8::1"), 443)
        for private in ("10.1.2.3", "172.16.5.4", "192.168.1.1", "169.254.169.254", "fd00::1"):
            assert not outbound(name, Peer(ip=private), 443), (name, private)
    assert not outbound("happ-ingress", Peer(ip="198.51.100.20"), 8443)
    assert not outbound("happ-assistant", Peer(ip="198.51.100.20"), 8443)


def test_network_policy_evaluator_follows_the_api() -> None:
    """Without any policy everything passes; a policy with no rule isolates."""
    pod = Pod({"app": "x"}, {"http": 80})
    assert admitted([], pod, Peer(), 80, inbound=True)
    deny: Doc = {
        "metadata": {"namespace": NAMESPACE},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }
    assert not admitted([deny], pod, Peer(), 80, inbound=True)
    assert admitted([deny], pod, Peer(), 80, inbound=False)
    allow = copy.deepcopy(deny)
    allow["spec"]["ingress"] = [{"ports": [{"port": "http"}]}]
    assert admitted([deny, allow], pod, Peer(), 80, inbound=True)
    assert not admitted([deny, allow], pod, Peer(), 81, inbound=True)


def fenced_blocks(markdown: str) -> list[tuple[str, str]]:
    """(language, content) of each fenced code block, in order."""
    blocks: list[tuple[str, str]] = []
    language: str | None = None
    lines: list[str] = []
    for line in markdown.splitlines():
        fence = re.match(r"\s*```(\w*)\s*$", line)
        if fence and language is None:
            language, lines = fence.group(1), []
        elif fence and language is not None:
            blocks.append((language, "\n".join(lines) + "\n"))
            language = None
        elif language is not None:
            lines.append(line)
    assert language is None, "an unclosed code block"
    return blocks


def readme_blocks(language: str) -> list[str]:
    return [content for lang, content in fenced_blocks(README.read_text()) if lang == language]


def test_readme_policy_patches_render(tmp_path: Path, full: list[Doc]) -> None:
    (block,) = [b for b in readme_blocks("yaml") if "happ-metrics-scrape" in b]
    patches = yaml.safe_load(block)["patches"]
    docs = overlay(tmp_path, components=[os.path.relpath(OPTIONAL, tmp_path)], patches=patches)
    scrape = find(docs, "NetworkPolicy", "happ-metrics-scrape")
    selector = scrape["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]
    assert selector == {"kubernetes.io/metadata.name": "observability"}
    kafka = find(docs, "NetworkPolicy", "happ-egress-kafka-mongodb")
    assert {"port": 12345, "protocol": "TCP"} in kafka["spec"]["egress"][0]["ports"]


# -- autoscaling --------------------------------------------------------------------------


def test_autoscalers_scale_the_consumers_on_their_lag(full: list[Doc]) -> None:
    autoscalers = {d["metadata"]["name"]: d for d in full if d["kind"] == "HorizontalPodAutoscaler"}
    assert set(autoscalers) == {"happ-assistant", "happ-delivery"}
    partitions = int(config_env()["KAFKA_PARTITIONS"])
    consumed = {"assistant": {"inbound.messages"}, "delivery": {"outbound.replies"}}
    for name, hpa in autoscalers.items():
        spec = hpa["spec"]
        target = spec["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        deployment = find(full, "Deployment", name)
        # The autoscaler owns the count: a re-apply must not reset it.
        assert "replicas" not in deployment["spec"], name
        pdb = find(full, "PodDisruptionBudget", name)
        assert spec["minReplicas"] >= pdb["spec"]["maxUnavailable"] + 1
        # Members beyond the partition count own nothing.
        assert spec["maxReplicas"] == partitions
        (metric,) = spec["metrics"]
        assert metric["type"] == "External"
        external = metric["external"]
        assert external["metric"]["name"] == "happ_pipeline_lag_records"
        assert external["metric"]["name"] in REGISTRY._names_to_collectors
        selector = external["metric"]["selector"]["matchLabels"]
        assert set(selector) <= labels_of("happ_pipeline_lag_records")
        consumer = name.removeprefix("happ-")
        assert selector["consumer"] == consumer
        # delivery.retry's records wait for their due time by design: not work.
        assert {selector["topic"]} == consumed[consumer]
        assert external["target"]["type"] == "AverageValue"
        assert int(external["target"]["averageValue"]) > 0
        assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300


def test_readme_gives_the_adapter_rule_for_the_autoscalers_metric() -> None:
    (block,) = [b for b in readme_blocks("yaml") if "externalRules" in b or "external:" in b]
    (rule,) = yaml.safe_load(block)["rules"]["external"]
    assert rule["name"]["as"] == "happ_pipeline_lag_records"
    assert rule["seriesQuery"].startswith("happ_pipeline_lag_records{")
    assert rule["resources"]["overrides"]["namespace"] == {"resource": "namespace"}
    query = rule["metricsQuery"]
    assert "<<.Series>>{<<.LabelMatchers>>}" in query
    grouped = {
        label.strip()
        for group in re.findall(r"by \(([^)]*)\)", query)
        for label in group.split(",")
    }
    assert grouped <= labels_of("happ_pipeline_lag_records") | {"namespace"}
    assert {"consumer", "topic", "partition"} <= grouped


# -- the example overlay and the connection settings --------------------------------------


def test_example_overlay_mounts_the_kafka_ca_where_the_settings_point() -> None:
    docs = kustomize(EXAMPLE)
    assert not [d for d in docs if d["kind"] == "Secret"], "the example creates no Secret"
    config = generated(docs, "ConfigMap", "happ-config")["data"]
    ca_file = Path(config["KAFKA_SSL_CA_FILE"])
    for name in SERVICES:
        deployment = find(docs, "Deployment", f"happ-{name}")
        spec = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        (mount,) = [m for m in container_of(deployment)["volumeMounts"] if m["name"] == "kafka-ca"]
        assert Path(mount["mountPath"]) == ca_file.parent and mount["readOnly"] is True
        secret = volumes["kafka-ca"]["secret"]
        assert secret["secretName"] == "happ-kafka-ca"
        assert [i["path"] for i in secret["items"]] == [ca_file.name]
    # The settings the example sets are accepted as a whole (the password comes
    # from happ-secrets).
    infra_vars = {k: v for k, v in config.items() if k.startswith(("KAFKA_", "MONGODB_"))}
    InfraSettings.model_validate({**infra_vars, "KAFKA_SASL_PASSWORD": "s3cret"})
    # The README shows this very patch.
    patch = (EXAMPLE / "kafka-ca.yaml").read_text()
    body = "".join(line + "\n" for line in patch.splitlines() if not line.startswith("#"))
    assert body in README.read_text()


def connection_section() -> str:
    text = README.read_text()
    return text.split("## Connecting to your Kafka and MongoDB", 1)[1].split("\n## ", 1)[0]


DOCUMENTED = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SSL_CA_FILE",
    "KAFKA_SSL_CERT_FILE",
    "KAFKA_SSL_KEY_FILE",
    "KAFKA_SSL_KEY_PASSWORD",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_REPLICATION_FACTOR",
    "KAFKA_PARTITIONS",
    "KAFKA_RETENTION_HOURS",
    "KAFKA_DEAD_LETTER_RETENTION_HOURS",
    "MONGODB_URI",
)


def test_readme_documents_every_connection_setting() -> None:
    section = connection_section()
    table = {
        name: row
        for row in section.splitlines()
        if row.startswith("| `")
        for name in re.findall(r"`(\w+)`", row.split("|")[1])
    }
    assert set(DOCUMENTED) <= set(table), set(DOCUMENTED) - set(table)
    assert set(table) <= known_env_vars(), set(table) - known_env_vars()
    for secret in ("KAFKA_SASL_PASSWORD", "KAFKA_SSL_KEY_PASSWORD", "MONGODB_URI"):
        assert "**Secret**" in table[secret], secret
    # The defaults the table states are the code's.
    fields = InfraSettings.model_fields
    assert "`168`" in table["KAFKA_RETENTION_HOURS"]
    assert fields["kafka_retention_hours"].default == 168
    assert "`720`" in table["KAFKA_DEAD_LETTER_RETENTION_HOURS"]
    assert fields["kafka_dead_letter_retention_hours"].default == 720
    for provider in (
        "### Amazon MSK",
        "### Confluent Cloud",
        "### Aiven",
        "### Strimzi",
        "### MongoDB",
    ):
        assert provider in section, provider
    assert "9096" in section and "IAM" in section and "not\nsupported" in section


def documented_settings() -> list[dict[str, str]]:
    """Each KEY=value block of the connection section, as one configuration."""
    blocks = [content for lang, content in fenced_blocks(connection_section()) if not lang]
    found = []
    for block in blocks:
        lines = [line.split("#")[0].strip() for line in block.splitlines()]
        pairs = dict(line.split("=", 1) for line in lines if "=" in line)
        if pairs:
            found.append(pairs)
    return found


def test_every_documented_connection_is_accepted_by_the_settings() -> None:
    configurations = documented_settings()
    assert len(configurations) >= 5  # MSK, Confluent Cloud, Aiven (2), Strimzi
    for env in configurations:
        assert set(env) <= known_env_vars(), env
        # The passwords the block says come from the Secret.
        secrets = (
            {"KAFKA_SASL_PASSWORD": "s3cret"}
            if "SASL" in env.get("KAFKA_SECURITY_PROTOCOL", "")
            else {}
        )
        settings = InfraSettings.model_validate({**env, **secrets})
        assert settings.kafka_bootstrap_servers == env["KAFKA_BOOTSTRAP_SERVERS"]
    # A block missing its mechanism would be refused: the check above can fail.
    broken = dict(next(c for c in configurations if "KAFKA_SASL_MECHANISM" in c))
    del broken["KAFKA_SASL_MECHANISM"]
    with pytest.raises(ValidationError):
        InfraSettings.model_validate({**broken, "KAFKA_SASL_PASSWORD": "s3cret"})


def test_documented_mongodb_uris_parse(tmp_path: Path) -> None:
    uris = re.findall(r"`(mongodb(?:\+srv)?://[^`]+)`", connection_section())
    assert len(uris) >= 4
    # The files they name, mounted from a Secret in the pods, exist here.
    for name in ("ca.crt", "client.pem"):
        (tmp_path / name).write_text("")
    for documented in uris:
        uri = documented.replace("/etc/happ/mongodb/", f"{tmp_path}/")
        if uri.startswith("mongodb+srv://"):
            # An SRV name is resolved by DNS at parse time: check its shape only.
            assert re.fullmatch(r"mongodb\+srv://[^:]+:[^@]+@[a-z0-9.-]+/\w+\?.*", uri), uri
            continue
        parsed = parse_uri(uri)
        assert parsed["nodelist"], uri
        if "tls=true" in uri:
            assert parsed["options"]["tls"] is True, uri


def test_runbooks_and_alerts_agree_on_the_new_alerts() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert {"HappConsumerStalled", "HappConsumerAbsent"} <= names
    text = (ROOT / "docs/runbooks.md").read_text()
    # Policy names the runbooks send the on-call engineer to exist.
    for policy in re.findall(r"NetworkPolicy `(happ-[a-z-]+)`", text):
        assert policy in (OPTIONAL / "network-policies/networkpolicies.yaml").read_text()

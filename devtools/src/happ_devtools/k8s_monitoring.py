"""Writes the Kubernetes copies of the monitoring sources, which stay the only
sources: kustomize cannot read files outside its directory, so the optional
component (``deploy/k8s/optional/monitoring``) carries generated copies.

* ``deploy/prometheus/alerts.yml`` → ``prometheusrule.yaml``: a PrometheusRule
  whose ``spec.groups`` are the file's groups.
* ``deploy/grafana/dashboards/*.json`` → ``dashboards/*.json``, byte for byte
  (the component's configMapGenerator turns them into the dashboard ConfigMap,
  and must list each of them).

    uv run python -m happ_devtools.k8s_monitoring           # write the copies
    uv run python -m happ_devtools.k8s_monitoring --check   # exit 1 if they differ

``tests/test_deploy_manifests.py`` fails while a copy differs from its source.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ALERTS = Path("deploy/prometheus/alerts.yml")
DASHBOARDS = Path("deploy/grafana/dashboards")
COMPONENT = Path("deploy/k8s/optional/monitoring")
PROMETHEUS_RULE = COMPONENT / "prometheusrule.yaml"
DASHBOARD_COPIES = COMPONENT / "dashboards"
KUSTOMIZATION = COMPONENT / "kustomization.yaml"
COMMAND = "uv run python -m happ_devtools.k8s_monitoring"

_HEADER = f"""\
# GENERATED from {ALERTS} by `{COMMAND}`:
# edit that file and run the command again; do not edit this one
# (tests/test_deploy_manifests.py fails while the two differ).
#
# The alert rules for the Prometheus Operator. Your Prometheus must select this
# object: kube-prometheus-stack selects only rules labelled
# `release: <its release name>` unless its ruleSelector says otherwise
# (deploy/k8s/README.md, "Monitoring").
"""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as literal blocks, readable in review."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def prometheus_rule(alerts_text: str) -> str:
    """The PrometheusRule for the rule groups of an alerts.yml."""
    groups: list[dict[str, Any]] = yaml.safe_load(alerts_text)["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "happ",
            "namespace": "happ",
            "labels": {"app.kubernetes.io/part-of": "happ"},
        },
        "spec": {"groups": groups},
    }
    body = yaml.dump(rule, Dumper=_Dumper, sort_keys=False, width=4096, allow_unicode=True)
    return _HEADER + body


def expected(root: Path) -> dict[Path, bytes]:
    """Every generated file (relative to ``root``) with the content it must have."""
    files = {PROMETHEUS_RULE: prometheus_rule((root / ALERTS).read_text()).encode()}
    for source in sorted((root / DASHBOARDS).glob("*.json")):
        files[DASHBOARD_COPIES / source.name] = source.read_bytes()
    return files


def listed_dashboards(root: Path) -> list[str]:
    """The files the component's dashboard configMapGenerator reads."""
    kustomization = yaml.safe_load((root / KUSTOMIZATION).read_text())
    return [f for gen in kustomization.get("configMapGenerator", []) for f in gen.get("files", [])]


def problems(root: Path) -> list[str]:
    """What differs between the sources and the generated copies (empty: in sync)."""
    found: list[str] = []
    wanted = expected(root)
    for path, content in wanted.items():
        target = root / path
        if not target.is_file():
            found.append(f"{path} is missing")
        elif target.read_bytes() != content:
            found.append(f"{path} differs from its source")
    for stale in sorted((root / DASHBOARD_COPIES).glob("*")):
        if stale.relative_to(root) not in wanted:
            found.append(f"{stale.relative_to(root)} has no source in {DASHBOARDS}")
    listed = sorted(listed_dashboards(root))
    copies = sorted(str(p.relative_to(COMPONENT)) for p in wanted if p.parent == DASHBOARD_COPIES)
    if listed != copies:
        found.append(
            f"{KUSTOMIZATION}'s configMapGenerator lists {listed}, "
            f"the dashboards are {copies}: list each of them (by hand)"
        )
    return found


def write(root: Path) -> None:
    wanted = expected(root)
    (root / DASHBOARD_COPIES).mkdir(parents=True, exist_ok=True)
    for stale in (root / DASHBOARD_COPIES).glob("*"):
        if stale.relative_to(root) not in wanted:
            stale.unlink()
    for path, content in wanted.items():
        (root / path).write_bytes(content)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report differences")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root")
    args = parser.parse_args(argv)
    root: Path = args.root
    if not (root / ALERTS).is_file():
        parser.error(f"{root / ALERTS} not found: run from the repository root or pass --root")
    if not args.check:
        write(root)
    found = problems(root)
    for problem in found:
        print(problem, file=sys.stderr)
    if found and args.check:
        print(f"run `{COMMAND}`", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())

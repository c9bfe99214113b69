"""Every rendered object is valid for a current Kubernetes (strict) or for its CRD's schema."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import jsonschema
import kubernetes_validate
import pytest
import yaml
from k8s_helpers import SCHEMAS

# kubernetes-validate ships the schemas of each release, so validation runs offline: the oldest
# release we support and the newest one it knows.
KUBERNETES_VERSION = "1.35.0"
KUBERNETES_VERSIONS = (KUBERNETES_VERSION, kubernetes_validate.utils.latest_version())
CORE_GROUPS = ("v1", "apps/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1")


def _crd_schema(path, version: str) -> dict:
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 430 kB
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise AssertionError(f"{path.name} has no version {version}")


# The Gateway CRD is not among the fixtures; these are the fields Gateway API v1 requires of the
# Gateway we ship (gatewayClassName, listeners with name/port/protocol, allowedRoutes values).
GATEWAY_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "spec": {
            "type": "object",
            "required": ["gatewayClassName", "listeners"],
            "additionalProperties": False,
            "properties": {
                "gatewayClassName": {"type": "string", "minLength": 1, "maxLength": 253},
                "listeners": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 64,
                    "items": {
                        "type": "object",
                        "required": ["name", "port", "protocol"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                            "protocol": {"enum": ["HTTP", "HTTPS", "TLS", "TCP", "UDP"]},
                            "hostname": {"type": "string"},
                            "allowedRoutes": {
                                "type": "object",
                                "properties": {
                                    "namespaces": {
                                        "type": "object",
                                        "properties": {"from": {"enum": ["All", "Same", "Selector"]}},
                                    }
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_core_kinds_validate_strictly(rendered_docs):
    checked = 0
    errors = []
    seen: set[str] = set()
    for overlay, docs in rendered_docs.items():
        for doc in docs:
            if doc["apiVersion"] not in CORE_GROUPS:
                continue
            key = json.dumps(doc, sort_keys=True)
            if key in seen:  # the same object in several overlays: validated once
                continue
            seen.add(key)
            for version in KUBERNETES_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    path = ".".join(str(p) for p in exc.path)
                    errors.append(f"{overlay} (k8s {version}): {doc['kind']}/{doc['metadata']['name']}: "
                                  f"{path}: {exc.message}")
            checked += 1
    assert not errors, "\n".join(errors)
    assert checked > 40


def test_strict_validation_catches_a_typo(rendered_docs):
    """The validator is not a no-op: a misspelt field in a rendered Deployment is refused."""
    deployment = next(d for d in rendered_docs["minikube"] if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validate_cli_accepts_the_rendered_files(rendered):
    """The same check ops people can run: `kubernetes-validate --strict` on the rendered files."""
    files = [str(rendered["minikube-full"])]
    proc = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", KUBERNETES_VERSION, *files],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ERROR" not in proc.stdout


def test_every_kind_is_known(rendered_docs):
    """Nothing slips through unvalidated: each kind is core, or has a schema checked below."""
    custom = {"HTTPRoute", "Gateway", "PrometheusRule", "PodMonitor"}
    for overlay, docs in rendered_docs.items():
        for doc in docs:
            assert doc["apiVersion"] in CORE_GROUPS or doc["kind"] in custom, (overlay, doc["kind"])


def test_httproutes_match_the_gateway_api_crd(rendered_docs):
    schema = _crd_schema(SCHEMAS / "gateway-httproute-crd.yaml", "v1")
    routes = [d for d in rendered_docs["gateway"] if d["kind"] == "HTTPRoute"]
    assert routes
    for route in routes:
        jsonschema.validate(route, schema)
    # and the schema does refuse a route the API server would refuse
    bad = json.loads(json.dumps(routes[0]))
    bad["spec"]["rules"][0]["matches"][0]["path"]["type"] = "Regex-ish"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_gateway_has_the_required_fields(rendered_docs):
    gateways = [d for d in rendered_docs["gateway"] if d["kind"] == "Gateway"]
    assert len(gateways) == 1
    jsonschema.validate(gateways[0], GATEWAY_SCHEMA)


def test_prometheus_rule_groups_pass_promtool(rendered_docs, tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    rules = [d for d in rendered_docs["monitoring"] if d["kind"] == "PrometheusRule"]
    assert len(rules) == 1
    rule = rules[0]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    path = tmp_path / "from-prometheusrule.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_katib_experiments_match_the_katib_openapi_schema(config):
    """The Experiments the tuning area renders for every configured patient (deployed with
    `kubectl apply -f build/katib/`, see README.md ("Deploy on minikube")) are valid Katib v1beta1."""
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    from katib.render import render_experiment

    api = json.loads((SCHEMAS / "katib-v1beta1-openapi.json").read_text())
    registry = Registry().with_resource("urn:katib", Resource.from_contents(api, default_specification=DRAFT202012))
    validator = jsonschema.Draft202012Validator(
        {"$ref": "urn:katib#/components/schemas/v1beta1.Experiment"}, registry=registry
    )
    for pid in config.patient_ids:
        experiment = render_experiment(config, pid)
        assert experiment["kind"] == "Experiment"
        assert not [e.message for e in validator.iter_errors(experiment)], pid
    broken = render_experiment(config, config.patient_ids[0])
    broken["spec"]["parameters"][0]["feasibleSpace"] = "wide"
    assert list(validator.iter_errors(broken))


# No PodMonitor CRD among the fixtures either: the fields the Prometheus Operator needs.
PODMONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "spec": {
            "type": "object",
            "required": ["selector", "podMetricsEndpoints"],
            "properties": {
                "selector": {
                    "type": "object",
                    "required": ["matchLabels"],
                    "properties": {"matchLabels": {"type": "object", "minProperties": 1}},
                },
                "podMetricsEndpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port", "path"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                    },
                },
            },
        },
    },
}


def test_podmonitor_scrapes_the_model_servers_metrics_port(rendered_docs):
    from k8s.render import METRICS_PATH

    docs = rendered_docs["monitoring"]
    (monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    jsonschema.validate(monitor, PODMONITOR_SCHEMA)
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/component": "model-server"}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == METRICS_PATH and endpoint["port"] == "http"
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert monitor["metadata"]["labels"]["release"] == rule["metadata"]["labels"]["release"]

"""Render the Kubernetes manifests of glucose-forecast from the configured patient list.

Two kinds of input, one output:

* ``k8s/kustomize/`` (committed): a kustomize ``base``, ``components`` and ``overlays`` holding
  everything that is the same for every patient: namespace, NetworkPolicies, the security and
  resource policy of the pods, Ingress limits, the Gateway, TLS, NodePort, web-app policy.
* ``glucose-forecast.toml`` through :func:`pipeline.config.load_config`: the patient ids, image
  names and tag, ports. From it this module writes ``generated/`` (one Deployment, Service,
  PodDisruptionBudget and HorizontalPodAutoscaler per patient, the Ingress paths and HTTPRoutes
  from :mod:`pipeline.routes`, the web app with the configuration file as a ConfigMap, and the
  PrometheusRule built from ``k8s/monitoring/alert-rules.yaml``).
* ``<out>/kustomize/`` is the committed tree plus ``generated/``, ready for
  ``kubectl apply -k <out>/kustomize/overlays/<overlay>``; ``<out>/<overlay>.yaml`` is each overlay
  rendered by ``kubectl kustomize``, ready for ``kubectl apply -f``.

Everything is validated and rendered in a scratch directory first; ``<out>`` is only replaced
once every overlay rendered, so bad input never leaves half-written files.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Config, ConfigError, validate_patient_id
from pipeline.routes import path_regex, routes

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
KUSTOMIZE_DIR = PACKAGE_DIR / "kustomize"
ALERT_RULES = PACKAGE_DIR / "monitoring" / "alert-rules.yaml"
GENERATED = "generated"

# Names shared with the committed kustomize tree (tests check they agree).
COMPONENT_LABEL = "app.kubernetes.io/component"
PATIENT_LABEL = "glucose-forecast/patient"
MODEL_SERVER = "model-server"  # component label value and container name
WEBAPP = "webapp"
INGRESS_NAME = "glucose-forecast"
GATEWAY_NAME = "glucose-forecast"  # overlays/gateway/gateway.yaml
PORT_NAME = "http"  # NetworkPolicies and Services refer to the container port by this name
WEBAPP_CONFIG_DIR = "/etc/glucose-forecast"
CONFIG_FILE_NAME = "glucose-forecast.toml"
METRICS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's, as set in base/monitoring.config
# The web app in the cluster calls the models like any client: through the ingress controller
# (the Service the minikube ingress addon creates).
IN_CLUSTER_GATEWAY = "http://ingress-nginx-controller.ingress-nginx.svc.cluster.local"

SERVING_REPLICAS = 2
HPA_MAX_REPLICAS = 5
HPA_CPU_PERCENT = 70

# Docker reference grammar (distribution/reference), enough to refuse what a registry would.
_REPO_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REGISTRY_RE = re.compile(
    rf"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?{_REPO_COMPONENT}(?:/{_REPO_COMPONENT})*$"
)
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class RenderError(RuntimeError):
    """kubectl/kustomize is missing or refused the assembled tree."""


# --------------------------------------------------------------------------- names and checks


def serving_name(patient: str) -> str:
    """Deployment, Service, PDB, HPA and HTTPRoute name of a patient's model server."""
    return f"serving-{validate_patient_id(patient)}"


def serving_image(config: Config, patient: str) -> str:
    """The patient's model-server image: TF Serving with the patient's SavedModel baked in."""
    return f"{config.images.registry}/serving-{validate_patient_id(patient)}:{config.images.tag}"


def webapp_image(config: Config) -> str:
    return f"{config.images.registry}/webapp:{config.images.tag}"


def ingress_path(patient: str) -> str:
    """The ingress-nginx path of a patient, derived from :func:`pipeline.routes.path_regex`.

    ingress-nginx turns a regex path ``P`` into ``location ~* "^P"`` (case-insensitive) and
    ``rewrite "(?i)P" <rewrite-target> break;``. So the path drops the leading ``^`` (the
    controller adds it; the API requires paths to start with ``/``), switches case-sensitivity
    back on with ``(?-i)`` right after the first ``/`` so the Ingress accepts exactly what the
    local nginx gateway accepts, and moves the capture group past the patient's ``/`` so the
    rewrite target is ``/$1`` (the controller's annotation validator wants a leading ``/``).
    """
    regex = path_regex(patient)
    head = f"^/{patient}(/"
    if not regex.startswith(head):
        raise ValueError(f"pipeline.routes.path_regex changed shape: {regex!r}; update k8s.render.ingress_path")
    return f"/(?-i){patient}/(" + regex[len(head):]


REWRITE_TARGET = "/$1"


def validate_for_render(config: Config) -> None:
    """Refuse, before anything is written, what would make invalid manifests or image names."""
    seen: set[str] = set()
    for i, patient in enumerate(config.patients):
        where = f"{config.path}: patients[{i}].id"
        validate_patient_id(patient.id, where)
        if patient.id in seen:
            raise ConfigError(f"{where}: duplicate patient id {patient.id!r}")
        seen.add(patient.id)
    if not config.patients:
        raise ConfigError(f"{config.path}: no patients configured; nothing to deploy")
    if not _REGISTRY_RE.match(config.images.registry):
        raise ConfigError(
            f"{config.path}: [images].registry {config.images.registry!r} is not a valid image repository "
            "prefix (lowercase letters, digits, '.', '_', '-', '/' separated, optional host[:port]/)"
        )
    if not _TAG_RE.match(config.images.tag):
        raise ConfigError(
            f"{config.path}: [images].tag {config.images.tag!r} is not a valid image tag "
            "(letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-')"
        )
    if config.images.tag == "latest":
        raise ConfigError(
            f"{config.path}: [images].tag must pin a version (e.g. v1), not 'latest': with "
            "imagePullPolicy IfNotPresent a moving tag silently serves whatever the node cached"
        )
    for name, port in (("container", config.ports.container), ("webapp", config.ports.webapp)):
        if not 0 < port < 65536:
            raise ConfigError(f"{config.path}: [ports].{name} = {port} is not a TCP port")


# --------------------------------------------------------------------------- generated objects


def _labels(component: str, patient: str | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": component, COMPONENT_LABEL: component}
    if patient is not None:
        labels["app.kubernetes.io/instance"] = serving_name(patient)
        labels[PATIENT_LABEL] = patient
    return labels


def _selector(component: str, patient: str | None = None) -> dict[str, str]:
    sel = {COMPONENT_LABEL: component}
    if patient is not None:
        sel[PATIENT_LABEL] = patient
    return sel


def _metadata_path(patient: str) -> str:
    """``/v1/models/<p>/metadata``: answers only once the model is loaded (readiness)."""
    for route in routes(patient):
        if route.upstream_path.endswith("/metadata"):
            return route.upstream_path
    raise ValueError("pipeline.routes no longer exposes /metadata")


def serving_resources(config: Config, patient: str) -> list[dict[str, Any]]:
    """Deployment, Service and PodDisruptionBudget of one patient's model server."""
    name = serving_name(patient)
    labels = _labels(MODEL_SERVER, patient)
    selector = _selector(MODEL_SERVER, patient)
    probe_get = {"path": _metadata_path(patient), "port": PORT_NAME}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": SERVING_REPLICAS,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": labels,
                    # for a Prometheus with the usual kubernetes-pods scrape job (metrics enabled
                    # by the base's --monitoring_config_file)
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(config.ports.container),
                        "prometheus.io/path": METRICS_PATH,
                    },
                },
                "spec": {
                    "containers": [
                        {
                            "name": MODEL_SERVER,
                            "image": serving_image(config, patient),
                            "imagePullPolicy": "IfNotPresent",
                            "env": [{"name": "MODEL_NAME", "value": patient}],
                            "ports": [{"name": PORT_NAME, "containerPort": config.ports.container, "protocol": "TCP"}],
                            # Loading a SavedModel takes seconds to a minute: allow 5 minutes.
                            "startupProbe": {
                                "httpGet": probe_get,
                                "periodSeconds": 5,
                                "timeoutSeconds": 2,
                                "failureThreshold": 60,
                            },
                            "readinessProbe": {
                                "httpGet": probe_get,
                                "periodSeconds": 10,
                                "timeoutSeconds": 2,
                                "failureThreshold": 3,
                            },
                            "livenessProbe": {
                                "tcpSocket": {"port": PORT_NAME},
                                "periodSeconds": 20,
                                "timeoutSeconds": 2,
                                "failureThreshold": 3,
                            },
                        }
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": PORT_NAME, "port": config.ports.container, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "labels": labels},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": selector}},
    }
    return [deployment, service, pdb]


def hpa_resource(patient: str) -> dict[str, Any]:
    name = serving_name(patient)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "labels": _labels(MODEL_SERVER, patient)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": SERVING_REPLICAS,
            "maxReplicas": HPA_MAX_REPLICAS,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": HPA_CPU_PERCENT}},
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def ingress_resource(config: Config) -> dict[str, Any]:
    """One ingress-nginx Ingress: each patient's public paths to its own Service, nothing else."""
    paths = [
        {
            "path": ingress_path(pid),
            "pathType": "ImplementationSpecific",
            "backend": {"service": {"name": serving_name(pid), "port": {"name": PORT_NAME}}},
        }
        for pid in config.patient_ids
    ]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": INGRESS_NAME,
            "labels": {"app.kubernetes.io/name": "glucose-forecast", COMPONENT_LABEL: "ingress"},
            "annotations": {
                "nginx.ingress.kubernetes.io/use-regex": "true",
                "nginx.ingress.kubernetes.io/rewrite-target": REWRITE_TARGET,
            },
        },
        "spec": {"ingressClassName": "nginx", "rules": [{"http": {"paths": paths}}]},
    }


def httproute_resource(config: Config, patient: str) -> dict[str, Any]:
    """A Gateway API HTTPRoute with the same public paths: Exact match, rewrite the full path."""
    rules = [
        {
            "matches": [{"path": {"type": "Exact", "value": route.public_path}}],
            "filters": [
                {
                    "type": "URLRewrite",
                    "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": route.upstream_path}},
                }
            ],
            "backendRefs": [{"name": serving_name(patient), "port": config.ports.container}],
        }
        for route in routes(patient)
    ]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": serving_name(patient), "labels": _labels(MODEL_SERVER, patient)},
        "spec": {"parentRefs": [{"name": GATEWAY_NAME}], "rules": rules},
    }


def webapp_resources(config: Config) -> list[dict[str, Any]]:
    """The web app's Deployment and Service (its configuration comes from the ConfigMap)."""
    from webapp import GATEWAY_ENV  # light: constants only

    labels = _labels(WEBAPP)
    selector = _selector(WEBAPP)
    health = {"path": "/_stcore/health", "port": PORT_NAME}
    env = [
        {"name": "GLUCOSE_FORECAST_CONFIG", "value": f"{WEBAPP_CONFIG_DIR}/{CONFIG_FILE_NAME}"},
        {"name": GATEWAY_ENV, "value": IN_CLUSTER_GATEWAY},
        {"name": "HOME", "value": "/tmp"},  # Streamlit writes ~/.streamlit; the root filesystem is read-only
    ]
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": WEBAPP, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": WEBAPP,
                            "image": webapp_image(config),
                            "imagePullPolicy": "IfNotPresent",
                            "env": env,
                            "ports": [{"name": PORT_NAME, "containerPort": config.ports.webapp, "protocol": "TCP"}],
                            "startupProbe": {"httpGet": health, "periodSeconds": 5, "failureThreshold": 24},
                            "readinessProbe": {"httpGet": health, "periodSeconds": 10, "failureThreshold": 3},
                            "livenessProbe": {"httpGet": health, "periodSeconds": 20, "failureThreshold": 3},
                            "volumeMounts": [{"name": "config", "mountPath": WEBAPP_CONFIG_DIR, "readOnly": True}],
                        }
                    ],
                    "volumes": [{"name": "config", "configMap": {"name": "glucose-forecast-config"}}],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": WEBAPP, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": PORT_NAME, "port": config.ports.webapp, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }
    return [deployment, service]


def prometheus_rule(rules_file: Path = ALERT_RULES) -> dict[str, Any]:
    """The alert rules file wrapped as a Prometheus Operator PrometheusRule (same groups)."""
    rules = yaml.safe_load(rules_file.read_text())
    if not isinstance(rules, dict) or not isinstance(rules.get("groups"), list):
        raise ConfigError(f"{rules_file}: not a Prometheus rules file (no top-level 'groups' list)")
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "glucose-forecast",
            "labels": {
                "app.kubernetes.io/name": "glucose-forecast",
                COMPONENT_LABEL: "monitoring",
                # kube-prometheus-stack selects rules by its release label; set yours if it differs.
                "release": "kube-prometheus-stack",
            },
        },
        "spec": {"groups": rules["groups"]},
    }


# --------------------------------------------------------------------------- writing the tree


HEADER = (
    "# GENERATED by `glucose-forecast k8s render` from {source}; do not edit.\n"
    "# Change the patients in glucose-forecast.toml, the policy in k8s/kustomize/.\n"
)


def _dump(docs: Iterable[dict[str, Any]], source: str) -> str:
    body = yaml.safe_dump_all(list(docs), sort_keys=False, default_flow_style=False, width=120)
    return HEADER.format(source=source) + body


def _kustomization(resources: Sequence[str] = (), *, component: bool = False, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1" if component else "kustomize.config.k8s.io/v1beta1",
        "kind": "Component" if component else "Kustomization",
    }
    if resources:
        doc["resources"] = list(resources)
    doc.update(extra)
    return doc


def write_generated(config: Config, root: Path) -> None:
    """Write ``root/generated/`` (the per-patient part) for ``config``."""
    source = config.path.name
    gen = root / GENERATED

    def write(rel: str, docs: Iterable[dict[str, Any]]) -> None:
        path = gen / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_dump(docs, source))

    files = []
    for pid in config.patient_ids:
        fname = f"{serving_name(pid)}.yaml"
        write(f"patients/{fname}", serving_resources(config, pid))
        files.append(fname)
    write("patients/kustomization.yaml", [_kustomization(files)])

    write("ingress/ingress.yaml", [ingress_resource(config)])
    write("ingress/kustomization.yaml", [_kustomization(["ingress.yaml"])])

    write("httproute/httproutes.yaml", [httproute_resource(config, pid) for pid in config.patient_ids])
    write("httproute/kustomization.yaml", [_kustomization(["httproutes.yaml"])])

    write("hpa/hpa.yaml", [hpa_resource(pid) for pid in config.patient_ids])
    write("hpa/kustomization.yaml", [_kustomization(["hpa.yaml"], component=True)])

    write("webapp/webapp.yaml", webapp_resources(config))
    (gen / "webapp" / CONFIG_FILE_NAME).write_text(config.path.read_text())
    write(
        "webapp/kustomization.yaml",
        [
            _kustomization(
                ["webapp.yaml"],
                component=True,
                configMapGenerator=[{"name": "glucose-forecast-config", "files": [CONFIG_FILE_NAME]}],
            )
        ],
    )

    write("monitoring/prometheusrule.yaml", [prometheus_rule()])
    write("monitoring/kustomization.yaml", [_kustomization(["prometheusrule.yaml"])])


def overlay_names(kustomize_dir: Path = KUSTOMIZE_DIR) -> list[str]:
    """The overlays shipped in k8s/kustomize/overlays, sorted."""
    return sorted(p.name for p in (kustomize_dir / "overlays").iterdir() if (p / "kustomization.yaml").is_file())


def kustomize_command() -> list[str]:
    """``kubectl kustomize`` (kustomize is built into kubectl) or a standalone ``kustomize build``."""
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    raise RenderError("neither kubectl nor kustomize is on PATH; install kubectl (>= 1.27) to render the overlays")


def kustomize_build(directory: Path) -> str:
    """Render one kustomization directory; raise RenderError with kustomize's message."""
    cmd = [*kustomize_command(), str(directory)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RenderError(f"{' '.join(cmd)} failed:\n{proc.stderr.strip()}")
    return proc.stdout


def render_overlays(
    config: Config, out_dir: str | os.PathLike[str], overlays: Sequence[str] | None = None
) -> dict[str, Path]:
    """Render every (or the named) overlay for ``config`` into ``out_dir/<overlay>.yaml``.

    Also leaves the assembled kustomize tree in ``out_dir/kustomize`` for ``kubectl apply -k``.
    Returns ``{overlay: path}``. Nothing in ``out_dir`` changes unless all overlays rendered.
    """
    validate_for_render(config)
    available = overlay_names()
    chosen = list(overlays) if overlays else available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise ConfigError(f"unknown overlay(s) {', '.join(unknown)}; available: {', '.join(available)}")

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".k8s-render-", dir=out.parent) as scratch:
        stage = Path(scratch) / "out"
        tree = stage / "kustomize"
        shutil.copytree(KUSTOMIZE_DIR, tree)
        write_generated(config, tree)
        rendered: dict[str, str] = {}
        for name in chosen:
            text = kustomize_build(tree / "overlays" / name)
            docs = [d for d in yaml.safe_load_all(text) if d]
            if not docs:
                raise RenderError(f"overlay {name} rendered no objects")
            rendered[name] = text
            log.info("overlay %s: %d objects", name, len(docs))
        for name, text in rendered.items():
            (stage / f"{name}.yaml").write_text(HEADER.format(source=config.path.name) + text)
        # Swap in the finished output: keep other files the user put in out_dir.
        out.mkdir(parents=True, exist_ok=True)
        if (out / "kustomize").exists():
            shutil.rmtree(out / "kustomize")
        shutil.move(str(tree), str(out / "kustomize"))
        result = {}
        for name in rendered:
            target = out / f"{name}.yaml"
            os.replace(stage / f"{name}.yaml", target)
            result[name] = target
    return result
